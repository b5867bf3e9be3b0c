"""Append-only, hash-chained audit log, keyed with a secret that is not in the database.

Each entry stores the hash of the previous one and its own HMAC-SHA256, under a key
derived from the keyring's app secret, over a canonical JSON form of its fields, so
editing, deleting or reordering any row breaks the chain from that row on, and someone
who can write to the database but does not hold the keyring cannot rebuild a chain that
verifies. What the chain cannot show by itself (entries cut off the end) the signed
checkpoints in ``app.audit_checkpoints`` show.

Entries written before the chain was keyed (``scheme`` ``sha256``: plain SHA-256) are
accepted only as the oldest part of the log, followed by at least one keyed entry,
whose link covers the last of them: a log with no keyed entry, or a plain entry after a
keyed one, does not verify (see docs/decisions.md, "Audit log").

``seq`` is unique and gapless, so two writers cannot fork the chain: on PostgreSQL an
advisory lock serializes appends, on SQLite ``BEGIN IMMEDIATE`` (the write lock taken
before the last entry is read) does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import has_app_context
from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text, select, text
from sqlalchemy.orm import Mapped, mapped_column

from app.context import client_ip
from app.db import Base, SessionFactory, db, serialize_writes, utcnow
from app.sealing import LevelLookup, Sealed, sealed_text

GENESIS = "0" * 64
KEYED = "hmac-sha256"
LEGACY = "sha256"  # entries from before the chain was keyed
_ADVISORY_LOCK_ID = 0x454E434C  # "ENCL"


class AuditEntry(Base, Sealed):
    """One event. Free text about a finding (a file name, a reason, a note) is not in
    ``details``: it is sealed in ``content`` under the finding's level at the time, and
    ``details`` keeps a keyed commitment to it (``sealed:<hmac>``), which the hash chain
    covers, so rotating keys never changes a chained field."""

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
    #: how ``hash`` is made: ``hmac-sha256`` (keyed), or ``sha256`` for entries written
    #: before the chain was keyed
    scheme: Mapped[str] = mapped_column(String(16), default=KEYED, server_default=LEGACY)
    content_level: Mapped[str | None] = mapped_column(String(64))
    content_sealed: Mapped[bytes | None] = mapped_column("content", LargeBinary)

    content = sealed_text("content_sealed")  # JSON of the sealed detail fields

    def sealed_level(self, lookup: LevelLookup, field: str) -> str:
        return self.content_level or ""

    @classmethod
    def sealed_scope(cls, finding_id: int) -> Any:
        return None  # kept under the level at the time of the event

    @property
    def details_dict(self) -> dict[str, Any]:
        return json.loads(self.details or "{}")

    def detail(self, key: str) -> Any:
        """One detail, opened from the sealed content when it was sealed (for an
        administrator's tools and tests; pages go through ``app.audit_view``)."""
        content = self.content_dict
        return content[key] if key in content else self.details_dict.get(key)

    @property
    def content_dict(self) -> dict[str, Any]:
        """The sealed detail fields, opened (an empty dict when there are none)."""
        if not self.content_sealed:
            return {}
        return json.loads(self.content or "{}")


#: Detail fields that are free text about a finding (a file name, a reason, a note):
#: sealed under the finding's level; ``app.audit_view`` shows them (and the people and
#: addresses of the entry) only to someone who may read the finding.
CONTENT_DETAILS = ("filename", "reason", "note", "comment", "title")
WITHHELD = "(withheld: a finding you cannot read)"
_SEALED_PREFIX = "sealed:"


def finding_key(details: dict[str, Any]) -> int | None:
    """The finding id named in an entry's details (``finding_id`` or ``finding``)."""
    for key in ("finding_id", "finding"):
        raw = str(details.get(key, ""))
        if raw.isascii() and raw.isdigit():
            return int(raw)
    return None


def _seal_content(entry: AuditEntry, details: dict[str, Any]) -> dict[str, Any]:
    """Move the free text of a finding's event out of ``details`` into sealed content;
    ``details`` keeps a keyed commitment (HMAC under the app key) in its place."""
    fid = finding_key(details)
    content = {k: details[k] for k in CONTENT_DETAILS if k in details and details[k]}
    if fid is None or not content or not has_app_context():
        # no keyring outside the app: only system text is recorded there (a download's
        # integrity failure, reported from the response iterator after the request)
        return details
    from app import sealing, state

    entry.content_level = sealing.LevelLookup(db()).finding(fid)
    entry.content = json.dumps(content, sort_keys=True, default=str)
    key = state.keyring().app_key()
    out = dict(details)
    for k, v in content.items():
        mac = hmac.new(key, f"audit:{entry.seq}:{k}:{v}".encode(), hashlib.sha256)
        out[k] = _SEALED_PREFIX + mac.hexdigest()[:32]
    return out


#: the chain key last derived for each engine, for appends made outside an app context
#: (a download's integrity failure reported from the response iterator after the request)
_KEYS_BY_ENGINE: dict[int, bytes] = {}


def chain_key(session: Any = None) -> bytes:
    """The chain's HMAC key: derived from the keyring's app secret (HKDF, its own
    label), so it lives wherever the keyring does, never in the database."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from app import state

    bind = (session if session is not None else db()).get_bind()
    if not has_app_context():
        try:
            return _KEYS_BY_ENGINE[id(bind)]
        except KeyError:
            raise RuntimeError("the audit chain key needs the app (its keyring)") from None
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"enclave/audit-chain/v1").derive(state.keyring().app_key())
    _KEYS_BY_ENGINE[id(bind)] = key
    return key


def _digest(entry: AuditEntry, key: bytes | None = None) -> str:
    """The entry's hash under its scheme (``key``: :func:`chain_key`, looked up when not
    given)."""
    fields = {
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
    }
    if entry.scheme == LEGACY:
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
    canonical = json.dumps({**fields, "scheme": entry.scheme}, sort_keys=True,
                           separators=(",", ":"))
    return hmac.new(key if key is not None else chain_key(), canonical.encode(),
                    hashlib.sha256).hexdigest()


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
    else:  # SQLite: the write lock before reading the last entry
        serialize_writes(session)
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
        ip=ip if ip is not None else client_ip.get(),
        prev_hash=last.hash if last else GENESIS,
    )
    entry.details = json.dumps(_seal_content(entry, details), sort_keys=True, default=str)
    entry.scheme = KEYED
    entry.hash = _digest(entry, chain_key(session))
    session.add(entry)
    session.flush()
    if has_app_context():
        from app import audit_checkpoints

        audit_checkpoints.due(session, entry)
    return entry


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str = ""
    #: entries from before the chain was keyed (a verified prefix)
    legacy: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS


def verify_chain(batch: int = 1000) -> VerifyResult:
    """Walk the log in order; report the first entry whose link or hash is wrong."""
    with SessionFactory() as session:
        return _verify(session, batch)


def _verify(session: Any, batch: int) -> VerifyResult:
    key = chain_key(session)
    prev_hash = GENESIS
    expected_seq = 1
    checked = legacy = 0
    last_seq = 0
    while True:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.seq > last_seq).order_by(AuditEntry.seq)
            .limit(batch)
        ).all()
        if not rows:
            break
        for entry in rows:
            if entry.seq != expected_seq:
                return VerifyResult(False, checked, expected_seq,
                                    f"entry #{expected_seq} is missing", legacy)
            if entry.scheme == LEGACY and legacy < checked:
                return VerifyResult(False, checked, entry.seq,
                                    f"entry #{entry.seq} is not keyed, after keyed entries",
                                    legacy)
            if entry.scheme not in (LEGACY, KEYED):
                return VerifyResult(False, checked, entry.seq,
                                    f"entry #{entry.seq} names an unknown scheme", legacy)
            if not hmac.compare_digest(entry.prev_hash, prev_hash):
                return VerifyResult(False, checked, entry.seq,
                                    f"entry #{entry.seq} does not link to the previous entry",
                                    legacy)
            if not hmac.compare_digest(_digest(entry, key), entry.hash):
                return VerifyResult(False, checked, entry.seq,
                                    f"entry #{entry.seq} ({entry.action}) was altered", legacy)
            legacy += entry.scheme == LEGACY
            prev_hash = entry.hash
            expected_seq += 1
            checked += 1
            last_seq = entry.seq
        session.expunge_all()
    if checked and legacy == checked:
        return VerifyResult(False, checked, checked,
                            f"no entry is keyed: all {checked} were written without the "
                            "audit key (before the upgrade that keyed the chain, or rebuilt "
                            "by someone without the keyring); `enclave init` writes the "
                            "first keyed entry after an upgrade", legacy)
    return VerifyResult(True, checked, None, "", legacy, last_seq, prev_hash)


def ensure_keyed_head() -> int:
    """After an upgrade (``enclave init``): when the newest entry predates the keyed
    chain, append a keyed entry, whose link vouches for all of them. Returns the number
    of such older entries (0 when there was nothing to do)."""
    session = db()
    last = session.execute(select(AuditEntry.seq, AuditEntry.scheme)
                           .order_by(AuditEntry.seq.desc()).limit(1)).first()
    if last is None or last.scheme != LEGACY:
        return 0
    record("audit_chain_keyed", actor="cli", target_type="audit_log",
           legacy_entries=last.seq)
    session.commit()
    return int(last.seq)
