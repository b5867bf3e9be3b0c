"""Errors that services raise and views turn into a message, a status and a code."""

from __future__ import annotations


class ServiceError(Exception):
    """A refused request: nothing was changed. ``code`` is stable for the API."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.field = field


#: The one message for "no such thing, or you cannot see it" (pages and API alike: the
#: web's own 404 page says the same), so that no wording tells the two apart.
NOT_FOUND_MESSAGE = "There is nothing here, or you cannot see it."


class NotFound(ServiceError):
    status = 404
    code = "not_found"

    def __init__(self, message: str = NOT_FOUND_MESSAGE, **kw: str | None):
        super().__init__(message, **kw)


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class NdaRequired(ServiceError):
    """A cleared reader still owes an NDA: the web sends them to the NDA page."""

    status = 403
    code = "nda_required"

    def __init__(self, message: str, ndas: list[str]):
        super().__init__(message)
        self.ndas = ndas


class MfaRequired(ServiceError):
    status = 403
    code = "mfa_required"


class PasskeyRequired(MfaRequired):
    """A cleared reader with a second factor, but the level needs a passkey proof: the
    web sends them to confirm with a passkey (or add one)."""

    code = "passkey_required"
