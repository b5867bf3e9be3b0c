"""Every review, escalation, reopening and release names the version its actor read (the
content SHA-256 and round): an action from an old page is refused with 409 and records
nothing, on the pages, in the API and from the command line."""

from __future__ import annotations

from sqlalchemy import func, select

from app import audit
from app.cli import enclave
from app.db import db
from app.errors import Conflict, ServiceError
from app.review import pins, service
from app.review.models import Escalation, Review, ReviewEvent
from app.review.pins import current as seen_of
from tests.conftest import csrf_from
from tests.factories import login
from tests.review_world import approve, build_world, publish_request, scores
from tests.test_review_web import _review_data, pin_from

DANGEROUS = "Now with the full recipe: layer 17 head 4, steering vector 0xDEADBEEF."


def _counts() -> tuple[int, int, int, int]:
    return tuple(db.scalar(select(func.count()).select_from(m)) or 0  # type: ignore[return-value]
                 for m in (Review, ReviewEvent, Escalation, audit.AuditEntry))


def test_old_page_approval_is_refused_after_the_requester_edits(app, client):
    """The attack: a reviewer opens a harmless request, the requester swaps in dangerous
    text (a new round), the reviewer's approval from the old page must not count."""
    w = build_world()
    req = publish_request(w)
    login(client, w.rev_b)
    url = f"/review/requests/{req.id}"
    old_page = client.get(url)
    assert old_page.status_code == 200
    old_pin = pin_from(old_page.text)
    assert old_pin == {"content_sha256": req.content_sha256, "round": "1"}

    assert service.edit_request(w.author, req, public_body=DANGEROUS) is True
    assert req.round == 2
    before = _counts()
    response = client.post(f"{url}/reviews", data={**_review_data(), **old_pin,
                                                   "csrf_token": csrf_from(old_page.text)})
    assert response.status_code == 409
    assert "changed since you opened it" in response.text
    assert "Nothing was recorded" in response.text
    assert 'href="#diff-h"' in response.text and "you read round 1" in response.text
    assert DANGEROUS[:30] in response.text  # the page now shows what it is about
    # the re-rendered form carries the new pin, and no decision is pre-chosen
    assert pin_from(response.text) == {"content_sha256": req.content_sha256, "round": "2"}
    assert 'value="approve" checked' not in response.text
    assert _counts() == before

    # a second, fresh approval cannot release what the first reviewer never saw
    approve(w.rev_c, req)
    db.refresh(req)
    assert req.state == "submitted" and service.tally_of(req).approvals_counted == 1
    # the reviewer reads the new version and decides on it
    fresh = client.get(url)
    response = client.post(f"{url}/reviews", data={**_review_data("reject", comment="No."),
                                                   **pin_from(fresh.text),
                                                   "csrf_token": csrf_from(fresh.text)})
    assert response.status_code == 302
    review = db.scalar(select(Review).where(Review.reviewer_id == w.rev_b.id))
    assert review.round == 2 and review.content_sha256 == req.content_sha256


def test_missing_or_malformed_pin_is_a_form_error(app, client):
    w = build_world()
    req = publish_request(w)
    login(client, w.rev_b)
    url = f"/review/requests/{req.id}"
    page = client.get(url)
    for pin in ({}, {"content_sha256": "abc", "round": "1"},
                {"content_sha256": req.content_sha256, "round": "x"}):
        response = client.post(f"{url}/reviews", data={**_review_data(), **pin,
                                                       "csrf_token": csrf_from(page.text)})
        assert response.status_code == 400, pin
    assert db.scalar(select(func.count()).select_from(Review)) == 0


def test_admin_actions_from_an_old_page_are_refused(app, client):
    w = build_world()
    req = publish_request(w)
    approve(w.rev_b, req)
    approve(w.rev_c, req)
    approve(w.rev_d, req, risk="high")
    login(client, w.admin)
    url = f"/review/requests/{req.id}"
    old_page = client.get(url)
    old = {**pin_from(old_page.text), "csrf_token": csrf_from(old_page.text)}
    service.edit_request(w.author, req, public_body=DANGEROUS)
    before = _counts()
    for action, data in (("escalate", {"reason": "Published already."}),
                         ("release", {"confirm": "yes"})):
        response = client.post(f"{url}/{action}", data={**old, **data})
        assert response.status_code == 409, action
        assert "Nothing was recorded" in response.text
    assert _counts() == before
    db.refresh(req)
    assert req.state == "submitted" and req.released_at is None


def test_service_refuses_every_pinned_action_with_a_stale_pin(app):
    w = build_world()
    req = publish_request(w)
    seen = seen_of(req)
    service.edit_request(w.author, req, public_body=DANGEROUS)
    before = _counts()
    try:
        service.add_review(w.rev_b, req, seen=seen, decision="approve", risk="low",
                           scores=scores())
    except pins.StalePin as exc:
        assert exc.status == 409 and exc.current == seen_of(req) and exc.seen == seen
    else:
        raise AssertionError("a stale approval was recorded")
    # same content, other round (a reopened request): refused too
    same_sha_old_round = pins.Pin(req.content_sha256, req.round - 1)
    for call in (
        lambda s: service.escalate(w.admin, req, "reason", seen=s),
        lambda s: service.release(w.admin, req, seen=s),
        lambda s: service.add_review(w.rev_c, req, seen=s, decision="approve", risk="low",
                                     scores=scores()),
    ):
        for stale in (seen, same_sha_old_round):
            db.rollback()
            try:
                call(stale)
            except Conflict as exc:
                assert exc.code == "stale_pin"
            else:
                raise AssertionError("a stale action was recorded")
    db.rollback()
    assert _counts() == before


def test_reopen_needs_the_rejected_round_it_was_seen_at(app):
    w = build_world()
    req = publish_request(w)
    service.add_review(w.rev_b, req, seen=seen_of(req), decision="reject", risk="medium",
                       scores=scores(), comment="No.")
    assert req.state == "rejected"
    seen = seen_of(req)
    service.reopen(w.admin, req, "The reject cited the wrong paper.", seen=seen)
    assert req.round == 2
    before = _counts()
    try:  # a second admin, from the same (now old) page
        service.reopen(w.admin, req, "again", seen=seen)
    except Conflict as exc:
        assert exc.code == "stale_pin"
    else:
        raise AssertionError("reopened twice")
    db.rollback()
    assert _counts() == before
    try:
        service.reopen(w.admin, req, "x", seen={"round": 2})
    except ServiceError as exc:
        assert exc.status == 400 and exc.code == "pin_required"


def test_api_requires_the_pin_and_answers_409_json(app, client, api_token):
    w = build_world()
    req = publish_request(w)
    b, admin = api_token(w.rev_b), api_token(w.admin)
    read = client.get(f"/api/v1/review/requests/{req.id}", headers=b).json
    old = {"content_sha256": read["content_sha256"], "round": read["round"]}
    body = {"decision": "approve", "risk": "low", "scores": scores(), "comment": "ok"}
    url = f"/api/v1/review/requests/{req.id}/decisions"
    r = client.post(url, headers=b, json=body)
    assert r.status_code == 400 and r.json["error"]["code"] == "pin_required"
    r = client.patch(f"/api/v1/review/requests/{req.id}", headers=api_token(w.author),
                     json={"public_body": DANGEROUS})
    assert r.status_code == 200 and r.json["round"] == 2
    before = _counts()
    r = client.post(url, headers=b, json={**body, **old})
    assert r.status_code == 409
    err = r.json["error"]
    assert err["code"] == "stale_pin" and err["seen"] == old
    assert err["current"] == {"content_sha256": r_sha(client, req.id, b), "round": 2}
    assert err["diff_url"].endswith(f"/review/requests/{req.id}#diff-h")
    assert err["request_url"].endswith(f"/api/v1/review/requests/{req.id}")
    for action in ("release", "escalate", "reopen"):
        r = client.post(f"/api/v1/review/requests/{req.id}/{action}", headers=admin,
                        json={**old, "reason": "x"} if action != "release" else old)
        assert r.status_code == 409 and r.json["error"]["code"] == "stale_pin", action
        r = client.post(f"/api/v1/review/requests/{req.id}/{action}", headers=admin,
                        json={"reason": "x"} if action != "release" else {})
        assert r.status_code == 400 and r.json["error"]["code"] == "pin_required", action
    assert _counts() == before
    r = client.post(url, headers=b, json={**body, **err["current"]})
    assert r.status_code == 201 and r.json["round"] == 2


def r_sha(client, req_id, headers):  # type: ignore[no-untyped-def]
    return client.get(f"/api/v1/review/requests/{req_id}", headers=headers).json[
        "content_sha256"]


def test_cli_decide_and_release_name_the_version(app):
    w = build_world()
    req = publish_request(w)
    runner = app.test_cli_runner()
    queue = runner.invoke(enclave, ["review", "queue", w.rev_b.email])
    assert f"round 1\tpin {req.content_sha256}" in queue.output
    old = ["--content-sha256", req.content_sha256, "--round", "1"]
    service.edit_request(w.author, req, public_body=DANGEROUS)
    score_args = [a for k, v in scores().items() for a in ("--score", f"{k}={v}")]
    r = runner.invoke(enclave, ["review", "decide", str(req.id), "--as", w.rev_b.email,
                                "--decision", "approve", "--risk", "low", *score_args, *old])
    assert r.exit_code == 1 and "changed since you opened it" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert db.scalar(select(func.count()).select_from(Review)) == 0
