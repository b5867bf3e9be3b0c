"""The audit log as one reader may see it (the admin page and ``GET /api/v1/admin/audit``).

Every entry is listed to every administrator, with its number, time, action, target type
and id, the actor's user id and the hashes that chain it. What an entry says *about a
finding* - free text (titles, file names, reasons, notes, comments, sealed under the
finding's level, see ``app.audit``), the people involved (the actor's address), the
address it came from, and any detail not on the short list of ids, levels, states and
sizes below - is shown only to a reader who may read that finding now (``access``). The
entry's finding is found from its details or its target (a finding, reply, attachment,
copy, review request or flag). An entry about a finding that no longer exists is shown
like one about a finding the reader cannot read.

The stored entry and its hash chain are never changed; this only decides what is shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app import access
from app.audit import WITHHELD, AuditEntry, finding_key
from app.db import db

#: Details of an entry about a finding the reader cannot read that are still shown:
#: ids, levels, states, sizes and counts - never text somebody wrote, names or hashes.
STRUCTURAL_DETAILS = frozenset({
    "finding_id", "finding", "attachment_id", "comment_id", "review_id", "escalation_id",
    "copy_id", "level", "old_level", "new_level", "from_level", "target_level",
    "suggested_level", "old", "new", "category", "kind", "outcome", "decision", "risk",
    "round", "state", "old_state", "new_state", "role", "via", "size", "range", "count",
    "rewrapped", "kek_version", "approvals", "blocking", "reviews",
})
WITHHELD_ACTOR = "(withheld)"


@dataclass
class ShownEntry:
    """An audit entry as the reader may see it (same attribute names as ``AuditEntry``)."""

    seq: int
    created_at: datetime
    actor: str
    actor_id: int | None
    action: str
    target_type: str
    target_id: str
    ip: str
    prev_hash: str
    hash: str
    details: dict[str, Any] = field(default_factory=dict)
    withheld: bool = False  # about a finding the reader cannot read

    @property
    def details_text(self) -> str:
        return json.dumps(self.details, sort_keys=True, default=str)


def finding_of(entry: AuditEntry) -> int | None:
    """The id of the finding ``entry`` is about, or None (a user, an organization, ...)."""
    fid = finding_key(entry.details_dict)
    if fid is not None:
        return fid
    target = entry.target_id or ""
    if not target.isascii() or not target:
        return None
    from app.attachments.models import Attachment
    from app.findings.models import Reply
    from app.review.models import Flag, ReviewRequest

    kind = entry.target_type
    if kind == "finding" and target.isdigit():
        return int(target)
    models: dict[str, Any] = {"reply": Reply, "review_request": ReviewRequest,
                              "review_flag": Flag}
    if kind in models and target.isdigit():
        row = db.get(models[kind], int(target))
        return row.finding_id if row is not None else -1
    if kind == "attachment":
        att = db.get(Attachment, target)
        return att.finding_id if att is not None else -1
    if kind == "attachment_copy" and target.isdigit():
        from app.traceability.models import AttachmentCopy

        copy = db.get(AttachmentCopy, int(target))
        if copy is None:
            return -1
        att = db.get(Attachment, copy.attachment_id)
        return att.finding_id if att is not None else -1
    return None


def _readable(viewer: Any, finding_id: int, cache: dict[int, bool]) -> bool:
    if finding_id not in cache:
        from app.findings.models import Finding

        finding = db.get(Finding, finding_id) if finding_id > 0 else None
        cache[finding_id] = finding is not None and access.can_read(viewer, finding)
    return cache[finding_id]


def shown(viewer: Any, entry: AuditEntry, cache: dict[int, bool] | None = None) -> ShownEntry:
    """``entry`` as ``viewer`` may see it. ``cache`` remembers readability per finding
    across the entries of one page."""
    cache = {} if cache is None else cache
    fid = finding_of(entry)
    base = dict(seq=entry.seq, created_at=entry.created_at, actor_id=entry.actor_id,
                action=entry.action, target_type=entry.target_type,
                target_id=entry.target_id, prev_hash=entry.prev_hash, hash=entry.hash)
    details = entry.details_dict
    if fid is None or _readable(viewer, fid, cache):
        content = entry.content_dict  # the sealed free text, opened
        opened = {k: content.get(k, v) for k, v in details.items()}
        return ShownEntry(actor=entry.actor, ip=entry.ip, details=opened, **base)
    people = entry.actor_id is not None or "@" in (entry.actor or "")
    actor = (f"user #{entry.actor_id}" if entry.actor_id is not None else WITHHELD_ACTOR) \
        if people else entry.actor
    kept = {k: (v if k in STRUCTURAL_DETAILS else WITHHELD) for k, v in details.items()}
    return ShownEntry(actor=actor, ip="", details=kept, withheld=True, **base)


def shown_page(viewer: Any, entries: list[AuditEntry]) -> list[ShownEntry]:
    cache: dict[int, bool] = {}
    return [shown(viewer, e, cache) for e in entries]
