"""Responses (app/reactions): agree / disagree and a few fixed reactions on findings and
replies, one per reader per kind, shown by count; names only by the disclosure rule; the
visibility gate before anything; CSRF; the API's serializers."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from app.db import db
from app.findings import service as findings
from app.notifications.models import Notification
from app.reactions import service as reactions
from app.reactions.models import FindingReaction, ReplyReaction
from tests.conftest import csrf_from
from tests.factories import login, make_finding, make_org, make_user

_NONCE = re.compile(r'nonce="[^"]*"|nonce=[^\s;"]+')
_RID = re.compile(r"request [0-9a-f]{16}")
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="[^"]*"|value="[^"]*" name="csrf_token"'
                   r'|name="csrf_token" value="[^"]*"')


def _world():  # type: ignore[no-untyped-def]
    north, east = make_org("north"), make_org("east")
    author = make_user(north, name="ada")
    reader = make_user(east, name="bob")
    other = make_user(north, name="cyd")
    low = make_user(east, name="dee", clearance="network")  # cannot read restricted
    finding = make_finding(author, level="network", title="Induction heads")
    secret = make_finding(author, level="restricted", title="Secret steering")
    return author, reader, other, low, finding, secret


def _post(client, url: str, kind: str, *, page: str, json: bool = False):  # type: ignore[no-untyped-def]
    token = csrf_from(client.get(page).text)
    headers = {"Accept": "application/json"} if json else {}
    return client.post(url, data={"kind": kind, "csrf_token": token}, headers=headers)


def _count(model, **where) -> int:  # type: ignore[no-untyped-def]
    q = select(func.count()).select_from(model)
    for k, v in where.items():
        q = q.where(getattr(model, k) == v)
    return db.scalar(q) or 0


def _button(page: str, target: str, kind: str) -> tuple[str, str]:
    """(aria-pressed, count) of one response button in the box ``target`` of a page."""
    box = page.split(f'id="{target}"', 1)[1].split("</form>", 1)[0]
    m = re.search(rf'value="{kind}"[^>]*aria-pressed="(true|false)".*?data-count>(\d+)<', box,
                  re.S)
    assert m, box
    return m.group(1), m.group(2)


def test_toggle_a_response_on_a_finding_without_javascript(app, client):
    author, reader, other, low, finding, _ = _world()
    login(client, reader)
    page = f"/findings/{finding.id}"
    url = f"/findings/{finding.id}/responses"
    r = _post(client, url, "agree", page=page)
    assert r.status_code == 302
    assert r.location.endswith(f"/findings/{finding.id}#responses-finding")
    shown = client.get(page).text
    assert _button(shown, "responses-finding", "agree") == ("true", "1")
    assert _button(shown, "responses-finding", "disagree") == ("false", "0")
    assert "Bob Tester (@bob)" in shown  # a reader may see who responded
    # again: taken back
    _post(client, url, "agree", page=page)
    assert _count(FindingReaction, finding_id=finding.id) == 0
    assert _button(client.get(page).text, "responses-finding", "agree") == ("false", "0")


def test_one_per_reader_per_kind_counted_per_reader(app, client):
    author, reader, other, low, finding, _ = _world()
    for user in (reader, other, low):
        reactions.toggle_finding(user, finding, "agree")
    reactions.toggle_finding(reader, finding, "insightful")
    # a second "on" from the same reader (two requests at once) is still one
    db.add(FindingReaction(finding_id=finding.id, user_id=reader.id, kind="needs_evidence"))
    db.commit()
    got = reactions.responses(author, finding).finding
    counts = {t.kind.key: t.count for t in got.tallies}
    assert counts == {"agree": 3, "disagree": 0, "insightful": 1, "needs_evidence": 1,
                      "unclear": 0}
    assert not any(t.mine for t in got.tallies)
    mine = {t.kind.key for t in reactions.responses(reader, finding).finding.tallies if t.mine}
    assert mine == {"agree", "insightful", "needs_evidence"}


def test_responses_on_replies_and_the_script_s_json_answer(app, client):
    author, reader, other, low, finding, _ = _world()
    reply = findings.add_reply(author, finding, "A reply to respond to.")
    login(client, reader)
    page = f"/findings/{finding.id}"
    r = _post(client, f"/findings/replies/{reply.id}/responses", "disagree", page=page,
              json=True)
    assert r.status_code == 200
    body = r.get_json()
    assert body["kind"] == "disagree" and body["on"] is True
    disagree = next(t for t in body["responses"] if t["kind"] == "disagree")
    assert disagree == {"kind": "disagree", "label": "Disagree", "count": 1, "mine": True,
                        "people": ["bob"], "names": ["Bob Tester"], "others": 0}
    assert _count(ReplyReaction, reply_id=reply.id) == 1
    shown = client.get(page).text
    assert _button(shown, f"responses-reply-{reply.id}", "disagree") == ("true", "1")
    assert _button(shown, "responses-finding", "disagree") == ("false", "0")
    # a reply nobody responded to has its own working bar too (rendered once, reused)
    quiet = findings.add_reply(author, finding, "Nobody responds to this one.")
    shown = client.get(page).text
    assert _button(shown, f"responses-reply-{quiet.id}", "agree") == ("false", "0")
    assert f'action="/findings/replies/{quiet.id}/responses"' in shown
    r = _post(client, f"/findings/replies/{quiet.id}/responses", "agree", page=page)
    assert r.location.endswith(f"#reply-{quiet.id}")
    assert _count(ReplyReaction, reply_id=quiet.id, user_id=reader.id) == 1
    # no notification to anyone: a response is not news
    assert db.scalar(select(func.count()).select_from(Notification)) == 0


def test_unknown_kind_locked_finding_and_hidden_reply_change_nothing(app, client):
    author, reader, other, low, finding, _ = _world()
    login(client, reader)
    page = f"/findings/{finding.id}"
    r = _post(client, f"/findings/{finding.id}/responses", "love", page=page, json=True)
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "unknown_reaction"
    r = _post(client, f"/findings/{finding.id}/responses", "love", page=page)
    assert r.status_code == 302
    assert "Choose one of" in client.get(page).text
    reply = findings.add_reply(author, finding, "Soon hidden.")
    reply.hidden = True
    finding.locked = True
    db.commit()
    page_text = client.get(page).text
    assert 'name="kind"' not in page_text  # no buttons on a locked finding
    token = csrf_from(page_text)
    r = client.post(f"/findings/{finding.id}/responses",
                    data={"kind": "agree", "csrf_token": token},
                    headers={"Accept": "application/json"})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "locked"
    finding.locked = False
    db.commit()
    r = client.post(f"/findings/replies/{reply.id}/responses",
                    data={"kind": "agree", "csrf_token": token},
                    headers={"Accept": "application/json"})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "reply_hidden"
    assert _count(FindingReaction) == 0 and _count(ReplyReaction) == 0


def _normal(text: str) -> str:
    text = _CSRF.sub("<CSRF>", text)
    return _RID.sub("request <RID>", _NONCE.sub("nonce=<N>", text))


def test_an_unreadable_finding_or_reply_answers_like_a_missing_one(app, client):
    author, reader, other, low, finding, secret = _world()
    hidden_reply = findings.add_reply(author, secret, "Restricted reply.")
    login(client, low)
    token = csrf_from(client.get(f"/findings/{finding.id}").text)
    pairs = [(f"/findings/{secret.id}/responses", "/findings/999999/responses"),
             (f"/findings/replies/{hidden_reply.id}/responses",
              "/findings/replies/999999/responses")]
    for unreadable, missing in pairs:
        for kind in ("agree", "not-a-kind", ""):
            for headers in ({}, {"Accept": "application/json"}):
                a = client.post(unreadable, data={"kind": kind, "csrf_token": token},
                                headers=headers)
                b = client.post(missing, data={"kind": kind, "csrf_token": token},
                                headers=headers)
                assert a.status_code == b.status_code == 404
                assert _normal(a.get_data(as_text=True)) == _normal(b.get_data(as_text=True))
                assert sorted(a.headers.keys()) == sorted(b.headers.keys())
        # and without a CSRF token the refusal does not depend on the id either
        a = client.post(unreadable, data={"kind": "agree"})
        b = client.post(missing, data={"kind": "agree"})
        assert a.status_code == b.status_code
    assert _count(FindingReaction) == 0 and _count(ReplyReaction) == 0


def test_csrf_is_required(app, client):
    author, reader, other, low, finding, _ = _world()
    reply = findings.add_reply(author, finding, "A reply.")
    login(client, reader)
    for url in (f"/findings/{finding.id}/responses", f"/findings/replies/{reply.id}/responses"):
        assert client.post(url, data={"kind": "agree"}).status_code == 400
        assert client.post(url, data={"kind": "agree", "csrf_token": "forged"}).status_code == 400
    assert _count(FindingReaction) == 0 and _count(ReplyReaction) == 0


def test_names_follow_the_disclosure_rule(app, client):
    """A reactor who can no longer read the finding (its level raised above their
    clearance) still counts, but nobody else learns their name; they see their own."""
    author, reader, other, low, finding, _ = _world()
    reactions.toggle_finding(low, finding, "agree")
    reactions.toggle_finding(reader, finding, "agree")
    got = {t.kind.key: t for t in reactions.responses(author, finding).finding.tallies}
    assert [p.username for p in got["agree"].named] == ["dee", "bob"]
    finding.level = "restricted"
    db.commit()
    got = {t.kind.key: t for t in reactions.responses(author, finding).finding.tallies}
    assert got["agree"].count == 2
    assert [p.username for p in got["agree"].named] == ["bob"]
    assert got["agree"].others == 1
    login(client, other)
    page = client.get(f"/findings/{finding.id}").text
    assert "@dee" not in page and "Dee Tester" not in page
    assert "and 1 other you cannot see" in page
    # the reactor themself still learns their own part (the rule: everybody learns their own)
    mine = {t.kind.key: t for t in reactions.responses(low, finding).finding.tallies}
    assert [p.username for p in mine["agree"].named] == ["dee"]


def test_the_api_serializes_responses_with_names_by_the_rule(app, client, api_token):
    author, reader, other, low, finding, _ = _world()
    reply = findings.add_reply(author, finding, "A reply.")
    reactions.toggle_finding(reader, finding, "insightful")
    reactions.toggle_reply(other, reply, finding, "unclear")
    reactions.toggle_finding(low, finding, "insightful")
    finding.level = "restricted"
    db.commit()
    body = client.get(f"/api/v1/findings/{finding.id}", headers=api_token(author)).get_json()
    insightful = next(t for t in body["responses"] if t["kind"] == "insightful")
    assert insightful == {"kind": "insightful", "label": "Insightful", "count": 2,
                          "mine": False, "people": ["bob"], "names": ["Bob Tester"],
                          "others": 1}
    unclear = next(t for t in body["replies"][0]["responses"] if t["kind"] == "unclear")
    assert unclear["count"] == 1 and unclear["people"] == ["cyd"]
    assert [t["kind"] for t in body["responses"]] == list(reactions.KIND_KEYS)
    # the unreadable finding is 404 in the API as before
    r = client.get(f"/api/v1/findings/{finding.id}", headers=api_token(low))
    assert r.status_code == 404


def test_the_api_sets_responses_behind_the_gate(app, client, api_token):
    author, reader, other, low, finding, secret = _world()
    reply = findings.add_reply(author, finding, "A reply.")
    secret_reply = findings.add_reply(author, secret, "Restricted reply.")
    h = api_token(reader)
    url = f"/api/v1/findings/{finding.id}/responses"
    for _ in range(2):  # setting it twice is one response
        r = client.post(url, json={"kind": "agree"}, headers=h)
        assert r.status_code == 200 and r.get_json()["on"] is True
    agree = next(t for t in r.get_json()["responses"] if t["kind"] == "agree")
    assert agree["count"] == 1 and agree["mine"] is True
    r = client.post(url, json={"kind": "agree", "on": False}, headers=h)
    assert r.get_json()["on"] is False
    assert _count(FindingReaction) == 0
    r = client.post(f"/api/v1/replies/{reply.id}/responses", json={"kind": "unclear"},
                    headers=h)
    assert r.status_code == 200 and _count(ReplyReaction, reply_id=reply.id) == 1
    for body, code in (({"kind": "love"}, "unknown_reaction"), ({}, "missing_field"),
                       ({"kind": "agree", "on": "yes"}, "bad_field"),
                       ({"kind": "agree", "who": 1}, "unknown_field")):
        r = client.post(url, json=body, headers=h)
        assert r.status_code == 400 and r.get_json()["error"]["code"] == code, body
    # unreadable == missing, whatever the body
    low_h = api_token(low)
    for unreadable, missing in ((f"/api/v1/findings/{secret.id}/responses",
                                 "/api/v1/findings/999999/responses"),
                                (f"/api/v1/replies/{secret_reply.id}/responses",
                                 "/api/v1/replies/999999/responses")):
        for body in ({"kind": "agree"}, {"kind": "love"}, {}):
            a = client.post(unreadable, json=body, headers=low_h)
            b = client.post(missing, json=body, headers=low_h)
            assert a.status_code == b.status_code == 404
            assert a.get_json() == b.get_json()
    assert _count(FindingReaction) == 0
    # the spec's enum is the service's list
    spec = client.get("/api/v1/openapi.json").get_json()
    op = spec["paths"]["/findings/{id}/responses"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert tuple(schema["properties"]["kind"]["enum"]) == reactions.KIND_KEYS


def test_a_reply_on_a_later_page_comes_back_to_its_page(app, client):
    author, reader, other, low, finding, _ = _world()
    for i in range(findings.REPLIES_PER_PAGE):
        findings.add_reply(author, finding, f"Reply {i}")
    last = findings.add_reply(author, finding, "On page two.")
    login(client, reader)
    page = f"/findings/{finding.id}?rp=2"
    shown = client.get(page).text
    assert f'action="/findings/replies/{last.id}/responses?rp=2"' in shown
    r = _post(client, f"/findings/replies/{last.id}/responses?rp=2", "unclear", page=page)
    assert r.location.endswith(f"/findings/{finding.id}?rp=2#reply-{last.id}")
