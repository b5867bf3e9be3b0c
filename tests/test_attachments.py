"""Attachments through the API and the web: round trips, headers, ranges, filenames,
limits, access on every route, and deletion by crypto-shredding."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import shutil
from pathlib import Path

import pytest
from flask_login import login_user
from sqlalchemy import select

from app import state
from app.attachments import service
from app.attachments.models import Attachment
from app.db import db
from app.errors import ServiceError
from app.policy import load_policy
from tests import attachments_world
from tests.attachments_world import (
    CHUNK,
    attach,
    audit_actions,
    blob_files,
    blob_path,
    build_world,
    payload,
    reload,
    temp_files,
)
from tests.conftest import csrf_from
from tests.factories import login, make_finding, make_user

att_app = attachments_world.att_app  # fixtures
att_client = attachments_world.att_client

SIZES = [1, CHUNK, CHUNK + 1, 5 * 1024 * 1024 + 123]


def api_upload(client, headers, finding_id, data, filename="data.bin", **kw):  # type: ignore[no-untyped-def]
    return client.post(f"/api/v1/findings/{finding_id}/attachments",
                       query_string={"filename": filename}, data=data,
                       headers={**headers, "Content-Type": "application/octet-stream"}, **kw)


def web_token(client) -> str:  # type: ignore[no-untyped-def]
    return csrf_from(client.get("/ndas/").text)


def web_upload(client, finding_id, data, filename="data.bin", token=None):  # type: ignore[no-untyped-def]
    return client.post(f"/findings/{finding_id}/attachments",
                       query_string={"filename": filename}, data=data,
                       headers={"X-CSRFToken": token or web_token(client),
                                "Content-Type": "application/octet-stream",
                                "X-Upload-Content-Type": "text/csv"})


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("size", SIZES)
def test_api_round_trip(att_app, att_client, api_token, size):
    w = build_world()
    data = payload(size)
    headers = api_token(w.author)
    response = api_upload(att_client, headers, w.finding.id, data)
    assert response.status_code == 201, response.json
    body = response.json
    assert body["size"] == size and body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["download_url"] == f"/api/v1/attachments/{body['id']}"

    # The blob on disk is ciphertext of exactly the expected size, not the plaintext.
    att = db.get(Attachment, body["id"])
    raw = blob_path(att).read_bytes()
    assert len(raw) == service.ciphertext_size(size)
    assert size < 32 or data[:32] not in raw

    reader = api_token(w.reader)
    got = att_client.get(body["download_url"], headers=reader)
    assert got.status_code == 200
    assert got.data == data
    assert got.headers["Content-Length"] == str(size)
    listing = att_client.get(f"/api/v1/findings/{w.finding.id}/attachments", headers=reader)
    assert [i["id"] for i in listing.json["items"]] == [body["id"]]
    assert listing.json["total"] == 1
    assert [e.target_id for e in audit_actions("attachment_downloaded")] == [body["id"]]


@pytest.mark.parametrize("size", SIZES)
def test_web_round_trip(att_app, att_client, size):
    w = build_world()
    data = payload(size, seed=size)
    login(att_client, w.author)
    response = web_upload(att_client, w.finding.id, data, filename="results.csv")
    assert response.status_code == 201, response.json
    att_id = response.json["id"]
    assert response.json["content_type"] == "text/csv"
    got = att_client.get(f"/attachments/{att_id}")
    assert got.status_code == 200 and got.data == data


def test_chunked_upload_without_content_length(att_app, att_client, api_token):
    w = build_world()
    data = payload(3 * 1024 * 1024 + 7)
    response = att_client.post(
        f"/api/v1/findings/{w.finding.id}/attachments?filename=chunked.bin",
        input_stream=io.BytesIO(data), headers=api_token(w.author),
        environ_overrides={"wsgi.input_terminated": True})  # what servers set for chunked
    assert response.status_code == 201, response.json
    got = att_client.get(response.json["download_url"], headers=api_token(w.author))
    assert got.data == data


def test_zero_bytes_round_trip_through_the_format(att_app):
    """An empty upload is refused (below), but the storage format itself handles 0 bytes:
    encrypt nothing into the blob store and get nothing back, authenticated."""
    from app.crypto.stream import StreamEncryptor, new_data_key

    key = new_data_key()
    enc = StreamEncryptor(key, service.blob_context("0" * 32))
    store = state.blobs()
    with store.open_writer("ab" * 16) as writer:
        writer.write(enc.header())
        writer.write(enc.finalize())
        writer.commit()
    assert store.size("ab" * 16) == service.ciphertext_size(0)
    from app.crypto.stream import decrypt_stream
    from app.storage import read_chunks

    with store.open_reader("ab" * 16) as f:
        assert b"".join(decrypt_stream(key, service.blob_context("0" * 32),
                                       read_chunks(f))) == b""


def test_download_headers_are_safe(att_app, att_client, api_token):
    w = build_world()
    data = b"<html><script>alert(1)</script></html>"
    att = attach(w.author, w.finding, data, filename="résumé 2024 \"final\".html",
                 content_type="text/html")
    response = att_client.get(f"/api/v1/attachments/{att.id}", headers=api_token(w.reader))
    h = response.headers
    assert h["Content-Type"] == "application/octet-stream"
    assert h["X-Content-Type-Options"] == "nosniff"
    assert att.filename == "r\u00e9sum\u00e9 2024 _final_.html"
    assert h["Content-Disposition"] == (
        "attachment; filename=\"resume 2024 _final_.html\"; "
        "filename*=UTF-8''r%C3%A9sum%C3%A9%202024%20_final_.html")
    assert "sandbox" in h["Content-Security-Policy"]
    assert h["Cache-Control"] == "no-store"
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert h["Repr-Digest"] == f"sha-256=:{digest}:"
    assert response.data == data
    # The declared type is kept as metadata only.
    assert att.content_type == "text/html"


def test_head_answers_headers_without_logging_a_download(att_app, att_client, api_token):
    w = build_world()
    att = attach(w.author, w.finding, payload(100))
    response = att_client.head(f"/api/v1/attachments/{att.id}", headers=api_token(w.reader))
    assert response.status_code == 200
    assert response.headers["Content-Length"] == "100"
    assert audit_actions("attachment_downloaded") == []


def test_byte_ranges(att_app, att_client, api_token):
    w = build_world()
    data = payload(3 * CHUNK + 10)
    att = attach(w.author, w.finding, data)
    headers = api_token(w.reader)
    url = f"/api/v1/attachments/{att.id}"

    r = att_client.get(url, headers={**headers, "Range": "bytes=100-20000"})
    assert r.status_code == 206 and r.data == data[100:20001]
    assert r.headers["Content-Range"] == f"bytes 100-20000/{len(data)}"
    assert r.headers["Content-Length"] == str(20001 - 100)

    r = att_client.get(url, headers={**headers, "Range": "bytes=-10"})
    assert r.status_code == 206 and r.data == data[-10:]

    r = att_client.get(url, headers={**headers, "Range": f"bytes={len(data)}-"})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"

    # Several ranges, or an If-Range for another version: the whole file.
    r = att_client.get(url, headers={**headers, "Range": "bytes=0-1,5-6"})
    assert r.status_code == 200 and r.data == data
    r = att_client.get(url, headers={**headers, "Range": "bytes=0-1", "If-Range": '"other"'})
    assert r.status_code == 200 and r.data == data
    r = att_client.get(url, headers={**headers, "Range": "bytes=0-1",
                                     "If-Range": f'"{att.id}"'})
    assert r.status_code == 206 and r.data == data[:2]
    ranged = [e.details_dict.get("range") for e in audit_actions("attachment_downloaded")]
    assert ranged == ["100-20000", f"{len(data) - 10}-{len(data) - 1}", None, None, "0-1"]


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("raw, expected", [
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\eve\\report.pdf", "report.pdf"),
    ("a\x00b\x1fc\x7f.txt", "abc.txt"),
    ("invoice\u202egpj.exe", "invoicegpj.exe"),  # right-to-left override removed
    ("  spaced \t out  .txt", "spaced out .txt"),
    ("what?<is>this:*|.md", "what__is_this___.md"),
    ("CON.txt", "_CON.txt"),
    (".bashrc", "bashrc"),
])
def test_filenames_are_cleaned(raw, expected):
    assert service.clean_filename(raw) == expected


def test_long_filename_keeps_its_extension():
    name = service.clean_filename("a" * 296 + ".ipynb")
    assert len(name) == service.FILENAME_MAX and name.endswith(".ipynb")
    assert len(service.clean_filename("b" * 300)) == service.FILENAME_MAX


@pytest.mark.parametrize("raw", ["", "   ", "...", "/", "dir/", "\x00\x01"])
def test_empty_filenames_are_refused(att_app, att_client, api_token, raw):
    w = build_world()
    response = api_upload(att_client, api_token(w.author), w.finding.id, b"data", raw)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "bad_filename"
    assert db.scalars(select(Attachment)).all() == [] and blob_files() == []


def test_bad_names_are_stored_clean_through_the_api(att_app, att_client, api_token):
    w = build_world()
    headers = api_token(w.author)
    response = api_upload(att_client, headers, w.finding.id, b"x", "../../\x07evil/" + "n" * 300)
    assert response.status_code == 201
    assert response.json["filename"] == "n" * service.FILENAME_MAX


def test_missing_filename_is_refused(att_app, att_client, api_token):
    w = build_world()
    response = att_client.post(f"/api/v1/findings/{w.finding.id}/attachments", data=b"abc",
                               headers=api_token(w.author))
    assert response.status_code == 400 and response.json["error"]["code"] == "bad_filename"


def test_empty_body_is_refused(att_app, att_client, api_token):
    w = build_world()
    headers = api_token(w.author)
    response = api_upload(att_client, headers, w.finding.id, b"")
    assert response.status_code == 400 and response.json["error"]["code"] == "empty_file"
    chunked = att_client.post(
        f"/api/v1/findings/{w.finding.id}/attachments?filename=x", input_stream=io.BytesIO(),
        headers=headers, environ_overrides={"wsgi.input_terminated": True})
    assert chunked.status_code == 400 and chunked.json["error"]["code"] == "empty_file"
    login(att_client, w.author)
    assert web_upload(att_client, w.finding.id, b"").json["error"]["code"] == "empty_file"
    assert db.scalars(select(Attachment)).all() == []
    assert blob_files() == [] and temp_files() == []


def test_form_encoded_upload_is_refused(att_app, att_client, api_token):
    w = build_world()
    response = att_client.post(f"/api/v1/findings/{w.finding.id}/attachments?filename=x",
                               data={"file": (io.BytesIO(b"abc"), "x.txt")},
                               headers=api_token(w.author))
    assert response.status_code == 400
    assert response.json["error"]["code"] == "unsupported_media_type"


def test_web_upload_needs_the_csrf_token(att_app, att_client):
    w = build_world()
    login(att_client, w.author)
    response = web_upload(att_client, w.finding.id, b"data", token="forged")
    assert response.status_code == 400 and response.json["error"]["code"] == "csrf"
    response = att_client.post(f"/findings/{w.finding.id}/attachments?filename=x",
                               data=b"data", headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 400
    assert db.scalars(select(Attachment)).all() == []


def test_locked_finding_takes_no_files(att_app, att_client, api_token):
    w = build_world()
    w.finding.locked = True
    db.commit()
    response = api_upload(att_client, api_token(w.author), w.finding.id, b"data")
    assert response.status_code == 409 and response.json["error"]["code"] == "locked"


# ------------------------------------------------------------------ limits


def _limit_levels(text: str, caps: dict[str, int]) -> str:
    """levels.toml with each level's max_attachment_mb set from ``caps`` (0 = no files)."""
    head, *blocks = text.split("[[levels]]")
    out = [head.replace("max_attachment_mb = 16384", "max_attachment_mb = 2")
               .replace("user_quota_mb = 65536", "user_quota_mb = 3")]
    for block in blocks:
        key = re.search(r'key = "([^"]+)"', block).group(1)  # type: ignore[union-attr]
        cap = caps[key]
        block = re.sub(r"attachments = \w+", f"attachments = {'true' if cap else 'false'}",
                       block)
        block = re.sub(r"max_attachment_mb = \d+", f"max_attachment_mb = {cap}", block)
        out.append(block)
    return "[[levels]]".join(out)


@pytest.fixture
def small_policy(att_app, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Public: no files; network: 1 MiB; the rest 2 MiB; global 2 MiB; quota 3 MiB."""
    dst = tmp_path / "policies"
    shutil.copytree(Path(state.policy().source_dir), dst)
    levels = dst / "levels.toml"
    levels.write_text(_limit_levels(levels.read_text(), {
        "public": 0, "network": 1, "restricted": 2, "confidential": 2}))
    policy = load_policy(dst)
    assert not policy.level("public").attachments
    assert policy.level("network").max_attachment_mb == 1
    saved = att_app.extensions["enclave.policy"]
    att_app.extensions["enclave.policy"] = policy
    yield policy
    att_app.extensions["enclave.policy"] = saved


MiB = 1024 * 1024


def test_level_without_attachments_refuses(att_app, att_client, api_token, small_policy):
    w = build_world()
    public = make_finding(w.author, level="public")
    response = api_upload(att_client, api_token(w.author), public.id, b"data")
    assert response.status_code == 403
    assert response.json["error"]["code"] == "attachments_disabled"
    assert temp_files() == [] and blob_files() == []


def test_over_the_cap_by_content_length_is_refused_before_reading(att_app, small_policy):
    w = build_world()

    class Body(io.BytesIO):
        read_bytes = 0

        def read(self, size=-1):  # type: ignore[no-untyped-def]
            chunk = super().read(size)
            Body.read_bytes += len(chunk)
            return chunk

    body = Body(payload(MiB + 1))
    with pytest.raises(ServiceError) as exc:
        service.upload(w.author, w.finding.id, filename="big.bin", stream=body,
                       content_length=MiB + 1)
    assert exc.value.status == 413 and exc.value.code == "too_large"
    assert exc.value.message == "The file is larger than the 1 MiB limit for Network files."
    assert Body.read_bytes == 0 and temp_files() == [] and blob_files() == []


def test_over_the_cap_via_api_content_length(att_app, att_client, api_token, small_policy):
    w = build_world()
    restricted = make_finding(w.author, level="restricted")
    response = api_upload(att_client, api_token(w.author), restricted.id, payload(2 * MiB + 1))
    assert response.status_code == 413 and response.json["error"]["code"] == "too_large"
    assert db.scalars(select(Attachment)).all() == [] and temp_files() == []


def test_chunked_body_over_the_cap_stops_while_streaming(att_app, att_client, api_token,
                                                         small_policy):
    w = build_world()

    class Body(io.BytesIO):
        read_bytes = 0

        def read(self, size=-1):  # type: ignore[no-untyped-def]
            chunk = super().read(size)
            Body.read_bytes += len(chunk)
            return chunk

    response = att_client.post(
        f"/api/v1/findings/{w.finding.id}/attachments?filename=big.bin",
        input_stream=Body(payload(20 * MiB)), headers=api_token(w.author),
        environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413 and response.json["error"]["code"] == "too_large"
    # It stopped at the limit (plus one read), not after swallowing the 20 MiB body.
    assert Body.read_bytes <= MiB + service.UPLOAD_READ_SIZE
    assert db.scalars(select(Attachment)).all() == []
    assert temp_files() == [] and blob_files() == []


def test_exactly_at_the_cap_is_accepted(att_app, att_client, api_token, small_policy):
    w = build_world()
    response = api_upload(att_client, api_token(w.author), w.finding.id, payload(MiB))
    assert response.status_code == 201
    response = api_upload(att_client, api_token(w.author), w.finding.id, payload(MiB + 1))
    assert response.status_code == 413


def test_user_quota(att_app, att_client, api_token, small_policy):
    w = build_world()
    headers = api_token(w.author)
    for _ in range(3):
        assert api_upload(att_client, headers, w.finding.id, payload(MiB)).status_code == 201
    response = api_upload(att_client, headers, w.finding.id, b"x")
    assert response.status_code == 413 and response.json["error"]["code"] == "quota_exceeded"
    assert "quota" in response.json["error"]["message"]
    assert service.upload_refusal(w.author, w.finding) == \
        "Your storage quota (3 MiB) is used up; delete files to add more."
    # Someone else still has their own quota; deleting frees the author's.
    assert api_upload(att_client, api_token(w.reader), w.finding.id, b"x").status_code == 201
    first = db.scalars(select(Attachment).where(Attachment.uploader_id == w.author.id)).first()
    assert att_client.delete(f"/api/v1/attachments/{first.id}", headers=headers) \
        .status_code == 204
    assert api_upload(att_client, headers, w.finding.id, b"x").status_code == 201


def test_chunked_upload_over_quota_stops_while_streaming(att_app, att_client, api_token,
                                                         small_policy):
    w = build_world()
    headers = api_token(w.author)
    restricted = make_finding(w.author, level="restricted")
    assert api_upload(att_client, headers, restricted.id, payload(2 * MiB)).status_code == 201
    response = att_client.post(
        f"/api/v1/findings/{restricted.id}/attachments?filename=more.bin",
        input_stream=io.BytesIO(payload(MiB + 5)), headers=headers,
        environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413
    assert response.json["error"]["code"] == "quota_exceeded"
    assert len(blob_files()) == 1 and temp_files() == []


def test_section_tells_why_files_cannot_be_added(att_app, small_policy):
    w = build_world()
    public = make_finding(w.author, level="public")
    assert service.upload_refusal(w.author, public) == \
        "Files cannot be attached to Public findings."
    assert service.upload_refusal(w.author, w.finding) is None


# ------------------------------------------------------------------ access on every route


def _routes(att_id: str, finding_id: int) -> list[tuple[str, str]]:
    return [("GET", f"/attachments/{att_id}"),
            ("POST", f"/attachments/{att_id}/delete"),
            ("POST", f"/findings/{finding_id}/attachments?filename=x")]


def _api_routes(att_id: str, finding_id: int) -> list[tuple[str, str]]:
    return [("GET", f"/api/v1/attachments/{att_id}"),
            ("HEAD", f"/api/v1/attachments/{att_id}"),
            ("DELETE", f"/api/v1/attachments/{att_id}"),
            ("GET", f"/api/v1/findings/{finding_id}/attachments"),
            ("POST", f"/api/v1/findings/{finding_id}/attachments?filename=x")]


@pytest.mark.parametrize("who", ["outsider", "low"])
def test_unreadable_finding_means_404_on_every_route(att_app, att_client, api_token, who):
    w = build_world()
    att = attach(w.author, w.secret, b"compartmented bytes")
    user = getattr(w, who)
    headers = api_token(user)
    for method, url in _api_routes(att.id, w.secret.id):
        response = att_client.open(url, method=method, data=b"abc", headers={
            **headers, "Content-Type": "application/octet-stream"})
        assert response.status_code == 404, (method, url, response.status_code)
        if method != "HEAD":
            assert response.json["error"]["code"] == "not_found"
    login(att_client, user)
    token = web_token(att_client)
    for method, url in _routes(att.id, w.secret.id):
        if url.endswith("/delete"):
            response = att_client.post(url, data={"csrf_token": token})
        else:
            response = att_client.open(url, method=method, data=b"abc", headers={
                "X-CSRFToken": token, "Content-Type": "application/octet-stream"})
        assert response.status_code == 404, (method, url, response.status_code)
    # Nothing changed, nothing leaked.
    assert reload(att).live and len(blob_files()) == 1
    assert audit_actions("attachment_downloaded") == []


def test_unknown_and_malformed_ids_are_404(att_app, att_client, api_token):
    w = build_world()
    headers = api_token(w.author)
    for att_id in ["0" * 32, "../../etc", "A" * 32, "x"]:
        assert att_client.get(f"/api/v1/attachments/{att_id}", headers=headers) \
            .status_code == 404
    assert api_upload(att_client, headers, 999999, b"x").status_code == 404


def test_missing_nda_or_mfa(att_app, att_client, api_token):
    w = build_world()
    restricted = make_finding(w.author, level="restricted")
    att = attach(w.author, restricted, b"restricted bytes")
    no_nda = make_user(w.org, name="nina", ndas=["network-terms"])
    no_mfa = make_user(w.org, name="mo", mfa_on=False)

    r = att_client.get(f"/api/v1/attachments/{att.id}", headers=api_token(no_nda))
    assert r.status_code == 403 and r.json["error"]["code"] == "nda_required"
    r = att_client.get(f"/api/v1/attachments/{att.id}", headers=api_token(no_mfa))
    assert r.status_code == 403 and r.json["error"]["code"] == "mfa_required"
    r = api_upload(att_client, api_token(no_mfa), restricted.id, b"x")
    assert r.status_code == 403 and r.json["error"]["code"] == "mfa_required"

    login(att_client, no_nda)
    r = att_client.get(f"/attachments/{att.id}")
    assert r.status_code == 302 and "/ndas" in r.location
    att_client.post("/logout", data={"csrf_token": web_token(att_client)})
    login(att_client, no_mfa)
    r = att_client.get(f"/attachments/{att.id}")
    assert r.status_code == 302 and r.location.endswith("/account/2fa")
    assert audit_actions("attachment_downloaded") == []


def test_signed_out_web_and_tokenless_api(att_app, att_client):
    w = build_world()
    att = attach(w.author, w.finding, b"bytes")
    r = att_client.get(f"/attachments/{att.id}")
    assert r.status_code == 302 and "/login" in r.location
    r = att_client.get(f"/api/v1/attachments/{att.id}")
    assert r.status_code == 401


# ------------------------------------------------------------------ delete = crypto-shred


def test_delete_shreds_key_then_blob_api(att_app, att_client, api_token):
    w = build_world()
    att = attach(w.author, w.finding, payload(CHUNK * 2))
    path = blob_path(att)
    assert path.exists()
    # A reader who is not the uploader, the author or an admin may not delete.
    r = att_client.delete(f"/api/v1/attachments/{att.id}", headers=api_token(w.reader))
    assert r.status_code == 403 and reload(att).live

    r = att_client.delete(f"/api/v1/attachments/{att.id}", headers=api_token(w.author))
    assert r.status_code == 204
    row = reload(att)
    assert row.wrapped_key is None and row.deleted_at is not None and not row.live
    assert not path.exists()
    for headers in (api_token(w.author), api_token(w.admin)):
        assert att_client.get(f"/api/v1/attachments/{att.id}", headers=headers) \
            .status_code == 404
    assert att_client.delete(f"/api/v1/attachments/{att.id}", headers=api_token(w.author)) \
        .status_code == 404
    assert [e.target_id for e in audit_actions("attachment_deleted")] == [att.id]
    listing = att_client.get(f"/api/v1/findings/{w.finding.id}/attachments",
                             headers=api_token(w.author))
    assert listing.json["items"] == []


def test_delete_via_web_by_finding_author_and_admin(att_app, att_client):
    w = build_world()
    by_reader = attach(w.reader, w.finding, b"reader's file")
    second = attach(w.reader, w.finding, b"another file")
    login(att_client, w.author)  # the finding's author may delete files others added
    token = web_token(att_client)
    r = att_client.post(f"/attachments/{by_reader.id}/delete",
                        data={"csrf_token": token, "next": f"/findings/{w.finding.id}"})
    assert r.status_code == 302 and r.location.endswith(f"/findings/{w.finding.id}")
    assert reload(by_reader).wrapped_key is None
    assert att_client.get(f"/attachments/{by_reader.id}").status_code == 404
    # without the CSRF token nothing happens
    r = att_client.post(f"/attachments/{second.id}/delete", data={})
    assert r.status_code == 400 and reload(second).live


def test_admin_may_delete_on_a_locked_finding_uploader_may_not(att_app, att_client,
                                                                api_token):
    w = build_world()
    att = attach(w.author, w.finding, b"evidence")
    w.finding.locked = True
    db.commit()
    r = att_client.delete(f"/api/v1/attachments/{att.id}", headers=api_token(w.author))
    assert r.status_code == 409 and reload(att).live
    r = att_client.delete(f"/api/v1/attachments/{att.id}", headers=api_token(w.admin))
    assert r.status_code == 204 and reload(att).wrapped_key is None


# ------------------------------------------------------------------ the page section


def test_section_lists_files_with_size_hash_and_links(att_app):
    w = build_world()
    data = payload(2048)
    att = attach(w.author, w.finding, data, filename="notebook.ipynb")
    other = attach(w.reader, w.finding, b"x", filename="a&b'c<d.txt")
    from flask import render_template

    with att_app.test_request_context(f"/findings/{w.finding.id}"):
        login_user(w.author)
        html = render_template("attachments/_section.html", finding=w.finding)
    assert "notebook.ipynb" in html and "2 KiB" in html
    assert hashlib.sha256(data).hexdigest() in html
    assert f"/attachments/{att.id}" in html and f"/attachments/{other.id}/delete" in html
    assert "a&amp;b&#39;c_d.txt" in html
    assert 'class="upload-zone"' in html and "upload.js" in html
    assert f'data-upload-url="/findings/{w.finding.id}/attachments"' in html

    with att_app.test_request_context(f"/findings/{w.finding.id}"):
        login_user(w.low)  # can read, may not delete others' files
        html = render_template("attachments/_section.html", finding=w.finding)
    assert f"/attachments/{att.id}/delete" not in html


def test_finding_page_shows_the_files_section(att_app, att_client):
    w = build_world()
    data = payload(3000)
    login(att_client, w.author)
    upload = web_upload(att_client, w.finding.id, data, filename="sae-weights.safetensors",
                        token=csrf_from(att_client.get(f"/findings/{w.finding.id}").text))
    assert upload.status_code == 201
    page = att_client.get(f"/findings/{w.finding.id}")
    assert page.status_code == 200
    html = page.text
    assert "sae-weights.safetensors" in html and hashlib.sha256(data).hexdigest() in html
    assert f'href="/attachments/{upload.json["id"]}"' in html
    assert f'/attachments/{upload.json["id"]}/delete' in html
    assert 'class="upload-zone"' in html and "/static/upload.js" in html
    assert "Attached sae-weights.safetensors" in html  # flashed after the XHR upload
    download = att_client.get(f"/attachments/{upload.json['id']}")
    assert download.data == data
