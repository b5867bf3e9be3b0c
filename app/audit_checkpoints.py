"""Signed checkpoints of the audit chain's head.

A checkpoint states "the log's entry #N has hash H", signed with the keyring's Ed25519
key. It is appended to a file (``ENCLAVE_AUDIT_CHECKPOINT_FILE``, one JSON object per
line, mode 0600) and written to the JSON log, so that an outside witness (a log
collector, a copy on another machine) keeps it. ``enclave audit verify --checkpoints
FILE`` checks each one: the signature, and that the log still has that entry with that
hash. This catches what a hash chain alone cannot: entries cut off the end, or a whole
log replaced by someone who holds the keyring's chain key but not the witness's copies.

Checkpoints are made every ``ENCLAVE_AUDIT_CHECKPOINT_EVERY`` entries (after the
transaction that wrote that entry commits, so no checkpoint names an entry that was
rolled back) and on ``enclave audit checkpoint``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.audit import AuditEntry

log = logging.getLogger("enclave.audit")

TYPE = "enclave-audit-checkpoint"
VERSION = 1
_PENDING = "enclave.audit_checkpoints"
_SIGNED = ("type", "version", "seq", "hash", "created_at", "public_key")


class CheckpointError(Exception):
    """A checkpoint file that cannot be read."""


def _payload(cp: dict[str, Any]) -> bytes:
    return json.dumps({k: cp.get(k) for k in _SIGNED}, sort_keys=True,
                      separators=(",", ":")).encode()


def sign(seq: int, hash_: str) -> dict[str, Any]:
    """A checkpoint of entry ``seq`` with hash ``hash_``, signed with the keyring's key."""
    from app import state

    ring = state.keyring()
    cp: dict[str, Any] = {
        "type": TYPE, "version": VERSION, "seq": int(seq), "hash": hash_,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "public_key": ring.signing_public_key_b64(),
    }
    cp["signature"] = base64.b64encode(ring.signing_key().sign(_payload(cp))).decode()
    return cp


def default_path() -> Path:
    from app import state

    return Path(state.settings().audit_checkpoint_file)


def write(cp: dict[str, Any], path: Path | None = None) -> Path:
    """Append ``cp`` to the checkpoint file (created 0600, synced) and the log."""
    path = path or default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(cp, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("audit checkpoint: entry #%s %s", cp["seq"], cp["hash"],
             extra={"audit_checkpoint": cp})
    return path


def checkpoint_now(session: Session, path: Path | None = None) -> tuple[dict[str, Any], Path]:
    """``enclave audit checkpoint``: log that a checkpoint is made, commit, then sign the
    head (that entry) and write it."""
    from app import audit

    audit.record("audit_checkpoint", actor="cli", target_type="audit_log")
    session.commit()
    head = session.execute(select(AuditEntry.seq, AuditEntry.hash)
                           .order_by(AuditEntry.seq.desc()).limit(1)).one()
    cp = sign(head.seq, head.hash)
    return cp, write(cp, path)


def load(path: Path) -> list[dict[str, Any]]:
    out = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            cp = json.loads(line)
        except ValueError:
            raise CheckpointError(f"{path.name} line {number} is not JSON") from None
        if not isinstance(cp, dict) or cp.get("type") != TYPE:
            raise CheckpointError(f"{path.name} line {number} is not an audit checkpoint")
        cp["_where"] = f"{path.name} line {number}"
        out.append(cp)
    return out


@dataclass
class CheckpointResult:
    ok: bool
    checked: int
    reason: str = ""
    newest_seq: int = 0


def verify_checkpoints(checkpoints: Iterable[dict[str, Any]],
                       session: Session | None = None) -> CheckpointResult:
    """Each checkpoint is signed by this keyring's key and names an entry the log still
    has, with the same hash."""
    from app import state
    from app.db import SessionFactory

    public_b64 = state.keyring().signing_public_key_b64()
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64))
    own = session is None
    session = session or SessionFactory()
    checked = newest = 0
    try:
        for cp in checkpoints:
            where = cp.get("_where", f"checkpoint {checked + 1}")
            seq = cp.get("seq")
            if cp.get("public_key") != public_b64:
                return CheckpointResult(False, checked, f"{where}: signed by another key "
                                        "than this keyring's")
            try:
                signature = base64.b64decode(str(cp.get("signature", "")), validate=True)
                public.verify(signature, _payload(cp))
            except (InvalidSignature, ValueError):
                return CheckpointResult(False, checked,
                                        f"{where}: the signature does not verify")
            stored = session.scalar(select(AuditEntry.hash).where(AuditEntry.seq == seq))
            if stored is None:
                return CheckpointResult(False, checked, f"{where}: the log has no entry "
                                        f"#{seq} (entries were removed from the end)")
            if stored != cp.get("hash"):
                return CheckpointResult(False, checked, f"{where}: entry #{seq} is not the "
                                        "entry that was signed (the log was rewritten)")
            checked += 1
            newest = max(newest, int(seq))
    finally:
        if own:
            session.close()
    return CheckpointResult(True, checked, newest_seq=newest)


# ------------------------------------------------------------------ at intervals


def due(session: Session, entry: AuditEntry) -> None:
    """Called by ``audit.record``: when ``entry`` falls on the interval, sign it once the
    transaction that wrote it commits."""
    from app import state

    every = state.settings().audit_checkpoint_every
    if every and entry.seq % every == 0:
        session.info.setdefault(_PENDING, []).append((entry.seq, entry.hash))


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    from flask import has_app_context

    if not has_app_context():  # pragma: no cover - appends outside the app are rare
        log.warning("audit checkpoint of entry #%s skipped: no keyring here", pending[-1][0])
        return
    for seq, hash_ in pending:
        try:
            write(sign(seq, hash_))
        except OSError as exc:
            log.error("audit checkpoint of entry #%s not written: %s", seq, exc)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)
