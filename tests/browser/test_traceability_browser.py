"""A Confidential finding in a real browser: the watermark over the page (at 1280 and
390 px), a stamped download, and a view-only level's page images."""

from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image, ImageDraw

from app.attachments import service as attachments
from app.db import db
from app.policy import load_policy
from tests.browser.conftest import ARTIFACTS, screenshot
from tests.factories import PASSWORD, make_finding, make_org, make_user, totp_now
from tests.pdf_samples import text_pdf

pytestmark = pytest.mark.browser


def _sign_in(page, live_server, user) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{live_server}/login")
    page.get_by_label("E-mail").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Code from your authenticator app").fill(totp_now(user))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"{live_server}/home")


def _use_policy(served, tmp_path, *, view_only: bool = False):  # type: ignore[no-untyped-def]
    """The default policy with Confidential asking for any second factor (these tests sign
    in with a code; passkeys have their own), optionally view-only. Returns the previous
    policy, to put back."""
    dst = tmp_path / "policies"
    shutil.copytree(served.extensions["enclave.policy"].source_dir, dst)
    levels = dst / "levels.toml"
    text = levels.read_text().replace('mfa = "passkey"', "mfa = true")
    if view_only:
        text = text.replace('downloads = "stamped"', 'downloads = "view-only"')
    levels.write_text(text)
    saved = served.extensions["enclave.policy"]
    served.extensions["enclave.policy"] = load_policy(dst)
    return saved


def _world():  # type: ignore[no-untyped-def]
    org = make_org("northlight")
    org.name = "Northlight Labs"
    db.commit()
    author = make_user(org, name="alice")
    reader = make_user(org, name="nina")
    reader.display_name = "Nina Tester"
    db.commit()
    finding = make_finding(author, level="confidential", title="Steering vectors appendix",
                           body="Results we share only under the confidential NDA.",
                           compartment=[org])
    pdf = text_pdf(["Steering vectors appendix", "Table 3: layer sweep"], pages=2)
    attachments.upload(author, finding.id, filename="appendix.pdf", stream=io.BytesIO(pdf),
                       content_length=len(pdf), content_type="application/pdf")
    img = Image.new("RGB", (900, 560), (245, 245, 240))
    draw = ImageDraw.Draw(img)
    for i in range(12):
        draw.rectangle([60 + 65 * i, 480 - 30 * i, 100 + 65 * i, 480], fill=(40, 90, 160))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    attachments.upload(author, finding.id, filename="sweep.png",
                       stream=io.BytesIO(buf.getvalue()), content_length=len(buf.getvalue()),
                       content_type="image/png")
    return reader, finding


def test_watermarked_page_and_stamped_download(browser, live_app, app, tmp_path):  # type: ignore[no-untyped-def]
    live_server, served = live_app
    saved = _use_policy(served, tmp_path)
    try:
        _watermarked_page_and_stamped_download(browser, live_server)
    finally:
        served.extensions["enclave.policy"] = saved


def _watermarked_page_and_stamped_download(browser, live_server):  # type: ignore[no-untyped-def]
    reader, finding = _world()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    csp: list[str] = []
    page.on("console", lambda m: csp.append(m.text)
            if "Content Security Policy" in m.text else None)
    _sign_in(page, live_server, reader)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_server}/findings/{finding.id}")
        mark = page.locator("div.watermark")
        assert mark.count() == 1
        style = page.evaluate("getComputedStyle(document.querySelector('.watermark'))"
                              ".backgroundImage")
        assert "/watermark/confidential.png" in style
        loaded = page.evaluate("""async () => {
            const r = await fetch('/watermark/confidential.png');
            const b = await createImageBitmap(await r.blob());
            return [r.status, b.width, b.height];
        }""")
        assert loaded[0] == 200 and loaded[1] >= 460 and loaded[2] == 250
        # the marking covers the whole document, not only the first screen
        covered = page.evaluate("document.querySelector('.watermark').offsetHeight >= "
                                "document.body.scrollHeight - 2")
        assert covered
        assert "Downloads as a copy stamped with your name" in page.content()
        screenshot(page, f"traceability-watermarked-finding-{width}")
        assert csp == []
    with page.expect_download() as info:
        page.get_by_role("link", name="appendix.pdf").click()
    path = ARTIFACTS / "traceability-downloaded-appendix.pdf"
    info.value.save_as(path)
    data = path.read_bytes()
    assert data.startswith(b"%PDF") and b"/EnclaveCopy" in data
    context.close()


def test_view_only_level_shows_stamped_page_images(page, live_app, app, tmp_path):  # type: ignore[no-untyped-def]
    live_server, served = live_app
    saved = _use_policy(served, tmp_path, view_only=True)
    try:
        reader, finding = _world()
        _sign_in(page, live_server, reader)
        page.goto(f"{live_server}/findings/{finding.id}")
        page.get_by_role("link", name="appendix.pdf").click()
        page.wait_for_selector("figure img")
        images = page.locator("figure img")
        assert images.count() == 2
        for img in images.all():
            img.scroll_into_view_if_needed()
            assert img.evaluate("i => i.decode().then(() => i.naturalWidth)") > 0
        assert page.locator("div.watermark").count() == 1
        screenshot(page, "traceability-view-only-pdf")
    finally:
        served.extensions["enclave.policy"] = saved
