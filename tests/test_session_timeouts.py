"""Idle and absolute session timeouts from the settings, with signed-cookie sessions and
with Redis sessions (db 14, flushed). Time is moved honestly: the sign-in and last-seen
times the app keeps in the session are set back, as if the session were that old."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import redis_test_url, running_app
from tests.factories import login, make_org, make_user
from tests.test_auth import isolated_requests, text

__all__ = ["isolated_requests"]  # autouse: every test client is request-isolated

REDIS_URL = redis_test_url(14)
IDLE_MINUTES = 30
ABSOLUTE_HOURS = 8


@pytest.fixture(params=["cookie", "redis"])
def app(request: pytest.FixtureRequest, migrated: str, instance_dir: Path) -> Iterator[Flask]:
    overrides: dict[str, Any] = {"session_idle_minutes": IDLE_MINUTES,
                                 "session_absolute_hours": ABSOLUTE_HOURS}
    if request.param == "redis":
        overrides["redis_url"] = REDIS_URL
        redis.Redis.from_url(REDIS_URL).flushdb()
    with running_app(migrated, instance_dir, **overrides) as app:
        if request.param == "redis":
            from app.sessions import ResilientRedisSessionInterface

            assert isinstance(app.session_interface, ResilientRedisSessionInterface)
        yield app
    if request.param == "redis":
        redis.Redis.from_url(REDIS_URL).flushdb()


@pytest.fixture
def member(app: Flask) -> FlaskClient:
    client = app.test_client()
    response = login(client, make_user(make_org(), mfa_on=False))
    assert response.status_code == 302 and "/login" not in response.location
    assert client.get("/home").status_code == 200
    return client


def age(client: FlaskClient, *, login_ago: int, seen_ago: int) -> None:
    now = int(time.time())
    with client.session_transaction() as session:
        assert "login_at" in session and "seen_at" in session
        session["login_at"] = now - login_ago
        session["seen_at"] = now - seen_ago


def expired(client: FlaskClient) -> bool:
    response = client.get("/home")
    if response.status_code == 200:
        return False
    assert response.status_code == 302 and "/login" in response.location
    assert "next=/home" in response.location
    landing = client.get(response.location)
    assert "Your session expired. Please sign in again." in text(landing)
    return True


def test_an_active_session_stays_and_is_marked_seen(member):
    age(member, login_ago=ABSOLUTE_HOURS * 3600 - 120, seen_ago=IDLE_MINUTES * 60 - 120)
    assert not expired(member)
    with member.session_transaction() as session:
        assert int(time.time()) - session["seen_at"] < 5  # the visit counts as activity
    assert member.get("/home").status_code == 200


def test_an_idle_session_is_signed_out(member):
    age(member, login_ago=600, seen_ago=IDLE_MINUTES * 60 + 5)
    assert expired(member)
    assert member.get("/home").status_code == 302  # signed out for good, not just once


def test_a_session_past_the_absolute_limit_is_signed_out_even_when_active(member):
    age(member, login_ago=ABSOLUTE_HOURS * 3600 + 5, seen_ago=10)
    assert expired(member)
    assert member.get("/home").status_code == 302


def test_activity_keeps_pushing_the_idle_limit_back(member):
    # seen 25 minutes ago (under the 30-minute limit): the visit renews it ...
    age(member, login_ago=3600, seen_ago=25 * 60)
    assert not expired(member)
    # ... so another 25 minutes later the session is still alive (50 minutes in all)
    with member.session_transaction() as session:
        session["seen_at"] = int(time.time()) - 25 * 60
    assert not expired(member)
