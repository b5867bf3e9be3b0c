"""Validation of free text in review forms and requests."""

from __future__ import annotations

from app.errors import ServiceError


def normalize(text: str | None) -> str:
    """Strip NUL characters (PostgreSQL refuses them) and normalise newlines."""
    return (text or "").replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")


def clean_text(value: object, field: str, *, limit: int, required: bool = True,
               empty: str | None = None) -> str:
    """``value`` as stripped text of at most ``limit`` characters; refused when required
    and blank (with ``empty`` as the message)."""
    if value is not None and not isinstance(value, str):
        raise ServiceError(f"'{field}' must be text.", code="bad_field", field=field)
    text = normalize(value).strip()
    if required and not text:
        raise ServiceError(empty or f"'{field}' is required.", code="missing_field",
                           field=field)
    if len(text) > limit:
        raise ServiceError(f"'{field}' has {len(text):,} characters; the maximum is "
                           f"{limit:,}.", code="too_long", field=field)
    return text
