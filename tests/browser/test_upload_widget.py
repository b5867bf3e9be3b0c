"""The attachment widget (app/static/upload.js) in Chromium: several files dropped at
once on the drop zone each get a progress bar, are stored, listed with their exact size
and SHA-256, and download back byte for byte through the page's links; a file over the
level's cap is refused with a message on the page and nothing is stored, whether the
page refuses it before sending (the cap it was given) or the server does (the cap was
lowered after the page was loaded: ``live_app`` hands over the served app, whose policy
the test swaps). Screenshots in test-artifacts/upload/."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app import state
from app.attachments.models import Attachment
from app.db import db
from app.policy import load_policy
from tests.attachments_world import blob_files, payload, temp_files
from tests.browser.widgets import (
    UPLOAD_RECORDER,
    Shots,
    drop_files,
    new_page,
    recorded_uploads,
    sign_in,
)
from tests.factories import make_finding, make_org, make_user, totp_now

pytestmark = pytest.mark.browser

MiB = 1024 * 1024


def one_mib_policy(tmp_path: Path) -> Any:
    """The default policy with Restricted and Confidential files capped at 1 MiB."""
    dst = tmp_path / "policies"
    shutil.copytree(Path(state.policy().source_dir), dst)
    levels = dst / "levels.toml"
    head, *blocks = levels.read_text().split("[[levels]]")
    for i, block in enumerate(blocks):
        if re.search(r'key = "(restricted|confidential)"', block):
            blocks[i] = re.sub(r"max_attachment_mb = \d+", "max_attachment_mb = 1", block)
    levels.write_text("[[levels]]".join([head, *blocks]))
    policy = load_policy(dst)
    assert policy.level("restricted").max_attachment_mb == 1
    return policy


def author_on_finding(browser: Any, live: str) -> tuple[Any, Any, Any]:
    author = make_user(make_org("lab"), name="uma")
    finding = make_finding(author, level="restricted", title="Activation atlas, layer 20")
    ctx, page = new_page(browser, init_script=UPLOAD_RECORDER)
    sign_in(page, live, author.email, code=totp_now(author))
    page.goto(f"{live}/findings/{finding.id}")
    expect(page.locator(".upload-zone")).to_be_visible()
    return ctx, page, finding


def upload_posts(page: Any) -> list[str]:
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url)
            if r.method == "POST" and "/attachments" in r.url else None)
    return posts


FILES = [
    ("notes.txt", b"Layer 20 atlas notes.\n" * 56, "text/plain"),
    ("activations.bin", payload(2 * MiB + 7, seed=20), "application/octet-stream"),
    ("figure ünï 3.png", payload(40 * 1024 + 1, seed=3), "image/png"),
]


def test_drop_several_files_then_download_them(browser, live_server, app):
    shots = Shots("upload")
    ctx, page, finding = author_on_finding(browser, live_server)
    zone = page.locator(".upload-zone")
    posts = upload_posts(page)

    # dragging over the zone highlights it
    page.evaluate("""() => {
      const zone = document.querySelector('.upload-zone');
      const dt = new DataTransfer();
      dt.items.add(new File(['x'], 'x.txt'));
      for (const type of ['dragenter', 'dragover'])
        zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true,
                                                dataTransfer: dt}));
    }""")
    expect(zone).to_have_class(re.compile(r"\bdragging\b"))
    shots(page, "drop-zone-dragging")

    with page.expect_navigation():  # reloads once every file is stored
        dropped = drop_files(page, FILES)
        assert dropped == {"enterCancelled": True, "overCancelled": True,
                           "highlighted": True, "count": 3}
    page.wait_for_load_state()
    assert len(posts) == 3

    seen = recorded_uploads(page)
    for name, data, _ in FILES:
        sha = hashlib.sha256(data).hexdigest()
        (rec,) = [r for label, r in seen.items() if label.startswith(f"{name} (")]
        assert rec["bar"] and rec["max"] == 100 and rec["done"] and not rec["failed"], rec
        assert rec["status"] == f"encrypted and stored · SHA-256 {sha}", rec
        row = page.locator(".attachment-list tbody tr").filter(
            has=page.get_by_role("link", name=name, exact=True))
        expect(row).to_have_count(1)
        assert row.locator("td.num data").get_attribute("value") == str(len(data))
        assert row.locator("code.sha256").inner_text() == sha
        assert name in row.inner_text()
    assert seen["activations.bin (2.0 MiB)"]["values"][-1] == 100
    shots(page, "three-files-listed")

    # each downloads back byte for byte through its link on the page
    for name, data, _ in FILES:
        with page.expect_download() as dl:
            page.get_by_role("link", name=name, exact=True).click()
        assert dl.value.suggested_filename == name
        assert Path(dl.value.path()).read_bytes() == data

    db.rollback()
    stored = {a.filename: a.size for a in db.scalars(
        select(Attachment).where(Attachment.finding_id == finding.id))}
    assert stored == {name: len(data) for name, data, _ in FILES}
    assert page.js_errors == []
    ctx.close()


def test_file_over_the_level_cap_is_refused_in_the_page(browser, live_app, app, tmp_path):
    live, served = live_app
    served.extensions["enclave.policy"] = one_mib_policy(tmp_path)
    shots = Shots("upload-cap")
    ctx, page, finding = author_on_finding(browser, live)
    zone = page.locator(".upload-zone")
    expect(zone).to_contain_text("Up to 1 MiB per file (the 1 MiB limit for Restricted files)")
    posts = upload_posts(page)
    blobs_before = blob_files()

    drop_files(page, [("too-big.bin", payload(MiB + 1), "application/octet-stream")])
    row = zone.locator(".upload-queue li").filter(has_text="too-big.bin")
    expect(row).to_have_class(re.compile(r"\bupload-failed\b"))
    expect(row.locator(".upload-status")).to_have_text(
        "The file is larger than the 1 MiB limit for Restricted files; it was not sent.")
    expect(row.locator(".upload-status")).to_be_visible()
    shots(page, "refused-before-sending")
    page.wait_for_timeout(300)
    assert posts == [] and "/findings/" in page.url
    db.rollback()
    assert db.scalars(select(Attachment)).all() == []
    assert blob_files() == blobs_before and temp_files() == []
    ctx.close()


def test_cap_lowered_after_the_page_loaded_is_refused_by_the_server(
        browser, live_app, app, tmp_path):
    """The page still believes in 8 GiB; the server refuses, the message stays on the
    page (no reload wipes it), the small file of the same drop is stored."""
    live, served = live_app
    shots = Shots("upload-cap-server")
    ctx, page, finding = author_on_finding(browser, live)
    expect(page.locator(".upload-zone")).to_contain_text("Up to 8 GiB per file")
    served.extensions["enclave.policy"] = one_mib_policy(tmp_path)
    posts = upload_posts(page)
    blobs_before = blob_files()
    small = payload(5000, seed=9)

    drop_files(page, [("too-big.bin", payload(MiB + 1), "application/octet-stream"),
                      ("small.bin", small, "application/octet-stream")])
    zone = page.locator(".upload-zone")
    big = zone.locator(".upload-queue li").filter(has_text="too-big.bin")
    expect(big).to_have_class(re.compile(r"\bupload-failed\b"))
    expect(big.locator(".upload-status")).to_have_text(
        "The file is larger than the 1 MiB limit for Restricted files.")
    ok = zone.locator(".upload-queue li").filter(has_text="small.bin")
    expect(ok).to_have_class(re.compile(r"\bupload-done\b"))
    summary = zone.locator(".upload-summary")
    expect(summary).to_contain_text("1 stored, 1 not stored")
    shots(page, "server-refuses-one-of-two")
    assert len(posts) == 2
    db.rollback()
    (att,) = db.scalars(select(Attachment).where(Attachment.finding_id == finding.id))
    assert att.filename == "small.bin" and att.size == len(small)
    assert len(blob_files()) == len(blobs_before) + 1 and temp_files() == []

    summary.get_by_role("button", name="Show the stored files").click()
    row = page.locator(".attachment-list tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("small.bin")
    assert row.locator("code.sha256").inner_text() == hashlib.sha256(small).hexdigest()
    shots(page, "after-refresh")
    assert page.js_errors == []
    ctx.close()
