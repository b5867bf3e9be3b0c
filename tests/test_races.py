"""Concurrent writers of the same finding, request or log, on SQLite and PostgreSQL
alike: the invariants (one open request per finding and kind, one open flag per reader
and finding, one review per reviewer and round, a gapless audit chain, no version lost)
hold because the database enforces them, not because one engine happens to serialize
writers (issue 12, item 8).

Each worker runs in its own thread, app context and database session (connection), as
gunicorn's threads or workers would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from flask import Flask
from sqlalchemy import func, select

from app import audit
from app.auth.models import User
from app.db import db
from app.errors import ServiceError
from app.findings import service as findings
from app.findings.models import Finding, FindingOrg, FindingRevision, Reply
from app.review import flags
from app.review import service as review
from app.review.models import Flag, Review, ReviewRequest
from app.review.pins import current as seen_of
from app.submissions import service as submissions
from app.submissions.models import FormSubmission
from tests.conftest import csrf_from
from tests.factories import login, make_finding, make_org, make_user
from tests.findings_world import make_category
from tests.review_world import scores


def _world() -> dict[str, Any]:
    home, other = make_org("home"), make_org("other")
    make_category("circuits")
    reader = make_user(home, name="reader", mfa_on=False)
    finding = make_finding(make_user(other, name="author", mfa_on=False), title="Stable")
    return {"home": home, "other": other, "reader": reader, "finding": finding}


# ------------------------------------------------------------------ concurrent writers


def _race(app: Flask, workers: list[Callable[[], Callable[[], Any]]]) -> list[Any]:
    """Each worker runs in its own thread, app context and database session: first its
    preparation (reading what it will change, like a form being filled in), then, all at
    the same moment, the action it returned. Returns each action's result or exception."""
    barrier = threading.Barrier(len(workers))
    results: list[Any] = [None] * len(workers)

    def run(i: int) -> None:
        with app.app_context():
            try:
                action = workers[i]()
                barrier.wait(timeout=30)
                results[i] = action()
            except Exception as exc:  # noqa: BLE001 - reported to the test
                db.rollback()
                results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a writer is stuck"
    return results


def test_concurrent_edits_of_one_finding_lose_no_version(app):
    home = make_org("home")
    author = make_user(home, name="author", mfa_on=False)
    admin = make_user(home, name="admin", role="admin", mfa_on=False)
    finding = make_finding(author, title="Original", body="version 0")
    bodies = [f"version {i}" for i in range(1, 5)]

    def editor(user_id: int, body: str) -> Callable[[], Callable[[], Any]]:
        def prepare() -> Callable[[], Any]:
            user, target = db.get(User, user_id), db.get(Finding, finding.id)
            assert target is not None and target.body == "version 0"
            return lambda: findings.edit_finding(user, target, body=body)
        return prepare

    users = [author.id, admin.id, author.id, admin.id]
    results = _race(app, [editor(u, b) for u, b in zip(users, bodies, strict=True)])
    assert results == [True] * 4, results
    db.rollback()
    db.expire_all()
    current = db.get(Finding, finding.id)
    revisions = list(db.scalars(select(FindingRevision)
                                .where(FindingRevision.finding_id == finding.id)
                                .order_by(FindingRevision.id)))
    # every version is in the history exactly once: none was overwritten unseen
    history = [r.old_body for r in revisions] + [current.body]
    assert sorted(history) == ["version 0", *bodies]
    assert history[0] == "version 0"


def test_concurrent_raise_and_edit_keep_the_raised_level(app):
    home = make_org("home")
    author = make_user(home, name="author", clearance="confidential")
    finding = make_finding(author, title="Original", body="version 0")

    def run(**change: Any) -> Callable[[], Callable[[], Any]]:
        def prepare() -> Callable[[], Any]:
            user, target = db.get(User, author.id), db.get(Finding, finding.id)
            return lambda: findings.edit_finding(user, target, **change)
        return prepare

    results = _race(app, [run(level="confidential"), run(body="version 1")])
    assert results == [True, True], results
    db.rollback()
    db.expire_all()
    current = db.get(Finding, finding.id)
    assert current.level == "confidential" and current.body == "version 1"


def _review_world() -> Any:
    from tests.review_world import build_world, publish_request

    w = build_world()
    return w, publish_request(w)


def test_one_review_per_reviewer_even_when_submitted_at_once(app):
    w, req = _review_world()

    def submit() -> Callable[[], Any]:
        reviewer = db.get(User, w.rev_b.id)
        target = review.request_for_review(reviewer, req.id)
        return lambda: review.add_review(reviewer, target, seen=seen_of(target),
                                         decision="approve", risk="low",
                                         scores=scores(), comment="Fine.")

    results = _race(app, [submit] * 4)
    accepted = [r for r in results if isinstance(r, Review)]
    refused = [r for r in results if isinstance(r, ServiceError)]
    assert len(accepted) == 1 and len(refused) == 3, results
    assert {e.code for e in refused} == {"duplicate_review"}
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Review)
                     .where(Review.request_id == req.id)) == 1


def test_concurrent_reviews_by_different_reviewers_reach_the_quorum(app):
    w, req = _review_world()

    def by(user_id: int) -> Callable[[], Callable[[], Any]]:
        def submit() -> Callable[[], Any]:
            reviewer = db.get(User, user_id)
            target = review.request_for_review(reviewer, req.id)
            return lambda: review.add_review(reviewer, target, seen=seen_of(target),
                                             decision="approve",
                                             risk="low", scores=scores(), comment="Fine.")
        return submit

    results = _race(app, [by(w.rev_b.id), by(w.rev_c.id)])
    assert all(isinstance(r, Review) for r in results), results
    db.rollback()
    db.expire_all()
    assert db.get(ReviewRequest, req.id).state == "approved"


def test_one_open_publication_request_even_when_asked_at_once(app):
    from tests.review_world import build_world

    w = build_world()

    def ask() -> Callable[[], Any]:
        author = db.get(User, w.author.id)
        return lambda: review.create_publication(author, w.finding.id, public_title="Public",
                                                 public_body="Public text.")

    results = _race(app, [ask] * 4)
    accepted = [r for r in results if isinstance(r, ReviewRequest)]
    assert len(accepted) == 1, results
    assert all(isinstance(r, ServiceError) and r.code == "open_request"
               for r in results if r not in accepted), results
    db.rollback()
    assert db.scalar(select(func.count()).select_from(ReviewRequest)
                     .where(ReviewRequest.finding_id == w.finding.id)) == 1


def test_one_open_flag_per_reader_even_when_flagged_at_once(app):
    from tests.review_world import build_world

    w = build_world()

    def flag() -> Callable[[], Any]:
        reader = db.get(User, w.reader.id)
        return lambda: flags.create_flag(reader, w.finding.id, reason="Dual use.",
                                         suggested_level=None)

    results = _race(app, [flag] * 4)
    assert len([r for r in results if isinstance(r, Flag)]) == 1, results
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Flag)
                     .where(Flag.finding_id == w.finding.id)) == 1


# ------------------------------------------------------------------ double submissions


def _token_from(html: str) -> str:
    import re

    field_ = re.search(r'<input[^>]*name="submission"[^>]*>', html)
    assert field_, "no submission token in the form"
    return re.search(r'value="([^"]+)"', field_.group(0)).group(1)  # type: ignore[union-attr]


def test_double_submitted_forms(app):
    """What a double click does: the same new-finding form sent twice posts one finding
    (the second lands on it); a publication request sent twice is refused the second
    time even without a token (one open request per finding)."""
    w = _world()
    client = app.test_client()
    login(client, w["reader"])
    page = client.get("/findings/new")
    data = {"title": "Twice", "body": "Clicked twice.", "category": "circuits",
            "level": "network", "csrf_token": csrf_from(page.text),
            "submission": _token_from(page.text)}
    first, second = client.post("/findings/new", data=data), client.post("/findings/new",
                                                                         data=data)
    assert first.status_code == second.status_code == 302
    assert first.location == second.location
    twice = [f for f in db.scalars(select(Finding)) if f.title == "Twice"]
    assert len(twice) == 1 and twice[0].body == "Clicked twice."

    from tests.review_world import build_world, publish_request

    rw = build_world()
    publish_request(rw)
    try:
        publish_request(rw)
    except ServiceError as exc:
        assert exc.code == "open_request"
    else:  # pragma: no cover
        raise AssertionError("a second open publication request was accepted")


N = 4


def test_the_same_new_finding_form_sent_at_once_posts_one(app):
    """N tabs (sessions) of one user post the same form, token and all, at the same
    moment: one finding; every other answer is a redirect to it."""
    w = _world()
    page_client = app.test_client()
    login(page_client, w["reader"])
    token = _token_from(page_client.get("/findings/new").text)
    clients = []
    for _ in range(N):
        client = app.test_client()
        login(client, w["reader"])
        clients.append((client, csrf_from(client.get("/findings/new").text)))
    db.remove()

    def post(i: int) -> Callable[[], Callable[[], Any]]:
        client, csrf = clients[i]
        data = {"title": "At once", "body": "Sent from every tab.", "category": "circuits",
                "level": "network", "orgs": ["other"], "csrf_token": csrf,
                "submission": token}
        return lambda: lambda: client.post("/findings/new", data=data)

    results = _race(app, [post(i) for i in range(N)])
    assert all(not isinstance(r, Exception) for r in results), results
    assert [r.status_code for r in results] == [302] * N, [r.status_code for r in results]
    db.rollback()
    made = [f for f in db.scalars(select(Finding)) if f.title == "At once"]
    assert len(made) == 1
    assert {r.location for r in results} == {f"/findings/{made[0].id}"}
    assert db.scalar(select(func.count()).select_from(FindingOrg)
                     .where(FindingOrg.finding_id == made[0].id)) == 2
    assert db.scalar(select(func.count()).select_from(FormSubmission)) == 1
    assert audit.verify_chain().ok


def test_the_same_reply_token_at_once_posts_one_reply(app):
    w = _world()
    token = submissions.new_token()

    def reply() -> Callable[[], Any]:
        user, target = db.get(User, w["reader"].id), db.get(Finding, w["finding"].id)
        return lambda: findings.add_reply(user, target, "Only once.", submission=token)

    results = _race(app, [reply] * N)
    accepted = [r for r in results if isinstance(r, Reply)]
    repeated = [r for r in results if isinstance(r, submissions.AlreadySubmitted)]
    assert len(accepted) == 1 and len(repeated) == N - 1, results
    assert {(e.target_type, e.target_id) for e in repeated} == {("reply", accepted[0].id)}
    db.rollback()
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Reply)) == 1
    assert db.get(Finding, w["finding"].id).reply_count == 1


def test_edits_from_one_base_version_at_once_one_wins(app):
    """N editors opened version 1 and save at the same moment: one edit is written, the
    others are refused as conflicts (nothing of theirs is written), one revision."""
    home = make_org("home")
    author = make_user(home, name="author", mfa_on=False)
    admin = make_user(home, name="admin", role="admin", mfa_on=False)
    finding = make_finding(author, title="Original", body="version 0")
    assert finding.version == 1

    def editor(user_id: int, body: str) -> Callable[[], Callable[[], Any]]:
        def prepare() -> Callable[[], Any]:
            user, target = db.get(User, user_id), db.get(Finding, finding.id)
            return lambda: findings.edit_finding(user, target, body=body, base_version=1)
        return prepare

    users = [author.id, admin.id] * (N // 2)
    results = _race(app, [editor(u, f"edit {i}") for i, u in enumerate(users)])
    won = [i for i, r in enumerate(results) if r is True]
    lost = [r for r in results if isinstance(r, findings.EditConflict)]
    assert len(won) == 1 and len(lost) == N - 1, results
    assert all((e.base, e.current) == (1, 2) for e in lost)
    db.rollback()
    db.expire_all()
    current = db.get(Finding, finding.id)
    assert current.body == f"edit {won[0]}" and current.version == 2
    revisions = list(db.scalars(select(FindingRevision)
                                .where(FindingRevision.finding_id == finding.id)))
    assert [r.old_body for r in revisions] == ["version 0"]  # 1 + 1 versions, no more


def test_api_patches_with_one_if_match_at_once_one_wins(app, api_token):
    home = make_org("home")
    author = make_user(home, name="author", mfa_on=False)
    finding = make_finding(author, title="Original", body="version 0")
    headers = api_token(author)
    client = app.test_client()
    fid = finding.id
    etag = client.get(f"/api/v1/findings/{fid}", headers=headers).headers["ETag"]
    db.remove()

    def patch(i: int) -> Callable[[], Callable[[], Any]]:
        return lambda: lambda: app.test_client().patch(
            f"/api/v1/findings/{fid}", json={"body": f"api edit {i}"},
            headers={**headers, "If-Match": etag})

    results = _race(app, [patch(i) for i in range(N)])
    codes = sorted(r.status_code for r in results)
    assert codes == [200] + [409] * (N - 1), codes
    assert {r.json["error"]["code"] for r in results if r.status_code == 409} == \
        {"edit_conflict"}
    db.rollback()
    assert db.scalar(select(func.count()).select_from(FindingRevision)
                     .where(FindingRevision.finding_id == fid)) == 1


def test_duplicate_votes_of_several_reviewers_at_once_one_review_each(app):
    w, req = _review_world()

    def by(user_id: int) -> Callable[[], Callable[[], Any]]:
        def submit() -> Callable[[], Any]:
            reviewer = db.get(User, user_id)
            target = review.request_for_review(reviewer, req.id)
            return lambda: review.add_review(reviewer, target, seen=seen_of(target),
                                             decision="approve",
                                             risk="low", scores=scores(), comment="Fine.")
        return submit

    reviewers = [w.rev_b.id, w.rev_c.id, w.rev_d.id]
    results = _race(app, [by(u) for u in reviewers for _ in range(2)])
    accepted = [r for r in results if isinstance(r, Review)]
    refused = [r for r in results if isinstance(r, ServiceError)]
    assert len(accepted) == 3 and len(refused) == 3, results
    assert {e.code for e in refused} == {"duplicate_review"}
    db.rollback()
    db.expire_all()
    rows = list(db.scalars(select(Review.reviewer_id).where(Review.request_id == req.id)))
    assert sorted(rows) == sorted(reviewers)
    assert db.get(ReviewRequest, req.id).state == "approved"


# ------------------------------------------------------------------ the database's own rules

P = 8  # as many parallel writers as the review found


def test_eight_at_once_one_request_one_flag_and_a_gapless_audit_chain(app):
    """The review's reproduction: 8 parallel requests on one finding opened 8 publication
    requests and 8 flags, and colliding audit sequence numbers gave 500s."""
    from tests.review_world import build_world

    w = build_world()

    def ask() -> Callable[[], Any]:
        author = db.get(User, w.author.id)
        return lambda: review.create_publication(author, w.finding.id, public_title="P",
                                                 public_body="Public text.")

    def flag() -> Callable[[], Any]:
        reader = db.get(User, w.reader.id)
        return lambda: flags.create_flag(reader, w.finding.id, reason="Dual use.",
                                         suggested_level=None)

    results = _race(app, [ask, flag] * (P // 2))
    unexpected = [r for r in results if isinstance(r, Exception)
                  and not (isinstance(r, ServiceError) and r.status == 409)]
    assert not unexpected, unexpected
    assert len([r for r in results if isinstance(r, ReviewRequest)]) == 1, results
    assert len([r for r in results if isinstance(r, Flag)]) == 1, results
    db.rollback()
    assert db.scalar(select(func.count()).select_from(ReviewRequest)) == 1
    assert db.scalar(select(func.count()).select_from(Flag)) == 1
    assert audit.verify_chain().ok


def test_parallel_audit_appends_never_collide(app):
    home = make_org("home")
    user = make_user(home, name="logger", mfa_on=False)
    before = db.scalar(select(func.count()).select_from(audit.AuditEntry)) or 0

    def append(i: int) -> Callable[[], Callable[[], Any]]:
        def prepare() -> Callable[[], Any]:
            actor = db.get(User, user.id)
            db.rollback()  # no transaction open: the append itself must serialize

            def run() -> int:
                for j in range(5):
                    audit.record("race_test", actor=actor, target_id=f"{i}-{j}")
                    db.commit()
                return i
            return run
        return prepare

    results = _race(app, [append(i) for i in range(P)])
    assert results == list(range(P)), results
    db.rollback()
    seqs = list(db.scalars(select(audit.AuditEntry.seq).order_by(audit.AuditEntry.seq)))
    assert len(seqs) == before + 5 * P and seqs == list(range(1, len(seqs) + 1))
    assert audit.verify_chain().ok


def test_the_database_refuses_a_second_open_request_and_flag(app):
    """The invariants hold below the services too (a partial unique index on both
    engines): a raw insert of a duplicate is refused; closed ones may repeat."""
    from sqlalchemy.exc import IntegrityError

    from tests.review_world import build_world, publish_request

    w = build_world()
    req = publish_request(w)
    flag = flags.create_flag(w.reader, w.finding.id, reason="x", suggested_level=None)

    def copy_request(state: str) -> ReviewRequest:
        return ReviewRequest(kind=req.kind, finding_id=req.finding_id,
                             requester_id=req.requester_id, state=state, round=1,
                             from_level=req.from_level, target_level=req.target_level,
                             content_sha256=req.content_sha256)

    for duplicate in (copy_request("approved"),
                      Flag(finding_id=flag.finding_id, flagger_id=flag.flagger_id,
                           reason="again", suggested_level=flag.suggested_level,
                           level_at_flag=flag.level_at_flag, state="open")):
        db.add(duplicate)
        try:
            db.flush()
        except IntegrityError:
            db.rollback()
        else:
            raise AssertionError(f"the database accepted a duplicate {duplicate}")
    db.add(copy_request("withdrawn"))
    db.add(copy_request("released"))
    db.flush()
    db.rollback()
