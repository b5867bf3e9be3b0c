"""Encrypted text columns for models: declare once, read and write plain ``str``.

This is the one way a model stores text of non-public content (see docs/encryption.md)::

    class Note(Base, Sealed):
        __tablename__ = "notes"
        id: Mapped[int] = mapped_column(primary_key=True)
        finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id"))
        body_sealed: Mapped[bytes] = mapped_column("body", LargeBinary)
        body = sealed_text("body_sealed")

    note.body = "text"      # sealed at flush under the finding's level
    note.body               # opened (once per loaded value) under the same context

* The column holds an envelope (``app.crypto.fields``), bound to table, row id, column
  name and level. A value copied to another row, column or level raises
  ``FieldIntegrityError`` when read; the web and API answer an error, never the text.
* The level is ``Sealed.sealed_level``: by default the level of the row's finding
  (``finding_id``); override it for rows that belong to a finding another way. Public
  (rank 0) levels are stored as readable plaintext.
* New rows get their ciphertext right after their INSERT (the row id is part of the
  associated data), in the same flush and transaction; the INSERT itself carries an empty
  placeholder, never the text.
* Row queries (``select(Model.body_sealed, ...)``) read envelopes: open them with
  :func:`reveal` and the row's id and level. ``select(Model.body)`` is an error on purpose.
* When a finding's level changes, call :func:`reseal_finding` in the same transaction:
  every sealed value of the finding (and of its replies, revisions, reviews, ...) is
  re-encrypted under the new level's key.
* Decrypted text lives only in the ORM object for the request; never put it in a cache
  that leaves the process (issue 17).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import has_app_context
from sqlalchemy import Column, event, select
from sqlalchemy.orm import InstrumentedAttribute, Session, object_session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from app.crypto.fields import SEALED, ContentKeys, FieldIntegrityError, content_keys

__all__ = [
    "FieldIntegrityError",
    "LevelLookup",
    "Sealed",
    "allow_legacy",
    "keys",
    "public_level",
    "reseal_finding",
    "reveal",
    "seal_value",
    "sealed_classes",
    "sealed_text",
]

_PENDING = object()
_REGISTRY: list[type[Sealed]] = []


def keys() -> ContentKeys:
    """The content keys of the current keyring (reloaded when another process, e.g.
    ``enclave keys rotate``, changed the file; looked up once per request)."""
    from flask import g, has_request_context

    from app.attachments.service import current_keyring

    if has_request_context():
        cached = g.get("_enclave_content_keys")
        if cached is None:
            cached = g._enclave_content_keys = content_keys(current_keyring())
        return cached  # type: ignore[no-any-return]
    return content_keys(current_keyring())


def public_level() -> str:
    """The policy's lowest (public) level key: content there is stored readable."""
    from app import state

    return state.policy().levels[0].key


def is_public(level: str) -> bool:
    from app import state

    policy = state.policy()
    return policy.is_level(level) and policy.rank(level) == 0


def allow_legacy() -> bool:
    """True while migration 0011's plaintext rows wait for ``enclave content encrypt``."""
    if not has_app_context():
        return False
    from app.content.service import legacy_pending

    return legacy_pending()


def _column(attr: InstrumentedAttribute[Any]) -> Column[Any]:
    return attr.property.columns[0]  # type: ignore[attr-defined,no-any-return]


def open_value(table: str, row_id: object, column: str, level: str,
               value: bytes | str | None) -> str:
    """Open one stored value in its context (the common case, a sealed value, without
    looking at the policy or the migration state)."""
    if value and not isinstance(value, str) and value[0] == SEALED:
        return keys().open(table, row_id, column, level, value)
    return keys().open(table, row_id, column, level, value, public=is_public(level),
                       allow_legacy=allow_legacy())


def reveal(column: InstrumentedAttribute[Any], row_id: object, level: str,
           value: bytes | str | None) -> str:
    """Open an envelope read by a row query (``select(Model.body_sealed, ...)``)."""
    col = _column(column)
    return open_value(col.table.name, row_id, col.name, level, value)


def seal_value(column: InstrumentedAttribute[Any], row_id: object, level: str,
               text: str) -> bytes:
    """The envelope for ``text`` as ``column`` of row ``row_id`` at ``level`` (bulk
    writers: migrations, rotation, loaders)."""
    col = _column(column)
    return keys().seal(col.table.name, row_id, col.name, level, text, public=is_public(level))


class LevelLookup:
    """Finds the level a row's text is sealed under, from the session's identity map
    or the database; ``overrides`` pin some findings' levels (a level change)."""

    def __init__(self, session: Session | None, connection: Any = None,
                 overrides: dict[int, str] | None = None) -> None:
        self.session = session
        self.connection = connection
        self.overrides = overrides or {}

    def _scalar(self, stmt: Any) -> Any:
        if self.connection is not None:
            return self.connection.scalar(stmt)
        assert self.session is not None
        with self.session.no_autoflush:
            return self.session.scalar(stmt)

    def loaded(self, cls: type, ident: object) -> Any:
        """The object if the session already holds it (no query)."""
        return self._loaded(cls, ident)  # type: ignore[arg-type]

    def _loaded(self, cls: type, ident: int) -> Any:
        if self.session is None:
            return None
        return self.session.identity_map.get(identity_key(cls, ident))

    def finding(self, finding_id: int) -> str:
        from app.findings.models import Finding

        if finding_id in self.overrides:
            return self.overrides[finding_id]
        loaded = self._loaded(Finding, finding_id)
        if loaded is not None and "level" in loaded.__dict__:
            return loaded.level  # type: ignore[no-any-return]
        level = self._scalar(select(Finding.level).where(Finding.id == finding_id))
        if level is None:
            raise FieldIntegrityError(f"finding #{finding_id} is missing")
        return level  # type: ignore[no-any-return]

    def request_finding(self, request_id: int) -> int:
        from app.review.models import ReviewRequest

        loaded = self._loaded(ReviewRequest, request_id)
        if loaded is not None and "finding_id" in loaded.__dict__:
            return loaded.finding_id  # type: ignore[no-any-return]
        fid = self._scalar(select(ReviewRequest.finding_id)
                           .where(ReviewRequest.id == request_id))
        if fid is None:
            raise FieldIntegrityError(f"review request #{request_id} is missing")
        return fid  # type: ignore[no-any-return]


    def request_state(self, request_id: int) -> tuple[str, int]:
        from app.review.models import ReviewRequest

        stmt = select(ReviewRequest.state, ReviewRequest.finding_id).where(
            ReviewRequest.id == request_id)
        if self.connection is not None:
            row = self.connection.execute(stmt).first()
        else:
            assert self.session is not None
            with self.session.no_autoflush:
                row = self.session.execute(stmt).first()
        if row is None:
            raise FieldIntegrityError(f"review request #{request_id} is missing")
        return row[0], row[1]

    def flag_finding(self, flag_id: int) -> int:
        from app.review.models import Flag

        loaded = self._loaded(Flag, flag_id)
        if loaded is not None and "finding_id" in loaded.__dict__:
            return loaded.finding_id  # type: ignore[no-any-return]
        fid = self._scalar(select(Flag.finding_id).where(Flag.id == flag_id))
        if fid is None:
            raise FieldIntegrityError(f"flag #{flag_id} is missing")
        return fid  # type: ignore[no-any-return]


class Sealed:
    """Mixin for models with :func:`sealed_text` columns."""

    __sealed_fields__: dict[str, sealed_text]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__tablename__" in cls.__dict__:
            _REGISTRY.append(cls)

    def sealed_level(self, lookup: LevelLookup, field: str) -> str:
        """The level whose key seals ``field`` of this row (default: its finding's)."""
        return lookup.finding(self.finding_id)  # type: ignore[attr-defined]

    @classmethod
    def sealed_scope(cls, finding_id: int) -> Any:
        """A WHERE clause for this model's rows that belong to ``finding_id`` (they are
        re-encrypted when its level changes); None when no row ever does."""
        return cls.finding_id == finding_id  # type: ignore[attr-defined]


def sealed_classes() -> list[type[Sealed]]:
    return list(_REGISTRY)


class sealed_text:  # noqa: N801  (used like a column declaration)
    """A ``str`` attribute stored encrypted in the mapped bytes attribute ``column_attr``."""

    def __init__(self, column_attr: str) -> None:
        self.attr = column_attr
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        fields = dict(getattr(owner, "__sealed_fields__", {}))
        fields[name] = self
        owner.__sealed_fields__ = fields  # type: ignore[attr-defined]

    def column(self, owner: type) -> Column[Any]:
        return _column(getattr(owner, self.attr))

    def context(self, obj: Any, lookup: LevelLookup) -> tuple[str, object, str, str]:
        col = self.column(type(obj))
        row_id = getattr(obj, col.table.primary_key.columns.values()[0].key)
        return col.table.name, row_id, col.name, obj.sealed_level(lookup, self.name)

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self
        cache = obj.__dict__.get("_sealed_plain")
        raw = getattr(obj, self.attr)
        if cache is not None:
            hit = cache.get(self.name)
            if hit is not None and (hit[0] is _PENDING or hit[0] is raw):
                return hit[1]
        else:
            cache = obj.__dict__["_sealed_plain"] = {}
        if not raw:
            return ""
        table, row_id, column, level = self.context(obj, LevelLookup(object_session(obj)))
        text = open_value(table, row_id, column, level, raw)
        cache[self.name] = (raw, text)
        return text

    def __set__(self, obj: Any, value: str | None) -> None:
        text = value or ""
        obj.__dict__.setdefault("_sealed_plain", {})[self.name] = (_PENDING, text)
        obj.__dict__.setdefault("_sealed_pending", {})[self.name] = text
        setattr(obj, self.attr, b"")  # placeholder: marks the row dirty, holds no text


def _seal_pending(obj: Any, lookup: LevelLookup) -> dict[str, tuple[str, bytes]]:
    """Seal the pending texts of ``obj``: {attribute: (column name, envelope)}."""
    pending = obj.__dict__.pop("_sealed_pending", None) or {}
    out: dict[str, tuple[str, bytes]] = {}
    cache = obj.__dict__.setdefault("_sealed_plain", {})
    changed = obj.__dict__.setdefault("_sealed_changed", set())
    for name, text in pending.items():
        field = type(obj).__sealed_fields__[name]
        table, row_id, column, level = field.context(obj, lookup)
        sealed = keys().seal(table, row_id, column, level, text, public=is_public(level))
        out[field.attr] = (column, sealed)
        cache[name] = (sealed, text)
        changed.add(name)
    return out


def _primary_key(obj: Any) -> Any:
    table = type(obj).__table__
    return getattr(obj, table.primary_key.columns.values()[0].key)


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    from sqlalchemy import inspect

    from app.findings.models import Finding

    for obj in list(session.dirty):
        if isinstance(obj, Finding):
            history = inspect(obj).attrs.level.history
            if history.added and history.deleted != history.added:
                old = history.deleted[0] if history.deleted else None
                new = history.added[0]
                with session.no_autoflush:
                    reseal_finding(session, obj.id, old, new)
                obj.__dict__["_sealed_level_change"] = (old, new)
    lookup = LevelLookup(session)
    for obj in list(session.new) + list(session.dirty):
        if not isinstance(obj, Sealed) or not obj.__dict__.get("_sealed_pending"):
            continue
        if _primary_key(obj) is None:
            continue  # sealed right after its INSERT (_after_insert)
        for attr, (_column_name, sealed) in _seal_pending(obj, lookup).items():
            setattr(obj, attr, sealed)


def _after_insert(_mapper: Any, connection: Any, obj: Any) -> None:
    if not isinstance(obj, Sealed) or not obj.__dict__.get("_sealed_pending"):
        return
    session = object_session(obj)
    sealed = _seal_pending(obj, LevelLookup(session, connection))
    table = type(obj).__table__
    pk = table.primary_key.columns.values()[0]
    connection.execute(table.update().where(pk == _primary_key(obj))
                       .values({column: value for column, value in sealed.values()}))
    for attr, (_column_name, value) in sealed.items():
        set_committed_value(obj, attr, value)


event.listen(Sealed, "after_insert", _after_insert, propagate=True)


def take_changed(obj: Any) -> set[str]:
    """The sealed fields written since the last call (for derived data: the search
    index)."""
    return obj.__dict__.pop("_sealed_changed", set())


def cached_text(obj: Any, name: str) -> str | None:
    hit = (obj.__dict__.get("_sealed_plain") or {}).get(name)
    return hit[1] if hit else None


def _rows_of(session: Session, finding_id: int) -> Iterator[Sealed]:
    for cls in sealed_classes():
        scope = cls.sealed_scope(finding_id)
        if scope is None:
            continue
        with session.no_autoflush:
            yield from session.scalars(select(cls).where(scope)).unique()


def _open_moved(ck: ContentKeys, table: str, row_id: object, column: str, raw: Any,
                candidates: list[str]) -> tuple[str, str]:
    """(text, level it opened at), trying the likely levels first, then every level."""
    tried = []
    for level in [*candidates, *ck.keyring.levels]:
        if level in tried:
            continue
        tried.append(level)
        try:
            return ck.open(table, row_id, column, level, raw, public=is_public(level),
                           allow_legacy=allow_legacy()), level
        except FieldIntegrityError:
            continue
    raise FieldIntegrityError(f"{table}.{column} #{row_id}: opens under no level")


def reseal_finding(session: Session, finding_id: int, old_level: str | None,
                   new_level: str) -> int:
    """Re-encrypt every sealed value that belongs to ``finding_id`` (its own texts, its
    replies, revisions, reviews, ...) under the key of ``new_level``. The session does
    this by itself when a finding's ``level`` changes (``_before_flush``), in the same
    flush and transaction; returns the number of values changed."""
    after = LevelLookup(session, overrides={finding_id: new_level})
    ck = keys()
    changed = 0
    for obj in list(_rows_of(session, finding_id)):
        pending = obj.__dict__.get("_sealed_pending") or {}
        for name, field in type(obj).__sealed_fields__.items():
            if name in pending:
                continue  # sealed at the new level with the rest of the flush
            raw = getattr(obj, field.attr)
            if not raw:
                continue
            table, row_id, column, new = field.context(obj, after)
            if envelope_matches(raw, new):
                try:
                    ck.open(table, row_id, column, new, raw, public=is_public(new))
                    continue
                except FieldIntegrityError:
                    pass
            candidates = [old_level] if old_level else []
            text, _level = _open_moved(ck, table, row_id, column, raw, candidates)
            sealed = ck.seal(table, row_id, column, new, text, public=is_public(new))
            setattr(obj, field.attr, sealed)
            obj.__dict__.setdefault("_sealed_plain", {})[name] = (sealed, text)
            changed += 1
    return changed


def envelope_matches(raw: Any, level: str) -> bool:
    """Cheap pre-check: a value at ``level`` is sealed with its active version (or plain
    for a public level)."""
    if isinstance(raw, str) or not raw:
        return False
    if is_public(level):
        return raw[0] == 0
    return raw[0] == SEALED and int.from_bytes(bytes(raw[1:5]), "big") == \
        keys().keyring.active_version(level)


def take_level_change(obj: Any) -> tuple[str | None, str] | None:
    """(old, new) when the flush just changed this finding's level (for the index)."""
    return obj.__dict__.pop("_sealed_level_change", None)
