"""Tampered, truncated, swapped or wrongly keyed attachments: a clear error and an audit
entry, never a byte of unauthenticated plaintext; a fault found mid-stream makes a
real server drop the connection; a missing or wrong key stops start-up by name."""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from app.attachments import service
from app.crypto.keyring import KeyringError
from app.crypto.stream import HEADER_SIZE, IntegrityError
from app.db import db
from tests import attachments_world
from tests.attachments_world import (
    CHUNK,
    ServerThread,
    attach,
    audit_actions,
    blob_path,
    build_world,
    flip_byte,
    payload,
    reload,
)
from tests.conftest import make_app
from tests.factories import login

att_app = attachments_world.att_app  # fixtures
att_client = attachments_world.att_client

REPO = Path(__file__).resolve().parent.parent
PREFIX = HEADER_SIZE + 56  # our header + Cobblestone nonce and key commitment
MiB = 1024 * 1024


def _assert_clean_refusal(client, headers, att, data) -> None:  # type: ignore[no-untyped-def]
    """500 integrity_error as JSON (API) and as a page (web); no file bytes sent."""
    before = len(audit_actions("attachment_integrity_failure"))
    response = client.get(f"/api/v1/attachments/{att.id}", headers=headers)
    assert response.status_code == 500
    assert response.json["error"]["code"] == "integrity_error"
    assert "integrity check" in response.json["error"]["message"]
    assert data[:32] not in response.data
    failures = audit_actions("attachment_integrity_failure")
    assert len(failures) == before + 1 and failures[-1].target_id == att.id
    assert audit_actions("attachment_downloaded") == []


TAMPER_OFFSETS = {
    "magic": 0,
    "version byte": 4,
    "nonce": HEADER_SIZE + 3,
    "key commitment": HEADER_SIZE + 40,
    "first chunk": PREFIX + 0,
    "second chunk": PREFIX + CHUNK + 16 + 100,
    "a tag": PREFIX + CHUNK + 5,
    "last byte": -1,
}
TAMPER_CASES = [
    (case, size) for size in (1, CHUNK, CHUNK + 1, 300_000) for case, offset in
    TAMPER_OFFSETS.items() if offset < service.ciphertext_size(size)
]


@pytest.mark.parametrize("case, size", TAMPER_CASES)
def test_flipped_byte_is_refused_cleanly(att_app, att_client, api_token, case, size):
    w = build_world()
    data = payload(size)
    att = attach(w.author, w.finding, data)
    path = blob_path(att)
    flip_byte(path, TAMPER_OFFSETS[case] % path.stat().st_size)
    _assert_clean_refusal(att_client, api_token(w.reader), att, data)


@pytest.mark.parametrize("cut", [1, 16, CHUNK + 16])
def test_truncated_blob_is_refused_cleanly(att_app, att_client, api_token, cut):
    w = build_world()
    data = payload(3 * CHUNK + 5)
    att = attach(w.author, w.finding, data)
    path = blob_path(att)
    raw = path.read_bytes()
    path.write_bytes(raw[:-cut])
    _assert_clean_refusal(att_client, api_token(w.reader), att, data)


def test_truncated_at_a_chunk_boundary_after_the_prefetch_is_caught(att_app, att_client,
                                                                     api_token):
    """Drop whole trailing chunks, and pad the file back to its size with garbage: the
    size check passes, the decryptor must still refuse (the final chunk is missing)."""
    w = build_world()
    data = payload(3 * MiB)
    att = attach(w.author, w.finding, data)
    path = blob_path(att)
    raw = path.read_bytes()
    keep = PREFIX + 150 * (CHUNK + 16)  # 150 full chunks, well past the 1 MiB prefetch
    path.write_bytes(raw[:keep] + secrets.token_bytes(len(raw) - keep))
    response = att_client.get(f"/api/v1/attachments/{att.id}", headers=api_token(w.reader))
    assert response.status_code == 200  # the first MiB is fine, so the answer started
    with pytest.raises(IntegrityError):
        response.get_data()
    assert audit_actions("attachment_integrity_failure")[-1].target_id == att.id


def test_extended_blob_is_refused_cleanly(att_app, att_client, api_token):
    w = build_world()
    data = payload(CHUNK * 2)
    att = attach(w.author, w.finding, data)
    with blob_path(att).open("ab") as f:
        f.write(b"\x00" * 32)
    _assert_clean_refusal(att_client, api_token(w.reader), att, data)


def test_swapped_blobs_are_refused_cleanly(att_app, att_client, api_token):
    w = build_world()
    a_data, b_data = payload(5000, seed=1), payload(5000, seed=2)
    a = attach(w.author, w.finding, a_data)
    b = attach(w.author, w.finding, b_data)
    pa, pb = blob_path(a), blob_path(b)
    raw_a, raw_b = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(raw_b)
    pb.write_bytes(raw_a)
    headers = api_token(w.reader)
    _assert_clean_refusal(att_client, headers, a, a_data)
    _assert_clean_refusal(att_client, headers, b, b_data)
    assert b_data[:32] not in att_client.get(f"/api/v1/attachments/{a.id}",
                                             headers=headers).data


def test_swapped_blob_ids_in_the_database_are_refused(att_app, att_client, api_token):
    w = build_world()
    a = attach(w.author, w.finding, payload(700, seed=1))
    b = attach(w.author, w.finding, payload(700, seed=2))
    blob_a, blob_b = a.blob_id, b.blob_id
    a.blob_id = "f" * 32  # the column is unique: swap through a placeholder
    db.commit()
    b.blob_id = blob_a
    db.commit()
    a.blob_id = blob_b
    db.commit()
    headers = api_token(w.reader)
    _assert_clean_refusal(att_client, headers, reload(a), payload(700, seed=1))
    _assert_clean_refusal(att_client, headers, reload(b), payload(700, seed=2))


def test_tampered_or_swapped_wrapped_key_is_refused(att_app, att_client, api_token):
    w = build_world()
    a = attach(w.author, w.finding, payload(100, seed=1))
    b = attach(w.author, w.finding, payload(100, seed=2))
    wrapped = bytearray(a.wrapped_key)
    wrapped[20] ^= 1
    a.wrapped_key = bytes(wrapped)
    db.commit()
    headers = api_token(w.reader)
    _assert_clean_refusal(att_client, headers, a, payload(100, seed=1))
    # b's own wrapped key, moved onto another row, does not open there (AAD binds the id)
    c = attach(w.author, w.finding, payload(100, seed=3))
    c.wrapped_key = reload(b).wrapped_key
    db.commit()
    _assert_clean_refusal(att_client, headers, c, payload(100, seed=3))


def test_missing_blob_is_refused_cleanly(att_app, att_client, api_token):
    w = build_world()
    att = attach(w.author, w.finding, b"gone")
    blob_path(att).unlink()
    _assert_clean_refusal(att_client, api_token(w.reader), att, b"gone")


def test_wrong_kek_in_the_running_keyring_is_refused(att_app, att_client, api_token):
    """Someone replaces the KEK in the keyring file: the running app notices the file
    changed, reloads it, and refuses cleanly instead of crashing or sending garbage."""
    w = build_world()
    data = payload(1000)
    att = attach(w.author, w.finding, data)
    path = att_app.extensions["enclave.settings"].keyring_path
    doc = json.loads(path.read_text())
    doc["kek"]["network"]["1"] = base64.b64encode(secrets.token_bytes(32)).decode()
    path.write_text(json.dumps(doc))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    _assert_clean_refusal(att_client, api_token(w.reader), att, data)


def test_web_download_integrity_error_page(att_app, att_client):
    w = build_world()
    data = payload(2000)
    att = attach(w.author, w.finding, data)
    flip_byte(blob_path(att), PREFIX + 10)
    login(att_client, w.reader)
    response = att_client.get(f"/attachments/{att.id}")
    assert response.status_code == 500
    assert "text/html" in response.headers["Content-Type"]
    assert "failed its integrity check" in response.text
    assert data[:32] not in response.data


def test_mid_stream_tampering_yields_only_authenticated_bytes(att_app, att_client, api_token):
    w = build_world()
    data = payload(3 * MiB)
    att = attach(w.author, w.finding, data)
    bad_chunk = 130  # past the first MiB (64 chunks), so the response has started
    flip_byte(blob_path(att), PREFIX + bad_chunk * (CHUNK + 16) + 7)
    response = att_client.get(f"/api/v1/attachments/{att.id}", headers=api_token(w.reader),
                              buffered=False)
    assert response.status_code == 200
    received = bytearray()
    with pytest.raises(IntegrityError):
        for piece in response.response:
            received += piece
    assert len(received) % CHUNK == 0 and len(received) <= bad_chunk * CHUNK
    assert bytes(received) == data[:len(received)]
    failure = audit_actions("attachment_integrity_failure")[-1]
    assert failure.target_id == att.id
    assert failure.detail("reason") == "authentication failed while streaming"


@pytest.mark.parametrize("kind", ["bit flip", "truncated and padded"])
def test_real_server_drops_the_connection_mid_stream(att_app, api_token, kind):
    """Over a socket: the client gets fewer bytes than Content-Length and an error,
    never a clean end of a short or altered file."""
    w = build_world()
    data = payload(4 * MiB)
    att = attach(w.author, w.finding, data)
    path = blob_path(att)
    bad_chunk = 200
    if kind == "bit flip":
        flip_byte(path, PREFIX + bad_chunk * (CHUNK + 16) + 3)
    else:
        raw = path.read_bytes()
        keep = PREFIX + bad_chunk * (CHUNK + 16)
        path.write_bytes(raw[:keep] + bytes(len(raw) - keep))
    headers = api_token(w.reader)
    with ServerThread(att_app) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", f"/api/v1/attachments/{att.id}", headers=headers)
        response = conn.getresponse()
        assert response.status == 200
        assert int(response.headers["Content-Length"]) == len(data)
        with pytest.raises(http.client.IncompleteRead) as exc:
            response.read()
        conn.close()
    received = exc.value.partial
    assert 0 < len(received) <= bad_chunk * CHUNK
    assert received == data[:len(received)]
    assert audit_actions("attachment_integrity_failure")[-1].target_id == att.id


def test_real_server_clean_download_for_comparison(att_app, api_token):
    w = build_world()
    data = payload(2 * MiB + 3)
    att = attach(w.author, w.finding, data)
    with ServerThread(att_app) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", f"/api/v1/attachments/{att.id}", headers=api_token(w.reader))
        response = conn.getresponse()
        assert response.status == 200 and response.read() == data
        conn.close()


# ------------------------------------------------------------------ start-up key check


def _keyring_without(src: Path, dst: Path, level: str, version: int, *,
                     replace: bool = False) -> Path:
    doc = json.loads(src.read_text())
    if replace:
        doc["kek"][level][str(version)] = base64.b64encode(secrets.token_bytes(32)).decode()
    else:
        doc["kek"][level]["2"] = base64.b64encode(secrets.token_bytes(32)).decode()
        doc["active"][level] = 2
        del doc["kek"][level][str(version)]
    dst.write_text(json.dumps(doc))
    dst.chmod(0o600)
    return dst


def test_startup_names_a_missing_key(att_app, migrated, tmp_path):
    w = build_world()
    attach(w.author, w.finding, b"needs kek network v1")
    bad = _keyring_without(att_app.extensions["enclave.settings"].keyring_path,
                           tmp_path / "bad.json", "network", 1)
    with pytest.raises(KeyringError) as exc:
        make_app(migrated, tmp_path / "other", keyring_path=bad)
    assert str(exc.value).startswith("missing key: kek network v1 ")


def test_startup_names_a_wrong_key(att_app, migrated, tmp_path):
    w = build_world()
    att = attach(w.author, w.finding, b"needs the real kek network v1")
    bad = _keyring_without(att_app.extensions["enclave.settings"].keyring_path,
                           tmp_path / "bad.json", "network", 1, replace=True)
    with pytest.raises(KeyringError) as exc:
        make_app(migrated, tmp_path / "other", keyring_path=bad)
    assert str(exc.value).startswith(f"wrong key: kek network v1 does not open the data "
                                      f"key of attachment {att.id}")


def test_startup_ignores_keys_of_shredded_attachments(att_app, migrated, tmp_path):
    w = build_world()
    att = attach(w.author, w.finding, b"deleted soon")
    service.delete(w.author, att.id)
    bad = _keyring_without(att_app.extensions["enclave.settings"].keyring_path,
                           tmp_path / "bad.json", "network", 1)
    make_app(migrated, tmp_path / "other", keyring_path=bad)


def test_startup_skips_the_check_before_the_table_exists(tmp_path):
    create_app({"instance_path": tmp_path, "keyring_path": tmp_path / "k.json",
                "database_url": f"sqlite:///{tmp_path / 'empty.db'}", "env": "test",
                "secret_key": "s" * 40})


def test_console_script_names_the_missing_key_and_exits_2(att_app, migrated, tmp_path):
    w = build_world()
    attach(w.author, w.finding, b"needs kek network v1")
    bad = _keyring_without(att_app.extensions["enclave.settings"].keyring_path,
                           tmp_path / "bad.json", "network", 1)
    env = {**os.environ, "ENCLAVE_ENV": "test", "ENCLAVE_DATABASE_URL": migrated,
           "ENCLAVE_INSTANCE_PATH": str(tmp_path / "inst"), "ENCLAVE_KEYRING": str(bad),
           "ENCLAVE_SECRET_KEY": "s" * 40}
    result = subprocess.run([sys.executable, "-m", "app.cli_main", "audit", "verify"],
                            env=env, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: missing key: kek network v1 ")
