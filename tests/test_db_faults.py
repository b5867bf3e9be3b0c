"""Database faults against the real PostgreSQL server: connections dropped between and
during requests (as when PostgreSQL restarts), interrupted multi-row writes, and
concurrent writers of the same finding or request.

PostgreSQL dying is simulated by terminating this test app's own server connections
(found by a unique ``application_name``): the shared server is never restarted.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import Engine, make_url

from app import audit
from app.db import db
from app.findings.models import Finding, FindingOrg, Reply
from app.notifications.models import Notification
from tests.conftest import csrf_from, running_app
from tests.factories import login, make_finding, make_org, make_user
from tests.findings_world import make_category
from tests.pg_private import TEST_DB_URL, requires_postgres

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
    # the search's own statement: term hashes matched against the keyed index (GIN array)
    saboteur.kill_at(lambda sql: " && " in sql or " @> " in sql)
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
