"""Key rotation (rewraps every data key, resumable, blobs untouched), rewrapping when a
finding's level is raised, and the CLI that drives them."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from app import state
from app.attachments import service
from app.attachments.models import Attachment
from app.cli import enclave
from app.crypto.keyring import Keyring
from app.crypto.stream import IntegrityError
from app.crypto.wrap import unwrap_data_key, wrap_data_key
from app.db import db
from tests import attachments_world
from tests.attachments_world import (
    attach,
    audit_actions,
    blob_files,
    blob_path,
    build_world,
    payload,
    reload,
)
from tests.factories import make_finding

att_app = attachments_world.att_app  # fixtures
att_client = attachments_world.att_client


def _world_with_files(n_per_level: int = 3):  # type: ignore[no-untyped-def]
    w = build_world()
    findings = {"network": w.finding, "confidential": w.secret,
                "restricted": make_finding(w.author, level="restricted")}
    files = {}
    for level, finding in findings.items():
        for i in range(n_per_level):
            data = payload(1000 + i, seed=100 * len(files) + i)
            files[attach(w.author, finding, data, filename=f"{level}-{i}.bin").id] = data
    return w, findings, files


def _rows() -> list[Attachment]:
    db.rollback()
    return list(db.scalars(select(Attachment).order_by(Attachment.id)))


def _blob_bytes() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in blob_files()}


def _download_all(client, headers, files) -> None:  # type: ignore[no-untyped-def]
    """Every file opens with its (rotated, rewrapped) key: downloaded where its level
    serves the original; decrypted by the service where the level hands out stamped
    copies only (these binary files cannot carry a mark, so they are not served)."""
    for att_id, data in files.items():
        att = db.get(Attachment, att_id)
        if state.policy().level(att.finding.level).downloads != "original":
            chunks = service.open_plaintext(att)
            assert b"".join(chunks) == data, att_id
            continue
        response = client.get(f"/api/v1/attachments/{att_id}", headers=headers)
        assert response.status_code == 200 and response.data == data, att_id


def test_rotation_rewraps_every_key_and_leaves_blobs_alone(att_app, att_client, api_token):
    w, _, files = _world_with_files()
    gone = attach(w.author, w.finding, b"shredded before the rotation")
    service.delete(w.author, gone.id)
    blobs_before = _blob_bytes()
    keys_before = {r.id: r.wrapped_key for r in _rows()}

    report = service.rotate_keys(batch_size=4)
    assert report.new_versions == {lv: 2 for lv in state.keyring().levels}
    assert (report.live, report.rewrapped, report.already_current) == (9, 9, 0)
    assert report.failed == [] and report.remaining == 0 and report.batches == 3

    ring = Keyring.load(att_app.extensions["enclave.settings"].keyring_path)
    for row in _rows():
        if row.id == gone.id:
            assert row.wrapped_key is None  # rotation never resurrects a shredded key
            continue
        assert row.kek_version == 2 == ring.active_version(row.kek_level)
        assert row.wrapped_key != keys_before[row.id]
        # Only the new KEK opens it now; the AAD binds id, finding, level and version.
        where = {"attachment_id": row.id, "finding_id": row.finding_id,
                 "level": row.kek_level, "kek_version": 2}
        unwrap_data_key(ring.kek(row.kek_level, 2)[1], row.wrapped_key, **where)
        with pytest.raises(IntegrityError):
            unwrap_data_key(ring.kek(row.kek_level, 1)[1], row.wrapped_key, **where)
    assert _blob_bytes() == blobs_before  # not one blob byte changed
    _download_all(att_client, api_token(w.author), files)
    rotated = audit_actions("keys_rotated")
    assert len(rotated) == 1 and rotated[0].details_dict["versions"]["network"] == 2
    assert audit_actions("attachment_keys_rewrapped")[-1].details_dict["rewrapped"] == 9


def test_rotation_is_resumable(att_app, att_client, api_token):
    w, _, files = _world_with_files()
    # "Crash" after two batches of two: the keyring has its new versions, 4 of 9 keys
    # are rewrapped.
    first = service.rotate_keys(batch_size=2, max_batches=2)
    assert (first.rewrapped, first.remaining, first.batches) == (4, 5, 2)
    versions = [r.kek_version for r in _rows()]
    assert sorted(versions) == [1] * 5 + [2] * 4
    # Files are readable in between (old versions stay in the keyring).
    _download_all(att_client, api_token(w.author), files)

    resumed = service.rotate_keys(add_versions=False, batch_size=2)
    assert resumed.new_versions == {}
    assert (resumed.rewrapped, resumed.already_current, resumed.remaining) == (5, 4, 0)
    assert {r.kek_version for r in _rows()} == {2}

    again = service.rotate_keys(add_versions=False)
    assert (again.rewrapped, again.already_current, again.batches) == (0, 9, 0)
    _download_all(att_client, api_token(w.author), files)


def test_rotation_heals_keys_left_under_an_old_level(att_app):
    """A finding whose level changed without a rewrap (e.g. data from before the hook)
    gets its keys moved under the new level by the next rotation."""
    w, findings, _ = _world_with_files(1)
    finding = findings["network"]
    finding.level = "restricted"
    db.commit()
    report = service.rotate_keys(add_versions=False)
    assert report.rewrapped == 1
    row = next(r for r in _rows() if r.finding_id == finding.id)
    assert (row.kek_level, row.kek_version) == ("restricted", 1)


def test_rewrap_for_level(att_app, att_client, api_token):
    w = build_world()
    data = payload(5000)
    att = attach(w.author, w.finding, data)
    other = attach(w.author, w.secret, b"untouched")
    before = reload(other).wrapped_key
    blob = blob_path(att).read_bytes()

    w.finding.level = "restricted"
    assert service.rewrap_for_level(w.finding, "restricted", actor=w.author) == 1
    db.commit()
    row = reload(att)
    assert (row.kek_level, row.kek_version) == ("restricted", 1)
    ring = state.keyring()
    where = {"attachment_id": att.id, "finding_id": w.finding.id, "level": "restricted",
             "kek_version": 1}
    unwrap_data_key(ring.kek("restricted", 1)[1], row.wrapped_key, **where)
    with pytest.raises(IntegrityError):  # the network KEK no longer opens it
        unwrap_data_key(ring.kek("network", 1)[1], row.wrapped_key, **where)
    assert reload(other).wrapped_key == before
    assert blob_path(att).read_bytes() == blob
    assert att_client.get(f"/api/v1/attachments/{att.id}",
                          headers=api_token(w.reader)).data == data
    assert audit_actions("attachment_keys_rewrapped")[-1].target_id == str(w.finding.id)
    # A second call has nothing to do.
    assert service.rewrap_for_level(w.finding, "restricted") == 0


def test_raising_the_level_through_the_findings_service_rewraps(att_app):
    from app.findings import service as findings

    w = build_world()
    att = attach(w.author, w.finding, b"moves up")
    findings.edit_finding(w.author, w.finding, level="restricted")
    row = reload(att)
    assert row.kek_level == "restricted"


def test_cli_rotate_and_resume(att_app):
    w, _, files = _world_with_files(2)
    runner = att_app.test_cli_runner()
    result = runner.invoke(enclave, ["keys", "rotate", "--batch-size", "2", "--max-batches",
                                     "1"])
    assert result.exit_code == 0, result.output
    assert "kek network v2" in result.output and "kek restricted v2" in result.output
    assert "6 live, 2 rewrapped, 0 already current" in result.output
    assert "4 remaining" in result.output and "keys rotate --resume" in result.output
    result = runner.invoke(enclave, ["keys", "rotate", "--resume"])
    assert result.exit_code == 0, result.output
    assert "new active keys" not in result.output
    assert "6 live, 4 rewrapped, 2 already current" in result.output
    assert "0 remaining" in result.output
    result = runner.invoke(enclave, ["keys", "rotate"])
    assert "kek network v3" in result.output and "6 rewrapped" in result.output
    assert {r.kek_version for r in _rows()} == {3}


def test_cli_rotate_reports_keys_that_do_not_open(att_app):
    w = build_world()
    good = attach(w.author, w.finding, b"fine")
    bad = attach(w.author, w.finding, b"broken key")
    broken = bytearray(bad.wrapped_key)
    broken[-1] ^= 1
    bad.wrapped_key = bytes(broken)
    db.commit()
    result = att_app.test_cli_runner().invoke(enclave, ["keys", "rotate"])
    assert result.exit_code == 1
    assert "1 rewrapped" in result.output and "1 failed" in result.output
    assert f"attachment {bad.id}" in result.stderr
    assert reload(good).kek_version == 2 and reload(bad).kek_version == 1
    assert audit_actions("attachment_integrity_failure")


def test_other_processes_pick_up_a_rotation(att_app, att_client, api_token):
    """A running app (another worker) sees the rotated keyring file: it can open keys
    wrapped under the new versions and wraps new uploads under them."""
    w = build_world()
    att = attach(w.author, w.finding, b"before")
    path = att_app.extensions["enclave.settings"].keyring_path
    ring = Keyring.load(path)
    ring.rotate(ring.levels)
    ring.save(path)  # as `enclave keys rotate` in another process would
    # rewrap this row as that process would
    fresh = Keyring.load(path)
    row = reload(att)
    key = unwrap_data_key(fresh.kek("network", 1)[1], row.wrapped_key, attachment_id=att.id,
                          finding_id=row.finding_id, level="network", kek_version=1)
    row.wrapped_key = wrap_data_key(fresh.kek("network", 2)[1], key, attachment_id=att.id,
                                    finding_id=row.finding_id, level="network",
                                    kek_version=2)
    row.kek_version = 2
    db.commit()
    assert att_client.get(f"/api/v1/attachments/{att.id}",
                          headers=api_token(w.reader)).data == b"before"
    new = attach(w.author, w.finding, b"after")
    assert reload(new).kek_version == 2


def test_sha256_is_sealed_not_stored_plainly(att_app):
    w = build_world()
    data = b"a well-known file"
    att = attach(w.author, w.finding, data)
    digest = hashlib.sha256(data).digest()
    row = reload(att)
    assert digest not in row.sha256_sealed and digest.hex().encode() not in row.sha256_sealed
    assert service.sha256_of(row) == digest.hex()


def test_level_raised_while_a_file_streams_in(att_app, att_client, api_token):
    """Another request raises the level mid-upload: the new key ends up under the new
    level's KEK all the same."""
    import io

    from sqlalchemy import update

    from app.db import SessionFactory
    from app.findings.models import Finding

    w = build_world()
    finding_id = w.finding.id

    class Body(io.BytesIO):
        def _hook(self) -> None:
            if self.tell() == 1024 * 1024:
                with SessionFactory() as other:
                    other.execute(update(Finding).where(Finding.id == finding_id)
                                  .values(level="restricted"))
                    other.commit()

        def read(self, size=-1):  # type: ignore[no-untyped-def]
            self._hook()
            return super().read(size)

        def readinto(self, buffer):  # type: ignore[no-untyped-def]
            self._hook()
            return super().readinto(buffer)

    data = payload(3 * 1024 * 1024)
    att = service.upload(w.author, finding_id, filename="moving.bin", stream=Body(data),
                         content_length=len(data))
    row = reload(att)
    assert (row.kek_level, row.kek_version) == ("restricted", 1)
    assert att_client.get(f"/api/v1/attachments/{att.id}",
                          headers=api_token(w.reader)).data == data
