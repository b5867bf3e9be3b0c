# ruff: noqa: F811  (the attachment fixtures are imported, then taken as arguments)
"""Figures in the text: ``![caption](attachment:ID)`` or by file name shows the finding's
own image attachment inline, through the access rule, the level's download policy
(original, stamped copy, view-only rendering) and the audit; content is checked (an SVG
or HTML file named .png is never sent as an image); headers keep it private."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from sqlalchemy import func, select

from app import state
from app.audit import AuditEntry
from app.db import db
from app.policy import load_policy
from app.traceability import viewing
from app.traceability.models import AttachmentCopy
from tests.attachments_world import att_app, att_client, attach  # noqa: F401
from tests.factories import login, make_finding, make_org, make_user


def picture(fmt: str = "PNG", size: tuple[int, int] = (320, 200)) -> bytes:
    img = Image.new("RGB", size, (30, 90, 160))
    ImageDraw.Draw(img).ellipse([40, 30, size[0] - 40, size[1] - 30], fill=(240, 200, 40))
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
       b"<script>alert(1)</script></svg>")


@pytest.fixture
def world(att_app):
    org = make_org("northlight")
    author = make_user(org, name="alice")
    reader = make_user(org, name="nina")
    outsider = make_user(make_org("elsewhere"), name="otto", clearance="network")
    return {"org": org, "author": author, "reader": reader, "outsider": outsider}


def _figure_srcs(html: str) -> list[str]:
    return re.findall(r'<img class="figure-img" src="([^"]+)"', html)


def test_figures_show_inline_by_id_and_by_name(att_app, att_client, world):
    f = make_finding(world["author"], level="network", title="Plots")
    png = attach(world["author"], f, picture("PNG"), filename="loss curve.png")
    jpeg = attach(world["author"], f, picture("JPEG"), filename="heads.jpg")
    gif = attach(world["author"], f, picture("GIF"), filename="anim.gif")
    webp = attach(world["author"], f, picture("WEBP"), filename="map.webp")
    text = attach(world["author"], f, b"just text\n", filename="notes.txt")
    f.body = (f"![Loss curve](<attachment:loss curve.png>)\n\n![Heads](attachment:{jpeg.id})"
              f"\n\nInline ![g](attachment:anim.gif) and ![w](attachment:{webp.id}).\n\n"
              f"![Notes](attachment:notes.txt)\n\n![Gone](attachment:missing.png)")
    db.commit()
    login(att_client, world["reader"])
    page = att_client.get(f"/findings/{f.id}").text
    srcs = _figure_srcs(page)
    assert srcs == [f"/attachments/{a.id}/figure" for a in (png, jpeg, gif, webp)]
    assert '<figure class="figure"><img class="figure-img"' in page
    assert "<figcaption>Loss curve</figcaption>" in page
    assert "Notes (not a PNG, JPEG, GIF or WebP image; see Files below)" in page
    assert "Gone (No file “missing.png” is attached to this finding.)" in page
    assert f"/attachments/{text.id}/figure" not in page

    for att, data, mime in ((png, picture("PNG"), "image/png"),
                            (jpeg, picture("JPEG"), "image/jpeg"),
                            (gif, picture("GIF"), "image/gif"),
                            (webp, picture("WEBP"), "image/webp")):
        r = att_client.get(f"/attachments/{att.id}/figure")
        assert r.status_code == 200 and r.mimetype == mime
        assert r.get_data() == data
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Cache-Control"] == "private, no-store"
        assert r.headers["Content-Disposition"] == "inline"
        assert r.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
        assert int(r.headers["Content-Length"]) == len(data)
    shown = db.scalars(select(AuditEntry).where(AuditEntry.action == "attachment_downloaded",
                                                AuditEntry.target_id == png.id)).all()
    assert len(shown) == 1 and shown[0].actor_id == world["reader"].id
    # HEAD reads nothing and records nothing
    before = db.scalar(select(func.count()).select_from(AuditEntry))
    head = att_client.head(f"/attachments/{png.id}/figure")
    assert head.status_code == 200 and head.get_data() == b""
    assert db.scalar(select(func.count()).select_from(AuditEntry)) == before


def test_content_decides_never_the_name(att_app, att_client, world):
    f = make_finding(world["author"], level="network")
    fake = attach(world["author"], f, SVG, filename="plot.png", content_type="image/png")
    html = attach(world["author"], f, b"<html><script>alert(1)</script>", filename="x.gif",
                  content_type="image/gif")
    svg = attach(world["author"], f, SVG, filename="real.svg", content_type="image/svg+xml")
    login(att_client, world["reader"])
    for att in (fake, html, svg):
        r = att_client.get(f"/attachments/{att.id}/figure")
        assert r.status_code == 404 and b"<svg" not in r.get_data()
        assert b"<script>alert(1)" not in r.get_data()
    downloads = db.scalars(select(AuditEntry).where(
        AuditEntry.action == "attachment_downloaded")).all()
    assert downloads == []  # refused before anything was sent


def test_figures_answer_outsiders_like_missing_ids(att_app, world):
    f = make_finding(world["author"], level="restricted", title="Inner")
    png = attach(world["author"], f, picture(), filename="p.png")
    client = att_app.test_client()
    login(client, world["outsider"])
    theirs = client.get(f"/attachments/{png.id}/figure")
    missing = client.get(f"/attachments/{'0' * 32}/figure")
    assert theirs.status_code == missing.status_code == 404
    # the same page, but for the sign-out form's CSRF token (signed with the time)
    assert re.sub(r'value="[^"]*"', "", theirs.text) == \
        re.sub(r'value="[^"]*"', "", missing.text)
    assert att_app.test_client().get(f"/attachments/{png.id}/figure").status_code in (302, 401)


def test_large_originals_are_linked_not_shown(att_app, att_client, world, monkeypatch):
    f = make_finding(world["author"], level="network")
    data = picture(size=(900, 700))
    big = attach(world["author"], f, data, filename="big.png")
    f.body = "![Big](attachment:big.png)"
    db.commit()
    monkeypatch.setattr(viewing, "INLINE_MAX_BYTES", len(data) - 1)
    login(att_client, world["reader"])
    page = att_client.get(f"/findings/{f.id}").text
    assert _figure_srcs(page) == [] and "Big (larger than" in page
    assert att_client.get(f"/attachments/{big.id}/figure").status_code == 404


def test_replies_show_the_findings_figures(att_app, att_client, world):
    from app.findings import service as findings

    f = make_finding(world["author"], level="network")
    png = attach(world["author"], f, picture(), filename="p.png")
    findings.add_reply(world["reader"], f, "As in ![the plot](attachment:p.png)")
    login(att_client, world["reader"])
    page = att_client.get(f"/findings/{f.id}").text
    assert _figure_srcs(page) == [f"/attachments/{png.id}/figure"]


def test_stamped_level_figures_are_per_reader_copies(att_app, att_client, world):
    secret = make_finding(world["author"], level="confidential", title="Secret plots",
                          compartment=[world["org"]])
    png = attach(world["author"], secret, picture(), filename="p.png")
    secret.body = "![Plot](attachment:p.png)"
    db.commit()
    login(att_client, world["reader"])
    page = att_client.get(f"/findings/{secret.id}").text
    assert _figure_srcs(page) == [f"/attachments/{png.id}/figure"]
    r = att_client.get(f"/attachments/{png.id}/figure")
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert r.get_data() != picture()  # a stamped copy, never the original
    copy = db.scalar(select(AttachmentCopy).where(AttachmentCopy.attachment_id == png.id))
    assert copy is not None and copy.user_id == world["reader"].id and copy.kind == "image"
    assert r.headers["X-Enclave-Copy"] == copy.code
    stamped = Image.open(io.BytesIO(r.get_data()))
    assert stamped.height > 200  # the band with the reader's mark is below the picture
    assert db.scalar(select(AuditEntry).where(AuditEntry.action == "attachment_copy_made",
                                              AuditEntry.target_id == png.id)) is not None


@pytest.fixture
def view_only(att_app, tmp_path):
    dst = tmp_path / "policies"
    shutil.copytree(Path(state.policy().source_dir), dst)
    levels = dst / "levels.toml"
    levels.write_text(levels.read_text().replace('downloads = "stamped"',
                                                 'downloads = "view-only"'))
    saved = att_app.extensions["enclave.policy"]
    att_app.extensions["enclave.policy"] = load_policy(dst)
    yield
    att_app.extensions["enclave.policy"] = saved


def test_view_only_level_figures_are_stamped_views(att_app, att_client, world, view_only):
    secret = make_finding(world["author"], level="confidential", title="Secret plots",
                          compartment=[world["org"]])
    png = attach(world["author"], secret, picture(), filename="p.png")
    login(att_client, world["reader"])
    assert att_client.get(f"/attachments/{png.id}").status_code == 403  # no download
    r = att_client.get(f"/attachments/{png.id}/figure")
    assert r.status_code == 200 and r.mimetype == "image/png"
    copy = db.scalar(select(AttachmentCopy).where(AttachmentCopy.attachment_id == png.id))
    assert copy.kind == "view" and r.headers["X-Enclave-Copy"] == copy.code
    assert Image.open(io.BytesIO(r.get_data())).height > 200
