"""Batch jobs over every sealed column: encrypting legacy rows, re-encrypting after a key
rotation. Both are resumable (``content_jobs`` keeps the last row done per table) and
report progress; each batch is one transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, ProgrammingError

from app import sealing
from app.content.models import ContentJob
from app.crypto.fields import LEGACY, PLAIN, SEALED, envelope_kind, envelope_version
from app.db import db, utcnow

ENCRYPT = "encrypt"
ROTATE = "rotate"
BATCH = 500

Progress = Callable[[str, int, int], None]  # (table, rows seen, values changed)


@dataclass
class JobReport:
    kind: str
    tables: dict[str, int] = field(default_factory=dict)  # table -> values changed
    rows: int = 0
    remaining: list[str] = field(default_factory=list)  # tables not finished

    @property
    def changed(self) -> int:
        return sum(self.tables.values())


def legacy_pending() -> bool:
    """True when migration 0011 (or a later one) left rows for ``enclave content
    encrypt`` (cached per app; the job clears it)."""
    ext = current_app.extensions
    if "enclave.content_legacy" not in ext:
        try:
            pending = db.scalar(select(ContentJob.id).where(ContentJob.kind == ENCRYPT,
                                                            ContentJob.done.is_(False))
                                .limit(1)) is not None
        except (OperationalError, ProgrammingError):
            db.rollback()
            return False  # not migrated yet: nothing stored to read
        ext["enclave.content_legacy"] = pending
    return bool(ext["enclave.content_legacy"])


def _pk(cls: type) -> Any:
    table = cls.__table__  # type: ignore[attr-defined]
    return getattr(cls, table.primary_key.columns.values()[0].key)


def _prefetch_levels(objs: list[Any]) -> None:
    """Load the findings (and requests) of a batch, so levels come from the identity map."""
    from app.findings.models import Finding

    fids = {getattr(o, "finding_id", None) for o in objs} - {None}
    if fids:
        list(db.scalars(select(Finding).where(Finding.id.in_(fids))))


def _reindex(obj: Any, level_lookup: sealing.LevelLookup) -> None:
    from app.findings import search_index
    from app.findings.models import Finding, Reply

    if isinstance(obj, Finding):
        search_index.index_finding(db(), obj)
    elif isinstance(obj, Reply):
        search_index.index_reply(db(), obj, level_lookup.finding(obj.finding_id))


def _job(kind: str, table: str, create: bool) -> ContentJob | None:
    job = db.scalar(select(ContentJob).where(ContentJob.kind == kind,
                                             ContentJob.table_name == table))
    if job is None and create:
        job = ContentJob(kind=kind, table_name=table, last_id="", done=False, changed=0,
                         updated_at=utcnow())
        db.add(job)
        db.flush()
    return job


def _value_needs(kind: str, raw: Any, level: str, public: bool) -> bool:
    env = envelope_kind(raw)
    if env is None:
        return False
    if kind == ENCRYPT:
        return env == LEGACY
    if env == LEGACY:
        return True
    if env == PLAIN:
        return not public
    if env == SEALED:
        return public or envelope_version(raw) != sealing.keys().keyring.active_version(level)
    return False


def run(kind: str, *, batch_size: int = BATCH, max_batches: int | None = None,
        progress: Progress | None = None) -> JobReport:
    """Run (or resume) the ``kind`` job over every sealed table."""
    report = JobReport(kind)
    keys = sealing.keys()
    batches = 0
    for cls in sealing.sealed_classes():
        table = cls.__table__.name  # type: ignore[attr-defined]
        job = _job(kind, table, create=(kind == ROTATE))
        if job is None or job.done:
            continue
        pk = _pk(cls)
        pk_type = pk.property.columns[0].type.python_type
        seen = 0
        while True:
            if max_batches is not None and batches >= max_batches:
                report.remaining.append(table)
                db.commit()
                return report
            query = select(cls).order_by(pk).limit(batch_size)
            if job.last_id:
                query = query.where(pk > pk_type(job.last_id))
            objs = list(db.scalars(query).unique())
            if not objs:
                job.done = True
                job.updated_at = utcnow()
                db.commit()
                break
            _prefetch_levels(objs)
            lookup = sealing.LevelLookup(db())
            changed = 0
            for obj in objs:
                touched = False
                for name, fld in type(obj).__sealed_fields__.items():
                    raw = getattr(obj, fld.attr)
                    if not raw:
                        continue
                    tbl, row_id, column, level = fld.context(obj, lookup)
                    public = sealing.is_public(level)
                    if not _value_needs(kind, raw, level, public):
                        continue
                    text = keys.open(tbl, row_id, column, level, raw, public=True,
                                     allow_legacy=True) if envelope_kind(raw) != SEALED \
                        else keys.open(tbl, row_id, column, level, raw)
                    sealed = keys.seal(tbl, row_id, column, level, text, public=public)
                    setattr(obj, fld.attr, sealed)
                    obj.__dict__.setdefault("_sealed_plain", {})[name] = (sealed, text)
                    changed += 1
                    touched = True
                if touched or kind == ROTATE:
                    _reindex(obj, lookup)
            seen += len(objs)
            report.rows += len(objs)
            job.last_id = str(getattr(objs[-1], pk.key))
            job.changed += changed
            job.updated_at = utcnow()
            report.tables[table] = report.tables.get(table, 0) + changed
            db.commit()  # the session holds clean objects weakly: memory stays bounded
            batches += 1
            if progress is not None:
                progress(table, seen, report.tables[table])
    if kind == ENCRYPT:
        current_app.extensions["enclave.content_legacy"] = False
    return report


def start_rotation() -> None:
    """Mark every sealed table for re-encryption (after new key versions are added)."""
    for cls in sealing.sealed_classes():
        job = _job(ROTATE, cls.__table__.name, create=True)  # type: ignore[attr-defined]
        assert job is not None
        job.last_id = ""
        job.done = False
        job.changed = 0
        job.updated_at = utcnow()
    db.commit()


def rotation_pending() -> list[str]:
    return list(db.scalars(select(ContentJob.table_name).where(ContentJob.kind == ROTATE,
                                                               ContentJob.done.is_(False))))
