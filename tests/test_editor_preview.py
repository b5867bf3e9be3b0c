# ruff: noqa: F811  (the attachment fixtures are imported, then taken as arguments)
"""The editor's Preview tab: the server renders the text as it would be posted (math,
code, the finding's figures), CSRF-checked, through the visibility gate before the form
is read, within the body limit; nothing is stored."""

from __future__ import annotations

import io
import re

from PIL import Image
from sqlalchemy import func, select

from app import state
from app.audit import AuditEntry
from app.db import db
from app.findings.models import Finding
from tests.attachments_world import att_app, att_client, attach  # noqa: F401
from tests.conftest import csrf_from
from tests.factories import login, make_finding, make_org, make_user
from tests.findings_world import assert_inert


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 120, 60)).save(out, "PNG")
    return out.getvalue()


def _token(client) -> str:  # type: ignore[no-untyped-def]
    return csrf_from(client.get("/findings/new").text)


def test_preview_renders_like_posting_and_stores_nothing(att_app, att_client):
    author = make_user(make_org("north"), name="alice")
    login(att_client, author)
    token = _token(att_client)
    counts = (db.scalar(select(func.count()).select_from(Finding)),
              db.scalar(select(func.count()).select_from(AuditEntry)))
    r = att_client.post("/findings/preview", headers={"X-CSRFToken": token},
                        data={"body": "Loss $x^2$\n\n```python\ndef f(): pass\n```\n\n"
                                      "<script>alert(1)</script>"})
    assert r.status_code == 200 and r.is_json
    html = r.get_json()["html"]
    assert '<math display="inline">' in html and '<span class="k">def</span>' in html
    assert "&lt;script&gt;" in html
    assert_inert(f"<main>{html}</main>")
    assert att_client.post("/findings/preview", headers={"X-CSRFToken": token},
                           data={"body": "   "}).get_json() == {"html": ""}
    assert (db.scalar(select(func.count()).select_from(Finding)),
            db.scalar(select(func.count()).select_from(AuditEntry))) == counts


def test_preview_needs_the_csrf_token_and_a_session(att_app, att_client):
    author = make_user(make_org("north"), name="alice")
    anonymous = att_app.test_client()
    r = anonymous.post("/findings/preview", data={"body": "*x*"})
    assert r.status_code in (302, 400, 401) and b"<em>" not in r.get_data()
    login(att_client, author)
    assert att_client.post("/findings/preview", data={"body": "x"}).status_code == 400


def test_preview_of_a_long_text_is_refused_as_posting_would_be(att_app, att_client):
    author = make_user(make_org("north"), name="alice")
    login(att_client, author)
    limit = state.settings().max_body_chars
    r = att_client.post("/findings/preview", headers={"X-CSRFToken": _token(att_client)},
                        data={"body": "x" * (limit + 1)})
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "body_too_long"


def test_a_findings_preview_shows_its_figures_and_is_gated(att_app, att_client):
    org = make_org("north")
    author = make_user(org, name="alice")
    f = make_finding(author, level="restricted")
    png = attach(author, f, _png(), filename="plot.png")
    login(att_client, author)
    token = _token(att_client)
    r = att_client.post(f"/findings/{f.id}/preview", headers={"X-CSRFToken": token},
                        data={"body": "![Plot](attachment:plot.png)"})
    assert f'src="/attachments/{png.id}/figure"' in r.get_json()["html"]
    # someone who cannot read the finding: exactly as for a finding that does not exist,
    # whatever the form holds
    outsider = make_user(make_org("east"), name="otto", clearance="network")
    other = att_app.test_client()
    login(other, outsider)
    theirs_token = _token(other)
    theirs = other.post(f"/findings/{f.id}/preview", headers={"X-CSRFToken": theirs_token},
                        data={"body": "x" * (state.settings().max_body_chars + 1)})
    missing = other.post("/findings/999999/preview", headers={"X-CSRFToken": theirs_token},
                         data={"body": "x"})
    assert theirs.status_code == missing.status_code == 404
    # the same page, but for the sign-out form's CSRF token (signed with the time)
    assert re.sub(r'value="[^"]*"', "", theirs.text) == re.sub(r'value="[^"]*"', "", missing.text)
