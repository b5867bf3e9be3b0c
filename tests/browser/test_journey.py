"""One member's whole path through Enclave in a real browser, every user step through
the pages, with a screenshot after each (test-artifacts/journey/NN-<step>.png):

an org admin invites a researcher → the invitee registers from the link → turns on
two-factor authentication (the code computed from the key the page shows) → signs the
NDAs the Restricted level needs → posts a Restricted finding and attaches a file through
the upload widget (progress bar to completion, SHA-256 as computed here) → a colleague
replies → search finds it with the words highlighted → a member of another organization
flags it → the author asks to publish a redacted version → reviewers from two other
organizations approve it (the quorum) → an admin releases it, and the static export
carries it → signed out, anyone reads the public page and downloads the released file,
while the Restricted original still answers 404.

Factories set up only what the pages cannot: organizations and the people already in
them (the org admin, the colleague, reviewers and the admin, with 2FA on)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.attachments.models import Attachment
from app.auth.models import Invitation, User
from app.cli import enclave
from app.db import db
from app.findings.models import Category, Finding, Reply
from app.ndas.models import NdaAcknowledgement
from app.review.models import Flag, ReviewRequest
from tests.attachments_world import payload
from tests.browser.widgets import (
    FINDING_URL,
    UPLOAD_RECORDER,
    Shots,
    new_page,
    recorded_uploads,
    sign_in,
)
from tests.factories import make_org, make_user, totp_now

pytestmark = pytest.mark.browser

TITLE = "Sparse probe recovers the deception feature in layer 14"
BODY = ("A sparse linear probe on the layer 14 residual stream separates deceptive from "
        "honest completions with 0.97 AUROC; ablating the top 12 directions removes it.")
PUBLIC_TITLE = "Deception is linearly readable in mid-layer activations"
PUBLIC_BODY = "A sparse probe on mid-layer activations separates deceptive completions."
INVITEE_EMAIL = "iris@northlight.example"
INVITEE_NAME = "Iris Kovacs"
INVITEE_PASSWORD = "copper-lantern-fjord-meadow-41"
FILE_NAME = "probe-weights.npz"
FILE_BYTES = payload(3 * 1024 * 1024 + 123, seed=14)


def test_invite_to_public_release(browser, live_server, app, tmp_path):
    live = live_server
    shots = Shots("journey")
    db.add(Category(slug="probes", name="Probes", description="Linear and sparse probes"))
    db.commit()
    northlight = make_org("northlight", ceiling="confidential")
    org_admin = make_user(northlight, name="olga", role="org_admin")
    colleague = make_user(northlight, name="carl")
    flagger = make_user(make_org("lakeside"), name="fern")
    reviewers = [make_user(make_org(slug), name=name, role="reviewer")
                 for slug, name in (("meridian", "mara"), ("opencircuits", "otto"))]
    admin = make_user(make_org("registry"), name="ada", role="admin")
    outsider = make_user(northlight, name="nils", clearance="network")
    contexts = []

    # 1. the org admin invites a researcher at Restricted
    ctx, page = new_page(browser)
    contexts.append(ctx)
    sign_in(page, live, org_admin.email, code=totp_now(org_admin))
    page.get_by_role("link", name="Members").click()
    page.get_by_label("E-mail").fill(INVITEE_EMAIL)
    page.get_by_label("Clearance").select_option("restricted")
    page.get_by_label("Role").select_option("member")
    page.get_by_role("button", name="Create invitation").click()
    expect(page.locator("body")).to_contain_text(f"Invitation for {INVITEE_EMAIL} created")
    link = page.locator("#invite-link").inner_text().strip()
    assert re.fullmatch(rf"{re.escape(live)}/invite/[\w-]{{20,}}", link), link
    assert page.get_by_role("region", name="Open invitations").get_by_text(INVITEE_EMAIL).count()
    invitation = db.scalar(select(Invitation).where(Invitation.email == INVITEE_EMAIL))
    assert invitation.clearance == "restricted" and invitation.used_at is None
    shots(page, "org-admin-creates-invitation")
    ctx.close()
    contexts.remove(ctx)

    # 2. the invitee opens the link and registers
    ctx, page = new_page(browser, init_script=UPLOAD_RECORDER)
    contexts.append(ctx)
    page.goto(link)
    assert INVITEE_EMAIL in page.content() and "Northlight Research" in page.content()
    shots(page, "invitee-opens-link")
    page.get_by_label("Username (for @mentions)").fill("iris")
    page.get_by_label("Full name").fill(INVITEE_NAME)
    page.get_by_label("Password", exact=True).fill(INVITEE_PASSWORD)
    page.get_by_label("Repeat password").fill(INVITEE_PASSWORD)
    page.get_by_role("button", name="Create my account").click()
    page.wait_for_url(f"{live}/login")
    expect(page.locator("body")).to_contain_text("Your account is ready")
    db.rollback()
    iris = db.scalar(select(User).where(User.email == INVITEE_EMAIL))
    assert iris is not None and iris.clearance == "restricted" and not iris.mfa_enabled
    assert db.get(Invitation, invitation.id).used_at is not None
    shots(page, "invitee-registered")
    page.get_by_label("E-mail").fill(INVITEE_EMAIL)
    page.get_by_label("Password").fill(INVITEE_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live}/home")
    assert INVITEE_NAME in page.locator("header.site .who").inner_text()
    shots(page, "invitee-first-sign-in")

    # 3. turns on two-factor authentication with the key shown on the page
    page.get_by_role("link", name="Account").click()
    page.get_by_role("link", name="Manage", exact=True).click()
    assert page.get_by_role("img", name="QR code for your authenticator app").is_visible()
    secret = page.locator(".secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{16,}", secret), secret
    shots(page, "2fa-setup")
    page.get_by_label("6-digit code").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on").click()
    expect(page.locator("body")).to_contain_text("Two-factor authentication is on.")
    codes = page.get_by_role("list", name="Recovery codes").locator("li")
    assert codes.count() >= 8
    db.rollback()
    assert db.get(User, iris.id).mfa_enabled
    shots(page, "2fa-recovery-codes")
    page.get_by_role("link", name="I have saved them").click()
    page.wait_for_url(f"{live}/home")

    # 4. signs the NDAs Restricted needs
    for title in ("Network participation terms", "Restricted confidentiality agreement"):
        page.get_by_role("link", name="NDAs").click()
        page.get_by_role("link", name=title).click()
        page.get_by_label("Type your full name to sign").fill(INVITEE_NAME)
        page.get_by_role("button", name="I agree and sign").click()
        page.get_by_role("link", name="NDAs").click()
        row = page.locator("tbody tr").filter(has=page.get_by_role("link", name=title))
        assert "Signed" in row.inner_text()
    db.rollback()
    signed = set(db.scalars(select(NdaAcknowledgement.nda_key)
                            .where(NdaAcknowledgement.user_id == iris.id)))
    assert signed == {"network-terms", "restricted"}
    page.goto(f"{live}/home")
    assert "Readable" in page.locator("tbody tr").filter(has_text="Restricted").inner_text()
    shots(page, "ndas-signed")

    # 5. posts a Restricted finding, then attaches a file through the upload widget
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Findings").click()
    page.get_by_role("link", name="New finding").click()
    page.get_by_label("Title").fill(TITLE)
    page.get_by_label("Category").select_option("probes")
    page.get_by_label("Level").select_option("restricted")
    page.get_by_label("Body (Markdown)").fill(BODY)
    shots(page, "new-finding-form")
    page.get_by_role("button", name="Post finding").click()
    page.wait_for_url(FINDING_URL)
    finding_id = int(FINDING_URL.match(page.url).group(1))
    finding_url = page.url
    assert page.get_by_role("heading", name=TITLE).is_visible()
    assert db.get(Finding, finding_id).level == "restricted"
    shots(page, "finding-posted")

    with page.expect_navigation():  # the widget reloads the page when all files are in
        page.locator(".upload-input").set_input_files(
            files=[{"name": FILE_NAME, "mimeType": "application/octet-stream",
                    "buffer": FILE_BYTES}])
    page.wait_for_load_state()
    sha = hashlib.sha256(FILE_BYTES).hexdigest()
    (rec,) = recorded_uploads(page).values()
    assert rec["bar"] and rec["max"] == 100 and rec["done"] and not rec["failed"], rec
    assert f"SHA-256 {sha}" in rec["status"], rec
    row = page.locator(".attachment-list tbody tr").filter(has_text=FILE_NAME)
    assert row.locator("code.sha256").inner_text() == sha
    size = row.locator("td.num data")
    assert size.get_attribute("value") == str(len(FILE_BYTES)) and size.inner_text() == "3 MiB"
    expect(page.locator("body")).to_contain_text(f"Attached {FILE_NAME}")
    db.rollback()
    (att,) = db.scalars(select(Attachment).where(Attachment.finding_id == finding_id))
    assert att.size == len(FILE_BYTES) and att.filename == FILE_NAME
    shots(page, "file-attached")
    assert page.js_errors == []

    # 6. a colleague replies
    cctx, cpage = new_page(browser)
    contexts.append(cctx)
    sign_in(cpage, live, colleague.email, code=totp_now(colleague))
    cpage.goto(finding_url)
    reply_text = "Reproduced on our checkpoint: AUROC 0.95 with 16 directions."
    cpage.get_by_label("Your reply").fill(reply_text)
    cpage.get_by_role("button", name="Reply", exact=True).click()
    cpage.wait_for_url(re.compile(rf".*/findings/{finding_id}(#reply-\d+)?$"))
    assert cpage.locator("article.reply").filter(has_text=reply_text).is_visible()
    db.rollback()
    assert [r.body for r in db.scalars(select(Reply).where(Reply.finding_id == finding_id))] == \
        [reply_text]
    shots(cpage, "colleague-replies")

    # 7. search finds the finding, the words highlighted
    cpage.goto(f"{live}/findings/search")
    cpage.get_by_label(re.compile("^Words")).fill("sparse probe")
    cpage.get_by_role("button", name="Search").click()
    hit = cpage.locator("li.finding-row").filter(has_text="deception feature")
    assert hit.count() == 1
    marks = [m.lower() for m in hit.locator("mark").all_inner_texts()]
    assert "sparse" in marks and "probe" in marks, marks
    shots(cpage, "search-highlights")
    hit.locator("a.finding-title").click()
    assert cpage.url == finding_url

    # 8. a member of another organization flags it
    fctx, fpage = new_page(browser)
    contexts.append(fctx)
    sign_in(fpage, live, flagger.email, code=totp_now(flagger))
    fpage.goto(finding_url)
    fpage.get_by_role("link", name="Flag a dual-use concern").click()
    fpage.get_by_label("Why is this a dual-use concern?").fill(
        "The ablation directions could help remove honesty training.")
    fpage.get_by_role("button", name="Send the flag").click()
    expect(fpage.locator("body")).to_contain_text(
        "Reviewers from other organizations will look at your flag")
    db.rollback()
    flag = db.scalar(select(Flag).where(Flag.finding_id == finding_id))
    assert flag is not None and flag.is_open
    shots(fpage, "member-flags")

    # 9. the author asks to publish a redacted version with the file
    page.goto(finding_url)
    assert page.get_by_role("link", name=f"Flag #{flag.id}").is_visible()
    page.get_by_role("link", name="Ask to publish").click()
    page.get_by_label("Public title").fill(PUBLIC_TITLE)
    page.get_by_label("Public text (Markdown)").fill(PUBLIC_BODY)
    page.get_by_label(FILE_NAME).check()
    shots(page, "publication-form")
    page.get_by_role("button", name="Submit for review").click()
    page.wait_for_url(re.compile(r".*/review/requests/\d+$"))
    request_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("body")).to_contain_text("Publication request submitted")
    shots(page, "publication-requested")

    # 10. reviewers from two other organizations approve: the quorum
    for n, reviewer in enumerate(reviewers, 1):
        rctx, rpage = new_page(browser)
        contexts.append(rctx)
        sign_in(rpage, live, reviewer.email, code=totp_now(reviewer))
        rpage.get_by_role("link", name="Review", exact=True).click()
        rpage.locator(f'a[href="/review/requests/{request_id}"]').first.click()
        assert rpage.get_by_role("heading", name="Proposed public version").is_visible()
        rpage.locator("#your-review > summary").click()
        rpage.locator('input[name="decision"][value="approve"]').check()
        rpage.locator('input[name="risk"][value="low"]').check()
        for score in rpage.locator('input[name^="score_"]').all():
            score.fill("1")
        rpage.locator('textarea[name="comment"]').fill("Nothing operational in the public text.")
        if n == 1:
            shots(rpage, "reviewer-1-review-form")
        rpage.get_by_role("button", name="Submit the review").click()
        expect(rpage.locator("body")).to_contain_text("Review recorded.")
        state = rpage.locator("h1 .state").inner_text()
        assert ("Approved" in state) == (n == len(reviewers)), state
        shots(rpage, f"reviewer-{n}-approves")
        if n == 1:  # an open flag blocks release: this reviewer resolves it
            rpage.get_by_role("link", name="Review", exact=True).click()
            rpage.locator(f'a[href="/review/flags/{flag.id}"]').first.click()
            rpage.get_by_role("radio", name="Dismiss").check()
            rpage.get_by_label(re.compile("^Note")).fill(
                "The public version leaves out the directions; the restricted text stays.")
            rpage.get_by_role("button", name="Resolve the flag").click()
            expect(rpage.locator(".state-resolved")).to_contain_text("Dismiss")
            db.rollback()
            assert db.get(Flag, flag.id).state != "open"
            shots(rpage, "reviewer-1-dismisses-flag")
    db.rollback()
    assert db.get(ReviewRequest, request_id).state == "approved"

    # 11. an admin releases it; the static export carries it
    actx, apage = new_page(browser)
    contexts.append(actx)
    sign_in(apage, live, admin.email, code=totp_now(admin))
    apage.goto(f"{live}/review/requests/{request_id}")
    apage.locator(".confirm-release > summary").click()
    apage.get_by_label("I have read the public version above").check()
    apage.get_by_role("button", name="Release it now").click()
    expect(apage.locator("body")).to_contain_text(
        "Released: the public version is on the public pages.")
    shots(apage, "admin-releases")
    db.rollback()
    assert db.get(ReviewRequest, request_id).state == "released"
    out = tmp_path / "site"
    result = app.test_cli_runner().invoke(enclave, ["export", str(out)])
    assert result.exit_code == 0, result.output
    public_id = db.get(ReviewRequest, request_id).public_id
    exported = (out / "findings" / f"{public_id}.html").read_text()
    assert PUBLIC_TITLE in exported and "0.97 AUROC" not in exported

    # 12. signed out: the public page and its file; the original answers 404
    anon = browser.new_context()
    contexts.append(anon)
    ppage = anon.new_page()
    ppage.goto(f"{live}/public/")
    ppage.get_by_role("link", name=PUBLIC_TITLE).click()
    assert ppage.get_by_test_id("public-title").inner_text() == PUBLIC_TITLE
    assert ppage.get_by_test_id("public-body").inner_text().strip() == PUBLIC_BODY
    assert TITLE not in ppage.content() and "0.97" not in ppage.content()
    assert sha in ppage.content()
    with ppage.expect_download() as dl:
        ppage.get_by_role("link", name=FILE_NAME).click()
    assert Path(dl.value.path()).read_bytes() == FILE_BYTES
    shots(ppage, "public-page-anonymous")
    # signed out, the original is behind the sign-in wall, exactly like an id that
    # does not exist (nothing tells them apart); the file link too
    original = ppage.goto(finding_url)
    assert original.request.redirected_from.response().status == 302
    assert ppage.url.startswith(f"{live}/login")
    assert TITLE not in ppage.content() and "0.97" not in ppage.content()
    shots(ppage, "original-anonymous-sign-in-wall")
    for url in (finding_url, f"{live}/findings/987654", f"{live}/attachments/{att.id}"):
        response = anon.request.get(url, max_redirects=0)
        assert response.status == 302, url
        assert response.headers["location"].startswith("/login"), url
    # signed in below Restricted: the original, its file and a missing id all answer 404
    nctx, npage = new_page(browser)
    contexts.append(nctx)
    sign_in(npage, live, outsider.email, code=totp_now(outsider))
    for url in (finding_url, f"{live}/findings/987654", f"{live}/attachments/{att.id}"):
        assert npage.request.get(url).status == 404, url
    assert npage.goto(finding_url).status == 404
    assert TITLE not in npage.content()
    shots(npage, "original-404-below-restricted")
    for c in contexts:
        c.close()
