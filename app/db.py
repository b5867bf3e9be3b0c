"""Engine, session and declarative base (plain SQLAlchemy 2, typed models)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from flask import current_app, has_app_context
from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, scoped_session, sessionmaker
from sqlalchemy.types import TypeDecorator

from app import clock

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Now, from the app's clock (``app.clock``: the wall clock unless a test set it)."""
    return clock.now()


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


_fallback = sessionmaker(expire_on_commit=False)


def _new_session() -> Session:
    """A session bound to the current app's engine (several apps may share a process:
    tests, the two-instance test), or to the last bound engine outside an app."""
    if has_app_context():
        return Session(bind=current_app.extensions["enclave.engine"], expire_on_commit=False)
    return _fallback()


def _scope() -> tuple[int, int]:
    app_id = id(current_app._get_current_object()) if has_app_context() else 0
    return threading.get_ident(), app_id


SessionFactory = _new_session
db: scoped_session[Session] = scoped_session(_new_session, scopefunc=_scope)


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
            from app.findings.search_index import register_sqlite

            register_sqlite(dbapi_conn)  # the search's scoring function

        return engine
    # JIT compilation costs 10-90 ms and never pays off on these short queries
    connect_args = {"options": "-c jit=off"} if url.startswith("postgresql") else {}
    return create_engine(
        url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow,
        connect_args=connect_args,
    )


def bind(engine: Engine) -> None:
    """Make ``engine`` the default outside any app context (scripts)."""
    _fallback.configure(bind=engine)
