"""JSON API at /api/v1: bearer tokens only (no cookies, so no CSRF)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, current_app, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app import access, state
from app.auth.models import Role, User
from app.auth.service import sha256_hex
from app.auth.tokens import allowed_scopes, token_for
from app.errors import NotFound, ServiceError
from app.extensions import limiter
from app.jsonbody import MAX_DEPTH, TooDeep
from app.pagination import Page

bp = Blueprint("api", __name__, url_prefix="/api/v1")
F = TypeVar("F", bound=Callable[..., Any])

PUBLIC_ENDPOINTS: set[str] = set()


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class ApiForbidden(ServiceError):
    status = 403
    code = "forbidden"


def public(view: F) -> F:
    """Mark an endpoint as reachable without a token (released content, the spec)."""
    PUBLIC_ENDPOINTS.add(f"{bp.name}.{view.__name__}")
    return view


def _rate_key() -> str:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return "token:" + sha256_hex(header[7:].strip())[:32]
    return "ip:" + (request.remote_addr or "")


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ROLE_SCOPE = {Role.REVIEWER: "review", Role.ORG_ADMIN: "admin", Role.ADMIN: "admin"}


def needs_scope(scope: str) -> Callable[[F], F]:
    """Mark an endpoint as needing a token scope beyond read/write (``review``,
    ``admin``); :func:`require_role` marks its endpoints itself."""
    def decorator(view: F) -> F:
        view.api_scope = scope  # type: ignore[attr-defined]
        return view

    return decorator


def required_scope() -> str:
    """The scope this request needs: the endpoint's mark (review, admin), else read for
    GET/HEAD/OPTIONS and write for everything else."""
    view = current_app.view_functions.get(request.endpoint or "")
    marked = getattr(view, "api_scope", None)
    if marked:
        return str(marked)
    return "read" if request.method in _SAFE_METHODS else "write"


@bp.before_request
def _authenticate() -> None:
    g.api_user = None
    g.api_token = None
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise Unauthorized("Send an API token: 'Authorization: Bearer <token>'.")
    use = token_for(header[7:].strip(), request.remote_addr)
    if use is None:
        raise Unauthorized("The token is invalid, expired, revoked, or its account is not "
                           "active.")
    scope = required_scope()
    # A scope the owner's role does not allow is refused by the role check itself (the
    # same answer as for any token of that user); this refuses what the token lacks.
    if scope not in use.token.scope_set and scope in allowed_scopes(use.user):
        raise ApiForbidden(f"This token does not have the {scope!r} scope "
                           f"(it has: {', '.join(sorted(use.token.scope_set))}).",
                           code="insufficient_scope")
    g.api_user = use.user
    g.api_token = use.token


# One budget per token (or address) for the whole API, not one per endpoint.
limiter.shared_limit(lambda: state.settings().api_limit, scope="api",
                     key_func=_rate_key)(bp)

NUL_MESSAGE = "The request contains a NUL character, which Enclave does not accept."


@bp.before_request
def _refuse_nul_characters() -> None:
    """PostgreSQL text cannot hold NUL: a path with one names nothing (404), a query
    string or JSON body with one is refused (400) before any query runs."""
    if "\x00" in request.path:
        raise NotFound()
    # (an upload's ?filename= is cleaned of control characters by the attachment service)
    if any("\x00" in k or ("\x00" in v and k != "filename")
           for k, v in request.args.items(multi=True)):
        raise ServiceError(NUL_MESSAGE, code="nul_character")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def api_user() -> User:
    user = g.get("api_user")
    if user is None:  # pragma: no cover - _authenticate guarantees it
        raise Unauthorized("Not authenticated.")
    return user


def require_role(role: Role) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = api_user()
            if not access.in_good_standing(user) or not user.has_role(role):
                raise ApiForbidden("Your role does not allow this.")
            return view(*args, **kwargs)

        if role in _ROLE_SCOPE:
            wrapper.api_scope = _ROLE_SCOPE[role]  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator


def _caused_by_depth(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, TooDeep):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def json_body() -> dict[str, Any]:
    try:
        data = request.get_json(silent=False)
    except RequestEntityTooLarge:
        raise  # the 413 as it is: "too large", not "bad JSON"
    except HTTPException as exc:  # malformed, not JSON (400/415), or nested too deeply
        if _caused_by_depth(exc):
            raise ServiceError(f"The JSON body is nested too deeply (at most {MAX_DEPTH} "
                               "levels).", code="bad_json") from None
        data = None
    if not isinstance(data, dict):
        raise ServiceError("Send a JSON object with Content-Type: application/json.",
                           code="bad_json")
    if _has_nul(data):
        raise ServiceError(NUL_MESSAGE, code="nul_character")
    return data


def field(data: dict[str, Any], name: str, kind: type = str, *, required: bool = True,
          default: Any = None) -> Any:
    if name not in data or data[name] is None:
        if required:
            raise ServiceError(f"'{name}' is required.", code="missing_field", field=name)
        return default
    value = data[name]
    if kind is str and not isinstance(value, str):
        raise ServiceError(f"'{name}' must be a string.", code="bad_field", field=name)
    if kind is list and not isinstance(value, list):
        raise ServiceError(f"'{name}' must be a list.", code="bad_field", field=name)
    if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise ServiceError(f"'{name}' must be an integer.", code="bad_field", field=name)
    if kind is dict and not isinstance(value, dict):
        raise ServiceError(f"'{name}' must be an object.", code="bad_field", field=name)
    return value


def idempotency_key() -> str | None:
    """The optional ``Idempotency-Key`` header of a create call: the same key twice (per
    user, kept a day) creates one thing; the repeat answers 200 with it (see
    :func:`replayed`). 400 bad_idempotency_key when malformed."""
    from app.submissions.service import check_key

    return check_key(request.headers.get("Idempotency-Key"))


def replayed(body: dict[str, Any]) -> Any:
    """The answer to a repeated ``Idempotency-Key``: what the first call created, 200,
    marked with ``Idempotent-Replayed: true``."""
    return body, 200, {"Idempotent-Replayed": "true"}


def page_json(page: Page, render: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    return {"items": [render(i) for i in page.items], "page": page.page,
            "pages": page.pages, "per_page": page.per_page, "total": page.total}


# routes register on import
from app.api import (  # noqa: E402,F401
    attachments,
    core,
    findings,
    identity,
    openapi,
    review,
    traceability,
)
