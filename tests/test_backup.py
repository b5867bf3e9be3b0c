"""Backups: consistent while the site is written to, encrypted, signed, verified, and
restored into an empty instance with every finding, reply, attachment and audit entry."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from app import audit
from app.attachments import service as attachments
from app.attachments.models import Attachment
from app.audit import AuditEntry
from app.cli import enclave
from app.db import db
from app.findings import service
from app.findings.models import Finding, Reply
from tests.attachments_world import att_app, attach, payload
from tests.conftest import TEST_DB_URL, running_app
from tests.factories import make_org, make_user
from tests.findings_world import post, reply
from tests.pg_private import private_database

__all__ = ["att_app"]  # fixture


def _world() -> dict[str, object]:
    north, south = make_org("north"), make_org("south")
    author = make_user(north, name="carol")
    reader = make_user(south, name="dan", clearance="restricted")
    findings = [post(author, title=f"Backup {level} {i}", body=f"body {i} at {level}",
                     level=level) for i, level in enumerate(["network", "restricted",
                                                             "confidential"] * 2)]
    for f in findings[:3]:
        for k in range(3):
            reply(author, f, f"reply {k} on {f.id}")
    files = {attach(author, findings[i], payload(70_000 + i, seed=i), f"data{i}.bin").id:
             payload(70_000 + i, seed=i) for i in range(3)}
    service.edit_finding(author, db.get(Finding, findings[0].id), body="edited body")
    return {"author": author, "reader": reader, "files": files}


def _snapshot() -> dict[str, object]:
    db.expire_all()
    return {
        "findings": {f.id: (f.title, f.body, f.level) for f in db.scalars(select(Finding))},
        "replies": {r.id: (r.finding_id, r.body) for r in db.scalars(select(Reply))},
        "attachments": {a.id: (a.filename, a.size) for a in db.scalars(select(Attachment))},
        "audit": [(e.seq, e.hash) for e in db.scalars(select(AuditEntry)
                                                     .order_by(AuditEntry.seq))],
    }


def _writer(app, author_id: int, finding_id: int, stop: threading.Event,
            written: list[int]) -> None:
    """Replies posted while the backup runs (each in its own transaction)."""
    from app.auth.models import User

    with app.app_context():
        while not stop.is_set() and len(written) < 200:
            author = db.get(User, author_id)
            finding = db.get(Finding, finding_id)
            written.append(service.add_reply(author, finding, f"during {len(written)}").id)
        db.remove()


def test_backup_under_load_verifies_and_restores_into_an_empty_instance(att_app, tmp_path):
    app = att_app
    w = _world()
    runner = app.test_cli_runner()
    stop, written = threading.Event(), []
    thread = threading.Thread(target=_writer, args=(app, w["author"].id,
                                                    next(iter(db.scalars(
                                                        select(Finding.id)))), stop, written))
    thread.start()
    try:
        out = tmp_path / "backup"
        result = runner.invoke(enclave, ["backup", str(out)])
    finally:
        stop.set()
        thread.join(60)
    assert result.exit_code == 0, result.output
    assert written  # the site was being written to during the backup
    manifest = json.loads((out / "manifest.json").read_text())
    in_backup = manifest["counts"]
    dump = (out / "database.enc").read_bytes()
    assert b"Backup network" not in dump and b"carol@" not in dump  # encrypted
    result = runner.invoke(enclave, ["backup", "verify", str(out)])
    assert result.exit_code == 0 and "verified" in result.output, result.output
    snapshot = _snapshot()

    # tampering is found: a blob, the dump, the manifest
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    blob = next((bad / "blobs").rglob("*.*")) if any((bad / "blobs").rglob("*.*")) else \
        next(p for p in (bad / "blobs").rglob("*") if p.is_file())
    data = bytearray(blob.read_bytes())
    data[100] ^= 1
    blob.write_bytes(bytes(data))
    result = runner.invoke(enclave, ["backup", "verify", str(bad)])
    assert result.exit_code == 1 and "does not match" in result.output
    shutil.rmtree(bad)
    shutil.copytree(out, bad)
    (bad / "manifest.json").write_text((out / "manifest.json").read_text()
                                       .replace('"findings": ', '"findings": 1'))
    result = runner.invoke(enclave, ["backup", "verify", str(bad)])
    assert result.exit_code == 1 and "signature" in result.output

    # restore elsewhere: an empty database, an empty blob store, the same keyring
    keyring = Path(app.extensions["enclave.settings"].keyring_path)
    other = tmp_path / "restored"
    other.mkdir()
    shutil.copy(keyring, other / "keyring.json")

    def restore_into(url: str) -> None:
        with running_app(url, other) as restored:
            r = restored.test_cli_runner().invoke(enclave, ["restore", str(out)])
            if r.exception and not isinstance(r.exception, SystemExit):
                raise r.exception
            assert r.exit_code == 0, r.output
            assert "audit chain: ok" in r.output
            got = _snapshot()
            assert len(got["findings"]) == in_backup["findings"]
            assert len(got["replies"]) == in_backup["replies"]
            assert len(got["audit"]) == in_backup["audit_log"]
            assert got["findings"] == snapshot["findings"]
            for rid, value in got["replies"].items():
                assert snapshot["replies"][rid] == value
            assert got["audit"] == snapshot["audit"][:len(got["audit"])]
            assert got["attachments"] == snapshot["attachments"]
            for att_id, data in w["files"].items():
                att = db.get(Attachment, att_id)
                assert b"".join(attachments.open_plaintext(att)) == data  # byte-identical
            assert audit.verify_chain().ok
            again = restored.test_cli_runner().invoke(enclave, ["restore", str(out)])
            assert again.exit_code == 1 and "not empty" in again.output

    if TEST_DB_URL.startswith("postgresql"):
        with private_database("enc_restore") as url:
            restore_into(url)
    else:
        restore_into(f"sqlite:///{tmp_path / 'restored.db'}")


def test_backup_refuses_a_non_empty_directory(att_app, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("x")
    result = att_app.test_cli_runner().invoke(enclave, ["backup", str(tmp_path / "x")])
    assert result.exit_code == 1 and "not empty" in result.output
    result = att_app.test_cli_runner().invoke(enclave, ["backup", "verify"])
    assert result.exit_code == 2


pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
