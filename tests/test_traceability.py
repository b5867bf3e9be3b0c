# ruff: noqa: F811  (the attachment fixtures are imported, then taken as arguments)
"""Per-reader stamped copies (PDF, images, text, notebooks), ``enclave trace``, view-only
levels and the on-screen watermark. The default policy stamps Confidential downloads
and watermarks Confidential pages; view-only is tried with a policy that says so."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image, ImageDraw
from pypdf import PdfReader, PdfWriter
from sqlalchemy import select

from app import state
from app.audit import AuditEntry
from app.cli import enclave
from app.db import db
from app.policy import load_policy
from app.traceability import pdf as pdfs
from app.traceability.marks import CODE_RE
from app.traceability.models import AttachmentCopy
from tests.attachments_world import att_app, att_client, attach, blob_path  # noqa: F401
from tests.factories import login, make_finding, make_org, make_user, post_form
from tests.pdf_samples import text_pdf, with_xref_stream

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "traceability"


@pytest.fixture
def world(att_app):  # noqa: F811
    org = make_org("northlight")
    org.name = "Northlight Labs"
    db.commit()
    author = make_user(org, name="alice")
    reader = make_user(org, name="nina")
    reader.display_name = "Nina Tester"
    db.commit()
    secret = make_finding(author, level="confidential", title="Steering appendix",
                          compartment=[org])
    open_finding = make_finding(author, level="network", title="Open notes")
    return {"org": org, "author": author, "reader": reader, "secret": secret,
            "open": open_finding}


def png_bytes(size=(640, 420), fmt="PNG") -> bytes:
    img = Image.new("RGB", size, (30, 90, 160))
    ImageDraw.Draw(img).ellipse([120, 60, 520, 360], fill=(240, 200, 40))
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


def trace(app, path: Path):  # type: ignore[no-untyped-def]
    return app.test_cli_runner().invoke(enclave, ["trace", str(path)])


def download(client, headers, att):  # type: ignore[no-untyped-def]
    r = client.get(f"/api/v1/attachments/{att.id}", headers=headers)
    assert r.status_code == 200, r.get_data()[:300]
    return r


def save(name: str, data: bytes) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    path.write_bytes(data)
    return path


def _no_tokens(html: str) -> str:
    """A page without its CSRF tokens (they carry the time they were made)."""
    import re

    return re.sub(r'value="[^"]*"', 'value=""', html)


def qr_codes(img: Image.Image) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(img.convert("RGB"))]


@pytest.mark.parametrize("variant", ["classic", "xref-stream"])
def test_a_stamped_pdf_opens_in_a_real_reader_and_traces_to_its_reader(
        att_app, att_client, world, api_token, variant):  # noqa: F811
    original = text_pdf(["Steering vectors appendix", "Table 3"], pages=3, rotate_last=True)
    if variant == "xref-stream":
        original = with_xref_stream(original)
    att = attach(world["author"], world["secret"], original, filename="appendix.pdf",
                 content_type="application/pdf")
    blob_before = hashlib.sha256(blob_path(att).read_bytes()).hexdigest()
    r = download(att_client, api_token(world["reader"]), att)
    copy_bytes = r.get_data()
    code = r.headers["X-Enclave-Copy"]
    assert CODE_RE.fullmatch(code)
    assert int(r.headers["Content-Length"]) == len(copy_bytes)
    assert "Repr-Digest" not in r.headers and "Accept-Ranges" not in r.headers
    # an incremental update: the original bytes come first, unchanged
    assert copy_bytes.startswith(original) and len(copy_bytes) > len(original)
    assert hashlib.sha256(blob_path(att).read_bytes()).hexdigest() == blob_before

    reader = PdfReader(io.BytesIO(copy_bytes))
    record = db.scalar(select(AttachmentCopy).where(AttachmentCopy.code == code))
    assert record.user_id == world["reader"].id and record.attachment_id == att.id
    assert reader.metadata["/EnclaveCopy"] == record.id
    assert len(reader.pages) == 3
    text = reader.pages[0].extract_text()
    assert "Nina Tester" in text and "Northlight Labs" in text and code in text
    assert "Steering vectors appendix" in text  # the page itself is still there

    # poppler renders it, and the stamp (its QR code) is on every page it drew
    path = save(f"stamped-{variant}.pdf", copy_bytes)
    subprocess.run(["pdftoppm", "-r", "110", "-png", str(path), str(path.with_suffix(""))],
                   check=True, capture_output=True, timeout=60)
    pages = sorted(ARTIFACTS.glob(f"stamped-{variant}-*.png"))
    assert len(pages) == 3
    for page in pages:
        assert code in qr_codes(Image.open(page))

    result = trace(att_app, path)
    assert result.exit_code == 0, result.output
    assert f"copy {code} for Nina Tester <{world['reader'].email}>" in result.output

    # metadata and file identifier stripped (rewritten by another tool): the printed
    # code still names the copy
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(copy_bytes)))
    writer._info = None  # no document information at all
    stripped = io.BytesIO()
    writer.write(stripped)
    check = PdfReader(io.BytesIO(stripped.getvalue()))
    assert not (check.metadata or {}).get("/EnclaveCopy")
    stripped_path = save(f"stripped-{variant}.pdf", stripped.getvalue())
    result = trace(att_app, stripped_path)
    assert result.exit_code == 0, result.output
    assert "copy code printed on the pages" in result.output and code in result.output


def test_each_download_is_a_new_recorded_copy(att_app, att_client, world, api_token):  # noqa: F811
    att = attach(world["author"], world["secret"], text_pdf(["x"], pages=1),
                 filename="a.pdf")
    headers = api_token(world["reader"])
    codes = {download(att_client, headers, att).headers["X-Enclave-Copy"] for _ in range(2)}
    assert len(codes) == 2
    entries = db.scalars(select(AuditEntry).where(
        AuditEntry.action == "attachment_copy_made")).all()
    assert {e.details_dict["code"] for e in entries} == codes
    assert all(e.actor_id == world["reader"].id and e.target_id == att.id for e in entries)
    assert all(e.ip for e in entries)
    rows = db.scalars(select(AttachmentCopy).where(AttachmentCopy.attachment_id == att.id))
    assert {r.code for r in rows} == codes
    # HEAD makes no copy
    assert att_client.head(f"/api/v1/attachments/{att.id}", headers=headers).status_code == 200
    assert db.scalar(select(AttachmentCopy.id).where(
        AttachmentCopy.attachment_id == att.id).offset(2)) is None


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_stamped_image_carries_its_id_and_a_visible_code_that_survive_stripping(
        att_app, att_client, world, api_token, fmt):  # noqa: F811
    original = png_bytes(fmt=fmt)
    att = attach(world["author"], world["secret"], original,
                 filename=f"figure.{fmt.lower()}")
    r = download(att_client, api_token(world["reader"]), att)
    code = r.headers["X-Enclave-Copy"]
    img = Image.open(io.BytesIO(r.get_data()))
    assert img.format == fmt and img.width == 640 and img.height > 420  # the band below
    assert code in qr_codes(img)
    path = save(f"stamped.{fmt.lower()}", r.get_data())
    assert trace(att_app, path).exit_code == 0

    # a screenshot-like copy: the pixels only, no metadata, saved as another format
    bare = Image.new("RGB", img.size)
    bare.paste(img.convert("RGB"))
    out = io.BytesIO()
    bare.save(out, "PNG")
    assert b"EnclaveCopy" not in out.getvalue()
    stripped = save(f"stripped-from-{fmt.lower()}.png", out.getvalue())
    result = trace(att_app, stripped)
    assert result.exit_code == 0, result.output
    assert "QR code in the picture" in result.output and code in result.output


def test_text_files_and_notebooks_carry_the_code_in_a_header(att_app, att_client, world,
                                                             api_token):  # noqa: F811
    headers = api_token(world["reader"])
    files = {
        "notes.md": b"---\ntitle: Notes\n---\n# Heading\n\nBody text.\n",
        "probe.py": b"#!/usr/bin/env python3\n# -*- coding: utf-8 -*-\nprint('hi')\n",
        "scores.csv": b"layer,score\r\n1,0.5\r\n",
    }
    for name, data in files.items():
        att = attach(world["author"], world["secret"], data, filename=name)
        r = download(att_client, headers, att)
        body, code = r.get_data(), r.headers["X-Enclave-Copy"]
        assert code.encode() in body and b"Nina Tester" in body
        lines = body.splitlines(keepends=True)
        if name == "notes.md":
            assert body.startswith(b"---\ntitle: Notes\n---\n> **Enclave Confidential copy")
        elif name == "probe.py":
            assert lines[0] == b"#!/usr/bin/env python3\n" and lines[2].startswith(b"# Enclave")
        else:
            assert lines[0].startswith(b"# Enclave") and lines[0].endswith(b"\r\n")
            assert b"".join(lines[1:]) == data
        assert int(r.headers["Content-Length"]) == len(body)
        assert trace(att_app, save(f"stamped-{name}", body)).exit_code == 0

    notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                "cells": [{"id": "a1", "cell_type": "code", "metadata": {}, "source": ["1+1"],
                           "outputs": [], "execution_count": None}]}
    att = attach(world["author"], world["secret"], json.dumps(notebook).encode(),
                 filename="probe.ipynb")
    r = download(att_client, headers, att)
    code = r.headers["X-Enclave-Copy"]
    stamped = json.loads(r.get_data())
    assert stamped["cells"][0]["cell_type"] == "markdown" and code in "".join(
        stamped["cells"][0]["source"])
    assert stamped["cells"][1]["source"] == ["1+1"]
    # without its metadata the first cell still names the copy
    stamped["metadata"] = {}
    stamped["cells"][0]["metadata"] = {}
    path = save("stripped.ipynb", json.dumps(stamped).encode())
    result = trace(att_app, path)
    assert result.exit_code == 0 and "copy code in a cell" in result.output


def test_unmarkable_files_are_refused_at_a_stamped_level_and_plain_below(
        att_app, att_client, world, api_token):  # noqa: F811
    headers = api_token(world["reader"])
    zipped = b"PK\x03\x04" + bytes(range(256)) * 4
    secret = attach(world["author"], world["secret"], zipped, filename="weights.zip")
    r = att_client.get(f"/api/v1/attachments/{secret.id}", headers=headers)
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "not_served"
    assert "cannot be stamped" in r.get_json()["error"]["message"]
    assert db.scalar(select(AttachmentCopy.id)) is None  # nothing recorded
    opened = attach(world["author"], world["open"], zipped, filename="weights.zip")
    r = att_client.get(f"/api/v1/attachments/{opened.id}", headers=headers)
    assert r.status_code == 200 and r.get_data() == zipped and "X-Enclave-Copy" not in r.headers
    # a PDF that is not one is refused with the reason
    fake = attach(world["author"], world["secret"], b"%PDF-1.7\nnot really\n",
                  filename="broken.pdf")
    r = att_client.get(f"/api/v1/attachments/{fake.id}", headers=headers)
    assert r.status_code == 403 and "does not end like a PDF" in r.get_json()["error"]["message"]
    # the finding page says what each file offers
    login(att_client, world["reader"])
    page = att_client.get(f"/findings/{world['secret'].id}").text
    assert "Not served at this level" in page


def test_trace_says_plainly_when_it_cannot_tell(att_app, att_client, world, api_token,
                                                tmp_path):  # noqa: F811
    plain = tmp_path / "plain.txt"
    plain.write_text("nothing to see\n")
    result = trace(att_app, plain)
    assert result.exit_code == 3 and "Cannot tell: no Enclave copy id" in result.output
    forged = tmp_path / "forged.md"
    forged.write_text("> Enclave Confidential copy ABCDE-FGH23 for Someone\n")
    result = trace(att_app, forged)
    assert result.exit_code == 3 and "match no copy recorded" in result.output
    # an unstamped original (a network file, downloaded as is) is recognised as such
    data = b"layer,score\n3,0.9\n"
    att = attach(world["author"], world["open"], data, filename="open.csv")
    leaked = tmp_path / "leaked.csv"
    leaked.write_bytes(download(att_client, api_token(world["reader"]), att).get_data())
    result = trace(att_app, leaked)
    assert result.exit_code == 3 and f"unstamped original of attachment {att.id}" in \
        result.output
    assert att_app.test_cli_runner().invoke(enclave, ["trace"]).exit_code == 2
    typed = att_app.test_cli_runner().invoke(enclave, ["trace", "--code", "abcde-fgh23"])
    assert typed.exit_code == 3
    audit_rows = db.scalars(select(AuditEntry).where(AuditEntry.action == "copy_traced")).all()
    assert len(audit_rows) == 4


def test_replay_reader_keeps_memory_bounded_and_refuses_when_it_would_thrash():
    data = text_pdf([f"line {i}" for i in range(20)], pages=40)
    opened = []

    def opener():  # type: ignore[no-untyped-def]
        opened.append(1)
        return iter([data[i:i + 1000] for i in range(0, len(data), 1000)])

    source = pdfs.ReplayReader(opener, len(data), block_size=1024, cache_blocks=6,
                               max_passes=100)
    from datetime import UTC, datetime

    from app.traceability.marks import Mark

    mark = Mark("0" * 32, "ABCDE-FGH23", "Nina", "Lab", datetime.now(UTC), "Confidential")
    update = pdfs.build_update(source, mark)
    assert len(PdfReader(io.BytesIO(data + update)).pages) == 40
    # it read the file more than once, never holding more than six blocks
    assert source.passes == len(opened) >= 2 and len(source._cache) <= 6
    tight = pdfs.ReplayReader(opener, len(data), block_size=512, cache_blocks=1,
                              max_passes=2)
    with pytest.raises(pdfs.NotStampable, match="more than 2 times"):
        pdfs.build_update(tight, mark)


# --------------------------------------------------------------------------- pages


def test_watermark_on_marked_pages_only_through_the_access_rule(att_app, att_client,
                                                               world):  # noqa: F811
    login(att_client, world["reader"])
    page = att_client.get(f"/findings/{world['secret'].id}")
    assert page.status_code == 200
    assert '<div class="watermark"' in page.text
    assert "/watermark/confidential.css" in page.text
    assert "style=" not in page.text.split('<div class="watermark"')[1][:200]
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'; "
                                                              "script-src 'self'")
    css = att_client.get("/watermark/confidential.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    assert 'url("confidential.png")' in css.text
    tile = att_client.get("/watermark/confidential.png")
    assert tile.status_code == 200 and tile.headers["Cache-Control"] == "no-store"
    assert Image.open(io.BytesIO(tile.get_data())).mode == "RGBA"
    assert '<div class="watermark"' not in att_client.get(
        f"/findings/{world['open'].id}").text
    # a level that has no watermark, or that the reader cannot read: as missing
    missing = att_client.get("/watermark/nosuch.png")
    assert att_client.get("/watermark/network.png").status_code == missing.status_code == 404
    low = make_user(world["org"], name="lou", clearance="network")
    other = att_app.test_client()
    assert login(other, low).status_code == 302
    r = other.get("/watermark/confidential.png")
    theirs = other.get("/watermark/nosuch.png")
    assert (r.status_code, r.get_data()) == (404, theirs.get_data())


@pytest.fixture
def view_only(att_app, tmp_path):  # noqa: F811
    """The default policy with Confidential made view-only."""
    dst = tmp_path / "policies"
    shutil.copytree(Path(state.policy().source_dir), dst)
    levels = dst / "levels.toml"
    levels.write_text(levels.read_text().replace('downloads = "stamped"',
                                                 'downloads = "view-only"'))
    saved = att_app.extensions["enclave.policy"]
    att_app.extensions["enclave.policy"] = load_policy(dst)
    assert state.policy().level("confidential").view_only
    yield
    att_app.extensions["enclave.policy"] = saved


def test_view_only_files_are_shown_stamped_and_never_served(att_app, att_client, world,
                                                            api_token, view_only):  # noqa: F811
    headers = api_token(world["reader"])
    pdf = attach(world["author"], world["secret"], text_pdf(["View only page"], pages=2),
                 filename="slides.pdf")
    picture = attach(world["author"], world["secret"], png_bytes(), filename="fig.png")
    archive = attach(world["author"], world["secret"], b"PK\x03\x04zip", filename="a.zip")
    for att in (pdf, picture, archive):
        r = att_client.get(f"/api/v1/attachments/{att.id}", headers=headers)
        assert r.status_code == 403 and r.get_json()["error"]["code"] == "view_only"
    login(att_client, world["reader"])
    assert att_client.get(f"/attachments/{pdf.id}").status_code == 403
    page = att_client.get(f"/attachments/{pdf.id}/view")
    assert page.status_code == 200 and '<div class="watermark"' in page.text
    copy = db.scalar(select(AttachmentCopy).where(AttachmentCopy.attachment_id == pdf.id))
    assert copy.kind == "view" and copy.code in page.text
    for n in (0, 1):
        png = att_client.get(f"/attachments/{pdf.id}/view/{copy.id}/{n}.png")
        assert png.status_code == 200 and png.mimetype == "image/png"
        img = Image.open(io.BytesIO(png.get_data()))
        assert copy.code in qr_codes(img)
        save(f"view-only-page-{n}.png", png.get_data())
    assert att_client.get(f"/attachments/{pdf.id}/view/{copy.id}/2.png").status_code == 404
    shown = att_client.get(f"/attachments/{picture.id}/view")
    assert shown.status_code == 200
    assert att_client.get(f"/attachments/{archive.id}/view").status_code == 403
    finding_page = att_client.get(f"/findings/{world['secret'].id}").text
    assert f"/attachments/{pdf.id}/view" in finding_page and "View only" in finding_page
    # someone else's view id, or an id for another file, is as missing
    other = make_user(world["org"], name="olga")
    other_client = att_app.test_client()
    login(other_client, other)
    missing = other_client.get(f"/attachments/{pdf.id}/view/{'0' * 32}/0.png")
    stolen = other_client.get(f"/attachments/{pdf.id}/view/{copy.id}/0.png")
    assert stolen.status_code == missing.status_code == 404
    assert _no_tokens(stolen.text) == _no_tokens(missing.text)


def test_the_trace_page_names_the_copy(att_app, att_client, world, api_token):  # noqa: F811
    att = attach(world["author"], world["secret"], png_bytes(), filename="fig.png")
    r = download(att_client, api_token(world["reader"]), att)
    code = r.headers["X-Enclave-Copy"]
    admin = make_user(world["org"], name="ada", role="admin")
    login(att_client, admin)
    page = att_client.get("/admin/trace")
    assert page.status_code == 200
    from tests.conftest import csrf_from

    answer = att_client.post("/admin/trace", data={
        "csrf_token": csrf_from(page.text), "file": (io.BytesIO(r.get_data()), "leak.png")},
        content_type="multipart/form-data")
    assert answer.status_code == 200 and "Identified" in answer.text and code in answer.text
    assert world["reader"].email in answer.text
    no_csrf = att_client.post("/admin/trace", data={"code": code})
    assert no_csrf.status_code == 400
    typed = post_form(att_client, "/admin/trace", {"code": code.lower()})
    assert typed.status_code == 200 and "Identified" in typed.text
    api = att_client.post("/api/v1/admin/trace?filename=leak.png", data=r.get_data(),
                          headers=api_token(admin))
    assert api.status_code == 200 and api.get_json()["copy"]["code"] == code
    member = att_app.test_client()
    login(member, world["reader"])
    assert member.get("/admin/trace").status_code == 404
    assert att_client.post("/api/v1/admin/trace", data=b"x",
                           headers=api_token(world["reader"])).status_code == 403
