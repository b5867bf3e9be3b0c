"""Findings forum: what each reader sees (lists, pages, API, counts, markings), posting
and its validation, replies, edits with history, moderation, audit and pagination."""

from __future__ import annotations

import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from app import access, audit, state
from app.auth.models import User
from app.db import db, utcnow
from app.findings import search, service
from app.findings.models import Category, Finding, FindingRevision, Reply
from app.orgs import service as orgs_service
from tests.conftest import make_app
from tests.factories import login, make_org, make_user, post_form, totp_now
from tests.findings_world import (
    build_world,
    finding_ids,
    isolated_clients,
    make_category,
    page_text,
    post,
    refresh,
    reply,
)

__all__ = ["isolated_clients"]  # autouse fixture

REPO = Path(__file__).resolve().parent.parent
MARKING_RE = re.compile(r'<div class="marking[^"]*"[^>]*data-level="([a-z-]+)"')


def count(model: Any, *where: Any) -> int:
    return db.scalar(select(func.count()).select_from(model).where(*where)) or 0


def audit_actions(action: str) -> list[audit.AuditEntry]:
    return list(db.scalars(select(audit.AuditEntry).where(audit.AuditEntry.action == action)
                           .order_by(audit.AuditEntry.seq)))


def good(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"title": "Attention sinks", "body": "We found **sinks**.",
                            "category": "circuits", "level": "network"}
    data.update(changes)
    return data


# ---------------------------------------------------------------- the rule, everywhere

READERS = ["carol", "nina", "omar", "rita", "sam", "eve", "root"]


def test_every_list_page_count_and_api_answer_follows_the_rule(app, api_token):
    w = build_world()
    levels = state.policy().level_keys()
    for name in READERS:
        user = w.users[name]
        expected = w.expected(user)
        client = app.test_client()
        login(client, user)
        assert finding_ids(client.get("/findings/").text) == expected, name
        assert finding_ids(client.get("/home").text) == expected, name
        circuits = {f.id for f in w.findings.values() if f.category.slug == "circuits"}
        assert finding_ids(client.get("/findings/c/circuits").text) == expected & circuits
        for level in levels:
            at_level = {f.id for f in w.findings.values() if f.level == level}
            page = client.get(f"/findings/level/{level}").text
            assert finding_ids(page) == expected & at_level, (name, level)
        for key, finding in w.findings.items():
            for url in (f"/findings/{finding.id}", f"/findings/{finding.id}/history"):
                response = client.get(url)
                body = page_text(response)
                if finding.id in expected:
                    assert response.status_code == 200, (name, key)
                    assert finding.title in body
                else:
                    # 404, or (for a cleared reader) the NDA/2FA page: never the content
                    assert response.status_code in (404, 302), (name, key, url)
                    if response.status_code == 302:
                        assert ("/ndas" in response.location
                                or "/2fa" in response.location), response.location
                    assert finding.title not in body
                    assert w.replies[key].body not in body
        headers = api_token(user)
        listing = client.get("/api/v1/findings?per_page=100", headers=headers).json
        assert {i["id"] for i in listing["items"]} == expected, name
        assert listing["total"] == len(expected)
        hits = client.get("/api/v1/findings?q=zebrafish", headers=headers).json
        assert {i["id"] for i in hits["items"]} == expected and hits["total"] == len(expected)
        for finding in w.findings.values():
            response = client.get(f"/api/v1/findings/{finding.id}", headers=headers)
            if finding.id in expected:
                assert response.status_code == 200
                assert [r["body"] for r in response.json["replies"]] == [
                    w.replies[k].body for k, f in w.findings.items() if f.id == finding.id]
            else:
                assert response.status_code in (403, 404), (name, finding.title)
                assert finding.title not in response.get_data(as_text=True)


def test_pending_or_suspended_org_reads_nothing(app, client, api_token):
    w = build_world()
    eve = w.users["eve"]
    headers = api_token(eve)
    login(client, eve)
    conf_east = w.findings["conf_east"]
    assert conf_east.id in finding_ids(client.get("/findings/").text)
    orgs_service.set_status(None, w.orgs["east"], "suspended")
    refresh(eve)

    assert service.list_findings(eve).items == []
    assert search.search(eve, "zebrafish").total == 0
    assert service.page_findings(eve).total == 0
    response = client.get(f"/findings/{conf_east.id}")
    assert response.status_code in (302, 404)
    assert conf_east.title not in page_text(response)
    found = client.get("/findings/search?q=zebrafish")
    assert found.status_code in (302, 404) and "zebrafish echo" not in page_text(found)
    assert client.get("/api/v1/findings", headers=headers).status_code == 401
    assert client.get(f"/api/v1/findings/{conf_east.id}", headers=headers).status_code == 401
    # the compartment still works for the organizations that remain trusted
    carol = w.users["carol"]
    assert conf_east.id in {f.id for f in service.list_findings(carol).items}
    # a member of a pending organization cannot even sign in
    assert service.list_findings(w.users["pat"]).items == []


def test_nda_version_bump_closes_the_levels_that_need_it(app, migrated, instance_dir,
                                                          tmp_path, api_token):
    w = build_world()
    carol, root = w.users["carol"], w.users["root"]
    reply(root, w.findings["res"], "a reply that notifies carol")  # carol watches her post
    headers = api_token(carol)

    policy = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policy)
    nda = policy / "ndas" / "restricted.md"
    nda.write_text(re.sub(r"^version = (\d+)$", lambda m: f"version = {int(m.group(1)) + 1}",
                          nda.read_text(), count=1, flags=re.MULTILINE))
    bumped = make_app(migrated, instance_dir, policy_dir=policy)
    try:
        with bumped.app_context():
            me = db.get(User, carol.id)
            net = w.findings["net"].id
            assert {f.id for f in service.list_findings(me).items} == {net}
            assert [r.finding.id for r in search.search(me, "zebrafish").results] == [net]
            assert search.search(me, "quokka").total == 1
            from app.notifications import service as notify

            assert notify.unread_count(me) == 0
            client = bumped.test_client()
            login(client, me, code=totp_now(carol))
            assert finding_ids(client.get("/findings/").text) == {net}
            response = client.get(f"/findings/{w.findings['res'].id}")
            assert response.status_code == 302 and "/ndas" in response.location
            assert "(1 new)" not in client.get("/notifications/").text
            body = client.get("/api/v1/findings", headers=headers).json
            assert body["total"] == 1
            response = client.get(f"/api/v1/findings/{w.findings['res'].id}", headers=headers)
            assert response.status_code == 403 and response.json["error"]["code"] == \
                "nda_required"
            assert "Restricted note" not in response.get_data(as_text=True)
    finally:
        bumped.extensions["enclave.engine"].dispose()


# ---------------------------------------------------------------- posting and validation


@pytest.fixture
def author(app) -> User:
    make_category("circuits")
    make_org("pend", status="pending")
    return make_user(make_org("north"), name="carol")


@pytest.mark.parametrize(("changes", "code"), [
    ({"title": "   "}, "empty_title"),
    ({"title": "x" * 301}, "title_too_long"),
    ({"body": "  \n "}, "empty_body"),
    ({"category": "nope"}, "unknown_category"),
    ({"category": ""}, "missing_category"),
    ({"level": "top-secret"}, "unknown_level"),
    ({"level": "public"}, "level_public"),
    ({"orgs": ["ghost"]}, "unknown_org"),
    ({"orgs": ["pend"]}, "untrusted_org"),
    ({"orgs": "north"}, "bad_field"),
    ({"title": 7}, "bad_field"),
    ({"color": "red"}, "unknown_field"),
])
def test_bad_finding_is_refused_with_a_clear_error_and_nothing_written(
        client, author, api_token, changes, code):
    headers = api_token(author)
    before = count(audit.AuditEntry)
    response = client.post("/api/v1/findings", json=good(**changes), headers=headers)
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == code
    assert response.json["error"]["message"]
    assert count(Finding) == 0
    assert count(audit.AuditEntry) == before


def test_body_over_the_configured_maximum_is_refused(client, author, api_token, monkeypatch):
    monkeypatch.setattr(state.settings(), "max_body_chars", 50)
    response = client.post("/api/v1/findings", json=good(body="y" * 51),
                           headers=api_token(author))
    assert response.status_code == 400
    assert response.json["error"]["code"] == "body_too_long"
    assert "50" in response.json["error"]["message"]
    assert count(Finding) == 0
    assert client.post("/api/v1/findings", json=good(body="y" * 50),
                       headers=api_token(author)).status_code == 201


def test_level_above_what_the_author_reads_is_refused(client, app, api_token):
    make_category("circuits")
    mer = make_org("mer", ceiling="restricted")
    omar = make_user(mer, name="omar")  # clearance confidential, ceiling restricted
    nina = make_user(make_org(), clearance="network", name="nina", mfa_on=False)
    no_mfa = make_user(make_org(), clearance="restricted", name="rita", mfa_on=False)
    for user, level in ((omar, "confidential"), (nina, "restricted"), (no_mfa, "restricted")):
        response = client.post("/api/v1/findings", json=good(level=level),
                               headers=api_token(user))
        assert response.status_code == 400
        assert response.json["error"]["code"] == "level_above_clearance"
    assert count(Finding) == 0
    assert [lv.key for lv in service.postable_levels(omar)] == ["network", "restricted"]


def test_web_form_posts_with_compartment_and_shows_errors(client, author):
    make_org("east")
    login(client, author)
    page = client.get("/findings/new")
    assert page.status_code == 200
    assert 'value="public"' not in page.text  # public is never offered
    response = post_form(client, "/findings/new", {
        "title": "", "body": "text", "category": "circuits", "level": "network"})
    assert response.status_code == 400
    assert "Give the finding a title." in page_text(response)
    assert count(Finding) == 0
    response = post_form(client, "/findings/new", {
        "title": "Shared with east", "body": "Body", "category": "circuits",
        "level": "confidential", "orgs": ["east"]})
    assert response.status_code == 302
    finding = db.scalar(select(Finding))
    assert finding.compartmented and {o.slug for o in finding.compartment_orgs} == \
        {"north", "east"}
    shown = page_text(client.get(response.location))
    assert "Compartment: East Research, North Research" in shown


def test_confidential_gets_the_author_org_as_compartment(app, author):
    finding = post(author, level="confidential")
    assert finding.compartmented and finding.compartment_org_ids == {author.org_id}
    stranger = make_user(make_org(), name="stranger")
    assert not access.can_read(stranger, finding)


def test_forms_without_csrf_token_are_refused(client, author):
    finding = post(author)
    login(client, author)
    assert client.post("/findings/new", data=good()).status_code == 400
    assert client.post(f"/findings/{finding.id}/replies", data={"body": "hi"}).status_code == 400
    assert client.post(f"/findings/{finding.id}/edit",
                       data={"title": "x", "body": "y", "level": "network"}).status_code == 400
    assert client.post(f"/findings/{finding.id}/watch").status_code == 400
    assert count(Finding) == 1 and count(Reply) == 0
    assert refresh(finding).title == "A finding"


# ---------------------------------------------------------------- replies


def test_replies_inherit_the_finding_access(client, app, api_token):
    w = build_world()
    omar = w.users["omar"]
    conf = w.findings["conf_north"]
    response = client.post(f"/api/v1/findings/{conf.id}/replies", json={"body": "let me in"},
                           headers=api_token(omar))
    assert response.status_code == 404
    assert not [r for r in db.scalars(select(Reply)) if r.body == "let me in"]
    ok = client.post(f"/api/v1/findings/{w.findings['res'].id}/replies",
                     json={"body": "seen it"}, headers=api_token(omar))
    assert ok.status_code == 201 and ok.json["body"] == "seen it"
    assert refresh(w.findings["res"]).reply_count == 2


def test_every_findings_list_names_the_author_and_organization(client, author):
    """The list rows are not Finding objects: a renamed field once blanked every author
    name ("Circuits · (Northlight Labs)"). Read the rendered lists."""
    finding = post(author, title="Sinks in layer 3")
    login(client, author)
    expected = f"{author.display_name} ({author.org.name})"
    for url in ("/findings/", "/home", "/findings/c/circuits", "/findings/level/network"):
        html = client.get(url).text
        row = re.search(rf'<li class="finding-row[^"]*" data-finding="{finding.id}">(.*?)</li>',
                        html, re.S)
        assert row, url
        meta = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", row.group(1)))
        assert expected in meta, (url, meta)


def test_the_banner_shows_what_the_reader_can_read_now(app, author):
    """Cleared Restricted without the NDAs reads only Public: the banner says so (it once
    said "cleared: Restricted")."""
    unsigned = make_user(author.org, clearance="restricted", name="sam", ndas=[])
    client = app.test_client()
    login(client, unsigned)
    badge = re.search(r'data-testid="reads-badge"[^>]*>([^<]*)<', client.get("/home").text)
    assert badge and badge.group(1) == "reads: Public (cleared Restricted)"
    client = app.test_client()
    login(client, author)
    badge = re.search(r'data-testid="reads-badge"[^>]*>([^<]*)<', client.get("/home").text)
    assert badge and badge.group(1) == "reads: Confidential"


def test_reply_form_and_empty_reply(client, author):
    finding = post(author)
    login(client, author)
    response = post_form(client, f"/findings/{finding.id}/replies", {"body": " "},
                         form_url=f"/findings/{finding.id}")
    assert response.status_code == 400 and "Write something" in page_text(response)
    # the refused page is at /findings/N/replies: the form's action carries the fragment
    # that brings the browser back to the form, not to the top of the page
    assert f'action="/findings/{finding.id}/replies#reply-form"' in response.text
    assert 'id="reply-form"' in response.text
    response = post_form(client, f"/findings/{finding.id}/replies", {"body": "First!"},
                         form_url=f"/findings/{finding.id}")
    assert response.status_code == 302 and "#reply-" in response.location
    assert "First!" in client.get(f"/findings/{finding.id}").text


# ---------------------------------------------------------------- edits and history


def test_edit_keeps_a_revision_and_shows_a_diff(client, author):
    finding = post(author, title="Old title", body="line one\nline two\n")
    assert "line one" in finding.body_html
    login(client, author)
    response = post_form(client, f"/findings/{finding.id}/edit", {
        "title": "New title", "body": "line one\nline 2 fixed\n", "level": "network"})
    assert response.status_code == 302
    finding = refresh(finding)
    assert finding.title == "New title" and "line 2 fixed" in finding.body_html
    revision = db.scalar(select(FindingRevision))
    assert (revision.old_title, revision.old_body, revision.old_level) == \
        ("Old title", "line one\nline two\n", "network")
    assert revision.editor_id == author.id
    history = page_text(client.get(f"/findings/{finding.id}/history"))
    assert "Edited by Carol Tester" in history
    assert '<span class="diff-del">- line two</span>' in history
    assert '<span class="diff-add">+ line 2 fixed</span>' in history
    assert "Old title" in history and "New title" in history
    assert "edited 1 time" in page_text(client.get(f"/findings/{finding.id}"))


def test_raising_is_immediate_lowering_needs_review(client, app, api_token):
    w = build_world()
    carol, nina = w.users["carol"], w.users["nina"]
    net = w.findings["net"]
    headers = api_token(carol)
    response = client.patch(f"/api/v1/findings/{net.id}", json={"level": "restricted"},
                            headers=headers)
    assert response.status_code == 200 and response.json["level"] == "restricted"
    assert not access.can_read(refresh(nina), refresh(net))
    assert client.get(f"/api/v1/findings/{net.id}",
                      headers=api_token(nina)).status_code == 404
    assert audit_actions("finding_level_raised")[-1].details_dict == \
        {"old": "network", "new": "restricted"}

    revisions = count(FindingRevision)
    response = client.patch(f"/api/v1/findings/{net.id}",
                            json={"level": "network", "title": "sneaky"}, headers=headers)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "needs_review"
    assert "review" in response.json["error"]["message"]
    net = refresh(net)
    assert (net.level, net.title) == ("restricted", "Open network note")
    assert count(FindingRevision) == revisions


def test_compartment_can_narrow_but_not_widen(app, api_token, client):
    w = build_world()
    carol = w.users["carol"]
    conf_east = w.findings["conf_east"]
    headers = api_token(carol)
    wider = client.patch(f"/api/v1/findings/{conf_east.id}", json={"orgs": ["east", "mer"]},
                         headers=headers)
    assert wider.status_code == 400 and wider.json["error"]["code"] == "needs_review"
    # an empty list keeps a compartment closed to the author's organization
    res_north = w.findings["res_north"]
    kept = client.patch(f"/api/v1/findings/{res_north.id}", json={"orgs": []},
                        headers=headers)
    assert kept.status_code == 200 and kept.json["compartment"] == ["north"]
    res_mer = client.patch(f"/api/v1/findings/{w.findings['res_mer'].id}", json={"orgs": []},
                           headers=api_token(w.users["omar"]))
    assert res_mer.json["compartment"] == ["mer"]
    assert not access.can_read(refresh(carol), refresh(w.findings["res_mer"]))
    narrower = client.patch(f"/api/v1/findings/{conf_east.id}", json={"orgs": []},
                            headers=headers)
    assert narrower.status_code == 200 and narrower.json["compartment"] == ["north"]
    assert not access.can_read(refresh(w.users["eve"]), refresh(conf_east))
    # an open finding raised to a level that names organizations gets the author's org
    raised = client.patch(f"/api/v1/findings/{w.findings['net'].id}",
                          json={"level": "confidential"}, headers=headers)
    assert raised.json["compartment"] == ["north"]


def test_only_author_or_admin_edits(client, app, api_token):
    w = build_world()
    res = w.findings["res"]
    assert client.patch(f"/api/v1/findings/{res.id}", json={"title": "mine now"},
                        headers=api_token(w.users["omar"])).status_code == 403
    login(client, w.users["omar"])
    assert client.get(f"/findings/{res.id}/edit").status_code == 404
    assert client.patch(f"/api/v1/findings/{res.id}", json={"title": "Admin fixed"},
                        headers=api_token(w.users["root"])).status_code == 200
    assert refresh(res).title == "Admin fixed"


# ---------------------------------------------------------------- moderation


def test_lock_hide_and_move_are_admin_only_and_audited(client, app, api_token):
    w = build_world()
    carol, root, omar = w.users["carol"], w.users["root"], w.users["omar"]
    res = w.findings["res"]
    bad_reply = w.replies["res"]

    login(client, omar)
    assert post_form(client, f"/findings/replies/{bad_reply.id}/hide", {"reason": "spam"},
                     form_url=f"/findings/{res.id}").status_code == 404
    assert client.patch(f"/api/v1/findings/{res.id}", json={"locked": True},
                        headers=api_token(carol)).status_code == 403

    admin = app.test_client()
    login(admin, root)
    moderator_page = admin.get(f"/findings/{res.id}").get_data(as_text=True)
    assert f'action="/findings/replies/{bad_reply.id}/hide"' in moderator_page
    response = post_form(admin, f"/findings/replies/{bad_reply.id}/hide", {"reason": ""},
                         form_url=f"/findings/{res.id}")
    assert "Say why" in page_text(admin.get(response.location))
    assert not refresh(bad_reply).hidden
    post_form(admin, f"/findings/replies/{bad_reply.id}/hide", {"reason": "off topic"},
              form_url=f"/findings/{res.id}")
    bad_reply = refresh(bad_reply)
    assert bad_reply.hidden and bad_reply.body == "quokka bravo"  # kept
    entry = audit_actions("reply_hidden")[-1]
    assert entry.detail("reason") == "off topic"
    assert entry.details_dict["reason"].startswith("sealed:")  # the text is not in details
    shown = page_text(client.get(f"/findings/{res.id}"))
    assert "hidden by a moderator: off topic." in shown and "quokka bravo" not in shown
    second = reply(omar, refresh(res), "pangolin delta")
    service.set_reply_hidden(refresh(root), second, True, "kept for the record.")
    shown = page_text(client.get(f"/findings/{res.id}"))
    assert "hidden by a moderator: kept for the record." in shown
    assert "record.." not in shown  # a reason's own full stop is not doubled
    moderator_page = admin.get(f"/findings/{res.id}").get_data(as_text=True)
    assert "quokka bravo" in moderator_page  # admins see it
    assert f'action="/findings/replies/{bad_reply.id}/hide" class="inline"' in moderator_page
    api = client.get(f"/api/v1/findings/{res.id}", headers=api_token(omar)).json
    assert api["replies"][0]["hidden"] and api["replies"][0]["body"] is None

    post_form(admin, f"/findings/{res.id}/lock", {}, form_url=f"/findings/{res.id}")
    assert refresh(res).locked and audit_actions("finding_locked")
    response = client.post(f"/api/v1/findings/{res.id}/replies", json={"body": "more"},
                           headers=api_token(omar))
    assert response.status_code == 409 and response.json["error"]["code"] == "locked"
    response = client.patch(f"/api/v1/findings/{res.id}", json={"body": "edit"},
                            headers=api_token(carol))
    assert response.status_code == 409
    assert "locked" in page_text(client.get(f"/findings/{res.id}")).lower()

    post_form(admin, f"/findings/{res.id}/move", {"category": "circuits"},
              form_url=f"/findings/{res.id}")
    assert refresh(res).category.slug == "circuits"
    assert audit_actions("finding_moved")[-1].details_dict == {"old": "steering",
                                                               "new": "circuits"}


# ---------------------------------------------------------------- audit, unread, markings


def test_reading_above_network_is_audited(client, app, api_token):
    w = build_world()
    carol = w.users["carol"]
    login(client, carol)
    client.get(f"/findings/{w.findings['net'].id}")
    assert audit_actions("finding_read") == []
    client.get(f"/findings/{w.findings['res'].id}")
    client.get(f"/api/v1/findings/{w.findings['conf_north'].id}", headers=api_token(carol))
    entries = audit_actions("finding_read")
    assert [(e.actor_id, e.target_id, e.details_dict["level"]) for e in entries] == [
        (carol.id, str(w.findings["res"].id), "restricted"),
        (carol.id, str(w.findings["conf_north"].id), "confidential")]


def test_unread_markers_follow_reads_and_new_replies(client, app):
    w = build_world()
    nina, carol = w.users["nina"], w.users["carol"]
    net = w.findings["net"]
    login(client, nina)
    unread = f'class="finding-row unread" data-finding="{net.id}"'
    read = f'class="finding-row" data-finding="{net.id}"'
    assert unread in client.get("/findings/").text
    client.get(f"/findings/{net.id}")
    assert read in client.get("/findings/").text
    reply(carol, refresh(net), "news")
    assert unread in client.get("/findings/").text


def test_pages_carry_the_marking_of_their_highest_level(client, app):
    w = build_world()
    login(client, w.users["carol"])
    assert MARKING_RE.findall(client.get("/findings/").text) == ["confidential"] * 2
    assert MARKING_RE.findall(client.get(f"/findings/{w.findings['res'].id}").text) == \
        ["restricted"] * 2
    assert MARKING_RE.findall(client.get("/findings/level/network").text) == ["network"] * 2
    assert MARKING_RE.findall(client.get("/findings/search?q=bravo").text) == \
        ["restricted"] * 2
    nina = app.test_client()
    login(nina, w.users["nina"])
    assert MARKING_RE.findall(nina.get("/home").text) == ["network"] * 2
    assert MARKING_RE.findall(nina.get("/findings/level/confidential").text) == []


def test_keyset_pages_walk_the_whole_list_without_gaps(client, app):
    author = make_user(make_org("north"), name="carol")
    reader = make_user(make_org("west"), clearance="network", name="nina", mfa_on=False,
                       ndas=["network-terms"])
    make_category("circuits")
    now = utcnow()
    for i in range(60):
        level = "restricted" if i % 3 == 0 else "network"
        db.add(Finding(title=f"F{i}", body="b", level=level, author_id=author.id,
                       org_id=author.org_id, category_id=db.scalar(select(Category.id)),
                       created_at=now - timedelta(minutes=i // 2),  # pairs share a time
                       updated_at=now))
    db.commit()
    expected = [f.id for f in db.scalars(select(Finding).where(Finding.level == "network")
                                         .order_by(Finding.created_at.desc(),
                                                   Finding.id.desc()))]
    login(client, reader)
    seen: list[int] = []
    url = "/findings/"
    pages = []
    while url:
        page = client.get(url).text
        ids = [int(i) for i in re.findall(r'data-finding="(\d+)"', page)]
        pages.append((url, ids))
        seen += ids
        older = re.search(r'rel="next" href="([^"]+)"', page)
        url = older.group(1).replace("&amp;", "&") if older else None
    assert seen == expected and len(pages) == 2
    back = re.search(r'rel="prev" href="([^"]+)"', client.get(pages[1][0]).text)
    newer = [int(i) for i in re.findall(r'data-finding="(\d+)"',
                                        client.get(back.group(1).replace("&amp;", "&")).text)]
    assert newer == pages[0][1]
    assert client.get("/findings/?before=!!not-a-cursor").status_code == 400


def test_api_offset_pages_and_filters(client, app, api_token):
    w = build_world()
    headers = api_token(w.users["carol"])
    first = client.get("/api/v1/findings?per_page=4", headers=headers).json
    second = client.get("/api/v1/findings?per_page=4&page=2", headers=headers).json
    assert first["total"] == 6 and first["pages"] == 2
    assert len({i["id"] for i in first["items"] + second["items"]}) == 6
    steering = client.get("/api/v1/findings?category=steering", headers=headers).json
    assert [i["title"] for i in steering["items"]] == ["Restricted note"]
    level = client.get("/api/v1/findings?level=confidential", headers=headers).json
    assert {i["id"] for i in level["items"]} == {w.findings["conf_north"].id,
                                                 w.findings["conf_east"].id}
    for bad, code in (("category=nope", "unknown_category"), ("level=nope", "unknown_level"),
                      ("page=0", "bad_pagination"), ("q=%22open", "bad_query")):
        response = client.get(f"/api/v1/findings?{bad}", headers=headers)
        assert response.status_code == 400 and response.json["error"]["code"] == code, bad


# ---------------------------------------------------------------- categories


def test_admins_manage_categories(client, app, api_token):
    root = make_user(make_org("north"), role="admin", name="root")
    member = make_user(make_org("west"), name="mia")
    login(client, member)
    assert client.get("/admin/categories/").status_code == 404
    admin = app.test_client()
    login(admin, root)
    response = post_form(admin, "/admin/categories/", {"slug": "Bad Slug!", "name": "X y"})
    assert response.status_code == 400 and "lowercase" in page_text(response)
    response = post_form(admin, "/admin/categories/", {
        "slug": "probing", "name": "Probing", "description": "Linear probes."})
    assert response.status_code == 302
    response = post_form(admin, "/admin/categories/probing", {
        "name": "Probes and probing", "description": "Linear probes."})
    assert response.status_code == 302
    assert db.scalar(select(Category.name).where(Category.slug == "probing")) == \
        "Probes and probing"
    assert [a.action for a in audit_actions("category_created")] == ["category_created"]
    assert audit_actions("category_renamed")
    body = client.get("/api/v1/categories", headers=api_token(member)).json
    assert body["items"] == [{"slug": "probing", "name": "Probes and probing",
                              "description": "Linear probes."}]
    assert "Probes and probing" in client.get("/findings/categories").text


def test_api_round_trip(client, app, api_token):
    make_category("circuits")
    north, east = make_org("north"), make_org("east")
    carol = make_user(north, name="carol")
    eve = make_user(east, name="eve")
    headers = api_token(carol)
    created = client.post("/api/v1/findings", headers=headers, json=good(
        level="confidential", orgs=["east"], body="Hello @eve"))
    assert created.status_code == 201
    fid = created.json["id"]
    assert created.json["compartment"] == ["east", "north"]
    assert created.json["body_html"] == "<p>Hello @eve</p>\n"
    reply_resp = client.post(f"/api/v1/findings/{fid}/replies", json={"body": "Thanks"},
                             headers=api_token(eve))
    assert reply_resp.status_code == 201
    got = client.get(f"/api/v1/findings/{fid}", headers=headers).json
    assert [r["body"] for r in got["replies"]] == ["Thanks"] and got["reply_count"] == 1
    patched = client.patch(f"/api/v1/findings/{fid}", json={"body": "Hello again"},
                           headers=headers).json
    assert patched["body_html"] == "<p>Hello again</p>\n" and patched["revisions"] == 1
    assert client.post(f"/api/v1/findings/{fid}/replies", data="x",
                       headers=headers).status_code == 400
    assert client.get("/api/v1/findings/999999", headers=headers).status_code == 404
    spec = client.get("/api/v1/openapi.json").json
    assert {"get", "post"} <= set(spec["paths"]["/findings"])


def test_history_withholds_versions_more_restricted_than_the_reader(app, client):
    """After a declassification an old version may sit above today's readers."""
    from app.findings.models import FindingRevision
    from tests.factories import login, make_finding, make_org, make_user

    org = make_org()
    author = make_user(org)
    reader = make_user(make_org(), clearance="network", mfa_on=False)
    finding = make_finding(author, level="network", title="Public-ish title",
                           body="Redacted summary.")
    db.add(FindingRevision(finding_id=finding.id, editor_id=author.id,
                           old_title="Exact recipe", old_body="Step 1: the secret method.",
                           old_level="confidential", old_compartment=org.slug))
    db.commit()
    login(client, reader)
    page = client.get(f"/findings/{finding.id}/history")
    assert page.status_code == 200
    assert "secret method" not in page.text and "Exact recipe" not in page.text
    assert "withheld" in page.text
    login(client_author := app.test_client(), author)
    full = client_author.get(f"/findings/{finding.id}/history")
    assert "Exact recipe" in full.text and "secret method" in full.text
    assert 'data-level="confidential"' in full.text  # the marking names the highest level shown
    assert 'class="marking lv-confidential"' not in page.text
