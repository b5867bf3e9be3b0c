"""Double submissions and stale edits, one request after the other (SQLite and PostgreSQL;
the concurrent versions are in tests/test_db_faults.py).

A create form carries a one-time token: sent twice, it creates one thing and the second
submission is redirected to it. An edit form carries the version it was based on: when
someone else edited the finding meanwhile, nothing is written and the form says so.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from app.auth.models import Invitation
from app.db import db, utcnow
from app.findings import service as findings
from app.findings.models import Finding, FindingRevision, Reply
from app.review import flags
from app.review.models import Flag, ReviewComment, ReviewRequest
from app.submissions import service as submissions
from app.submissions.models import FormSubmission
from tests.conftest import csrf_from
from tests.factories import login, make_finding, make_org, make_user
from tests.findings_world import make_category

ALREADY = "Already submitted"



def titled(title: str) -> int:
    """Findings with this title (titles are encrypted: compared after opening)."""
    return sum(1 for f in db.scalars(select(Finding)) if f.title == title)

def token_from(html: str) -> str:
    match = re.search(r'<input[^>]*name="submission"[^>]*>', html)
    assert match, "no submission token in the form"
    value = re.search(r'value="([^"]+)"', match.group(0))
    assert value, match.group(0)
    return value.group(1)


def count(model: Any, *where: Any) -> int:
    db.rollback()
    return db.scalar(select(func.count()).select_from(model).where(*where)) or 0


def _member(org_slug: str = "home", **kw: Any) -> Any:
    org = make_org(org_slug)
    make_category("circuits")
    return make_user(org, mfa_on=False, **kw)


def _form(client: Any, url: str) -> tuple[str, str]:
    page = client.get(url)
    assert page.status_code == 200, (url, page.status_code)
    return csrf_from(page.text), token_from(page.text)


# ------------------------------------------------------------------ create forms


def test_new_finding_sent_twice_posts_one(app):
    user = _member()
    client = app.test_client()
    login(client, user)
    csrf, token = _form(client, "/findings/new")
    data = {"title": "Twice", "body": "Clicked twice.", "category": "circuits",
            "level": "network", "csrf_token": csrf, "submission": token}
    first = client.post("/findings/new", data=data)
    second = client.post("/findings/new", data=data)
    assert first.status_code == second.status_code == 302
    assert second.location == first.location  # the second lands on the first's page
    assert titled("Twice") == 1
    page = client.get(second.location)
    assert ALREADY in page.text and "Clicked twice." in page.text
    # a fresh form is a new token: posting again on purpose works
    csrf, token2 = _form(client, "/findings/new")
    assert token2 != token
    third = client.post("/findings/new", data={**data, "submission": token2})
    assert third.status_code == 302 and third.location != first.location
    assert titled("Twice") == 2
    assert count(FormSubmission) == 2


def test_a_refused_submission_can_be_corrected_and_sent_with_the_same_token(app):
    user = _member()
    client = app.test_client()
    login(client, user)
    csrf, token = _form(client, "/findings/new")
    data = {"title": "", "body": "No title yet.", "category": "circuits", "level": "network",
            "csrf_token": csrf, "submission": token}
    refused = client.post("/findings/new", data=data)
    assert refused.status_code == 400
    assert token_from(refused.text) == token  # the re-rendered form keeps its token
    assert count(FormSubmission) == 0  # rolled back with the refusal
    ok = client.post("/findings/new", data={**data, "title": "Now titled"})
    assert ok.status_code == 302
    assert count(Finding) == 1


def test_a_token_is_one_users(app):
    """Another user sending the same token value is a different submission."""
    alice = _member()
    bob = make_user(alice.org, mfa_on=False)
    token = submissions.new_token()
    a = findings.create_finding(alice, title="A", body="a", category="circuits",
                                level="network", submission=token)
    b = findings.create_finding(bob, title="B", body="b", category="circuits",
                                level="network", submission=token)
    assert a.id != b.id
    try:
        findings.create_finding(alice, title="A2", body="a", category="circuits",
                                level="network", submission=token)
    except submissions.AlreadySubmitted as exc:
        assert (exc.target_type, exc.target_id) == ("finding", a.id)
    else:  # pragma: no cover
        raise AssertionError("a repeated token created a second finding")
    db.rollback()
    assert count(Finding) == 2


def test_reply_sent_twice_posts_one(app):
    user = _member()
    finding = make_finding(user, title="Thread")
    client = app.test_client()
    login(client, user)
    csrf, token = _form(client, f"/findings/{finding.id}")
    data = {"body": "Me too.", "csrf_token": csrf, "submission": token}
    first = client.post(f"/findings/{finding.id}/replies", data=data)
    second = client.post(f"/findings/{finding.id}/replies", data=data)
    assert first.status_code == second.status_code == 302
    assert count(Reply) == 1
    reply_id = db.scalar(select(Reply.id))
    assert second.location.endswith(f"/findings/{finding.id}#reply-{reply_id}")
    db.expire_all()
    assert db.get(Finding, finding.id).reply_count == 1
    assert ALREADY in client.get(second.location).text


def test_flag_publication_declassification_and_comment_sent_twice(app):
    org = make_org("home")
    other = make_org("other")
    make_category("circuits")
    author = make_user(org, name="author")
    reader = make_user(other, name="reader")
    reviewer = make_user(make_org("third"), name="rev", role="reviewer")
    finding = make_finding(author, level="restricted", title="Dual use?")
    reader_client, author_client, rev_client = (app.test_client() for _ in range(3))
    login(reader_client, reader)
    login(author_client, author)
    login(rev_client, reviewer)

    def twice(client: Any, url: str, data: dict[str, str], form_url: str | None = None
              ) -> tuple[Any, Any]:
        csrf, token = _form(client, form_url or url)
        full = {**data, "csrf_token": csrf, "submission": token}
        return client.post(url, data=full), client.post(url, data=full)

    first, second = twice(reader_client, f"/review/findings/{finding.id}/flag",
                          {"reason": "Dual use.", "suggested_level": "confidential"})
    assert first.status_code == second.status_code == 302, second.text
    assert first.location == second.location
    assert count(Flag) == 1

    first, second = twice(author_client, f"/review/findings/{finding.id}/publish",
                          {"public_title": "Out", "public_body": "Public text.",
                           "embargo_tz": "UTC"})
    assert first.status_code == second.status_code == 302, second.text
    assert first.location == second.location
    first, second = twice(author_client, f"/review/findings/{finding.id}/declassify",
                          {"target_level": "network", "note": "Old news."})
    assert first.status_code == second.status_code == 302, second.text
    assert first.location == second.location
    assert count(ReviewRequest) == 2
    assert ALREADY in author_client.get(second.location).text

    req_id = db.scalar(select(ReviewRequest.id).where(ReviewRequest.kind == "publication"))
    first, second = twice(rev_client, f"/review/requests/{req_id}/comments",
                          {"body": "One question."}, form_url=f"/review/requests/{req_id}")
    assert first.status_code == second.status_code == 302, second.text
    assert first.location == second.location
    assert count(ReviewComment) == 1


def test_invitation_sent_twice_makes_one(app):
    org = make_org("home")
    admin = make_user(org, role="admin", mfa_on=False)
    client = app.test_client()
    login(client, admin)
    csrf, token = _form(client, "/admin/users")
    data = {"email": "new@home.example", "org": "home", "clearance": "network",
            "role": "member", "csrf_token": csrf, "submission": token}
    first = client.post("/admin/users/invite", data=data)
    assert first.status_code == 200 and "/invite/" in first.text
    second = client.post("/admin/users/invite", data=data)
    assert second.status_code == 302 and second.location.endswith("/admin/users")
    assert count(Invitation) == 1


def test_old_tokens_are_pruned(app):
    from app.cli import enclave

    user = _member()
    old = submissions.new_token()
    findings.create_finding(user, title="Old", body="x", category="circuits",
                            level="network", submission=old)
    db.execute(update(FormSubmission).values(created_at=utcnow() - timedelta(days=2)))
    db.commit()
    runner = app.test_cli_runner()
    result = runner.invoke(enclave, ["forms", "prune"])
    assert result.exit_code == 0, result.output
    assert "removed 1 form submission token" in result.output
    assert count(FormSubmission) == 0
    # each claim also drops the same user's old tokens
    findings.create_finding(user, title="Again", body="x", category="circuits",
                            level="network", submission=old)
    db.execute(update(FormSubmission).values(created_at=utcnow() - timedelta(days=2)))
    db.commit()
    findings.create_finding(user, title="Newer", body="x", category="circuits",
                            level="network", submission=submissions.new_token())
    assert count(FormSubmission) == 1


# ------------------------------------------------------------------ API


def test_api_idempotency_key(app, api_token):
    user = _member()
    headers = api_token(user)
    client = app.test_client()
    body = {"title": "Once", "body": "Retried.", "category": "circuits", "level": "network"}
    key = {"Idempotency-Key": "retry-" + "k" * 20}
    first = client.post("/api/v1/findings", json=body, headers={**headers, **key})
    again = client.post("/api/v1/findings", json=body, headers={**headers, **key})
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["id"] == first.json["id"]
    assert count(Finding) == 1
    plain = client.post("/api/v1/findings", json=body, headers=headers)
    assert plain.status_code == 201  # without a key: as before
    bad = client.post("/api/v1/findings", json=body,
                      headers={**headers, "Idempotency-Key": "short"})
    assert bad.status_code == 400 and bad.json["error"]["code"] == "bad_idempotency_key"
    assert count(Finding) == 2

    fid = first.json["id"]
    reused = client.post(f"/api/v1/findings/{fid}/replies", json={"body": "Hi"},
                         headers={**headers, **key})  # the key named the finding
    assert reused.status_code == 409 and reused.json["error"]["code"] == "already_submitted"
    key = {"Idempotency-Key": "reply-" + "k" * 20}
    r1 = client.post(f"/api/v1/findings/{fid}/replies", json={"body": "Hi"},
                     headers={**headers, **key})
    r2 = client.post(f"/api/v1/findings/{fid}/replies", json={"body": "Hi"},
                     headers={**headers, **key})
    assert (r1.status_code, r2.status_code) == (201, 200) and r1.json["id"] == r2.json["id"]
    assert count(Reply) == 1


# ------------------------------------------------------------------ stale edits


def _edit_data(page_html: str, **fields: str) -> dict[str, str]:
    version = re.search(r'<input[^>]*name="version"[^>]*value="(\d+)"', page_html)
    assert version, "no base version in the edit form"
    return {"csrf_token": csrf_from(page_html), "version": version.group(1), "level": "network",
            **fields}


def test_a_stale_edit_form_is_refused_and_shows_the_newer_text(app):
    org = make_org("home")
    author = make_user(org, mfa_on=False, name="author")
    admin = make_user(org, mfa_on=False, name="admin", role="admin")
    finding = make_finding(author, title="Original", body="version one")
    a, b = app.test_client(), app.test_client()
    login(a, author)
    login(b, admin)
    page_a = a.get(f"/findings/{finding.id}/edit").text
    page_b = b.get(f"/findings/{finding.id}/edit").text
    saved = b.post(f"/findings/{finding.id}/edit",
                   data=_edit_data(page_b, title="Original", body="the admin's text"))
    assert saved.status_code == 302
    stale = a.post(f"/findings/{finding.id}/edit",
                   data=_edit_data(page_a, title="Original", body="the author's text"))
    assert stale.status_code == 409
    assert "Someone else edited this finding" in stale.text
    assert "the admin&#39;s text" in stale.text or "the admin's text" in stale.text
    assert "the author&#39;s text" in stale.text or "the author's text" in stale.text
    assert f"/findings/{finding.id}/history" in stale.text
    db.expire_all()
    current = db.get(Finding, finding.id)
    assert current.body == "the admin's text" and current.version == 2
    assert count(FindingRevision) == 1
    # saving the re-rendered form again is a deliberate replacement
    again = a.post(f"/findings/{finding.id}/edit",
                   data=_edit_data(stale.text, title="Original", body="the author's text"))
    assert again.status_code == 302
    db.expire_all()
    assert db.get(Finding, finding.id).body == "the author's text"
    assert count(FindingRevision) == 2


def test_a_level_raised_by_review_makes_open_edit_forms_stale(app):
    org = make_org("home")
    author = make_user(org, name="author")  # with 2FA: still reads it once restricted
    reviewer = make_user(make_org("other"), name="rev", role="reviewer")
    finding = make_finding(author, title="Original", body="v1")
    client = app.test_client()
    login(client, author)
    page = client.get(f"/findings/{finding.id}/edit").text
    flag = flags.create_flag(author, finding.id, reason="Too open.", suggested_level="restricted")
    flags.resolve_flag(reviewer, db.get(Flag, flag.id), outcome="raise", level="restricted")
    db.expire_all()
    assert db.get(Finding, finding.id).version == 2
    response = client.post(f"/findings/{finding.id}/edit",
                           data=_edit_data(page, title="Original", body="v2"))
    assert response.status_code == 409 and "Someone else edited" in response.text
    db.expire_all()
    assert db.get(Finding, finding.id).body == "v1"


def test_service_edit_with_a_base_version(app):
    user = _member()
    finding = make_finding(user, body="v1")
    assert finding.version == 1
    assert findings.edit_finding(user, finding, body="v2", base_version=1)
    assert finding.version == 2
    try:
        findings.edit_finding(user, finding, body="v3", base_version=1)
    except findings.EditConflict as exc:
        assert (exc.base, exc.current, exc.status, exc.code) == (1, 2, 409, "edit_conflict")
    else:  # pragma: no cover
        raise AssertionError("a stale edit was written")
    db.rollback()
    db.expire_all()
    assert db.get(Finding, finding.id).body == "v2"
    assert count(FindingRevision) == 1
    # no base version: applies to the current one, as before
    assert findings.edit_finding(user, db.get(Finding, finding.id), body="v3")
    assert db.get(Finding, finding.id).version == 3


def test_api_patch_with_if_match(app, api_token):
    user = _member()
    finding = make_finding(user, body="v1")
    headers = api_token(user)
    client = app.test_client()
    url = f"/api/v1/findings/{finding.id}"
    got = client.get(url, headers=headers)
    assert got.headers["ETag"] == '"v1"' and got.json["version"] == 1
    ok = client.patch(url, json={"body": "v2"}, headers={**headers, "If-Match": '"v1"'})
    assert ok.status_code == 200 and ok.headers["ETag"] == '"v2"' and ok.json["body"] == "v2"
    stale = client.patch(url, json={"body": "v3"}, headers={**headers, "If-Match": '"v1"'})
    assert stale.status_code == 409
    assert stale.json["error"]["code"] == "edit_conflict"
    for odd in ('"something-else"', 'W/"v1"'):
        refused = client.patch(url, json={"body": "v3"}, headers={**headers, "If-Match": odd})
        assert refused.status_code == 409, odd
    db.expire_all()
    assert db.get(Finding, finding.id).body == "v2"
    assert count(FindingRevision) == 1
    # without If-Match (or with *): as documented in INTERFACES.md, the edit applies
    assert client.patch(url, json={"body": "v3"}, headers=headers).status_code == 200
    star = client.patch(url, json={"body": "v4"}, headers={**headers, "If-Match": "*"})
    assert star.status_code == 200 and star.json["version"] == 4
    weak_current = client.patch(url, json={"body": "v5"},
                                headers={**headers, "If-Match": 'W/"v4"'})
    assert weak_current.status_code == 200
