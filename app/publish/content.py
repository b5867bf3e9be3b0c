"""The public version of a finding, as a publication request proposes it: validation of
the title, body, chosen attachments and embargo, and the pin over them."""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from app import state, visibility
from app.attachments import service as attachments
from app.db import utcnow
from app.errors import ServiceError
from app.findings.models import Finding
from app.publish.pin import PinnedFile, pin
from app.review.text import clean_text

TITLE_MAX = 300
MAX_FILES = 50
DEFAULT_TZ = "UTC"


@dataclass(frozen=True)
class PublicVersion:
    title: str
    body: str
    files: tuple[tuple[PinnedFile, str], ...]  # (pinned facts, content type)
    embargo_until: datetime | None
    embargo_tz: str


def check_title(title: object) -> str:
    text = " ".join(clean_text(title, "public_title", limit=TITLE_MAX * 2,
                               empty="Give the public version a title.").split())
    if len(text) > TITLE_MAX:
        raise ServiceError(f"A public title has at most {TITLE_MAX} characters.",
                           code="too_long", field="public_title")
    return text


def check_body(body: object) -> str:
    limit = state.settings().max_body_chars
    return clean_text(body, "public_body", limit=limit,
                      empty="Write the public text (it may be less specific than the "
                            "internal one).")


def check_files(finding: Finding, attachment_ids: object) -> tuple[tuple[PinnedFile, str], ...]:
    """The chosen attachments: each must be a live attachment of ``finding``."""
    if attachment_ids is None:
        return ()
    if not isinstance(attachment_ids, list | tuple) or not all(
            isinstance(i, str) for i in attachment_ids):
        raise ServiceError("'attachments' is a list of attachment ids.", code="bad_field",
                           field="attachments")
    wanted = sorted({i.strip() for i in attachment_ids if i.strip()})
    if len(wanted) > MAX_FILES:
        raise ServiceError(f"A public version includes at most {MAX_FILES} files.",
                           code="too_many_files", field="attachments")
    if not wanted:
        return ()
    chosen = []
    # ids in the body go through the visibility gate: anything but a live file of this
    # finding is unknown, with one message (never a file name, never "exists elsewhere")
    for att in visibility.attachments_of(finding, wanted):
        digest = attachments.sha256_of(att)
        if not digest:
            raise ServiceError(f"The attachment {att.filename!r} cannot be verified; it "
                               "cannot be published.", code="unverifiable_attachment",
                               field="attachments")
        chosen.append((PinnedFile(att.id, att.filename, att.size, digest), att.content_type))
    return tuple(chosen)


def check_tz(name: object) -> str:
    if name is not None and not isinstance(name, str):
        raise ServiceError("'embargo_tz' must be text.", code="bad_field", field="embargo_tz")
    name = (name or "").strip() or DEFAULT_TZ
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ServiceError(f"Unknown time zone {name!r}; use a name like Europe/Berlin or "
                           "UTC.", code="unknown_timezone", field="embargo_tz") from None
    return name


def parse_embargo(value: object, tz_name: object = None) -> tuple[datetime | None, str]:
    """An embargo given as ISO 8601 text (or a datetime): with an offset it is taken as
    is, without one it is read in ``tz_name``. Returns (UTC datetime or None, zone name).
    Seconds are kept, microseconds dropped."""
    tz = check_tz(tz_name)
    if value in (None, ""):
        return None, tz
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ServiceError(f"The embargo {value!r} is not a date and time; write it like "
                               "2030-05-01T09:00 (with a time zone) or "
                               "2030-05-01T09:00:00+02:00.", code="bad_embargo",
                               field="embargo_until") from None
    else:
        raise ServiceError("'embargo_until' must be text.", code="bad_field",
                           field="embargo_until")
    if when.tzinfo is None:
        when = when.replace(tzinfo=zoneinfo.ZoneInfo(tz))
    return when.astimezone(UTC).replace(microsecond=0), tz


def check_embargo(when: datetime | None) -> None:
    if when is not None and when <= utcnow():
        raise ServiceError("The embargo is in the past; leave it empty to allow release as "
                           "soon as the request is approved.", code="embargo_past",
                           field="embargo_until")


def format_embargo(when: datetime | None, tz_name: str) -> str:
    """E.g. ``2030-05-01 09:00 CEST (Europe/Berlin, UTC+02:00)``."""
    if when is None:
        return ""
    try:
        zone = zoneinfo.ZoneInfo(tz_name or DEFAULT_TZ)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = zoneinfo.ZoneInfo(DEFAULT_TZ)
        tz_name = DEFAULT_TZ
    local = when.astimezone(zone)
    offset = local.strftime("%z")
    offset = f"UTC{offset[:3]}:{offset[3:]}" if offset else "UTC"
    if tz_name == "UTC":
        return f"{local:%Y-%m-%d %H:%M} UTC"
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({tz_name}, {offset})"


def request_pin(*, kind: str, finding_id: int, title: str, body: str,
                files: Sequence[PinnedFile], embargo_until: datetime | None,
                from_level: str, target_level: str) -> str:
    return pin(kind=kind, finding_id=finding_id, public_title=title, public_body=body,
               files=list(files), embargo_until=embargo_until, from_level=from_level,
               target_level=target_level)


def common_timezones() -> list[str]:
    """Zone names for the embargo form (UTC first)."""
    names = sorted(n for n in zoneinfo.available_timezones()
                   if "/" in n and not n.startswith(("Etc/", "SystemV/", "posix/", "right/")))
    return ["UTC", *names]
