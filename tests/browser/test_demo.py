"""The demo world (``enclave seed-demo``) in a real browser, one world for the module:

* the README's "good first tour", walked step by step as it is written there (the demo
  logins, TOTP secrets and recovery codes are read from the seed's printed output, as a
  reader of the README would);
* every page type, at 390 px (a phone) and 1280 px: no page scrolls sideways (wide tables
  scroll inside their own box), and axe-core (tests/axe, pinned by its lock file, never
  fetched at test time) finds no serious or critical violation. A screenshot of every
  page type at both widths goes to test-artifacts/pages/.

The app is served at http://localhost:PORT: passkeys need a host name. The page sweep runs
first, on the world as seeded (the tour then approves and releases the waiting request)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import expect
from sqlalchemy import select
from werkzeug.serving import make_server

from app.attachments.models import Attachment
from app.auth.models import User
from app.cli import enclave
from app.db import db
from app.findings.models import Finding
from app.review.models import Flag, ReviewRequest
from tests.browser.conftest import ARTIFACTS, LAUNCH_ARGS  # noqa: F401  (one browser per session)
from tests.conftest import make_app, running_app

pytestmark = pytest.mark.browser

PASSWORD = "lantern-quartz-orbit-meadow"
AXE_DIR = Path(__file__).resolve().parents[1] / "axe"
AXE_JS = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
SECRET_LINE = re.compile(r"^(\S+@\S+)\s.*\s([A-Z2-7]{16,})\s*$")
CODES_LINE = re.compile(r"^\s+(\S+@\S+)\s+((?:[a-z0-9]{4}-){3}[a-z0-9]{4}(?: .+)?)$")


def _axe_source() -> str:
    if not AXE_JS.exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(AXE_DIR)],
                       check=True, capture_output=True, timeout=600)
    return AXE_JS.read_text()


@dataclass
class Demo:
    url: str
    app: Any
    output: str
    secrets: dict[str, str] = field(default_factory=dict)
    codes: dict[str, list[str]] = field(default_factory=dict)

    def totp(self, email: str, offset_steps: int = 0) -> str:
        import time

        return pyotp.TOTP(self.secrets[email]).at(time.time() + 30 * offset_steps)

    def recovery_code(self, email: str) -> str:
        return self.codes[email].pop()


@pytest.fixture(scope="module")
def demo(migrated, instance_dir) -> Iterator[Demo]:  # type: ignore[no-untyped-def]
    with running_app(migrated, instance_dir) as app:
        result = app.test_cli_runner().invoke(enclave, ["seed-demo"])
        assert result.exit_code == 0, result.output
        world = Demo("", app, result.output)
        for line in result.output.splitlines():
            if m := SECRET_LINE.match(line):
                world.secrets[m.group(1)] = m.group(2)
            elif m := CODES_LINE.match(line):
                world.codes[m.group(1)] = m.group(2).split()
        # every account with a TOTP secret has its ten recovery codes in the output
        assert world.secrets and set(world.secrets) == set(world.codes)
        assert all(len(codes) == 10 for codes in world.codes.values())
        served = make_app(migrated, instance_dir)
        server = make_server("127.0.0.1", 0, served, threaded=True)
        world.url = f"http://localhost:{server.server_port}"
        served.extensions["enclave.settings"].base_url = world.url
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield world
        finally:
            server.shutdown()
            thread.join(timeout=10)
            served.extensions["enclave.engine"].dispose()


def _context(browser: Any, viewport: dict[str, int] = DESKTOP) -> tuple[Any, Any]:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(15000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    return context, page


def _sign_in(page: Any, demo: Demo, email: str, *, code: str | None = None) -> None:
    page.goto(f"{demo.url}/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    if code is not None:
        page.get_by_label("Code from your authenticator app").fill(code)
        page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"{demo.url}/home")


def _badge(page: Any) -> str:
    return page.get_by_test_id("reads-badge").inner_text()


# --------------------------------------------------------------------------- page types

OVERFLOW_JS = """() => {
  const doc = document.documentElement;
  const width = doc.clientWidth;
  if (doc.scrollWidth <= width) return null;
  const culprits = [];
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.right <= width + 1 || r.width === 0) continue;
    let inBox = false;
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      const s = getComputedStyle(p);
      if (['auto', 'scroll', 'hidden', 'clip'].includes(s.overflowX)) { inBox = true; break; }
    }
    const cls = typeof el.className === 'string' && el.className
      ? '.' + el.className.split(' ').join('.') : '';
    if (!inBox) culprits.push(el.tagName.toLowerCase() + cls + ' right=' + Math.round(r.right));
    if (culprits.length > 4) break;
  }
  return {scrollWidth: doc.scrollWidth, width: width, culprits: culprits};
}"""

AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations
    .filter(v => v.impact === 'serious' || v.impact === 'critical')
    .map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(' ') + ' :: '
                  + (n.failureSummary || '').split('\\n').slice(0, 2).join(' '))}));
}"""


def _ids(demo: Demo) -> dict[str, Any]:
    """The demo world's ids each page type is visited with."""
    with demo.app.app_context():
        db.expire_all()
        findings = {f.title: f.id for f in db.scalars(select(Finding))}

        def finding(prefix: str) -> int:
            return next(i for title, i in findings.items() if title.startswith(prefix))

        requests = list(db.scalars(select(ReviewRequest).order_by(ReviewRequest.id)))
        waiting = next(r for r in requests if r.state != "released")
        released = next(r for r in requests if r.state == "released")
        notebook = next(a.id for a in db.scalars(select(Attachment))
                        if a.filename.endswith(".ipynb"))
        nina = db.scalar(select(User).where(User.email == "nina@northlight.example"))
        assert nina is not None
        return {
            "induction": finding("Induction heads"),
            "sycophancy": finding("A cheap evaluation"),
            "nina_id": nina.id,
            "waiting": waiting.id, "released": released.id,
            "released_public": getattr(released, "public_id", None) or released.id,
            "flag": db.scalar(select(Flag.id)),
            "notebook": notebook,
            "org": "meridian",
        }


def _pages(ids: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Page types by who visits them: (name, path)."""
    i = ids
    return {
        "anonymous": [
            ("login", "/login"), ("forgot", "/forgot"), ("public-index", "/public/"),
            ("public-item", f"/public/{i['released_public']}"), ("not-found", "/no-such-page"),
        ],
        "nina": [
            ("home", "/home"), ("findings", "/findings/"),
            ("finding", f"/findings/{i['induction']}"),
            ("finding-history", f"/findings/{i['sycophancy']}/history"),
            ("finding-edit", f"/findings/{i['sycophancy']}/edit"),
            ("finding-new", "/findings/new"), ("category", "/findings/c/circuits"),
            ("categories", "/findings/categories"), ("level", "/findings/level/network"),
            ("search", "/findings/search?q=heads"), ("notifications", "/notifications/"),
            ("ndas", "/ndas/"), ("nda", "/ndas/network-terms"), ("account", "/account"),
            ("account-2fa", "/account/2fa"), ("account-tokens", "/account/tokens"),
            ("account-passkeys", "/account/passkeys"), ("account-confirm", "/account/confirm"),
            ("flag-new", f"/review/findings/{i['induction']}/flag"),
            ("my-requests", "/review/mine"),
            ("notebook", f"/attachments/{i['notebook']}/view"),
        ],
        "admin": [
            ("audit", "/admin/audit"), ("orgs", "/admin/orgs/"),
            ("org-edit", f"/admin/orgs/{i['org']}"), ("org-sso", f"/orgs/{i['org']}/sso"),
            ("users", "/admin/users"), ("user-edit", f"/admin/users/{i['nina_id']}"),
            ("categories-admin", "/admin/categories/"),
            ("category-edit", "/admin/categories/circuits"), ("trace", "/admin/trace"),
            ("review-queue", "/review/"), ("review-admin", "/review/admin"),
            ("request-waiting", f"/review/requests/{i['waiting']}"),
            ("request-released", f"/review/requests/{i['released']}"),
            ("request-edit", f"/review/requests/{i['waiting']}/edit"),
            ("flag", f"/review/flags/{i['flag']}"),
            ("publish-new", f"/review/findings/{i['induction']}/publish"),
            ("declassify-new", f"/review/findings/{i['induction']}/declassify"),
        ],
        "rita": [
            ("reviewer-queue", "/review/"),
            ("reviewer-request", f"/review/requests/{i['waiting']}"),
        ],
        "sam": [("nda-unsigned", "/ndas/restricted"), ("sam-home", "/home")],
    }


def test_every_page_type_fits_a_phone_and_passes_axe(browser, demo):
    axe = _axe_source()
    ids = _ids(demo)
    shots = ARTIFACTS / "pages"
    shots.mkdir(parents=True, exist_ok=True)
    overflowing: dict[str, Any] = {}
    violations: dict[str, Any] = {}
    statuses: dict[str, int] = {}
    visited = 0
    sign_ins = {
        "anonymous": None,
        "nina": ("nina@northlight.example", None),
        "admin": ("admin@northlight.example", "admin@northlight.example"),
        "rita": ("rita@meridian.example", "rita@meridian.example"),
        "sam": ("sam@meridian.example", None),
    }
    for who, pages in _pages(ids).items():
        context, page = _context(browser, PHONE)
        context.add_init_script(script=axe)
        try:
            if sign_ins[who] is not None:
                email, coded = sign_ins[who]
                _sign_in(page, demo, email,
                         code=demo.recovery_code(coded) if coded else None)
            for name, path in pages:
                page.set_viewport_size(PHONE)
                response = page.goto(f"{demo.url}{path}")
                statuses[name] = response.status if response else 0
                visited += 1
                page.screenshot(path=str(shots / f"{name}-390.png"), full_page=True)
                over = page.evaluate(OVERFLOW_JS)
                if over:
                    overflowing[name] = over
                found = page.evaluate(AXE_RUN)
                if found:
                    violations[name] = found
                page.set_viewport_size(DESKTOP)
                page.screenshot(path=str(shots / f"{name}-1280.png"), full_page=True)
                if page.evaluate(OVERFLOW_JS):
                    overflowing[f"{name}@1280"] = page.evaluate(OVERFLOW_JS)
            assert page.js_errors == [], (who, page.js_errors)
        finally:
            context.close()
    (shots / "report.json").write_text(json.dumps(
        {"statuses": statuses, "overflowing": overflowing, "violations": violations},
        indent=1))
    unexpected = {n: s for n, s in statuses.items() if s != (404 if n == "not-found" else 200)}
    assert not unexpected, unexpected
    assert visited >= 45
    assert not overflowing, json.dumps(overflowing, indent=1)
    assert not violations, json.dumps(violations, indent=1)


def test_a_refused_reply_brings_the_browser_back_to_the_form(browser, demo):
    ids = _ids(demo)
    context, page = _context(browser)
    try:
        _sign_in(page, demo, "nina@northlight.example")
        page.goto(f"{demo.url}/findings/{ids['induction']}")
        page.get_by_role("button", name="Reply", exact=True).click()
        expect(page.locator("#reply-form .error")).to_be_visible()
        assert page.url.endswith("/replies#reply-form")
        assert page.evaluate("window.scrollY") > 200  # at the form, not the top
    finally:
        context.close()


# --------------------------------------------------------------------------- the tour


def test_the_readme_tour_can_be_finished(browser, demo):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    tour = readme.split("A good")[1].split("## Test it")[0]
    for email in ("nina@northlight.example", "admin@northlight.example",
                  "omar@meridian.example", "sam@meridian.example", "lena@lumen.example",
                  "rita@meridian.example", "rex@opencircuits.example",
                  "carol@northlight.example", "pat@halcyon.example", "sue@vectordyn.example"):
        assert email in tour, email
    contexts = []
    try:
        # nina: network clearance, no 2FA: public and network only; finding #1 shows its
        # figure inline and has the notebook it talks about
        ctx, page = _context(browser)
        contexts.append(ctx)
        _sign_in(page, demo, "nina@northlight.example")
        assert _badge(page) == "reads: Network"
        levels = set(page.locator("li.finding-row .badge").evaluate_all(
            "els => els.map(e => e.dataset.level)"))
        assert levels and levels <= {"public", "network"}
        page.get_by_role("link", name=re.compile("^Induction heads appear")).click()
        figure = page.locator("img.figure-img").first
        expect(figure).to_be_visible()
        page.wait_for_function("() => { const i = document.querySelector('img.figure-img');"
                               " return i && i.complete && i.naturalWidth > 0; }")
        assert page.get_by_text("induction-heads.ipynb").first.is_visible()
        assert "Posted by Mia Member" in page.content()

        # admin: organizations, members, audit log (TOTP code from the printed secret)
        ctx, admin = _context(browser)
        contexts.append(ctx)
        _sign_in(admin, demo, "admin@northlight.example",
                 code=demo.totp("admin@northlight.example"))
        for link, heading in (("Organizations", "Organizations"), ("Members", "Members"),
                              ("Audit log", "Audit log")):
            admin.get_by_role("link", name=link, exact=True).click()
            expect(admin.get_by_role("heading", level=1)).to_contain_text(
                re.compile(heading, re.I))

        # omar: cleared confidential, capped at restricted by Meridian's ceiling
        ctx, page = _context(browser)
        contexts.append(ctx)
        _sign_in(page, demo, "omar@meridian.example", code=demo.totp("omar@meridian.example"))
        assert _badge(page) == "reads: Restricted"

        # sam: cleared, no NDA signed yet: reads only public content
        ctx, page = _context(browser)
        contexts.append(ctx)
        _sign_in(page, demo, "sam@meridian.example")
        assert _badge(page) == "reads: Public (cleared Restricted)"
        page.get_by_role("link", name="NDAs", exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_be_visible()

        # pat and sue: a pending and a suspended organization cannot sign in
        for email in ("pat@halcyon.example", "sue@vectordyn.example"):
            ctx, page = _context(browser)
            contexts.append(ctx)
            page.goto(f"{demo.url}/login")
            page.get_by_label("E-mail").fill(email)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in", exact=True).click()
            assert page.url.startswith(f"{demo.url}/login"), email

        # rex: a reviewer; the dual-use flag waits in his queue
        ctx, page = _context(browser)
        contexts.append(ctx)
        _sign_in(page, demo, "rex@opencircuits.example")
        page.get_by_role("link", name="Review", exact=True).click()
        expect(page.locator("main")).to_contain_text("Steering vectors transfer")

        # lena (signs in with a printed recovery code): the second approval
        ctx, page = _context(browser)
        contexts.append(ctx)
        _sign_in(page, demo, "lena@lumen.example",
                 code=demo.recovery_code("lena@lumen.example"))
        page.get_by_role("link", name="Review", exact=True).click()
        page.get_by_role("row").filter(has_text="Copying heads in layer 4").get_by_role(
            "link", name=re.compile("^Publication request")).click()
        expect(page.get_by_test_id("tally")).to_contain_text("1 of 2")
        page.locator("#your-review > summary").click()
        page.locator('input[name="decision"][value="approve"]').check()
        page.locator('input[name="risk"][value="low"]').check()
        for score in page.locator('input[name^="score_"]').all():
            score.fill("1")
        page.locator('textarea[name="comment"]').fill("No recipe in the public text.")
        page.get_by_role("button", name="Submit the review").click()
        expect(page.locator("h1 .state")).to_contain_text("Approved")
        request_url = page.url

        # the admin releases it, after confirming
        admin.goto(request_url)
        admin.locator(".confirm-release > summary").click()
        admin.get_by_label("I have read the public version above").check()
        admin.get_by_role("button", name="Release it now").click()
        expect(admin.locator("body")).to_contain_text("Released: the public version")
        admin.get_by_role("link", name="Public area").click()
        expect(admin.locator("main")).to_contain_text("by Northlight Labs")

        # anyone: /public and the feed list both released items
        ctx, page = _context(browser)
        contexts.append(ctx)
        page.goto(f"{demo.url}/public/")
        for title in ("Two heads carry in-context copying",
                      "A cheap evaluation for sycophancy drift"):
            expect(page.locator("main")).to_contain_text(title)
        page.get_by_role("link", name="A cheap evaluation for sycophancy drift").click()
        assert page.locator("math").count() >= 1  # the released text's math, as MathML
        expect(page.get_by_test_id("public-credit")).to_have_text(
            "By Nina Network (Northlight Labs)")
        assert page.locator('.marking[data-level="public"]').count() == 2
        feed = page.request.get(f"{demo.url}/public/feed.atom").text()
        assert feed.count("<entry>") == 2

        # carol: confidential needs a passkey in this session; add one, sign in with it
        _carol_adds_a_passkey(browser, demo, contexts)
        for p in (c.pages[0] for c in contexts if c.pages):
            assert p.js_errors == [], p.url
    finally:
        for c in contexts:
            c.close()


def _carol_adds_a_passkey(browser: Any, demo: Demo, contexts: list[Any]) -> None:
    email = "carol@northlight.example"
    ctx, page = _context(browser)
    contexts.append(ctx)
    cdp = ctx.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True,
        "automaticPresenceSimulation": True}})
    _sign_in(page, demo, email, code=demo.totp(email))
    assert "Needs a passkey in this session" in page.content()
    page.get_by_role("link", name="Account", exact=True).click()
    page.get_by_role("link", name="Manage passkeys").click()
    page.get_by_role("link", name="Confirm it is you").click()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Code from your authenticator app").fill(demo.totp(email, 1))
    page.get_by_role("button", name="Confirm").click()
    page.get_by_label("Name").fill("Demo laptop")
    page.get_by_role("button", name="Add passkey").click()
    page.wait_for_selector("text=Passkey “Demo laptop” added.")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{demo.url}/login")
    page.get_by_role("button", name="Continue with a passkey").click()
    page.wait_for_url(f"{demo.url}/home")
    assert "Needs a passkey in this session" not in page.content()
    levels = page.locator("li.finding-row .badge").evaluate_all(
        "els => els.map(e => e.dataset.level)")
    assert "confidential" in levels
