"""The pin an actor saw: a request's content SHA-256 and review round.

Every review, escalation, reopening and release names the version it is about. The
service compares it with the request's current pin under the request's lock and refuses
a mismatch with :class:`StalePin` (409) before anything is written, so an action taken
on an old page never counts for content the actor did not see.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.errors import Conflict, ServiceError

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Pin:
    content_sha256: str
    round: int

    def as_dict(self) -> dict[str, Any]:
        return {"content_sha256": self.content_sha256, "round": self.round}


class StalePin(Conflict):
    """The request changed since the actor read it: nothing was recorded."""

    code = "stale_pin"

    def __init__(self, seen: Pin, current: Pin, request_id: int):
        if seen.round != current.round:
            what = (f"you read round {seen.round}, it is now in round {current.round}"
                    if current.round > seen.round else
                    f"you named round {seen.round}, it is in round {current.round}")
        else:
            what = "its pinned content is not the version you read"
        super().__init__(f"This request changed since you opened it ({what}). Nothing was "
                         "recorded: read the current version and decide again.")
        self.seen, self.current, self.request_id = seen, current, request_id
        self.extra: dict[str, Any] = {"seen": seen.as_dict(), "current": current.as_dict()}


def parse(content_sha256: Any, round_: Any) -> Pin:
    """The pin from a form or a JSON body: a 64-digit lowercase hex SHA-256 and a round
    (a positive whole number, or its decimal digits from a form). 400 when missing or
    malformed."""
    if content_sha256 is None or content_sha256 == "":
        raise ServiceError("Say which version you read: 'content_sha256' and 'round' of the "
                           "request are required.", code="pin_required",
                           field="content_sha256")
    if not isinstance(content_sha256, str) or not _HEX64.fullmatch(content_sha256):
        raise ServiceError("'content_sha256' is the request's 64-digit hexadecimal pin.",
                           code="bad_pin", field="content_sha256")
    if round_ is None or round_ == "":
        raise ServiceError("Say which version you read: 'round' is required.",
                           code="pin_required", field="round")
    if isinstance(round_, str) and round_.isascii() and round_.isdigit() and len(round_) < 10:
        round_ = int(round_)
    if not isinstance(round_, int) or isinstance(round_, bool) or round_ < 1:
        raise ServiceError("'round' is the request's review round, a whole number from 1.",
                           code="bad_pin", field="round")
    return Pin(content_sha256, round_)


def current(req: Any) -> Pin:
    return Pin(req.content_sha256, req.round)


Seen = Pin | Mapping[str, Any]


def check(req: Any, seen: Seen) -> None:
    """Refuse (409) unless ``seen`` is ``req``'s current pin. Call under the request's
    lock, after the permission checks (an excluded reviewer hears why, not about pins),
    before writing anything. ``seen`` may be the raw fields of a form or JSON body
    (``content_sha256``, ``round``), parsed here (400 when missing or malformed)."""
    if not isinstance(seen, Pin):
        seen = parse(seen.get("content_sha256"), seen.get("round"))
    now = current(req)
    if seen != now:
        raise StalePin(seen, now, req.id)
