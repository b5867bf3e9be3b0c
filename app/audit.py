"""Append-only, hash-chained audit log.

Each entry stores the hash of the previous one and its own hash over a canonical
JSON form of its fields, so editing, deleting or reordering any row breaks the chain
from that row on. ``seq`` is unique and gapless, so two writers cannot fork the chain:
on PostgreSQL an advisory lock serializes appends, on SQLite the write lock does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, select, text
from sqlalchemy.orm import Mapped, mapped_column

from app.context import client_ip
from app.db import Base, SessionFactory, db, utcnow

GENESIS = "0" * 64
_ADVISORY_LOCK_ID = 0x454E434C  # "ENCL"


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"),
                                                 index=True)
    actor: Mapped[str] = mapped_column(String(254), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32), default="")
    target_id: Mapped[str] = mapped_column(String(64), default="")
    details: Mapped[str] = mapped_column(Text, default="{}")
    ip: Mapped[str] = mapped_column(String(64), default="")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    @property
    def details_dict(self) -> dict[str, Any]:
        return json.loads(self.details or "{}")


#: Detail fields that are content (an attachment's file name): the audit log shows them
#: only to an administrator who may read the finding they belong to.
CONTENT_DETAILS = ("filename",)
WITHHELD = "(withheld: a finding you cannot read)"


def shown_details(viewer: Any, entry: AuditEntry) -> dict[str, Any]:
    """``entry``'s details as ``viewer`` may see them. The stored entry (and so the hash
    chain) is unchanged; only the display withholds content above the viewer's access."""
    details = entry.details_dict
    if not any(key in details for key in CONTENT_DETAILS):
        return details
    from app import access
    from app.findings.models import Finding

    raw = str(details.get("finding_id", ""))
    finding = db.get(Finding, int(raw)) if raw.isascii() and raw.isdigit() else None
    if finding is not None and access.can_read(viewer, finding):
        return details
    return {k: WITHHELD if k in CONTENT_DETAILS else v for k, v in details.items()}


def _digest(entry: AuditEntry) -> str:
    canonical = json.dumps(
        {
            "seq": entry.seq,
            "created_at": entry.created_at.isoformat(timespec="microseconds"),
            "actor_id": entry.actor_id,
            "actor": entry.actor,
            "action": entry.action,
            "target_type": entry.target_type,
            "target_id": entry.target_id,
            "details": entry.details,
            "ip": entry.ip,
            "prev_hash": entry.prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def record(
    action: str,
    *,
    actor: Any = None,
    target_type: str = "",
    target_id: object = "",
    ip: str | None = None,
    **details: Any,
) -> AuditEntry:
    """Append an entry in the caller's transaction (committed with the change it logs)."""
    target = str(target_id) if target_id is not None else ""
    if len(target) > 64:  # a long id (a path, say) is kept whole in the details
        details.setdefault("target", target)
        target = target[:61] + "..."
    session = db()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK_ID})
    last = session.execute(
        select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
    ).first()
    entry = AuditEntry(
        seq=(last.seq + 1) if last else 1,
        created_at=utcnow(),
        actor_id=getattr(actor, "id", None),
        actor=(getattr(actor, "email", "") or (actor if isinstance(actor, str) else ""))[:254],
        action=action[:64],
        target_type=target_type[:32],
        target_id=target,
        details=json.dumps(details, sort_keys=True, default=str),
        ip=ip if ip is not None else client_ip.get(),
        prev_hash=last.hash if last else GENESIS,
    )
    entry.hash = _digest(entry)
    session.add(entry)
    session.flush()
    return entry


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str = ""


def verify_chain(batch: int = 1000) -> VerifyResult:
    """Walk the log in order; report the first entry whose link or hash is wrong."""
    with SessionFactory() as session:
        return _verify(session, batch)


def _verify(session: Any, batch: int) -> VerifyResult:
    prev_hash = GENESIS
    expected_seq = 1
    checked = 0
    last_seq = 0
    while True:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.seq > last_seq).order_by(AuditEntry.seq)
            .limit(batch)
        ).all()
        if not rows:
            return VerifyResult(ok=True, checked=checked)
        for entry in rows:
            if entry.seq != expected_seq:
                return VerifyResult(False, checked, expected_seq,
                                    f"entry #{expected_seq} is missing")
            if not hmac.compare_digest(entry.prev_hash, prev_hash):
                return VerifyResult(False, checked, entry.seq,
                                    f"entry #{entry.seq} does not link to the previous entry")
            if not hmac.compare_digest(_digest(entry), entry.hash):
                return VerifyResult(False, checked, entry.seq,
                                    f"entry #{entry.seq} ({entry.action}) was altered")
            prev_hash = entry.hash
            expected_seq += 1
            checked += 1
            last_seq = entry.seq
        session.expunge_all()
