"""The visibility gate (app/visibility.py): ids are resolved first, and an object the
caller may not see is answered exactly like a missing one. These are the focused cases;
tests/test_confidentiality.py walks every route with every kind of principal."""

from __future__ import annotations

from app.db import db
from app.errors import NOT_FOUND_MESSAGE
from app.review import flags
from app.review.models import Flag, Review
from tests.conftest import csrf_from
from tests.factories import login, make_finding, make_org, make_user
from tests.review_world import attach, build_world, publish_request

MISSING_ATTACHMENT = "0123456789abcdef" * 2


def _publish(client, finding_id, headers, attachments):  # type: ignore[no-untyped-def]
    return client.post(f"/api/v1/findings/{finding_id}/publication-requests",
                       headers=headers, json={"public_title": "Out", "public_body": "Out",
                                              "attachments": attachments})


def test_an_unreadable_file_in_a_publication_request_is_unknown(app, client, api_token):
    """Class 1: naming another finding's file (one the caller cannot read) answers exactly
    as naming no file: the same code and message, never the file's name."""
    w = build_world(level="network")
    outsider_org = make_org("zulu")
    other_author = make_user(outsider_org, name="zed")
    secret = make_finding(other_author, level="confidential", title="Zulu only",
                          compartment=[outsider_org])
    hidden = attach(other_author, secret, filename="zulu-secret-weights.csv")
    headers = api_token(w.author)
    got = _publish(client, w.finding.id, headers, [hidden.id])
    want = _publish(client, w.finding.id, headers, [MISSING_ATTACHMENT])
    assert got.status_code == want.status_code == 400
    assert "zulu-secret-weights" not in got.get_data(as_text=True)
    assert got.json["error"]["code"] == want.json["error"]["code"] == "unknown_attachment"
    assert (got.json["error"]["message"].replace(hidden.id, "X")
            == want.json["error"]["message"].replace(MISSING_ATTACHMENT, "X"))


def _flag(w):  # type: ignore[no-untyped-def]
    return flags.create_flag(w.reader, w.finding.id, reason="Flag reason: unique-marker-77",
                             suggested_level="confidential")


def test_an_excluded_reviewer_gets_403_before_the_form_is_read(app, client):
    """Class 2: the colleague (author's organization) can read the finding but may not
    resolve its flags. A bad form used to re-render the whole flag page (400) to them,
    while GET answered 404: now the exclusion is answered first, without the flag."""
    w = build_world()
    flag = _flag(w)
    login(client, w.colleague)
    assert client.get(f"/review/flags/{flag.id}").status_code == 404
    token = csrf_from(client.get("/account").get_data(as_text=True))
    for form in ({}, {"outcome": "dismiss", "note": "fine"}):
        r = client.post(f"/review/flags/{flag.id}/resolve", data={**form, "csrf_token": token})
        assert r.status_code == 403, (form, r.status_code)
        assert "unique-marker-77" not in r.get_data(as_text=True)
    assert db.get(Flag, flag.id).is_open


def test_an_excluded_reviewer_is_refused_before_the_review_form(app, client):
    w = build_world()
    req = publish_request(w, note="Request note: unique-marker-88")
    login(client, w.colleague)
    token = csrf_from(client.get("/account").get_data(as_text=True))
    r = client.post(f"/review/requests/{req.id}/reviews", data={"csrf_token": token})
    assert r.status_code == 403
    assert "unique-marker-88" not in r.get_data(as_text=True)
    assert db.query(Review).count() == 0


def test_api_gate_and_exclusion_come_before_the_body(app, client, api_token):
    """Class 5: the API read the body first, so an excluded reviewer with an empty body
    got 400 missing_field where a missing id gets 404: now 403 (excluded) for them, and
    404 for a missing id, whatever the body."""
    w = build_world()
    flag = _flag(w)
    req = publish_request(w)
    colleague = api_token(w.colleague)
    for url in (f"/api/v1/review/flags/{flag.id}/resolve",
                f"/api/v1/review/requests/{req.id}/decisions"):
        r = client.post(url, headers=colleague, json={})
        assert r.status_code == 403, (url, r.json)
        assert r.json["error"]["code"] == "excluded_author_org"
    reader = api_token(w.reader)  # not a reviewer: the flag's flagger, request invisible
    for url in (f"/api/v1/review/requests/{req.id}/decisions",
                "/api/v1/review/requests/987654/decisions",
                f"/api/v1/review/requests/{req.id}/escalate",
                "/api/v1/review/requests/987654/escalate"):
        r = client.post(url, headers=reader, json={})
        assert r.status_code == 404, (url, r.json)
        assert r.json["error"] == {"code": "not_found", "message": NOT_FOUND_MESSAGE}


def test_one_not_found_message_on_pages_and_api(app, client, api_token):
    w = build_world()
    headers = api_token(w.reader)
    api = client.get("/api/v1/findings/987654", headers=headers).json["error"]
    nowhere = client.get("/api/v1/no-such-route", headers=headers).json["error"]
    assert api == nowhere == {"code": "not_found", "message": NOT_FOUND_MESSAGE}
