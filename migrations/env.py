"""Alembic environment: the app's models are the target; the engine comes from the app."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

import app.models  # noqa: F401  (fills Base.metadata)
from app.db import Base

config = context.config


def render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    """Render our UTC column type as the plain SQLAlchemy type it stores."""
    from app.db import UTCDateTime

    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False

target_metadata = Base.metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Leave out the full-text search tables that migrations create by hand and the
    models cannot describe (SQLite FTS5 tables with their shadow tables, PostgreSQL
    tsvector tables). They are all named ``*_fts*``, as tests/test_migrations.py expects."""
    return not (type_ == "table" and "_fts" in (name or ""))


def _engine():  # type: ignore[no-untyped-def]
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("ENCLAVE_DATABASE_URL")
    return create_engine(url)


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"),
                      target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = _engine()
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # batch mode re-creates a table by copy, drop and rename: with foreign keys on,
            # dropping the old table would cascade-delete its children (e.g. a finding's
            # replies). Off for the migration (outside any transaction, or it is a no-op).
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            context.configure(connection=connection, target_metadata=target_metadata,
                              render_as_batch=sqlite, compare_type=True,
                              render_item=render_item, include_name=include_name)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
