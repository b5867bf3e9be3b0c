"""The XSS corpus (tests/xss_payloads.py) in a real browser.

Every payload goes into every kind of user-controlled text Enclave shows: finding titles
and bodies (with math, code, figures from the finding's files, footnotes, task lists and
heading anchors among the payloads), every cell and output kind of an attached notebook
read in the page, replies, attachment file names, display names, organization names, flag
reasons, hidden-reply reasons, old revisions, review notes, comments and thread, the
public (released) version, category names, token names; search snippets and
notifications show them again. Each page that shows them is loaded in Chromium with a
trap installed before any page script (``window.__pwned``), a dialog listener, a
page-error listener and a Content-Security-Policy violation listener, then inspected:

* the trap is untouched, no dialog opened, no page error, no CSP violation (a violation
  would mean injected markup reached the DOM and only the CSP stopped it);
* the DOM holds no event-handler attribute, no javascript:/vbscript:/data: link or
  frame, no foreign script, frame, object, embed, base or meta refresh;
* template probes such as ``{{7*7}}`` never render as 49.

Payloads are batched (one finding body holds them all; one finding, reply, file, user and
organization per payload), so about forty page loads render the whole corpus.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from app import state
from app.attachments import service as attachments
from app.auth import tokens as api_tokens
from app.auth.models import User
from app.db import db
from app.findings import service as findings
from app.findings.models import Category
from app.notifications import service as notify
from app.review import flags
from app.review import service as review
from app.review.pins import current as seen_of
from tests.browser.conftest import screenshot
from tests.factories import PASSWORD, make_org, make_user
from tests.xss_payloads import PAYLOADS, TEMPLATE_PROBES, marked, marker

pytestmark = pytest.mark.browser

N = len(PAYLOADS)
ALL = "\n\n".join(marked(i) for i in range(N))
PROBE_IDS = [PAYLOADS.index(p) for p in TEMPLATE_PROBES]

TRAP = """
window.__pwned = 0;
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + (e.sample || ''));
});
"""

INERT = r"""() => {
  const bad = [];
  const urlAttrs = ['href', 'src', 'action', 'formaction', 'xlink:href', 'data', 'poster',
                    'background', 'srcset'];
  for (const el of document.querySelectorAll('*')) {
    const tag = el.tagName.toLowerCase();
    for (const a of el.attributes) {
      const n = a.name.toLowerCase();
      if (n.startsWith('on')) bad.push(`${tag}[${n}]`);
      if (n === 'srcdoc' || n === 'style') bad.push(`${tag}[${n}]`);
      if (urlAttrs.includes(n)) {
        const v = a.value.replace(/[\s\x00-\x1f]/g, '').toLowerCase();
        // notebooks' output pictures are data: URLs, of these image types only
        const picture = tag === 'img' && n === 'src' &&
          /^data:image\/(png|jpeg|gif|webp);base64,[a-z0-9+\/=]*$/.test(v);
        if (!picture && /^(javascript|vbscript|data):/.test(v))
          bad.push(`${tag}[${n}=${v.slice(0, 40)}]`);
      }
    }
    if (['iframe', 'frame', 'frameset', 'object', 'embed', 'applet', 'base', 'isindex']
        .includes(tag)) bad.push(tag);
    if (tag === 'meta' && el.getAttribute('http-equiv')) bad.push('meta[http-equiv]');
    if (tag === 'script' && !(el.getAttribute('src') || '').startsWith('/static/'))
      bad.push('script:' + (el.getAttribute('src') || 'inline'));
    if (tag === 'svg' && el.closest('main')) bad.push('svg in content');
    if (tag === 'style' && el.closest('body')) bad.push('style element');
  }
  return bad;
}"""

SETTLE = "() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 30)))"


def _one_line(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


@dataclass
class Corpus:
    main: int = 0
    notebook: str = ""
    released: int = 0
    released_public: int = 0
    request: int = 0
    flag_ids: list[int] = field(default_factory=list)
    finding_ids: list[int] = field(default_factory=list)
    people: dict[str, User] = field(default_factory=dict)


def _png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (120, 60), (40, 90, 160)).save(out, "PNG")
    return out.getvalue()


def _notebook() -> bytes:
    """Every payload in every place a notebook shows text: Markdown cells, code, stream
    output, HTML and Markdown outputs, error tracebacks, raw cells; plus a JavaScript
    output, an SVG output, widget state and a picture output."""
    picture = base64.b64encode(_png()).decode()
    cells: list[dict[str, Any]] = []
    for i in range(N):
        text = marked(i)
        cells.append({"cell_type": "markdown", "metadata": {}, "source": text})
        cells.append({"cell_type": "code", "metadata": {}, "execution_count": i,
                      "source": text, "outputs": [
                          {"output_type": "stream", "name": "stdout", "text": text},
                          {"output_type": "display_data", "metadata": {},
                           "data": {"text/html": text, "text/plain": text}},
                          {"output_type": "display_data", "metadata": {},
                           "data": {"text/markdown": text}},
                          {"output_type": "error", "ename": text, "evalue": text,
                           "traceback": [text]}]})
        cells.append({"cell_type": "raw", "metadata": {}, "source": text})
    cells.append({"cell_type": "code", "metadata": {}, "execution_count": N, "source": "x",
                  "outputs": [
                      {"output_type": "display_data", "metadata": {},
                       "data": {"application/javascript": "window.__pwned=1"}},
                      {"output_type": "display_data", "metadata": {},
                       "data": {"image/svg+xml": "<svg onload='window.__pwned=1'/>"}},
                      {"output_type": "display_data", "metadata": {},
                       "data": {"image/png": picture, "text/plain": "<Figure>"}}]})
    return json.dumps({"nbformat": 4, "nbformat_minor": 5, "cells": cells, "metadata": {
        "widgets": {"application/vnd.jupyter.widget-state+json": {
            "state": {"x": {"model_name": "<script>window.__pwned=1</script>"}}}}}}).encode()


def build_corpus() -> Corpus:
    c = Corpus()
    north = make_org("north", ceiling="network")
    author = make_user(north, name="author", clearance="network", ndas=["network-terms"],
                       mfa_on=False)
    admin = make_user(north, name="admin", role="admin", clearance="network",
                      ndas=["network-terms"], mfa_on=False)
    rev_b = make_user(make_org("bravo"), name="revb", role="reviewer", clearance="network",
                      ndas=["network-terms"], mfa_on=False)
    rev_c = make_user(make_org("charlie"), name="revc", role="reviewer", clearance="network",
                      ndas=["network-terms"], mfa_on=False)
    c.people.update(author=author, admin=admin, rev_b=rev_b)
    existing = set(db.scalars(select(Category.slug)))
    if "circuits" not in existing:
        db.add(Category(slug="circuits", name="Circuits", description="Circuits."))
    for i in range(5):
        db.add(Category(slug=f"xss{i}", name=_one_line(marked(i), 120),
                        description=marked(i + 5)))
    db.commit()
    for i in range(5):
        api_tokens.create_token(admin, _one_line(marked(i), 80))

    with notify.suppress_email():
        main = findings.create_finding(author, title=_one_line(marked(0), 300),
                                       body="zebrafish\n\n" + ALL, category="circuits",
                                       level="network")
        c.main = main.id
        figure = _png()  # the FIGURES payloads refer to it by name
        attachments.upload(author, main.id, filename="fig.png", stream=io.BytesIO(figure),
                           content_length=len(figure), content_type="image/png")
        notebook = _notebook()
        c.notebook = attachments.upload(author, main.id, filename="corpus.ipynb",
                                        stream=io.BytesIO(notebook),
                                        content_length=len(notebook)).id
        data = b"payload file\n"
        for i in range(N):
            org = make_org(f"x{i}", ceiling="network")
            org.name = _one_line(marked(i), 200)
            person = make_user(org, name=f"x{i}", clearance="network", ndas=["network-terms"],
                               mfa_on=False)
            person.display_name = _one_line(marked(i), 120)
            db.commit()
            f = findings.create_finding(person, title=_one_line(marked(i), 300),
                                        body=f"zebrafish {marked(i)}", category="circuits",
                                        level="network")
            c.finding_ids.append(f.id)
            findings.add_reply(person, main, marked(i))
            # the marker last: a file name keeps only what follows its last slash
            attachments.upload(author, main.id, filename=f"{PAYLOADS[i]} {marker(i)}.txt",
                               stream=io.BytesIO(data), content_length=len(data))
            flag = flags.create_flag(person, main.id, reason=marked(i),
                                     suggested_level="restricted")
            c.flag_ids.append(flag.id)
        first_reply = findings.replies_page(admin, main, 1).items[0]
        reply = findings.get_reply(admin, first_reply.id)
        findings.set_reply_hidden(admin, reply, True, _one_line(marked(1), 500))
        findings.edit_finding(author, main, title=_one_line(marked(2), 300),
                              body=main.body + "\n\nedited")

        scores = {k: 1 for k in state.policy().review.rubric_keys()}
        req = review.create_publication(author, main.id, public_title=_one_line(marked(3), 300),
                                        public_body=ALL, note=ALL[:5000])
        c.request = req.id
        review.add_review(rev_b, req, seen=seen_of(req),
                          decision="changes", risk="medium", scores=scores,
                          comment=ALL[:20000])
        for start in range(0, N, 20):
            review.add_comment(rev_b, req, "\n\n".join(marked(i) for i in
                                                       range(start, min(N, start + 20))))
        released = findings.create_finding(author, title="Released one", body="zebrafish x",
                                           category="circuits", level="network")
        att = attachments.upload(author, released.id, filename=f"{PAYLOADS[4]} {marker(4)}",
                                 stream=io.BytesIO(data), content_length=len(data))
        rel = review.create_publication(author, released.id,
                                        public_title=_one_line(marked(5), 300),
                                        public_body=ALL, attachments=[att.id])
        review.add_review(rev_b, rel, seen=seen_of(rel),
                          decision="approve", risk="low", scores=scores,
                          comment=ALL[:20000])
        review.add_review(rev_c, rel, seen=seen_of(rel),
                          decision="approve", risk="low", scores=scores,
                          comment="fine")
        review.release(admin, rel, seen=seen_of(rel))
        c.released = rel.id
        c.released_public = rel.public_id
    return c


@dataclass
class Stats:
    pages: int = 0
    renders: int = 0  # payloads shown, summed over pages
    problems: list[str] = field(default_factory=list)


class Visitor:
    """One signed-in browser context with the trap and the listeners installed."""

    def __init__(self, browser: Any, live: str, stats: Stats, who: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.add_init_script(TRAP)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20000)
        self.live, self.stats, self.who = live, stats, who
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.console: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        # failed loads are checked below by status (the feed's viewer asks for
        # /favicon.ico, which does not exist); any other console error is a problem
        self.page.on("console", lambda m: self.console.append(m.text)
                     if m.type == "error" and not m.text.startswith("Failed to load resource")
                     else None)
        self.page.on("response", lambda r: self.console.append(f"{r.status} {r.url}")
                     if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)

    def sign_in(self, user: User) -> None:
        self.page.goto(f"{self.live}/login")
        self.page.fill('input[name="email"]', user.email)
        self.page.fill('input[name="password"]', PASSWORD)
        self.page.click('button[type="submit"]')
        self.page.wait_for_url(f"{self.live}/home")

    def visit(self, path: str, *, follow: bool = True, max_pages: int = 15) -> None:
        url = f"{self.live}{path}"
        for _ in range(max_pages):
            response = self.page.goto(url)
            assert response is not None and response.status == 200, (self.who, url)
            self.page.evaluate(SETTLE)
            self._inspect(url)
            nxt = self.page.locator('a[rel="next"]')
            if not follow or nxt.count() == 0:
                return
            url = self.live + (nxt.first.get_attribute("href") or "")

    def _inspect(self, url: str) -> None:
        page, where = self.page, f"{self.who} {url.removeprefix(self.live)}"
        html = page.content()
        shown = sum(1 for i in range(N) if marker(i) in html)
        self.stats.pages += 1
        self.stats.renders += shown
        pwned = page.evaluate("() => window.__pwned")
        csp = page.evaluate("() => window.__csp")
        bad = [] if url.endswith(".atom") else page.evaluate(INERT)
        evaluated = [marker(i) for i in PROBE_IDS if re.search(rf"{marker(i)} [^<]*\b49\b",
                                                               html)]
        for what, value in (("trap set", pwned), ("dialogs", self.dialogs),
                            ("page errors", self.errors), ("CSP violations", csp),
                            ("active markup", bad), ("template evaluated", evaluated),
                            ("console errors", self.console)):
            if value:
                self.stats.problems.append(f"{where}: {what}: {value}")
                screenshot(page, "xss-" + re.sub(r"[^a-z0-9]+", "-", where.lower())[:80])
        self.dialogs.clear()
        self.errors.clear()
        self.console.clear()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def corpus(app: Flask) -> Iterator[Corpus]:
    yield build_corpus()


def test_xss_corpus_never_runs(browser: Any, live_server: str, corpus: Corpus) -> None:
    live, c, stats = live_server, corpus, Stats()
    admin = Visitor(browser, live, stats, "admin")
    admin.sign_in(c.people["admin"])
    for path in ("/home", "/findings/", f"/findings/{c.main}",
                 f"/findings/{c.main}/history", "/findings/search?q=zebrafish&per_page=100",
                 "/findings/categories", "/findings/c/xss0", f"/findings/{c.finding_ids[0]}",
                 f"/findings/{c.finding_ids[-1]}", f"/attachments/{c.notebook}/view",
                 "/review/admin",
                 f"/review/requests/{c.request}", f"/review/requests/{c.released}",
                 f"/review/flags/{c.flag_ids[0]}", f"/review/flags/{c.flag_ids[-1]}",
                 f"/review/findings/{c.main}/flag", f"/review/findings/{c.main}/publish",
                 f"/review/requests/{c.request}/edit", "/admin/users?per_page=100",
                 "/admin/orgs/", "/admin/audit?per_page=100", "/admin/categories/",
                 "/account/tokens"):
        admin.visit(path, max_pages=4 if path.startswith("/admin/audit") else 15)
    admin.close()

    author = Visitor(browser, live, stats, "author")
    author.sign_in(c.people["author"])
    for path in ("/notifications/?per_page=100", "/review/mine",
                 f"/review/requests/{c.request}", f"/findings/{c.main}",
                 f"/attachments/{c.notebook}/view",
                 f"/findings/{c.main}/edit"):
        author.visit(path)
    author.close()

    reviewer = Visitor(browser, live, stats, "reviewer")
    reviewer.sign_in(c.people["rev_b"])
    for path in ("/review/?per_page=100", f"/review/requests/{c.request}",
                 "/notifications/?per_page=100"):
        reviewer.visit(path, max_pages=3)
    reviewer.close()

    anonymous = Visitor(browser, live, stats, "anonymous")
    for path in ("/public/", f"/public/{c.released_public}", "/public/feed.atom"):
        anonymous.visit(path)
    anonymous.close()

    print(f"\nXSS corpus: {N} payloads; {stats.pages} pages rendered; "
          f"{stats.renders} payload renderings checked")
    assert stats.renders >= 10 * N, "the pages did not show the corpus"
    assert not stats.problems, "\n".join(stats.problems[:50])


def test_template_probes_never_evaluate(app: Flask) -> None:
    """Through the test client too: ``{{7*7}}`` and friends stay text everywhere they
    are shown (title, body, reply, public version, display name)."""
    from tests.factories import login

    c = build_corpus()
    client = app.test_client()
    login(client, c.people["admin"])
    pages = [f"/findings/{c.finding_ids[i]}" for i in PROBE_IDS]
    pages += [f"/findings/{c.main}", f"/review/requests/{c.request}", "/findings/"]
    public = app.test_client()
    for path in pages:
        html = client.get(path).get_data(as_text=True)
        for i in PROBE_IDS:
            assert not re.search(rf"{marker(i)} [^<]*\b49\b", html), (path, PAYLOADS[i])
    html = public.get(f"/public/{c.released_public}").get_data(as_text=True)
    for i in PROBE_IDS:
        assert marker(i) in html
        assert not re.search(rf"{marker(i)} [^<]*\b49\b", html), PAYLOADS[i]
    assert "{{7*7}}" in html
