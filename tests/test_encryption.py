"""Content encryption at rest: the envelope, the ORM mechanism, moved ciphertexts, level
changes, and the resumable content jobs."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text, update

from app import sealing, state
from app.content import service as content
from app.crypto.fields import ContentKeys, FieldIntegrityError, envelope_kind, envelope_version
from app.crypto.keyring import Keyring
from app.db import db
from app.findings import service
from app.findings.models import Finding, FindingRevision, Reply
from tests.factories import login, make_org, make_user
from tests.findings_world import isolated_clients, post, refresh, reply

__all__ = ["isolated_clients"]


def raw(table: str, column: str, row_id: int) -> bytes:
    return bytes(db.execute(text(f"SELECT {column} FROM {table} WHERE id = :i"),  # noqa: S608
                            {"i": row_id}).scalar())


# ---------------------------------------------------------------- the envelope


def test_envelope_binds_row_column_level_and_records_the_key_version():
    keyring = Keyring.generate(["public", "network", "restricted"])
    keys = ContentKeys(keyring)
    sealed = keys.seal("findings", 7, "title", "network", "Steering vectors")
    assert envelope_kind(sealed) == 1 and envelope_version(sealed) == 1
    assert b"Steering" not in sealed
    assert keys.open("findings", 7, "title", "network", sealed) == "Steering vectors"
    for table, row, column, level in [("findings", 8, "title", "network"),
                                      ("findings", 7, "body", "network"),
                                      ("replies", 7, "title", "network"),
                                      ("findings", 7, "title", "restricted")]:
        with pytest.raises(FieldIntegrityError):
            keys.open(table, row, column, level, sealed)
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(FieldIntegrityError):
        keys.open("findings", 7, "title", "network", bytes(flipped))
    # a plaintext envelope opens only where the caller says the row is public
    plain = keys.seal("findings", 7, "title", "public", "Released", public=True)
    assert plain == b"\x00Released"
    assert keys.open("findings", 7, "title", "public", plain, public=True) == "Released"
    with pytest.raises(FieldIntegrityError):
        keys.open("findings", 7, "title", "network", plain)
    # rotation: a new version seals new values; old ones still open until retired
    keyring.rotate(["network"])
    newer = keys.seal("findings", 7, "title", "network", "Steering vectors")
    assert envelope_version(newer) == 2
    assert keys.open("findings", 7, "title", "network", sealed) == "Steering vectors"


# ---------------------------------------------------------------- through the models


def test_models_store_ciphertext_and_read_plain_text(app):
    author = make_user(make_org("north"), name="carol")
    finding = post(author, title="Okapi title", body="okapi **body**", level="restricted")
    r = reply(author, finding, "okapi reply")
    for table, column, row in [("findings", "title", finding.id), ("findings", "body",
                                                                   finding.id),
                               ("findings", "body_html", finding.id),
                               ("replies", "body", r.id), ("replies", "body_html", r.id)]:
        value = raw(table, column, row)
        assert value[0] == 1 and b"okapi" not in value.lower()
    db.expire_all()
    finding = db.get(Finding, finding.id)
    assert finding.title == "Okapi title" and "<strong>body</strong>" in finding.body_html
    assert db.get(Reply, r.id).body == "okapi reply"
    with pytest.raises(Exception, match="Column expression"):
        db.execute(select(Finding.title))  # row queries read title_sealed and reveal it


def test_a_ciphertext_moved_elsewhere_is_an_error_not_the_other_text(app, client, api_token):
    author = make_user(make_org("north"), name="carol")
    secret = post(author, title="Pangolin secret", body="pangolin", level="confidential")
    victim = post(author, title="Harmless", body="plain", level="network")
    r = reply(author, victim, "a reply")
    login(client, author)
    assert client.get(f"/findings/{victim.id}").status_code == 200
    # another row's ciphertext (and another level's) pasted into the victim's title
    db.execute(update(Finding).where(Finding.id == victim.id)
               .values(title_sealed=raw("findings", "title", secret.id)))
    db.commit()
    page = client.get(f"/findings/{victim.id}")
    assert page.status_code == 500 and "integrity check" in page.text
    assert "Pangolin" not in page.text
    body = client.get(f"/api/v1/findings/{victim.id}", headers=api_token(author))
    assert body.status_code == 500 and body.json["error"]["code"] == "integrity_error"
    listing = client.get("/findings")
    assert "Pangolin" not in listing.text
    # another column of the same row, and a reply's body into the finding's body
    db.execute(update(Finding).where(Finding.id == victim.id)
               .values(title_sealed=raw("findings", "body", victim.id)))
    db.execute(update(Reply).where(Reply.id == r.id)
               .values(body_html_sealed=raw("findings", "body_html", secret.id)))
    db.commit()
    for path in (f"/findings/{victim.id}",):
        page = client.get(path)
        assert page.status_code == 500 and "pangolin" not in page.text.lower()


def test_raising_a_level_reseals_everything_of_the_finding_in_one_transaction(app):
    author = make_user(make_org("north"), name="carol")
    finding = post(author, title="Tapir", body="tapir v1", level="network")
    service.edit_finding(author, refresh(finding), body="tapir v2")
    r = reply(author, refresh(finding), "tapir reply")
    keys = sealing.keys()
    service.edit_finding(author, refresh(finding), level="confidential")
    db.expire_all()
    values = [("findings", "title", finding.id), ("findings", "body", finding.id),
              ("replies", "body", r.id)]
    revisions = list(db.scalars(select(FindingRevision.id)
                                .where(FindingRevision.finding_id == finding.id)))
    values += [("finding_revisions", "old_body", rid) for rid in revisions]
    for table, column, row in values:
        value = raw(table, column, row)
        assert "tapir" in keys.open(table, row, column, "confidential", value).lower()
        with pytest.raises(FieldIntegrityError):
            keys.open(table, row, column, "network", value)
    history = service.history(db.get(Finding, finding.id), author)
    assert any("tapir v1" in e.before.body for e in history)


def test_a_declassified_version_stays_under_its_own_levels_key(app):
    from app.review.levels import change_level

    author = make_user(make_org("north"), name="carol")
    finding = post(author, title="Quoll", body="quoll secret", level="confidential")
    change_level(author, refresh(finding), "network", why="test")
    db.commit()
    rev = db.scalar(select(FindingRevision).where(FindingRevision.finding_id == finding.id))
    value = raw("finding_revisions", "old_body", rev.id)
    keys = sealing.keys()
    assert keys.open("finding_revisions", rev.id, "old_body", "confidential", value) == \
        "quoll secret"
    with pytest.raises(FieldIntegrityError):
        keys.open("finding_revisions", rev.id, "old_body", "network", value)


def test_the_encrypt_job_seals_legacy_rows_resumably_and_builds_the_index(app):
    from app.findings import search

    author = make_user(make_org("north"), name="carol")
    findings = [post(author, title=f"Numbat {i}", body=f"numbat body {i}") for i in range(5)]
    ids = [f.id for f in findings]
    # what migration 0011 leaves behind: legacy plaintext envelopes and an empty index
    for f in findings:
        db.execute(update(Finding).where(Finding.id == f.id).values(
            title_sealed=b"\x02" + f"Numbat {f.id}".encode(),
            body_sealed=b"\x02numbat legacy body"))
    db.execute(text("DELETE FROM findings_fts"))
    if db.get_bind().dialect.name == "sqlite":
        db.execute(text("DELETE FROM findings_fts_terms"))
    db.execute(text("DELETE FROM content_jobs"))
    db.execute(text("INSERT INTO content_jobs (kind, table_name, last_id, done, changed, "
                    "updated_at) VALUES ('encrypt', 'findings', '', :f, 0, :t)"),
               {"f": False, "t": findings[0].created_at})
    db.commit()
    state_ext = app.extensions
    state_ext.pop("enclave.content_legacy", None)
    db.expire_all()
    assert db.get(Finding, findings[0].id).title == f"Numbat {findings[0].id}"  # legacy ok
    assert search.search(author, "numbat").total == 0
    seen = []
    report = content.run(content.ENCRYPT, batch_size=2, max_batches=1,
                         progress=lambda t, n, c: seen.append((t, n, c)))
    assert report.remaining == ["findings"] and seen == [("findings", 2, 4)]
    report = content.run(content.ENCRYPT, batch_size=2)
    assert not report.remaining and report.tables["findings"] == 6
    assert not content.legacy_pending()
    for ident in ids:
        assert raw("findings", "title", ident)[0] == 1
    assert search.search(author, "numbat").total == 5
    db.expire_all()
    db.execute(update(Finding).where(Finding.id == ids[0]).values(title_sealed=b"\x02planted"))
    db.commit()
    db.expire_all()
    with pytest.raises(FieldIntegrityError):  # legacy values are refused once done
        _ = db.get(Finding, ids[0]).title
    assert state.keyring() is not None


# ---------------------------------------------------------------- rotation


def test_keys_rotate_reencrypts_content_resumably_then_old_versions_retire(app):
    from app.cli import enclave
    from app.findings import search

    author = make_user(make_org("north"), name="carol")
    findings = [post(author, title=f"Wombat {i}", body="wombat burrow", level=level)
                for i, level in enumerate(["network", "restricted", "network", "restricted"])]
    rids = [reply(author, findings[0], f"wombat reply {i}").id for i in range(3)]
    ids = [f.id for f in findings]
    runner = app.test_cli_runner()
    result = runner.invoke(enclave, ["keys", "rotate", "--batch-size", "2",
                                     "--max-batches", "1"])
    assert result.exit_code == 0, result.output
    assert "findings: 2 rows, 6 values" in result.output  # progress, then it stops
    assert "keys rotate --resume" in result.output
    db.expire_all()
    versions = {envelope_version(raw("findings", "title", i)) for i in ids}
    assert versions == {1, 2}  # half way: both versions open meanwhile
    assert search.search(author, "wombat").total == 4
    refused = runner.invoke(enclave, ["keys", "retire", "network", "1"])
    assert refused.exit_code == 1 and "not finished" in refused.output
    result = runner.invoke(enclave, ["keys", "rotate", "--resume"])
    assert result.exit_code == 0, result.output
    assert "old versions can be retired" in result.output
    db.expire_all()
    for i in ids:
        assert envelope_version(raw("findings", "title", i)) == 2
        assert envelope_version(raw("findings", "body", i)) == 2
    for r in rids:
        assert envelope_version(raw("replies", "body", r)) == 2
    for level in ("network", "restricted", "confidential"):
        result = runner.invoke(enclave, ["keys", "retire", level, "1"])
        assert result.exit_code == 0, result.output
    assert state.keyring().versions("network") == [2]
    db.expire_all()
    assert db.get(Finding, ids[0]).title == "Wombat 0"
    assert search.search(author, "wombat").total == 4  # the index was re-hashed too
    result = runner.invoke(enclave, ["keys", "retire", "network", "2"])
    assert result.exit_code == 1 and "active" in result.output


# ---------------------------------------------------------------- the sealed keyring


def test_a_sealed_keyring_needs_its_passphrase_and_stays_sealed(tmp_path, monkeypatch):
    import json
    import stat

    from app import create_app
    from app.cli import enclave
    from app.crypto.keyring import KeyringError, configure_unsealer

    overrides = {"instance_path": tmp_path, "keyring_path": tmp_path / "keyring.json",
                 "database_url": f"sqlite:///{tmp_path / 'db.sqlite'}", "env": "test",
                 "secret_key": "s" * 40}
    app = create_app(overrides)
    plain = json.loads((tmp_path / "keyring.json").read_text())
    runner = app.test_cli_runner()
    short = runner.invoke(enclave, ["keys", "seal", "--passphrase-stdin"], input="short\n")
    assert short.exit_code == 1 and "16 characters" in short.output
    result = runner.invoke(enclave, ["keys", "seal", "--passphrase-stdin"],
                           input="correct horse battery staple\n")
    assert result.exit_code == 0, result.output
    sealed_text = (tmp_path / "keyring.json").read_text()
    sealed = json.loads(sealed_text)
    assert sealed["sealed"] == "enclave-keyring" and sealed["kdf"]["name"] == "argon2id"
    assert plain["app"] not in sealed_text and plain["signing"]["ed25519"] not in sealed_text
    assert stat.S_IMODE((tmp_path / "keyring.json").stat().st_mode) == 0o600
    configure_unsealer(None)
    monkeypatch.delenv("ENCLAVE_KEYRING_PASSPHRASE", raising=False)
    with pytest.raises(KeyringError, match="sealed"):
        create_app(overrides)
    monkeypatch.setenv("ENCLAVE_KEYRING_PASSPHRASE", "wrong horse battery staple")
    with pytest.raises(KeyringError, match="does not open"):
        create_app(overrides)
    passfile = tmp_path / "pass"
    passfile.write_text("correct horse battery staple\n")
    monkeypatch.delenv("ENCLAVE_KEYRING_PASSPHRASE")
    monkeypatch.setenv("ENCLAVE_KEYRING_PASSPHRASE_FILE", str(passfile))
    app = create_app(overrides)
    assert app.extensions["enclave.keyring"].app_key() == \
        __import__("base64").b64decode(plain["app"])
    # an operator command (a secrets manager, the TPM) gives the passphrase instead
    monkeypatch.delenv("ENCLAVE_KEYRING_PASSPHRASE_FILE")
    monkeypatch.setenv("ENCLAVE_KEYRING_COMMAND", f"cat {passfile}")
    app = create_app(overrides)
    monkeypatch.setenv("ENCLAVE_KEYRING_COMMAND", "false")
    with pytest.raises(KeyringError, match="exit 1"):
        create_app(overrides)
    monkeypatch.setenv("ENCLAVE_KEYRING_COMMAND", f"cat {passfile}")
    app = create_app(overrides)  # the process's unsealer is the last app's
    # rotation writes the file sealed again
    with app.app_context():
        from app.attachments.service import rotate_keys
        from app.migrate import upgrade_to_head

        upgrade_to_head()
        rotate_keys()
    assert json.loads((tmp_path / "keyring.json").read_text())["sealed"] == "enclave-keyring"
    assert create_app(overrides).extensions["enclave.keyring"].versions("network") == [1, 2]
    configure_unsealer(None)


def test_production_refuses_an_unsealed_keyring(tmp_path, monkeypatch):
    from app import create_app
    from app.config import ConfigError
    from app.crypto.keyring import Keyring

    Keyring.generate(["public", "network", "restricted", "confidential"]).save(
        tmp_path / "keyring.json")
    monkeypatch.setenv("ENCLAVE_KEYRING", str(tmp_path / "keyring.json"))
    monkeypatch.delenv("ENCLAVE_KEYRING_UNSEALED", raising=False)
    overrides = {"instance_path": tmp_path, "keyring_path": tmp_path / "keyring.json",
                 "database_url": "postgresql+psycopg://u@127.0.0.1:1/x", "env": "production",
                 "secret_key": "s" * 40, "base_url": "https://enclave.example.org",
                 "proxy_count": 1, "redis_url": "redis://127.0.0.1:1/0"}
    with pytest.raises(ConfigError, match="not sealed"):
        create_app(overrides)
