"""Private PostgreSQL databases for the tests that cannot share the suite's database
(several servers on one database, connections killed on purpose), and the marks that
skip those tests when the suite runs on SQLite."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

TEST_DB_URL = os.environ.get("ENCLAVE_TEST_DATABASE_URL", "")
ON_POSTGRES = TEST_DB_URL.startswith("postgresql")

requires_postgres = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(not ON_POSTGRES, reason=(
        "needs PostgreSQL: set ENCLAVE_TEST_DATABASE_URL=postgresql+psycopg://... "
        "(CI runs the suite on PostgreSQL too)")),
]


@contextmanager
def private_database(prefix: str) -> Iterator[str]:
    """A new, empty database on the test server (dropped afterwards); yields its URL."""
    base = make_url(TEST_DB_URL)
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
