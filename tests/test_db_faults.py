"""Database faults against the real PostgreSQL server: connections dropped between and
during requests (as when PostgreSQL restarts), interrupted multi-row writes, and
concurrent writers of the same finding or request.

PostgreSQL dying is simulated by terminating this test app's own server connections
(found by a unique ``application_name``): the shared server is never restarted.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import Engine, make_url

from app import audit
from app.auth.models import User
from app.db import db
from app.errors import ServiceError
from app.findings import service as findings
from app.findings.models import Finding, FindingOrg, FindingRevision, Reply
from app.notifications.models import Notification
from app.review import flags
from app.review import service as review
from app.review.models import Flag, Review, ReviewRequest
from app.review.pins import current as seen_of
from app.submissions import service as submissions
from app.submissions.models import FormSubmission
from tests.conftest import csrf_from, running_app
from tests.factories import login, make_finding, make_org, make_user
from tests.findings_world import make_category
from tests.pg_private import TEST_DB_URL, requires_postgres
from tests.review_world import scores

pytestmark = requires_postgres

UNAVAILABLE = "The database is unavailable for a moment"


# ------------------------------------------------------------------ killing connections


@dataclass
class Saboteur:
    """Terminates this app's server connections: all of them (between requests), or the
    one running a chosen statement or commit (during a request)."""

    app_name: str
    engine: Engine  # the app's engine
    admin: Engine = field(init=False)
    fired: int = 0
    _armed: Callable[[str], bool] | None = None
    _at_commit: bool = False

    def __post_init__(self) -> None:
        self.admin = create_engine(TEST_DB_URL, isolation_level="AUTOCOMMIT")
        event.listen(self.engine, "before_cursor_execute", self._before_execute)
        event.listen(self.engine, "commit", self._before_commit)

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before_execute)
        event.remove(self.engine, "commit", self._before_commit)
        self.admin.dispose()

    def _terminate(self, pid: int | None = None) -> int:
        """Terminate (and wait for) the app's backends: one, or all of them."""
        with self.admin.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                "WHERE application_name = :name AND pid <> pg_backend_pid() "
                "AND (CAST(:pid AS integer) IS NULL OR pid = :pid)"),
                {"name": self.app_name, "pid": pid}).scalar() or 0)

    def kill_all(self) -> int:
        """Every connection of the app's pool, as a server restart would."""
        return self._terminate()

    def _kill(self, conn: Any) -> None:
        assert self._terminate(conn.connection.dbapi_connection.info.backend_pid) == 1
        self.fired += 1

    def kill_at(self, match: Callable[[str], bool]) -> None:
        """Kill the connection about to run the next statement that ``match`` accepts."""
        self._armed = match

    def kill_at_commit(self) -> None:
        """Kill the connection just before its next COMMIT reaches the server."""
        self._at_commit = True

    def _before_execute(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if self._armed is not None and self._armed(statement):
            self._armed = None
            self._kill(conn)

    def _before_commit(self, conn: Any) -> None:
        if self._at_commit:
            self._at_commit = False
            self._kill(conn)


@pytest.fixture
def fault_app(migrated: str, instance_dir: Any) -> Iterator[Flask]:
    """Like ``app``, with connections labelled by a unique application_name."""
    name = f"enclave-faults-{secrets.token_hex(4)}"
    url = make_url(migrated).update_query_dict({"application_name": name})
    with running_app(url.render_as_string(hide_password=False), instance_dir) as app:
        app.config["FAULT_APP_NAME"] = name
        yield app


@pytest.fixture
def saboteur(fault_app: Flask) -> Iterator[Saboteur]:
    s = Saboteur(fault_app.config["FAULT_APP_NAME"], fault_app.extensions["enclave.engine"])
    try:
        yield s
    finally:
        s.close()


def _world() -> dict[str, Any]:
    home, other = make_org("home"), make_org("other")
    make_category("circuits")
    reader = make_user(home, name="reader", mfa_on=False)
    finding = make_finding(make_user(other, name="author", mfa_on=False), title="Stable")
    return {"home": home, "other": other, "reader": reader, "finding": finding}


def _counts() -> dict[str, int]:
    db.rollback()
    return {model.__tablename__: db.scalar(select(func.count()).select_from(model)) or 0
            for model in (Finding, FindingOrg, Reply, Notification, audit.AuditEntry)}


# ------------------------------------------------------------------ connections lost


def test_connections_killed_between_requests_are_replaced(fault_app, saboteur, api_token):
    w = _world()
    client = fault_app.test_client()
    login(client, w["reader"])
    headers = api_token(w["reader"])
    assert client.get("/findings/").status_code == 200
    assert client.get("/api/v1/findings", headers=headers).status_code == 200
    assert saboteur.kill_all() >= 1
    # pre-ping notices the dead connections: the next requests just work
    assert client.get("/findings/").status_code == 200
    assert client.get(f"/findings/{w['finding'].id}").status_code == 200
    assert client.get("/api/v1/findings", headers=headers).status_code == 200
    assert saboteur.kill_all() >= 1
    assert client.get("/healthz").json["checks"]["database"] == "ok"


def test_connection_lost_during_a_page_gives_a_clean_503(fault_app, saboteur):
    w = _world()
    client = fault_app.test_client()
    login(client, w["reader"])
    saboteur.kill_at(lambda sql: "FROM findings" in sql)
    response = client.get("/findings/")
    assert saboteur.fired == 1
    assert response.status_code == 503
    assert UNAVAILABLE in response.text
    assert "Traceback" not in response.text and "psycopg" not in response.text
    assert response.headers["Retry-After"] == "5"
    # the next request gets a fresh connection
    page = client.get("/findings/")
    assert page.status_code == 200 and "Stable" in page.text


def test_connection_lost_during_an_api_call_gives_a_json_503(fault_app, saboteur, api_token):
    w = _world()
    headers = api_token(w["reader"])
    client = fault_app.test_client()
    url = f"/api/v1/findings/{w['finding'].id}"
    assert client.get(url, headers=headers).status_code == 200
    saboteur.kill_at(lambda sql: "FROM findings" in sql)
    response = client.get(url, headers=headers)
    assert saboteur.fired == 1
    assert response.status_code == 503
    assert response.json["error"]["code"] == "database_unavailable"
    assert UNAVAILABLE in response.json["error"]["message"]
    # the 503's own Retry-After, not the rate limiter's window (it rewrites the header)
    assert response.headers["Retry-After"] == "5"
    ok = client.get(url, headers=headers)
    assert ok.status_code == 200 and ok.json["title"] == "Stable"


def test_connection_lost_during_a_search_is_a_503_not_a_bad_query(fault_app, saboteur):
    w = _world()
    client = fault_app.test_client()
    login(client, w["reader"])
    saboteur.kill_at(lambda sql: "ts_rank" in sql or "to_tsquery" in sql)
    response = client.get("/findings/search?q=body")
    assert saboteur.fired == 1
    assert response.status_code == 503 and UNAVAILABLE in response.text


def _new_finding_form(client: Any, title: str, arm: Callable[[], None] = lambda: None) -> Any:
    """Send the new-finding form; ``arm`` sets the fault up once the form page is read."""
    page = client.get("/findings/new")
    assert page.status_code == 200
    arm()
    return client.post("/findings/new", data={
        "title": title, "body": "A compartmented note.", "category": "circuits",
        "level": "network", "orgs": ["other"], "csrf_token": csrf_from(page.text)})


def _inserting(table: str) -> Callable[[str], bool]:
    return lambda sql: sql.lstrip().upper().startswith(f"INSERT INTO {table.upper()} ")


def test_an_interrupted_multi_row_write_leaves_nothing(fault_app, saboteur):
    """A new compartmented finding writes the finding, its compartment rows, an audit
    entry, a watch, a read marker and notifications in one transaction: a connection
    lost at any point, including the COMMIT itself, leaves none of them."""
    w = _world()
    from app.notifications import service as notify

    notify.watch_category(make_user(w["other"], name="watcher", mfa_on=False),
                          make_category("circuits"))
    client = fault_app.test_client()
    login(client, w["reader"])
    before = _counts()
    for arm in (lambda: saboteur.kill_at(_inserting("finding_orgs")),
                lambda: saboteur.kill_at(_inserting("notifications")),
                saboteur.kill_at_commit):
        response = _new_finding_form(client, "Half written?", arm)
        assert response.status_code == 503 and UNAVAILABLE in response.text
        assert _counts() == before
    assert saboteur.fired == 3
    assert not [f for f in db.scalars(select(Finding)) if f.title == "Half written?"]
    assert audit.verify_chain().ok
    # and once the database answers again, the same form goes through, whole
    response = _new_finding_form(client, "Half written?")
    assert response.status_code == 302, response.text
    after = _counts()
    assert after["findings"] == before["findings"] + 1
    assert after["finding_orgs"] == before["finding_orgs"] + 2
    assert after["notifications"] == before["notifications"] + 1
    assert audit.verify_chain().ok


def test_an_interrupted_reply_does_not_count(fault_app, saboteur):
    w = _world()
    client = fault_app.test_client()
    login(client, w["reader"])
    url = f"/findings/{w['finding'].id}"
    page = client.get(url)  # opening the page writes a read marker too: arm after it
    saboteur.kill_at(_inserting("finding_reads"))
    response = client.post(f"{url}/replies", data={"body": "Lost?",
                                                   "csrf_token": csrf_from(page.text)})
    assert saboteur.fired == 1 and response.status_code == 503
    db.rollback()
    db.expire_all()
    finding = db.get(Finding, w["finding"].id)
    assert finding.reply_count == 0 and finding.last_reply_at is None
    assert db.scalar(select(func.count()).select_from(Reply)) == 0


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


def test_concurrent_edits_of_one_finding_lose_no_version(fault_app):
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
    results = _race(fault_app, [editor(u, b) for u, b in zip(users, bodies, strict=True)])
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


def test_concurrent_raise_and_edit_keep_the_raised_level(fault_app):
    home = make_org("home")
    author = make_user(home, name="author", clearance="confidential")
    finding = make_finding(author, title="Original", body="version 0")

    def run(**change: Any) -> Callable[[], Callable[[], Any]]:
        def prepare() -> Callable[[], Any]:
            user, target = db.get(User, author.id), db.get(Finding, finding.id)
            return lambda: findings.edit_finding(user, target, **change)
        return prepare

    results = _race(fault_app, [run(level="confidential"), run(body="version 1")])
    assert results == [True, True], results
    db.rollback()
    db.expire_all()
    current = db.get(Finding, finding.id)
    assert current.level == "confidential" and current.body == "version 1"


def _review_world() -> Any:
    from tests.review_world import build_world, publish_request

    w = build_world()
    return w, publish_request(w)


def test_one_review_per_reviewer_even_when_submitted_at_once(fault_app):
    w, req = _review_world()

    def submit() -> Callable[[], Any]:
        reviewer = db.get(User, w.rev_b.id)
        target = review.request_for_review(reviewer, req.id)
        return lambda: review.add_review(reviewer, target, seen=seen_of(target),
                                         decision="approve", risk="low",
                                         scores=scores(), comment="Fine.")

    results = _race(fault_app, [submit] * 4)
    accepted = [r for r in results if isinstance(r, Review)]
    refused = [r for r in results if isinstance(r, ServiceError)]
    assert len(accepted) == 1 and len(refused) == 3, results
    assert {e.code for e in refused} == {"duplicate_review"}
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Review)
                     .where(Review.request_id == req.id)) == 1


def test_concurrent_reviews_by_different_reviewers_reach_the_quorum(fault_app):
    w, req = _review_world()

    def by(user_id: int) -> Callable[[], Callable[[], Any]]:
        def submit() -> Callable[[], Any]:
            reviewer = db.get(User, user_id)
            target = review.request_for_review(reviewer, req.id)
            return lambda: review.add_review(reviewer, target, seen=seen_of(target),
                                             decision="approve",
                                             risk="low", scores=scores(), comment="Fine.")
        return submit

    results = _race(fault_app, [by(w.rev_b.id), by(w.rev_c.id)])
    assert all(isinstance(r, Review) for r in results), results
    db.rollback()
    db.expire_all()
    assert db.get(ReviewRequest, req.id).state == "approved"


def test_one_open_publication_request_even_when_asked_at_once(fault_app):
    from tests.review_world import build_world

    w = build_world()

    def ask() -> Callable[[], Any]:
        author = db.get(User, w.author.id)
        return lambda: review.create_publication(author, w.finding.id, public_title="Public",
                                                 public_body="Public text.")

    results = _race(fault_app, [ask] * 4)
    accepted = [r for r in results if isinstance(r, ReviewRequest)]
    assert len(accepted) == 1, results
    assert all(isinstance(r, ServiceError) and r.code == "open_request"
               for r in results if r not in accepted), results
    db.rollback()
    assert db.scalar(select(func.count()).select_from(ReviewRequest)
                     .where(ReviewRequest.finding_id == w.finding.id)) == 1


def test_one_open_flag_per_reader_even_when_flagged_at_once(fault_app):
    from tests.review_world import build_world

    w = build_world()

    def flag() -> Callable[[], Any]:
        reader = db.get(User, w.reader.id)
        return lambda: flags.create_flag(reader, w.finding.id, reason="Dual use.",
                                         suggested_level=None)

    results = _race(fault_app, [flag] * 4)
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


def test_double_submitted_forms(fault_app):
    """What a double click does: the same new-finding form sent twice posts one finding
    (the second lands on it); a publication request sent twice is refused the second
    time even without a token (one open request per finding)."""
    w = _world()
    client = fault_app.test_client()
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


def test_the_same_new_finding_form_sent_at_once_posts_one(fault_app):
    """N tabs (sessions) of one user post the same form, token and all, at the same
    moment: one finding; every other answer is a redirect to it."""
    w = _world()
    page_client = fault_app.test_client()
    login(page_client, w["reader"])
    token = _token_from(page_client.get("/findings/new").text)
    clients = []
    for _ in range(N):
        client = fault_app.test_client()
        login(client, w["reader"])
        clients.append((client, csrf_from(client.get("/findings/new").text)))
    db.remove()

    def post(i: int) -> Callable[[], Callable[[], Any]]:
        client, csrf = clients[i]
        data = {"title": "At once", "body": "Sent from every tab.", "category": "circuits",
                "level": "network", "orgs": ["other"], "csrf_token": csrf,
                "submission": token}
        return lambda: lambda: client.post("/findings/new", data=data)

    results = _race(fault_app, [post(i) for i in range(N)])
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


def test_the_same_reply_token_at_once_posts_one_reply(fault_app):
    w = _world()
    token = submissions.new_token()

    def reply() -> Callable[[], Any]:
        user, target = db.get(User, w["reader"].id), db.get(Finding, w["finding"].id)
        return lambda: findings.add_reply(user, target, "Only once.", submission=token)

    results = _race(fault_app, [reply] * N)
    accepted = [r for r in results if isinstance(r, Reply)]
    repeated = [r for r in results if isinstance(r, submissions.AlreadySubmitted)]
    assert len(accepted) == 1 and len(repeated) == N - 1, results
    assert {(e.target_type, e.target_id) for e in repeated} == {("reply", accepted[0].id)}
    db.rollback()
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Reply)) == 1
    assert db.get(Finding, w["finding"].id).reply_count == 1


def test_edits_from_one_base_version_at_once_one_wins(fault_app):
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
    results = _race(fault_app, [editor(u, f"edit {i}") for i, u in enumerate(users)])
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


def test_api_patches_with_one_if_match_at_once_one_wins(fault_app, api_token):
    home = make_org("home")
    author = make_user(home, name="author", mfa_on=False)
    finding = make_finding(author, title="Original", body="version 0")
    headers = api_token(author)
    client = fault_app.test_client()
    fid = finding.id
    etag = client.get(f"/api/v1/findings/{fid}", headers=headers).headers["ETag"]
    db.remove()

    def patch(i: int) -> Callable[[], Callable[[], Any]]:
        return lambda: lambda: fault_app.test_client().patch(
            f"/api/v1/findings/{fid}", json={"body": f"api edit {i}"},
            headers={**headers, "If-Match": etag})

    results = _race(fault_app, [patch(i) for i in range(N)])
    codes = sorted(r.status_code for r in results)
    assert codes == [200] + [409] * (N - 1), codes
    assert {r.json["error"]["code"] for r in results if r.status_code == 409} == \
        {"edit_conflict"}
    db.rollback()
    assert db.scalar(select(func.count()).select_from(FindingRevision)
                     .where(FindingRevision.finding_id == fid)) == 1


def test_duplicate_votes_of_several_reviewers_at_once_one_review_each(fault_app):
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
    results = _race(fault_app, [by(u) for u in reviewers for _ in range(2)])
    accepted = [r for r in results if isinstance(r, Review)]
    refused = [r for r in results if isinstance(r, ServiceError)]
    assert len(accepted) == 3 and len(refused) == 3, results
    assert {e.code for e in refused} == {"duplicate_review"}
    db.rollback()
    db.expire_all()
    rows = list(db.scalars(select(Review.reviewer_id).where(Review.request_id == req.id)))
    assert sorted(rows) == sorted(reviewers)
    assert db.get(ReviewRequest, req.id).state == "approved"
