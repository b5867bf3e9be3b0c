"""The review pages through the real forms (CSRF on): flag, ask to publish, review, thread,
escalate, release; conflicts enforced on the server whatever the buttons show."""

from __future__ import annotations

import re

from sqlalchemy import select

from app.db import db
from app.review.models import Flag, Review, ReviewRequest
from tests.conftest import csrf_from
from tests.factories import login, post_form
from tests.review_world import (
    INTERNAL_BODY,
    PUBLIC_BODY,
    approve,
    attach,
    build_world,
    publish_request,
    scores,
)


def pin_from(html: str) -> dict[str, str]:
    """The hidden pin fields of the page's forms, as a browser sends them back."""
    sha = re.search(r'name="content_sha256"[^>]*value="([0-9a-f]{64})"', html)
    rnd = re.search(r'name="round"[^>]*value="(\d+)"', html)
    assert sha and rnd, "no pin fields in the page"
    return {"content_sha256": sha.group(1), "round": rnd.group(1)}


def post_pinned(client, url: str, data: dict, *, form_url: str):  # type: ignore[no-untyped-def]
    page = client.get(form_url)
    assert page.status_code == 200
    return client.post(url, data={**data, **pin_from(page.text),
                                  "csrf_token": csrf_from(page.text)})


def _review_data(decision: str = "approve", risk: str = "low", **extra: object) -> dict:
    data: dict[str, object] = {"decision": decision, "risk": risk, "comment": "ok"}
    data.update({f"score_{k}": v for k, v in scores().items()})
    data.update(extra)
    return data


def test_finding_page_shows_review_box_and_flag_form_works(app, client):
    w = build_world()
    login(client, w.reader)
    page = client.get(f"/findings/{w.finding.id}")
    assert page.status_code == 200
    assert "Dual-use review" in page.text and "Flag a dual-use concern" in page.text
    assert "Ask to publish" not in page.text  # only the author or an admin
    response = post_form(client, f"/review/findings/{w.finding.id}/flag",
                         {"reason": "It gives the recipe away", "suggested_level": "confidential"})
    assert response.status_code == 302
    flag = db.scalar(select(Flag))
    assert flag.flagger_id == w.reader.id and flag.suggested_level == "confidential"
    assert client.get(response.location).status_code == 200


def test_flag_form_refuses_lower_level(app, client):
    w = build_world()
    login(client, w.reader)
    response = post_form(client, f"/review/findings/{w.finding.id}/flag",
                         {"reason": "x", "suggested_level": "network"})
    assert response.status_code == 400
    assert db.scalar(select(Flag)) is None


def test_author_asks_to_publish_through_the_form(app, client):
    w = build_world()
    att = attach(w.author, w.finding)
    login(client, w.author)
    url = f"/review/findings/{w.finding.id}/publish"
    form = client.get(url)
    assert form.status_code == 200 and att.filename in form.text
    response = post_form(client, url, {
        "public_title": "General heads", "public_body": PUBLIC_BODY,
        "attachments": [att.id], "embargo_until": "2099-05-01T09:00",
        "embargo_tz": "Europe/Berlin", "note": "recipe omitted"})
    assert response.status_code == 302, response.text
    req = db.scalar(select(ReviewRequest))
    assert req.embargo_tz == "Europe/Berlin"
    assert req.embargo_until.isoformat() == "2099-05-01T07:00:00+00:00"
    page = client.get(response.location)
    assert page.status_code == 200
    assert "2099-05-01 09:00 CEST (Europe/Berlin, UTC+02:00)" in page.text
    # side by side with a diff
    assert "Internal finding" in page.text and "Proposed public version" in page.text
    assert 'class="d-del"' in page.text and 'class="d-add"' in page.text


def test_reviewer_page_review_form_and_duplicate(app, client):
    w = build_world()
    req = publish_request(w)
    login(client, w.rev_b)
    assert "Review" in client.get("/review/").text
    queue = client.get("/review/")
    assert f"/review/requests/{req.id}" in queue.text
    page = client.get(f"/review/requests/{req.id}")
    assert page.status_code == 200 and "Your review" in page.text
    assert INTERNAL_BODY.split(":")[1].strip()[:20] in page.text  # reviewers see the internal text
    pin = pin_from(page.text)
    response = client.post(f"/review/requests/{req.id}/reviews",
                           data={**_review_data(), **pin, "csrf_token": csrf_from(page.text)})
    assert response.status_code == 302
    page = client.get(f"/review/requests/{req.id}")
    assert "You reviewed this version" in page.text
    # a second POST (e.g. replayed form) is refused by the service
    response = client.post(f"/review/requests/{req.id}/reviews",
                           data={**_review_data("reject"), **pin,
                                 "csrf_token": csrf_from(page.text)})
    assert response.status_code == 400 and "already reviewed" in response.text
    assert len(db.scalars(select(Review)).all()) == 1


def test_out_of_range_score_refused_on_the_page(app, client):
    w = build_world()
    req = publish_request(w)
    login(client, w.rev_b)
    page = client.get(f"/review/requests/{req.id}")
    data = _review_data(score_capability_uplift=9)
    response = client.post(f"/review/requests/{req.id}/reviews",
                           data={**data, **pin_from(page.text),
                                 "csrf_token": csrf_from(page.text)})
    assert response.status_code == 400 and "from 0 to 4" in response.text
    assert db.scalar(select(Review)) is None


def test_author_org_reviewer_gets_404_page_and_refused_post(app, client):
    w = build_world()
    req = publish_request(w)
    login(client, w.colleague)
    assert client.get(f"/review/requests/{req.id}").status_code == 404
    token_page = client.get("/review/")
    assert f"/review/requests/{req.id}" not in token_page.text
    response = client.post(f"/review/requests/{req.id}/reviews",
                           data={**_review_data(), "csrf_token": csrf_from(token_page.text)})
    assert response.status_code == 403 and "author&#39;s organization" in response.text
    assert db.scalar(select(Review)) is None


def test_author_sees_decisions_but_not_reviewer_names(app, client):
    w = build_world()
    req = publish_request(w)
    approve(w.rev_b, req)
    login(client, w.author)
    page = client.get(f"/review/requests/{req.id}")
    assert page.status_code == 200
    assert "Reviewer 1" in page.text
    assert w.rev_b.display_name not in page.text and w.org_b.name not in page.text
    assert "Fine to publish." in page.text
    # rubric scores are labelled as people read them, not by their policy keys
    assert '">Capability uplift</dt>' in page.text and ">capability_uplift<" not in page.text


def test_thread_escalate_release_through_pages(app, client):
    w = build_world()
    req = publish_request(w)
    approve(w.rev_b, req)
    approve(w.rev_c, req)
    approve(w.rev_d, req, risk="high")
    login(client, w.rev_b)
    url = f"/review/requests/{req.id}"
    r = post_form(client, f"{url}/comments", {"body": "Risk seems overstated."}, form_url=url)
    assert r.status_code == 302
    client.get("/logout")
    admin = app.test_client()
    login(admin, w.admin)
    page = admin.get(url)
    assert "Escalate" in page.text and "blocks it until an administrator escalates" in page.text
    # not releasable: the button is there but unavailable, with the reasons
    assert re.search(r'<button type="button" disabled[^>]*>Release to the public</button>',
                     page.text)
    assert 'action="' + url + '/release"' not in page.text
    r = post_pinned(admin, f"{url}/release", {"confirm": "yes"}, form_url=url)
    assert r.status_code == 302
    assert "cannot be released" in admin.get(url).text
    r = post_pinned(admin, f"{url}/escalate", {"reason": "Published elsewhere already."},
                    form_url=url)
    assert r.status_code == 302
    page = admin.get(url).text
    assert 'action="' + url + '/release"' in page and "cannot be undone" in page
    # the release is irreversible: without the ticked confirmation nothing happens
    r = post_pinned(admin, f"{url}/release", {}, form_url=url)
    assert r.status_code == 302
    assert "tick the confirmation" in admin.get(url).text
    db.refresh(req)
    assert req.state == "approved"
    r = post_pinned(admin, f"{url}/release", {"confirm": "yes"}, form_url=url)
    assert r.status_code == 302
    db.refresh(req)
    assert req.state == "released"
    page = admin.get(url)
    assert "escalated" in page.text and "released" in page.text.lower()
    assert "Risk seems overstated." in page.text


def test_admin_affiliation_page(app, client):
    w = build_world()
    login(client, w.admin)
    r = post_form(client, "/review/admin/affiliations",
                  {"org_a": "authorlab", "org_b": "bravo", "note": "same parent"},
                  form_url="/review/admin")
    assert r.status_code == 302
    page = client.get("/review/admin")
    assert "same parent" in page.text
    req = publish_request(w)
    member = app.test_client()
    login(member, w.rev_b)
    assert member.get(f"/review/requests/{req.id}").status_code == 404


def test_nav_link_for_reviewers_only(app, client):
    w = build_world()
    login(client, w.reader)
    assert not re.search(r'href="/review/"', client.get("/home").text)
    assert client.get("/review/").status_code == 404
    other = app.test_client()
    login(other, w.rev_b)
    assert re.search(r'href="/review/"', other.get("/home").text)


def test_declassify_page(app, client):
    w = build_world(level="confidential")
    login(client, w.author)
    url = f"/review/findings/{w.finding.id}/declassify"
    r = post_form(client, url, {"target_level": "restricted", "note": "It is in a paper now."})
    assert r.status_code == 302
    page = client.get(r.location)
    assert "Lower the level" in page.text


def test_edit_page_starts_new_round(app, client):
    w = build_world()
    req = publish_request(w)
    approve(w.rev_b, req)
    approve(w.rev_c, req)
    login(client, w.author)
    url = f"/review/requests/{req.id}/edit"
    assert client.get(url).status_code == 200
    r = post_form(client, url, {"public_title": "Attention heads, in general",
                                "public_body": "Shorter.", "embargo_tz": "UTC"})
    assert r.status_code == 302
    db.refresh(req)
    assert req.state == "submitted" and req.round == 2
    page = client.get(f"/review/requests/{req.id}")
    assert "stale" in page.text
