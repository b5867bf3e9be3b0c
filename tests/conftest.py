"""Test fixtures: a real database (SQLite by default, PostgreSQL through
ENCLAVE_TEST_DATABASE_URL), migrated once with alembic, emptied after every test."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from app import create_app
from app.db import Base, db

TEST_DB_URL = os.environ.get("ENCLAVE_TEST_DATABASE_URL", "")
#: The Redis server the Redis-backed tests use (each test module takes its own database
#: number on it and empties it). Point it at a private server to run two suites at once.
TEST_REDIS_SERVER = os.environ.get("ENCLAVE_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|'
                     r'name="csrf_token" value="([^"]+)"')


def redis_test_url(database: int) -> str:
    """The URL of one Redis database on the test Redis server."""
    return f"{TEST_REDIS_SERVER}/{database}"


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    if TEST_DB_URL:
        _reset_postgres(TEST_DB_URL)
        return TEST_DB_URL
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


@pytest.fixture(scope="session")
def instance_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("instance")


def make_app(database_url: str, instance_dir: Path, **overrides: Any) -> Flask:
    settings: dict[str, Any] = {
        "env": "test",
        "database_url": database_url,
        "instance_path": instance_dir,
        "keyring_path": instance_dir / "keyring.json",
        "secret_key": "test-secret-key-" + "x" * 32,
        "login_limit": "1000 per minute",
        "login_account_limit": "1000 per minute",
        "api_limit": "10000 per minute",
        "reset_limit": "1000 per minute",
        "search_limit": "10000 per minute",
    }
    settings.update(overrides)
    app = create_app(settings)

    def fresh_g() -> None:
        """Tests keep an app context pushed, which Flask reuses for every test-client
        request; production gives each request a new one. Clear ``g`` so that nothing
        (the signed-in user, the CSRF token) leaks from one request into the next."""
        for name in list(vars(g)):
            delattr(g, name)

    app.before_request_funcs.setdefault(None, []).insert(0, fresh_g)
    return app


@pytest.fixture(scope="session")
def migrated(database_url: str, instance_dir: Path) -> str:
    from app.migrate import upgrade_to_head

    app = make_app(database_url, instance_dir)
    with app.app_context():
        upgrade_to_head()
    app.extensions["enclave.engine"].dispose()
    return database_url


def empty_database() -> None:
    db.rollback()
    with db.get_bind().begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    db.remove()


@contextmanager
def running_app(database_url: str, instance: Path, **overrides: Any) -> Iterator[Flask]:
    """An app with its context pushed; the database is emptied when it ends."""
    app = make_app(database_url, instance, **overrides)
    ctx = app.app_context()
    ctx.push()
    try:
        yield app
    finally:
        empty_database()
        ctx.pop()
        app.extensions["enclave.engine"].dispose()


@pytest.fixture
def app(migrated: str, instance_dir: Path) -> Iterator[Flask]:
    with running_app(migrated, instance_dir) as app:
        yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def clock() -> Iterator[Any]:
    """The app's clock, fixed at the wall time when the test starts: ``clock.advance(
    timedelta(days=366))`` moves every deadline check (and every new timestamp)."""
    from app import clock as app_clock

    app_clock.set_time(app_clock.now())
    try:
        yield app_clock
    finally:
        app_clock.set_time(None)


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1) or match.group(2)


from tests.factories import *  # noqa: E402,F403
