"""Sign-in, two-factor, NDA signing and the access banner in a real browser."""

from __future__ import annotations

import pytest

from tests.browser.conftest import screenshot
from tests.factories import PASSWORD, make_org, make_user, totp_now

pytestmark = pytest.mark.browser


def test_login_with_2fa_then_sign_nda(page, live_server, app):
    org = make_org("northwind", ceiling="restricted")
    user = make_user(org, clearance="confidential", ndas=["network-terms"], name="grace")
    page.goto(f"{live_server}/home")
    assert "/login" in page.url
    page.get_by_label("E-mail").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Code from your authenticator app").fill(totp_now(user))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"{live_server}/home")
    banner = page.locator("header.site .who")
    assert user.display_name in banner.inner_text()
    assert "Northwind Research" in banner.inner_text()
    assert "Restricted" in banner.inner_text()  # effective clearance: capped by the ceiling
    screenshot(page, "foundation-home-before-nda")

    page.get_by_role("link", name="Read and sign").click()
    page.get_by_label("Type your full name to sign").fill("Somebody Else")
    page.get_by_role("button", name="I agree and sign").click()
    assert "exactly as on your account" in page.content()
    page.get_by_label("Type your full name to sign").fill(user.display_name)
    page.get_by_role("button", name="I agree and sign").click()
    page.goto(f"{live_server}/home")
    rows = page.locator("tbody tr")
    restricted = rows.filter(has_text="Restricted")
    assert "Readable" in restricted.inner_text()
    screenshot(page, "foundation-home-after-nda")
    assert page.js_errors == [] and page.dialogs == []


def test_wrong_password_rerenders_with_message(page, live_server, app):
    user = make_user(make_org(), mfa_on=False)
    page.goto(f"{live_server}/login")
    page.get_by_label("E-mail").fill(user.email)
    page.get_by_label("Password").fill("not the password at all")
    page.get_by_role("button", name="Sign in").click()
    assert "Wrong e-mail or password." in page.content()
    assert page.get_by_label("E-mail").input_value() == user.email
    screenshot(page, "foundation-login-error")


def test_admin_suspends_org_and_member_session_ends(browser, live_server, app):
    hq = make_org("hq")
    admin = make_user(hq, role="admin", mfa_on=False)
    target = make_org("acme")
    member = make_user(target, mfa_on=False)
    admin_ctx, member_ctx = browser.new_context(), browser.new_context()
    admin_page, member_page = admin_ctx.new_page(), member_ctx.new_page()
    for page, user in ((admin_page, admin), (member_page, member)):
        page.goto(f"{live_server}/login")
        page.get_by_label("E-mail").fill(user.email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server}/home")
    admin_page.goto(f"{live_server}/admin/orgs/acme")
    admin_page.get_by_label("Status").select_option("suspended")
    admin_page.get_by_role("button", name="Save").click()
    assert "Saved" in admin_page.content()
    screenshot(admin_page, "foundation-admin-orgs")
    member_page.goto(f"{live_server}/home")
    assert "/login" in member_page.url
    admin_ctx.close()
    member_ctx.close()
