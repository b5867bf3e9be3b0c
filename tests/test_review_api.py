"""The review API: the same rules as the pages, JSON errors, nothing changed on refusal."""

from __future__ import annotations

from sqlalchemy import func, select

from app.db import db
from app.review.models import Flag, Review, ReviewRequest
from tests.factories import make_finding
from tests.review_world import PUBLIC_BODY, attach, build_world, scores


def _count(model) -> int:  # type: ignore[no-untyped-def]
    return db.scalar(select(func.count()).select_from(model)) or 0


def _publish(client, w, headers, **extra):  # type: ignore[no-untyped-def]
    body = {"public_title": "Heads in general", "public_body": PUBLIC_BODY, **extra}
    return client.post(f"/api/v1/findings/{w.finding.id}/publication-requests", json=body,
                       headers=headers)


def _pin(client, req_id, headers):  # type: ignore[no-untyped-def]
    """The pin as the caller reads it from the request (a well-formed stranger's guess
    when they cannot read it)."""
    r = client.get(f"/api/v1/review/requests/{req_id}", headers=headers)
    if r.status_code != 200:
        return {"content_sha256": "0" * 64, "round": 1}
    return {"content_sha256": r.json["content_sha256"], "round": r.json["round"]}


def _decide(client, req_id, headers, **overrides):  # type: ignore[no-untyped-def]
    body = {"decision": "approve", "risk": "low", "scores": scores(), "comment": "ok",
            **_pin(client, req_id, headers)}
    body.update(overrides)
    return client.post(f"/api/v1/review/requests/{req_id}/decisions", json=body,
                       headers=headers)


def _act(client, req_id, action, headers, **body):  # type: ignore[no-untyped-def]
    """escalate, reopen, release: with the pin the caller just read."""
    return client.post(f"/api/v1/review/requests/{req_id}/{action}", headers=headers,
                       json={**_pin(client, req_id, headers), **body})


def test_full_path_through_the_api(app, client, api_token):
    w = build_world()
    att = attach(w.author, w.finding)
    author = api_token(w.author)
    r = _publish(client, w, author, attachments=[att.id])
    assert r.status_code == 201, r.json
    req_id = r.json["id"]
    assert r.json["state"] == "submitted" and len(r.json["content_sha256"]) == 64
    assert r.json["attachments"][0]["filename"] == "data.csv"

    b, c, d = api_token(w.rev_b), api_token(w.rev_c), api_token(w.rev_d)
    queue = client.get("/api/v1/review/queue", headers=b).json
    assert [(i["type"], i["id"]) for i in queue["items"]] == [("request", req_id)]
    assert _decide(client, req_id, b).status_code == 201
    r = _decide(client, req_id, c)
    assert r.json["request"]["state"] == "approved"
    r = _decide(client, req_id, d, risk="high")
    assert r.json["request"]["state"] == "submitted"
    assert r.json["request"]["tally"]["blocked"] is True

    admin = api_token(w.admin)
    r = _act(client, req_id, "release", admin)
    assert r.status_code == 409 and "escalates" in r.json["error"]["message"]
    r = _act(client, req_id, "escalate", admin, reason="The method is in a published paper.")
    assert r.status_code == 200 and r.json["state"] == "approved"
    r = _act(client, req_id, "release", admin)
    assert r.status_code == 200 and r.json["state"] == "released"

    listing = client.get("/api/v1/public/findings").json  # no token
    assert listing["total"] == 1
    item = listing["items"][0]
    assert item["title"] == "Heads in general" and item["body"] == PUBLIC_BODY
    assert "Internal" not in str(item)
    one = client.get(f"/api/v1/public/findings/{item['id']}").json
    assert one["attachments"][0]["sha256"] == item["attachments"][0]["sha256"]
    download = client.get(one["attachments"][0]["url"].replace("http://localhost", ""))
    assert download.status_code == 200 and download.data == b"public dataset\n"


def test_author_view_is_anonymous_admin_view_is_not(app, client, api_token):
    w = build_world()
    req_id = _publish(client, w, api_token(w.author)).json["id"]
    _decide(client, req_id, api_token(w.rev_b))
    as_author = client.get(f"/api/v1/review/requests/{req_id}",
                           headers=api_token(w.author)).json
    assert as_author["reviews"][0]["reviewer"] == {"name": "Reviewer 1"}
    assert w.rev_b.display_name not in str(as_author)
    assert w.rev_b.email not in str(as_author)
    as_admin = client.get(f"/api/v1/review/requests/{req_id}", headers=api_token(w.admin)).json
    assert as_admin["reviews"][0]["reviewer"]["organization"] == w.org_b.name


def test_bad_input_is_refused_and_changes_nothing(app, client, api_token):
    w = build_world()
    author = api_token(w.author)
    other = make_finding(w.author, level="restricted")
    foreign = attach(w.author, other)
    r = _publish(client, w, author, attachments=[foreign.id])
    # another finding's file is unknown here, even to its author (one answer for every
    # id that is not a file of this finding: never a name, never "exists elsewhere")
    assert r.status_code == 400 and r.json["error"]["code"] == "unknown_attachment"
    assert foreign.filename not in r.get_data(as_text=True)
    r = _publish(client, w, author, surprise=1)
    assert r.status_code == 400 and r.json["error"]["code"] == "unknown_field"
    assert _count(ReviewRequest) == 0

    req_id = _publish(client, w, author).json["id"]
    colleague = api_token(w.colleague)
    r = _decide(client, req_id, colleague)
    assert r.status_code == 403 and "author's organization" in r.json["error"]["message"]
    b = api_token(w.rev_b)
    r = _decide(client, req_id, b, scores={**scores(), "novelty": 3})
    assert r.status_code == 400
    assert "Unknown rubric question 'novelty'" in r.json["error"]["message"]
    r = _decide(client, req_id, b, scores={**scores(), "capability_uplift": 7})
    assert r.status_code == 400 and r.json["error"]["code"] == "bad_scores"
    assert _count(Review) == 0
    assert _decide(client, req_id, b).status_code == 201
    r = _decide(client, req_id, b)
    assert r.status_code == 409 and r.json["error"]["code"] == "duplicate_review"
    r = _act(client, req_id, "release", api_token(w.admin))
    assert r.status_code == 409 and "needs 2" in r.json["error"]["message"]
    r = client.post(f"/api/v1/review/requests/{req_id}/withdraw", headers=author, json={})
    assert r.status_code == 200 and r.json["state"] == "withdrawn"
    r = _decide(client, req_id, api_token(w.rev_c))
    assert r.status_code == 409 and r.json["error"]["code"] == "request_withdrawn"
    assert _count(Review) == 1


def test_member_without_role_or_unreadable_gets_404(app, client, api_token):
    w = build_world()
    req_id = _publish(client, w, api_token(w.author)).json["id"]
    reader = api_token(w.reader)
    assert client.get("/api/v1/review/queue", headers=reader).status_code == 403
    assert client.get(f"/api/v1/review/requests/{req_id}", headers=reader).status_code == 404
    assert _decide(client, req_id, reader).status_code == 404


def test_flags_api(app, client, api_token):
    w = build_world()
    reader = api_token(w.reader)
    r = client.post(f"/api/v1/findings/{w.finding.id}/flags", headers=reader,
                    json={"reason": "Too specific", "suggested_level": "confidential"})
    assert r.status_code == 201
    flag_id = r.json["id"]
    r = client.post(f"/api/v1/review/flags/{flag_id}/resolve", headers=api_token(w.colleague),
                    json={"outcome": "dismiss", "note": "fine"})
    assert r.status_code == 403
    r = client.post(f"/api/v1/review/flags/{flag_id}/resolve", headers=api_token(w.rev_c),
                    json={"outcome": "redact", "note": "Remove the vector value."})
    assert r.status_code == 200 and r.json["outcome"] == "redact"
    as_author = client.get(f"/api/v1/review/flags/{flag_id}", headers=api_token(w.author)).json
    assert "flagger" not in as_author and "resolved_by" not in as_author
    assert as_author["note"] == "Remove the vector value."
    assert db.scalar(select(Flag)).state == "resolved"


def test_affiliations_and_conflicts_api(app, client, api_token):
    w = build_world()
    admin = api_token(w.admin)
    r = client.post("/api/v1/review/affiliations", headers=admin,
                    json={"orgs": ["authorlab", "delta"], "note": "subsidiary"})
    assert r.status_code == 201
    assert client.post("/api/v1/review/affiliations", headers=admin,
                       json={"orgs": ["delta", "authorlab"]}).status_code == 409
    req_id = _publish(client, w, api_token(w.author)).json["id"]
    assert _decide(client, req_id, api_token(w.rev_d)).status_code == 403
    c = api_token(w.rev_c)
    r = client.post(f"/api/v1/findings/{w.finding.id}/conflicts", headers=c,
                    json={"reason": "former co-author"})
    assert r.status_code == 201
    assert client.get("/api/v1/review/queue", headers=c).json["total"] == 0
    assert _decide(client, req_id, c).status_code == 403
    aff_id = client.get("/api/v1/review/affiliations", headers=admin).json["items"][0]["id"]
    assert client.delete(f"/api/v1/review/affiliations/{aff_id}",
                         headers=admin).status_code == 204
    assert _decide(client, req_id, api_token(w.rev_d)).status_code == 201


def test_declassification_and_edit_api(app, client, api_token):
    w = build_world(level="confidential")
    author = api_token(w.author)
    r = client.post(f"/api/v1/findings/{w.finding.id}/declassification-requests",
                    headers=author, json={"target_level": "network", "note": "now public"})
    assert r.status_code == 201 and r.json["kind"] == "declassification"
    req_id = r.json["id"]
    r = client.patch(f"/api/v1/review/requests/{req_id}", headers=author,
                     json={"target_level": "restricted"})
    assert r.status_code == 200 and r.json["content_changed"] is True
    assert r.json["target_level"] == "restricted"
    assert client.get("/api/v1/public/findings/999").status_code == 404
    assert client.get(f"/api/v1/public/findings/{req_id}").status_code == 404
