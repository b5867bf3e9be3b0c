"""No log line carries a protected value or a token (issue 12, item 6).

A representative set of flows runs with a marker word in every protected field (e-mail
address, name, password, finding title and body, attachment file name, search words)
and with real tokens (invitation, password reset, API token). Everything the app, Flask,
SQLAlchemy (its statement log turned on) and Werkzeug's development server log is
captured, as they write it, and searched for the markers and the tokens. A database
error quoting a marker (PostgreSQL's ``DETAIL: Key (...)=(...)`` and ``invalid input
syntax`` messages quote values) is logged too. The gunicorn and nginx access logs are
checked by tests/test_nginx_front.py, against the real servers.
"""

from __future__ import annotations

import io
import logging
import re
import socketserver
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

import pytest
from sqlalchemy import select, text
from werkzeug.serving import make_server

from app import state
from app.auth.models import User
from app.db import db
from tests.conftest import csrf_from
from tests.factories import login, make_finding, make_org, make_user, post_form
from tests.findings_world import make_category
from tests.test_auth import isolated_requests

__all__ = ["isolated_requests"]

MARK = "zqxmarker"  # in every protected value below; never in a log line
PASSWORD = f"{MARK}-harbour-violet-tundra"
NEW_PASSWORD = f"{MARK}-quiet-river-anchor-42"
RESET_RE = re.compile(r"/reset/([A-Za-z0-9_-]+)")
INVITE_RE = re.compile(r'id="invite-link">[^<]*?/invite/([A-Za-z0-9_-]+)<')


@pytest.fixture
def captured(app: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The app's own log handler writes here (as it writes to stderr in production);
    caplog receives what propagates to the root logger (Flask, SQLAlchemy, Werkzeug)."""
    monkeypatch.setattr(state.settings(), "instance_path", tmp_path)
    monkeypatch.setattr(state.settings(), "smtp_url", None)
    stream = io.StringIO()
    [handler] = logging.getLogger("enclave").handlers
    previous = handler.setStream(stream)
    caplog.set_level(logging.DEBUG)
    sql_log = logging.getLogger("sqlalchemy.engine")
    level = sql_log.level
    sql_log.setLevel(logging.INFO)  # every statement and its parameters, as echo=True
    app.extensions["enclave.engine"].dispose()  # connections made now log statements
    try:
        yield stream
    finally:
        handler.setStream(previous)
        sql_log.setLevel(level)
        app.extensions["enclave.engine"].dispose()


@pytest.fixture
def served(app: Any) -> Iterator[str]:
    """The same app behind Werkzeug's development server on a real port (its request
    lines are what `enclave run` logs)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return int(response.status)
    except HTTPError as exc:
        return exc.code


class RefusingSmtp(socketserver.StreamRequestHandler):
    """A mail server that refuses every recipient, quoting the address (as Postfix
    does: ``550 5.1.1 <address>: Recipient address rejected``)."""

    def handle(self) -> None:
        self.wfile.write(b"220 refusing ESMTP\r\n")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb == b"RCPT":
                address = line.split(b":", 1)[1].strip()
                self.wfile.write(b"550 5.1.1 " + address + b": Recipient address rejected\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def refusing_smtp() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), RefusingSmtp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def outbox_text(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob("*.eml")))


def test_no_log_line_carries_a_protected_value_or_a_token(app, captured, caplog, served,
                                                          tmp_path, api_token,
                                                          refusing_smtp, monkeypatch):
    hq = make_org("hq")
    acme = make_org("acme", domains=[f"{MARK}.example"])
    admin = make_user(hq, role="admin")
    secrets_seen: list[str] = []
    acme_id = acme.id

    # a database error quoting a marked value (PostgreSQL quotes values in its messages);
    # the route is added before the app's first request
    def bad_cast() -> str:
        db.execute(text("SELECT CAST(:v AS INTEGER) + 1"), {"v": f"12{MARK}"})
        db.execute(text("SELECT * FROM no_such_table WHERE x = :v"), {"v": MARK})
        return "unreachable"

    def duplicate() -> str:
        db.add(User(email=f"nova.{MARK}@{MARK}.example", username=f"twin{MARK}",
                    display_name=f"Twin {MARK}", org_id=acme_id, clearance="network",
                    role="member", password_hash="x"))
        db.flush()  # the address is taken: an IntegrityError naming it
        return "unreachable"

    app.add_url_rule("/_test/cast", "test_cast", bad_cast)
    app.add_url_rule("/_test/duplicate", "test_duplicate", duplicate)

    # an invitation, accepted with a marked name and password
    client = app.test_client()
    login(client, admin)
    page = post_form(client, "/admin/users/invite", {
        "email": f"nova.{MARK}@{MARK}.example", "org": "acme", "clearance": "restricted",
        "role": "member"}, form_url="/admin/users")
    assert page.status_code == 200, page.text
    invite_token = INVITE_RE.search(page.text).group(1)  # type: ignore[union-attr]
    secrets_seen.append(invite_token)
    guest = app.test_client()
    form = guest.get(f"/invite/{invite_token}")
    accepted = guest.post(f"/invite/{invite_token}", data={
        "username": f"nova{MARK}", "display_name": f"Nova {MARK}", "password": PASSWORD,
        "confirm": PASSWORD, "csrf_token": csrf_from(form.text)})
    assert accepted.status_code == 302, accepted.text

    # sign-in: a wrong password, then the right one
    nova = db.scalar(select(User).where(User.username == f"nova{MARK}"))
    assert nova is not None
    page = guest.get("/login")
    refused = guest.post("/login", data={"email": nova.email, "password": f"{MARK}-wrong-pw",
                                         "csrf_token": csrf_from(page.text)})
    assert refused.status_code in (200, 400, 401)
    page = guest.get("/login")
    signed = guest.post("/login", data={"email": nova.email, "password": PASSWORD,
                                        "csrf_token": csrf_from(page.text)})
    assert signed.status_code == 302

    # a password reset, asked for and used
    other = app.test_client()
    page = other.get("/forgot")
    other.post("/forgot", data={"email": nova.email, "csrf_token": csrf_from(page.text)},
               buffered=True)
    reset_token = RESET_RE.search(outbox_text(tmp_path / "outbox")).group(1)  # type: ignore[union-attr]
    secrets_seen.append(reset_token)
    form = other.get(f"/reset/{reset_token}")
    done = other.post(f"/reset/{reset_token}", data={
        "password": NEW_PASSWORD, "confirm": NEW_PASSWORD, "csrf_token": csrf_from(form.text)})
    assert done.status_code == 302, done.text

    # a mail server refusing the address (and quoting it)
    monkeypatch.setattr(state.settings(), "smtp_url", f"smtp://127.0.0.1:{refusing_smtp}")
    page = other.get("/forgot")
    other.post("/forgot", data={"email": nova.email, "csrf_token": csrf_from(page.text)},
               buffered=True)
    monkeypatch.setattr(state.settings(), "smtp_url", None)

    # content: a finding with marked title and body, over the API with a marked file name
    make_category("circuits")
    author = make_user(acme, name=f"author{MARK}", clearance="confidential")
    headers = api_token(author)
    secrets_seen.append(headers["Authorization"].split()[1])
    created = app.test_client().post("/api/v1/findings", headers=headers, json={
        "title": f"Title {MARK}", "body": f"Body {MARK} text.", "level": "network",
        "category": "circuits"})
    assert created.status_code == 201, created.text
    finding = make_finding(author, level="restricted", title=f"Second {MARK}",
                           body=f"Restricted {MARK} body")

    # through a real server: the token links, a search and an upload naming a file
    for path in (f"/invite/{invite_token}", f"/reset/{reset_token}",
                 f"/findings/search?q={MARK}"):
        fetch(served + path)
    status = fetch(f"{served}/api/v1/findings/{finding.id}/attachments?filename={MARK}.txt",
                   data=f"notes {MARK}".encode(),
                   headers={**headers, "Content-Type": "application/octet-stream"})
    assert status == 201
    assert fetch(f"{served}/api/v1/findings/{finding.id}", headers=headers) == 200

    assert app.test_client().get("/_test/cast").status_code in (500, 503)  # 503: SQLite
    assert app.test_client().get("/_test/duplicate").status_code == 500

    logged = captured.getvalue() + "\n" + caplog.text
    # the capture works: these were logged, only without the secrets
    assert "unhandled database error" in logged
    assert "SMTPRecipientsRefused: 1 recipient(s) refused (SMTP 550)" in logged
    assert "SQL parameters hidden" in logged
    assert "/reset/[redacted]" in logged and "/invite/[redacted]" in logged
    assert "/findings/search?[redacted]" in logged
    lines = [line for line in logged.splitlines()
             if MARK in line.lower() or any(s in line for s in secrets_seen)]
    assert lines == []
