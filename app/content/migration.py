"""Helpers for the alembic revisions that move text columns to sealed envelopes.

Upgrade: the column becomes binary and every non-empty value becomes a *legacy* envelope
(``0x02`` + UTF-8, still readable by whoever holds the database); a ``content_jobs`` row
asks ``enclave content encrypt`` (run by ``enclave init`` right after migrating) to seal
them in resumable batches and build the search index.

Downgrade: every value is opened (sealed, public or legacy) and the column goes back to
text. Opening needs the keyring, so a downgrade runs inside the app (``enclave`` or
tests). The level of each value is found by trying the keyring's levels: the associated
data names the level, so only the right one opens.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from app.crypto.fields import LEGACY, PLAIN, SEALED, FieldIntegrityError, envelope_kind


def _keys() -> Any:
    from flask import current_app

    from app.crypto.fields import content_keys

    return content_keys(current_app.extensions["enclave.keyring"])


def to_sealed(table: str, columns: list[tuple[str, Any]], *, pk: str = "id") -> None:
    """Text columns ``[(name, old type)]`` of ``table`` to binary legacy envelopes."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for name, _old in columns:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {name} DROP DEFAULT")
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {name} TYPE bytea USING "
                       f"CASE WHEN {name} = '' THEN ''::bytea "
                       f"ELSE '\\x02'::bytea || convert_to({name}, 'UTF8') END")
    else:
        with op.batch_alter_table(table) as batch:
            for name, old in columns:
                batch.alter_column(name, existing_type=old, type_=sa.LargeBinary(),
                                   server_default=None)
        for name, _old in columns:
            op.execute(f"UPDATE {table} SET {name} = CASE WHEN {name} IS NULL THEN NULL "  # noqa: S608
                       f"WHEN length({name}) = 0 THEN X'' "
                       f"ELSE CAST(X'02' || CAST({name} AS TEXT) AS BLOB) END")
    jobs = sa.table("content_jobs", sa.column("kind", sa.String),
                    sa.column("table_name", sa.String), sa.column("last_id", sa.String),
                    sa.column("done", sa.Boolean), sa.column("changed", sa.Integer),
                    sa.column("updated_at", sa.DateTime(timezone=True)))
    from app.db import utcnow

    empty = bind.execute(sa.text(f"SELECT 1 FROM {table} LIMIT 1")).first() is None  # noqa: S608
    exists = bind.execute(sa.select(jobs.c.kind).where(jobs.c.kind == "encrypt",
                                                       jobs.c.table_name == table)).first()
    if exists:
        bind.execute(jobs.update().where(jobs.c.kind == "encrypt", jobs.c.table_name == table)
                     .values(last_id="", done=empty, updated_at=utcnow()))
    else:
        bind.execute(jobs.insert().values(kind="encrypt", table_name=table, last_id="",
                                          done=empty, changed=0, updated_at=utcnow()))
    _forget_legacy_flag()


def _forget_legacy_flag() -> None:
    from flask import current_app, has_app_context

    if has_app_context():
        current_app.extensions.pop("enclave.content_legacy", None)


def open_any(table: str, row_id: object, column: str, value: bytes | str | None) -> str:
    """The text of a value whose level is not known (downgrades, backups' checks)."""
    kind = envelope_kind(value)
    if kind is None:
        return ""
    if kind == LEGACY:
        return value if isinstance(value, str) else bytes(value[1:]).decode("utf-8")
    if kind == PLAIN:
        return bytes(value[1:]).decode("utf-8")  # type: ignore[index]
    if kind != SEALED:
        raise FieldIntegrityError(f"{table}.{column} #{row_id}: not an envelope")
    keys = _keys()
    for level in keys.keyring.levels:
        try:
            return keys.open(table, row_id, column, level, value)  # type: ignore[no-any-return]
        except FieldIntegrityError:
            continue
    raise FieldIntegrityError(f"{table}.{column} #{row_id}: opens under no level")


def from_sealed(table: str, columns: list[tuple[str, Any]], *, pk: str = "id",
                batch: int = 1000) -> None:
    """Downgrade: open every value of ``columns`` and make them text again."""
    bind = op.get_bind()
    tbl = sa.table(table, sa.column(pk), *(sa.column(name, sa.LargeBinary)
                                           for name, _ in columns))
    last: Any = None
    while True:
        query = sa.select(tbl).order_by(tbl.c[pk]).limit(batch)
        if last is not None:
            query = query.where(tbl.c[pk] > last)
        rows = bind.execute(query).all()
        if not rows:
            break
        for row in rows:
            values = {}
            for name, _ in columns:
                raw = row._mapping[name]
                if raw is None:
                    continue
                plain = open_any(table, row._mapping[pk], name, raw)
                values[name] = b"\x02" + plain.encode("utf-8") if plain else b""
            if values:
                bind.execute(tbl.update().where(tbl.c[pk] == row._mapping[pk]).values(values))
        last = rows[-1]._mapping[pk]
    if bind.dialect.name == "postgresql":
        for name, old in columns:
            type_sql = old.compile(dialect=bind.dialect)
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {name} TYPE {type_sql} USING "
                       f"CASE WHEN length({name}) = 0 THEN '' "
                       f"ELSE convert_from(substring({name} from 2), 'UTF8') END")
    else:
        for name, _old in columns:
            op.execute(f"UPDATE {table} SET {name} = CASE WHEN {name} IS NULL THEN NULL "  # noqa: S608
                       f"WHEN length({name}) = 0 THEN '' "
                       f"ELSE CAST(substr({name}, 2) AS TEXT) END")
        with op.batch_alter_table(table) as batch_op:
            for name, old in columns:
                batch_op.alter_column(name, existing_type=sa.LargeBinary(), type_=old)
    jobs = sa.table("content_jobs", sa.column("table_name", sa.String))
    bind.execute(jobs.delete().where(jobs.c.table_name == table))
