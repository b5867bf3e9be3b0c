"""Blob format version 2 through the app: the key id in the header names the data key,
so a swapped blob is reported as such; version-1 blobs (written before key ids) still
download; rotation (which only rewraps data keys) keeps every key id valid."""

from __future__ import annotations

import pytest
from cryptography.cobblestone import Cobblestone256Encryptor

from app import state
from app.attachments import service
from app.crypto.stream import (
    HEADER_SIZE,
    MAGIC,
    ciphertext_size,
    key_id,
)
from app.crypto.wrap import unwrap_data_key
from tests import attachments_world
from tests.attachments_world import (
    CHUNK,
    attach,
    audit_actions,
    blob_path,
    build_world,
    flip_byte,
    payload,
    reload,
)

att_app = attachments_world.att_app  # fixtures
att_client = attachments_world.att_client

MiB = 1024 * 1024
KEY_ID_ERROR = "blob was not encrypted with this attachment's key"


def _data_key(att) -> bytes:  # type: ignore[no-untyped-def]
    att = reload(att)
    _, kek = state.keyring().kek(att.kek_level, att.kek_version)
    return unwrap_data_key(kek, att.wrapped_key, attachment_id=att.id,
                           finding_id=att.finding_id, level=att.kek_level,
                           kek_version=att.kek_version)


def _refused_with(client, headers, att, reason: str) -> None:  # type: ignore[no-untyped-def]
    response = client.get(f"/api/v1/attachments/{att.id}", headers=headers)
    assert response.status_code == 500
    assert response.json["error"]["code"] == "integrity_error"
    failure = audit_actions("attachment_integrity_failure")[-1]
    assert failure.target_id == att.id
    assert reason in failure.detail("reason")


@pytest.mark.parametrize("size", [1, CHUNK, CHUNK + 1, 3 * MiB + 5])
def test_new_blobs_are_v2_with_the_key_id_of_their_data_key(att_app, att_client, api_token,
                                                             size):
    w = build_world()
    data = payload(size)
    att = attach(w.author, w.finding, data)
    raw = blob_path(att).read_bytes()
    assert raw[:5] == MAGIC + b"\x02"
    assert raw[5:HEADER_SIZE] == key_id(_data_key(att))
    assert len(raw) == ciphertext_size(size) == ciphertext_size(size, 2)
    response = att_client.get(f"/api/v1/attachments/{att.id}", headers=api_token(w.reader))
    assert response.status_code == 200 and response.data == data


def test_swapped_blob_reports_the_key_id_error(att_app, att_client, api_token):
    w = build_world()
    a = attach(w.author, w.finding, payload(5000, seed=1))
    b = attach(w.author, w.finding, payload(5000, seed=2))
    blob_path(a).write_bytes(blob_path(b).read_bytes())
    _refused_with(att_client, api_token(w.reader), a, KEY_ID_ERROR)
    assert audit_actions("attachment_downloaded") == []


@pytest.mark.parametrize("offset, reason", [
    (4, "known format header"),  # version byte 2 -> 3
    (5, KEY_ID_ERROR),  # first key id byte
    (HEADER_SIZE - 1, KEY_ID_ERROR),  # last key id byte
])
def test_header_tampering_is_detected(att_app, att_client, api_token, offset, reason):
    w = build_world()
    att = attach(w.author, w.finding, payload(3 * CHUNK))
    flip_byte(blob_path(att), offset)
    _refused_with(att_client, api_token(w.reader), att, reason)


def test_v2_blob_relabelled_v1_is_refused(att_app, att_client, api_token):
    """Version byte set to 1: the size no longer fits (v1 headers are 16 bytes shorter)
    and, size aside, the v1 context would not open a v2 body."""
    w = build_world()
    att = attach(w.author, w.finding, payload(1000))
    path = blob_path(att)
    raw = bytearray(path.read_bytes())
    raw[4] = 1
    path.write_bytes(bytes(raw))
    _refused_with(att_client, api_token(w.reader), att, "the format implies")
    path.write_bytes(bytes(raw[:5] + raw[HEADER_SIZE:]))  # right size for v1 now
    _refused_with(att_client, api_token(w.reader), att, "authentication failed")


def _rewrite_as_v1(att, data: bytes) -> None:  # type: ignore[no-untyped-def]
    """Replace the attachment's blob by the version-1 blob the old code would have
    written for it (same data key, context label NUL 0x01 NUL ``attachment:<id>``)."""
    enc = Cobblestone256Encryptor(
        _data_key(att), b"enclave/blob\x00\x01\x00" + service.blob_context(att.id).encode())
    blob = b"ENCV\x01" + enc.update(data) + enc.finalize()
    assert len(blob) == ciphertext_size(len(data), 1)
    blob_path(att).write_bytes(blob)


@pytest.mark.parametrize("size", [1, CHUNK, CHUNK + 1, 2 * MiB + 3])
def test_v1_blobs_still_download(att_app, att_client, api_token, size):
    w = build_world()
    data = payload(size, seed=size)
    att = attach(w.author, w.finding, data)
    _rewrite_as_v1(att, data)
    headers = api_token(w.reader)
    response = att_client.get(f"/api/v1/attachments/{att.id}", headers=headers)
    assert response.status_code == 200 and response.data == data
    if size < 2:
        return
    start = size // 2
    ranged = att_client.get(f"/api/v1/attachments/{att.id}",
                            headers={**headers, "Range": f"bytes={start}-{size}"})
    assert ranged.status_code == 206 and ranged.data == data[start:]


def test_v1_blob_with_a_flipped_byte_is_refused(att_app, att_client, api_token):
    w = build_world()
    data = payload(3 * CHUNK)
    att = attach(w.author, w.finding, data)
    _rewrite_as_v1(att, data)
    flip_byte(blob_path(att), 30)  # key commitment
    _refused_with(att_client, api_token(w.reader), att, "authentication failed")


def test_rotation_keeps_key_ids_valid(att_app, att_client, api_token):
    """Rotation rewraps data keys under new KEKs and never touches blobs: the key id in
    each header still matches, so v2 and v1 blobs download as before."""
    w = build_world()
    files = {}
    for i, size in enumerate((1, CHUNK + 1, MiB + 7)):
        data = payload(size, seed=i)
        files[attach(w.author, w.finding, data).id] = data
    old = attach(w.author, w.finding, payload(5000, seed=9))
    _rewrite_as_v1(old, payload(5000, seed=9))
    files[old.id] = payload(5000, seed=9)
    from app.attachments.models import Attachment
    from app.db import db

    before = {}
    for att_id in files:
        att = db.get(Attachment, att_id)
        before[att_id] = (blob_path(att).read_bytes(), att.kek_version)
    report = service.rotate_keys()
    assert report.rewrapped == len(files) and report.remaining == 0
    headers = api_token(w.reader)
    for att_id, data in files.items():
        att = reload(db.get(Attachment, att_id))
        assert att.kek_version == before[att_id][1] + 1
        raw = blob_path(att).read_bytes()
        assert raw == before[att_id][0]
        if raw[4] == 2:
            assert raw[5:HEADER_SIZE] == key_id(_data_key(att))
        response = att_client.get(f"/api/v1/attachments/{att_id}", headers=headers)
        assert response.status_code == 200 and response.data == data
