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


def serialize_writes(session: Session | None = None) -> None:
    """Take the database's write lock now, before the reads a write depends on.

    On SQLite the driver opens a transaction only at the first INSERT/UPDATE/DELETE, so
    two writers can both read "no open request yet" (or the same last audit number) and
    then both write: ``SELECT ... FOR UPDATE`` means nothing there. ``BEGIN IMMEDIATE``
    takes SQLite's single writer lock at once (waiting up to the busy timeout), so the
    reads that follow see every committed write and no other writer can come between
    them and the write. A transaction that already wrote holds that lock already. On
    PostgreSQL this does nothing: callers lock rows (``FOR UPDATE``) or take an advisory
    lock there."""
    session = session if session is not None else db()
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        return
    raw = conn.connection.dbapi_connection
    if raw is not None and not raw.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10) -> Engine:
    """The app's engine. ``hide_parameters``: a database error (and SQLAlchemy's
    statement log, if someone turns it on) shows the statement, never the values."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

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
        # bound values (e-mail addresses, file names, sealed text) stay out of error
        # messages and of the statement log
        hide_parameters=True,
    )


def describe_db_error(exc: BaseException) -> str:
    """A database error for the log, without the values it was about.

    PostgreSQL's messages quote values (``DETAIL: Key (email)=(ann@acme.example)
    already exists``, ``invalid input syntax for type integer: "..."``), and so would
    SQLAlchemy's ``[parameters: ...]`` without ``hide_parameters``. This keeps the error
    class, SQLSTATE, the constraint/table/column names and the statement's text (which
    has placeholders, not values); SQLite's messages name columns, never values."""
    orig = getattr(exc, "orig", None) or exc
    parts = [type(orig).__name__]
    sqlstate = getattr(orig, "sqlstate", None)
    diag = getattr(orig, "diag", None)
    if sqlstate or diag is not None:  # psycopg: names only, never the message text
        if sqlstate:
            parts.append(f"sqlstate {sqlstate}")
        for name in ("schema_name", "table_name", "column_name", "constraint_name"):
            value = getattr(diag, name, None)
            if value:
                parts.append(f"{name.removesuffix('_name')} {value}")
    else:
        parts.append(str(orig).strip().splitlines()[0][:200] if str(orig).strip() else "")
    statement = getattr(exc, "statement", None)
    if statement:
        parts.append("in: " + " ".join(str(statement).split())[:300])
    return "; ".join(p for p in parts if p)


def bind(engine: Engine) -> None:
    """Make ``engine`` the default outside any app context (scripts)."""
    _fallback.configure(bind=engine)
