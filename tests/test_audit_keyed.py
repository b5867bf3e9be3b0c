"""The audit chain is keyed with a secret from the keyring (not in the database), and
its head is signed with the keyring's Ed25519 key at intervals and on `enclave audit
checkpoint`: someone who can write to the database can no longer delete entries and
rebuild a chain that verifies (issue 12, item 5)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from app import audit, audit_checkpoints
from app.cli import enclave
from app.db import db


def _entries(n: int, action: str = "attachment_downloaded") -> None:
    for i in range(n):
        audit.record(action, actor="tester", target_type="attachment", target_id=i, n=i)
    db.commit()


def _plain_digest(entry: audit.AuditEntry) -> str:
    """What the chain used to be: SHA-256 over the row's canonical JSON (no key)."""
    canonical = json.dumps({
        "seq": entry.seq, "created_at": entry.created_at.isoformat(timespec="microseconds"),
        "actor_id": entry.actor_id, "actor": entry.actor, "action": entry.action,
        "target_type": entry.target_type, "target_id": entry.target_id,
        "details": entry.details, "ip": entry.ip, "prev_hash": entry.prev_hash},
        sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _rebuild_without_the_key(session: Session, scheme: str | None) -> None:
    """The attack: delete the download entries, renumber, re-link and re-hash every row
    with everything the database holds (and, for ``scheme``, claim that scheme)."""
    session.execute(text("DELETE FROM audit_log WHERE action = 'attachment_downloaded'"))
    prev = audit.GENESIS
    rows = session.scalars(select(audit.AuditEntry).order_by(audit.AuditEntry.seq)).all()
    for seq, entry in enumerate(rows, start=1):
        entry.seq, entry.prev_hash = seq, prev
        if scheme is not None:
            entry.scheme = scheme
        entry.hash = prev = _plain_digest(entry)
        session.flush()


def test_a_chain_rebuilt_without_the_key_fails_verify(app, tmp_path):
    """Shown on a copy of the database: 20 download entries removed and the chain
    rebuilt; `enclave audit verify` must not say ok."""
    _entries(5, "user_login")
    _entries(20)
    _entries(5, "user_login")
    assert audit.verify_chain().ok
    engine = app.extensions["enclave.engine"]
    for scheme in (None, "sha256", "hmac-sha256"):
        if engine.dialect.name == "sqlite":
            db.remove()
            copy = tmp_path / f"copy-{scheme}.db"
            with sqlite3.connect(engine.url.database) as src, sqlite3.connect(copy) as dst:
                src.backup(dst)  # a consistent copy (WAL included)
            target = create_engine(f"sqlite:///{copy}")
        else:
            target = engine  # PostgreSQL: rebuild in a transaction and roll it back
        with target.connect() as conn:
            trans = conn.begin()
            with Session(bind=conn) as session:
                _rebuild_without_the_key(session, scheme)
                result = audit._verify(session, 1000)
            trans.rollback()
        assert not result.ok, scheme
        # a claimed keyed entry does not match its HMAC; a plain one after the rebuild
        # leaves no keyed entry at all
        assert ("altered" in result.reason if scheme != "sha256"
                else "no entry is keyed" in result.reason), result
    assert audit.verify_chain().ok  # the original is untouched


def test_checkpoints_are_signed_written_and_verified(app, tmp_path):
    runner = app.test_cli_runner()
    _entries(3, "user_login")
    file = tmp_path / "checkpoints.jsonl"
    r = runner.invoke(enclave, ["audit", "checkpoint", "--file", str(file)])
    assert r.exit_code == 0, r.output + r.stderr
    lines = file.read_text().splitlines()
    assert len(lines) == 1
    cp = json.loads(lines[0])
    assert cp["seq"] == 4 and cp["type"] == "enclave-audit-checkpoint"  # its own entry too
    assert cp["signature"] and cp["public_key"]
    assert oct(file.stat().st_mode & 0o777) == "0o600"
    _entries(2, "user_login")
    ok = runner.invoke(enclave, ["audit", "verify", "--checkpoints", str(file)])
    assert ok.exit_code == 0, ok.output + ok.stderr
    assert "1 checkpoint(s) ok" in ok.output

    # a forged checkpoint (another head, same signature) is refused
    forged = dict(cp, seq=5)
    bad_file = tmp_path / "forged.jsonl"
    bad_file.write_text(json.dumps(forged) + "\n")
    bad = runner.invoke(enclave, ["audit", "verify", "--checkpoints", str(bad_file)])
    assert bad.exit_code == 1 and "signature" in bad.stderr

    # entries cut off the end: the chain alone still links, the checkpoint does not
    _entries(1, "user_login")
    r = runner.invoke(enclave, ["audit", "checkpoint", "--file", str(file)])
    assert r.exit_code == 0
    last = json.loads(file.read_text().splitlines()[-1])
    with db.get_bind().begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq >= :s"), {"s": last["seq"] - 1})
    assert audit.verify_chain().ok
    cut = runner.invoke(enclave, ["audit", "verify", "--checkpoints", str(file)])
    assert cut.exit_code == 1 and f"#{last['seq']}" in cut.stderr


def test_checkpoints_at_intervals_go_to_the_file_and_the_log(app, caplog):
    settings = app.extensions["enclave.settings"]
    every, settings.audit_checkpoint_every = settings.audit_checkpoint_every, 4
    path = Path(settings.audit_checkpoint_file)
    try:
        before = path.read_text().splitlines() if path.exists() else []
        with caplog.at_level("INFO", logger="enclave"):
            _entries(9, "user_login")
        lines = path.read_text().splitlines()[len(before):]
        assert [json.loads(line)["seq"] for line in lines] == [4, 8]
        logged = [r for r in caplog.records if getattr(r, "audit_checkpoint", None)]
        assert [r.audit_checkpoint["seq"] for r in logged] == [4, 8]
        assert audit_checkpoints.verify_checkpoints([json.loads(line) for line in lines]).ok
        # a rolled-back transaction leaves no checkpoint behind
        for _ in range(3):
            audit.record("user_login", actor="tester")
        db.rollback()
        _entries(2, "user_login")
        # (entry #12 was rolled back: no checkpoint names it)
        assert len(path.read_text().splitlines()) == len(before) + 2
    finally:
        settings.audit_checkpoint_every = every


def test_entries_from_before_the_key_are_explicit(app):
    """Entries written before the chain was keyed (scheme sha256) verify as a prefix,
    vouched for by the first keyed entry's link; a chain with no keyed entry at all, or
    a plain entry after a keyed one, does not verify."""
    _entries(4, "user_login")
    rows = db.scalars(select(audit.AuditEntry).order_by(audit.AuditEntry.seq)).all()
    prev = audit.GENESIS
    for entry in rows[:3]:  # the first three as the old code wrote them
        entry.scheme, entry.prev_hash = "sha256", prev
        entry.hash = prev = _plain_digest(entry)
    # the fourth (keyed) entry links to the third's plain hash, as the app's first append
    # after the upgrade does
    rows[3].prev_hash = prev
    rows[3].hash = audit._digest(rows[3])
    db.commit()
    result = audit.verify_chain()
    assert result.ok and result.checked == 4 and result.legacy == 3
    with db.get_bind().begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 4"))
    result = audit.verify_chain()
    assert not result.ok and "keyed" in result.reason


def test_init_after_the_upgrade_appends_the_first_keyed_entry(app):
    _entries(3, "user_login")
    prev = audit.GENESIS
    for entry in db.scalars(select(audit.AuditEntry).order_by(audit.AuditEntry.seq)):
        entry.scheme, entry.prev_hash = "sha256", prev  # as the old code left them
        entry.hash = prev = _plain_digest(entry)
    db.commit()
    assert not audit.verify_chain().ok  # nothing keyed vouches for them yet
    r = app.test_cli_runner().invoke(enclave, ["init"])
    assert r.exit_code == 0, r.output + r.stderr
    assert "3 entries from before the keyed chain" in r.output
    result = audit.verify_chain()
    assert result.ok and result.checked == 4 and result.legacy == 3
    again = app.test_cli_runner().invoke(enclave, ["init"])
    assert "before the keyed chain" not in again.output
