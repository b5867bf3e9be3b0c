"""Responses in Chromium: with JavaScript a response updates its count in place (no
reload, no CSP violation); without it the same form posts and the page comes back with
the count. Screenshots at 1280 and 390 px; nothing scrolls sideways on a phone."""

from __future__ import annotations

import re

import pytest

from app.findings import service as findings
from app.reactions import service as reactions
from tests.browser.conftest import screenshot
from tests.browser.widgets import sign_in
from tests.factories import make_finding, make_org, make_user

pytestmark = pytest.mark.browser


def _world():  # type: ignore[no-untyped-def]
    north, east = make_org("north"), make_org("east")
    author = make_user(north, name="ada", mfa_on=False)
    reader = make_user(east, name="bob", mfa_on=False)
    others = [make_user(east, name=n, mfa_on=False) for n in ("cyd", "dee", "eve")]
    finding = make_finding(author, level="network", title="Induction heads form in a phase change",
                           body="Two-layer attention-only models show a bump in the loss "
                                "curve when **induction heads** form.")
    reply = findings.add_reply(others[0], finding, "Does this hold with MLPs too?")
    for user, kind in ((others[0], "agree"), (others[1], "agree"), (others[2], "insightful"),
                       (others[1], "needs_evidence")):
        reactions.toggle_finding(user, finding, kind)
    reactions.toggle_reply(author, reply, finding, "insightful")
    return reader, finding, reply


def test_responses_update_in_place_and_work_without_javascript(browser, live_server):  # type: ignore[no-untyped-def]
    reader, finding, reply = _world()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, live_server, reader.email)
    url = f"{live_server}/findings/{finding.id}"
    page.goto(url)
    bar = page.locator("#responses-finding")
    agree = bar.get_by_role("button", name=re.compile(r"^Agree"))
    assert agree.get_attribute("aria-pressed") == "false"
    assert agree.inner_text().split() == ["Agree", "2"]
    page.evaluate("window.__noReload = true")
    agree.click()
    page.wait_for_function(
        "() => document.querySelector('#responses-finding button[value=agree]')"
        ".getAttribute('aria-pressed') === 'true'")
    assert page.evaluate("window.__noReload") is True  # updated in place
    assert agree.inner_text().split() == ["Agree", "3"]
    assert "Bob Tester (@bob)" in bar.locator(".responders").text_content()
    reply_bar = page.locator(f"#responses-reply-{reply.id}")
    assert reply_bar.get_by_role("button", name=re.compile(r"^Insightful")).inner_text() \
        .split() == ["Insightful", "1"]
    page.locator("#responses-finding .responders summary").click()
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(url)
        page.locator("#responses-finding .responders summary").click()
        assert page.evaluate(
            "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        screenshot(page, f"responses-finding-{width}")
    assert errors == []
    context.close()

    # without JavaScript: the form posts and the page comes back at the bar
    plain = browser.new_context(viewport={"width": 1280, "height": 900},
                                java_script_enabled=False)
    page = plain.new_page()
    sign_in(page, live_server, reader.email)
    page.goto(url)
    insightful = page.locator("#responses-finding").get_by_role(
        "button", name=re.compile(r"^Insightful"))
    insightful.click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/findings/{finding.id}#responses-finding")
    insightful = page.locator("#responses-finding").get_by_role(
        "button", name=re.compile(r"^Insightful"))
    assert insightful.get_attribute("aria-pressed") == "true"
    assert insightful.inner_text().split() == ["Insightful", "2"]
    plain.close()
