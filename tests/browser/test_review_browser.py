"""The whole dual-use path in a real browser: a member posts at restricted and asks to
publish a redacted version; two reviewers from two other organizations approve; a third
rates the risk high, which blocks; an admin escalates and releases; the public page and
feed show exactly the approved text and nothing of the internal one. Then the static
export verifies, and a tampered file makes verification fail."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from app import state
from app.cli import enclave
from app.db import db
from app.findings.models import Category
from app.review.models import ReviewRequest
from tests.browser.conftest import screenshot
from tests.factories import PASSWORD, make_org, make_user, totp_now

pytestmark = pytest.mark.browser

INTERNAL_TITLE = "Layer 9 refusal circuit: full ablation recipe"
INTERNAL_BODY = ("We disable refusals by zeroing heads 9.3 and 9.11 and adding the steering "
                 "vector v = 0.42 * mean_diff(harmful, harmless) at every position.")
PUBLIC_TITLE = "Refusal behaviour is concentrated in a few mid-layer heads"
PUBLIC_BODY = ("A small number of attention heads in the middle layers carry most of the "
               "refusal behaviour we studied. Details stay with vetted partners.")


def sign_in(browser: Any, live: str, user: Any) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    page.goto(f"{live}/login")
    page.get_by_label("E-mail").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Code from your authenticator app").fill(totp_now(user))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"{live}/home")
    return context, page


def review(page: Any, live: str, request_id: int, *, risk: str, comment: str) -> None:
    page.get_by_role("link", name="Review", exact=True).click()
    page.locator(f'a[href="/review/requests/{request_id}"]').click()
    assert page.get_by_role("heading", name="Internal finding").is_visible()
    assert page.get_by_role("heading", name="Proposed public version").is_visible()
    assert page.locator("pre.diff .d-del").count() > 0
    page.locator("#your-review > summary").click()  # near the top, folded until opened
    page.locator('input[name="decision"][value="approve"]').check()
    page.locator(f'input[name="risk"][value="{risk}"]').check()
    for key in state.policy().review.rubric_keys():
        page.locator(f'input[name="score_{key}"]').fill("1")
    page.locator('textarea[name="comment"]').fill(comment)
    page.get_by_role("button", name="Submit the review").click()
    assert "Review recorded." in page.content()


def test_publish_review_escalate_release_in_the_browser(browser, live_server, app, tmp_path):
    live = live_server
    if db.scalar(select(Category).where(Category.slug == "circuits")) is None:
        db.add(Category(slug="circuits", name="Circuits", description=""))
        db.commit()
    author_org = make_org("northlight")
    author = make_user(author_org, name="nora")
    reviewers = [make_user(make_org(slug), name=name, role="reviewer")
                 for slug, name in (("meridian", "mara"), ("opencircuits", "otto"),
                                    ("halcyon", "hugo"))]
    admin = make_user(make_org("registry"), name="ada", role="admin")
    contexts = []

    # the member posts at restricted, then asks to publish a redacted version
    ctx, page = sign_in(browser, live, author)
    contexts.append(ctx)
    page.goto(f"{live}/findings/new")
    page.locator('input[name="title"]').fill(INTERNAL_TITLE)
    page.locator('select[name="category"]').select_option("circuits")
    page.locator('select[name="level"]').select_option("restricted")
    page.locator('textarea[name="body"]').fill(INTERNAL_BODY)
    page.get_by_role("button", name="Post finding").click()
    page.wait_for_url(re.compile(r".*/findings/\d+$"))
    page.get_by_role("link", name="Ask to publish").click()
    page.get_by_label("Public title").fill(PUBLIC_TITLE)
    page.get_by_label("Public text (Markdown)").fill(PUBLIC_BODY)
    page.get_by_role("button", name="Submit for review").click()
    page.wait_for_url(re.compile(r".*/review/requests/\d+$"))
    request_id = int(page.url.rsplit("/", 1)[1])
    assert "Publication request submitted" in page.content()
    screenshot(page, "review-request-submitted")

    # two reviewers from two other organizations approve
    for reviewer in reviewers[:2]:
        ctx, rpage = sign_in(browser, live, reviewer)
        contexts.append(ctx)
        review(rpage, live, request_id, risk="low", comment="Nothing operational remains.")
        assert rpage.js_errors == []
    assert "Approved" in rpage.locator("h1 .state").inner_text()

    # a third rates the dual-use risk high: approval is blocked
    ctx, tpage = sign_in(browser, live, reviewers[2])
    contexts.append(ctx)
    review(tpage, live, request_id, risk="high", comment="Points straight at the heads.")
    assert "Blocked by a review rated high" in tpage.content()
    screenshot(tpage, "review-request-blocked")

    # the author sees the decisions but not who gave them
    page.reload()
    assert "Reviewer 3" in page.content()
    for reviewer in reviewers:
        assert reviewer.display_name not in page.content()

    # the admin: release refused while blocked, escalates with a reason, releases
    ctx, apage = sign_in(browser, live, admin)
    contexts.append(ctx)
    apage.goto(f"{live}/review/requests/{request_id}")
    # not releasable: the button is shown unavailable, with the reasons
    assert apage.get_by_role("button", name="Release to the public").is_disabled()
    assert "blocks it until an administrator escalates" in apage.locator(
        "#release-problems").inner_text()
    apage.get_by_label("Escalate: why may it go ahead").fill(
        "The heads are named in a public paper; the public text adds nothing operational.")
    apage.get_by_role("button", name="Escalate").click()
    assert "Escalated" in apage.content()
    # releasable: the release asks for a ticked confirmation first (it cannot be undone)
    apage.locator(".confirm-release > summary").click()
    release_now = apage.get_by_role("button", name="Release it now")
    release_now.click()  # unticked: the browser's required check stops it
    assert apage.locator(".confirm-release").is_visible()
    apage.get_by_label("I have read the public version above").check()
    release_now.click()
    assert "Released: the public version is on the public pages." in apage.content()
    screenshot(apage, "review-request-released")
    assert apage.js_errors == []

    # anyone, signed out: the public page and feed show exactly the approved text
    anon = browser.new_context()
    contexts.append(anon)
    ppage = anon.new_page()
    ppage.goto(f"{live}/public/")
    ppage.get_by_role("link", name=PUBLIC_TITLE).click()
    assert ppage.get_by_test_id("public-title").inner_text() == PUBLIC_TITLE
    assert ppage.get_by_test_id("public-body").inner_text().strip() == PUBLIC_BODY
    html = ppage.content()
    assert INTERNAL_TITLE not in html and "9.11" not in html and "mean_diff" not in html
    screenshot(ppage, "review-public-page")
    feed = anon.request.get(f"{live}/public/feed.atom")
    assert feed.ok
    text = feed.text()
    assert PUBLIC_TITLE in text and "mean_diff" not in text and INTERNAL_TITLE not in text
    db.expire_all()
    public_id = db.get(ReviewRequest, request_id).public_id
    api = anon.request.get(f"{live}/api/v1/public/findings/{public_id}").json()
    assert api["title"] == PUBLIC_TITLE and api["body"] == PUBLIC_BODY
    for c in contexts:
        c.close()

    # the static export verifies; a tampered file makes verification fail
    db.rollback()
    runner = app.test_cli_runner()
    out = tmp_path / "site"
    result = runner.invoke(enclave, ["export", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    page_file = out / "findings" / f"{public_id}.html"
    assert PUBLIC_TITLE in page_file.read_text() and "mean_diff" not in page_file.read_text()
    result = runner.invoke(enclave, ["export", "verify", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    feed_file = out / "feed.atom"
    feed_file.write_text(feed_file.read_text().replace("few mid-layer", "many"))
    result = runner.invoke(enclave, ["export", "verify", str(out)])
    assert result.exit_code == 1 and "MISMATCH feed.atom" in result.output
