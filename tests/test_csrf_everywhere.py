"""CSRF on every state-changing page route: each POST/PUT/PATCH/DELETE rule outside
/api/ and /scim/ is sent by a signed-in administrator and by a signed-in member, with no token and
with a forged one, against real seeded ids and valid form data. Each must be refused
(400) and change nothing: every table's rows, the audit log included, are the same
before and after. The API is bearer-only (no cookies), so it needs no CSRF token."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app import audit
from app.db import Base, db
from tests.factories import login
from tests.test_route_matrix import ALL_ROUTES, World, _targets, build_world

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
FORGED = "IjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njci.Zm9yZ2Vk.c2lnbmF0dXJl"


def _web_rules(app: Flask) -> list[tuple[str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(("/api/", "/scim/")):  # bearer tokens only, no cookies
            continue
        for method in sorted((rule.methods or set()) & UNSAFE):
            out.append((rule.endpoint, method))
    return sorted(set(out))


def _state() -> tuple[Any, ...]:
    """Row counts of every table, the audit log's length, and every row's content."""
    db.rollback()
    rows = tuple((t.name, tuple(db.execute(select(t)).all()))
                 for t in Base.metadata.sorted_tables)
    counts = tuple((name, len(r)) for name, r in rows)
    audit_len = len(db.execute(select(audit.AuditEntry.seq)).all())
    return counts, audit_len, rows


def _send(client: FlaskClient, endpoint: str, method: str, url: str,
          token: str | None) -> Any:
    spec = ALL_ROUTES[endpoint]
    if spec.raw:  # the upload XHR: the token travels in a header
        headers = {"Content-Type": "application/octet-stream"}
        if token:
            headers["X-CSRFToken"] = token
        return client.open(url, method=method, data=b"payload", headers=headers,
                           query_string={"filename": "x.bin"})
    data = dict(spec.form or {})
    if token:
        data["csrf_token"] = token
    return client.open(url, method=method, data=data)


def test_every_unsafe_page_route_is_listed(app: Flask) -> None:
    """Guards the parametrization below: it is built from the same route table."""
    assert _web_rules(app), "no state-changing page routes found"
    for endpoint, _method in _web_rules(app):
        assert endpoint in ALL_ROUTES, f"{endpoint}: add it to tests/test_route_matrix.py"


@pytest.fixture
def world_clients(app: Flask) -> tuple[World, dict[str, FlaskClient], dict[str, Any]]:
    world = World()
    u = build_world(world)
    clients = {}
    for key in ("admin", "author"):
        client = app.test_client()
        response = login(client, u[key])
        assert response.status_code == 302 and "/login" not in response.location
        clients[key] = client
    return world, clients, u


def test_csrf_everywhere(app: Flask,
                         world_clients: tuple[World, dict[str, FlaskClient], Any]) -> None:
    world, clients, users = world_clients
    adapter = app.url_map.bind("localhost")
    checked = 0
    problems = []
    rules = {(r.endpoint, m): r for r in app.url_map.iter_rules() for m in (r.methods or ())}
    for endpoint, method in _web_rules(app):
        rule = rules[(endpoint, method)]
        targets = _targets(ALL_ROUTES[endpoint].target, rule, world)
        url = adapter.build(endpoint, targets[0].values, method=method)
        for who, client in clients.items():
            for token in (None, FORGED):
                before = _state()
                response = _send(client, endpoint, method, url, token)
                after = _state()
                checked += 1
                where = f"{method} {url} as {who} ({'forged' if token else 'no'} token)"
                if response.status_code != 400:
                    problems.append(f"{where}: {response.status_code}")
                if after != before:
                    changed = [b[0] for b, a in zip(before[2], after[2], strict=True)
                               if a != b]
                    problems.append(f"{where}: changed {changed}")
        for who, client in clients.items():  # the refusals did not end the sessions
            if client.get("/home").status_code != 200:
                problems.append(f"{method} {url} without a token signed {who} out")
                login(client, users[who])
    assert not problems, "\n".join(problems)
    print(f"\nCSRF: {len(_web_rules(app))} state-changing page routes x 2 users x "
          f"2 token cases = {checked} refusals checked")
