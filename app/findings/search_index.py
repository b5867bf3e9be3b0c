"""The search index without words: keyed hashes of normalised terms, per level.

A document (a finding's title and body, or a visible reply) becomes a set of 64-bit
HMAC-SHA256 values, each computed under the search key of the finding's level (derived
from the keyring, ``app.crypto.fields``) over one normalised term in one field:

* ``t:<stem>`` / ``b:<stem>`` for every word of the title / body (a reply is all body);
* ``T:<stem> <stem>`` / ``B:<stem> <stem>`` for every two adjacent words, so that a quoted
  phrase matches words in order without storing positions.

Normalisation: Unicode NFKD without diacritics, case-folded, split on letters and digits,
English stop words dropped, Snowball (Porter 2) stems (PyStemmer). The same function
normalises queries, so a query term matches exactly the documents with a word of the same
stem (no prefix matching: a prefix has no hash of its own).

Storage (``*_fts`` tables, created by migration 0007, kept in step by the session hook
below, in the writer's transaction):

* PostgreSQL: ``findings_fts(finding_id, terms bigint[])`` and ``replies_fts(reply_id,
  finding_id, terms bigint[])`` with a GIN index on ``terms``.
* SQLite: the same tables with ``terms`` as packed big-endian 64-bit integers, plus
  ``findings_fts_terms(term, finding_id)`` / ``replies_fts_terms(term, reply_id)``,
  one row per term and document, indexed by term.

What this reveals to someone holding the database (docs/encryption.md): within one level
and key version, which documents share a term (and a pair of adjacent terms), and how many
documents have each term; not the terms themselves, nor anything across levels.
"""

from __future__ import annotations

import re
import struct
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import Stemmer
from sqlalchemy import BigInteger, Integer, LargeBinary, column, delete, event, table, text
from sqlalchemy.orm import Session

from app import sealing
from app.crypto.fields import ContentKeys

WORD_RE = re.compile(r"[^\W_]+")
MAX_WORD_CHARS = 64

# The Snowball project's English stop word list (the one PostgreSQL's "english" uses).
_STOP_WORDS_TEXT = """
i me my myself we our ours ourselves you your yours yourself yourselves he him his
himself she her hers herself it its itself they them their theirs themselves what which
who whom this that these those am is are was were be been being have has had having do
does did doing would should could ought cannot a an the and but if or because as until
while of at by for with about against between into through during before after above
below to from up down in out on off over under again further then once here there when
where why how all any both each few more most other some such no nor not only own same
so than too very s t can will just don now
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())

_stemmer = Stemmer.Stemmer("english")
_FINDINGS_FTS = table("findings_fts", column("finding_id", Integer), column("terms"))
_REPLIES_FTS = table("replies_fts", column("reply_id", Integer), column("finding_id", Integer),
                     column("terms"))
_FINDING_TERMS = table("findings_fts_terms", column("term", BigInteger),
                       column("finding_id", Integer))
_REPLY_TERMS = table("replies_fts_terms", column("term", BigInteger),
                     column("reply_id", Integer))


@lru_cache(maxsize=65536)
def _normal_word(word: str) -> str | None:
    folded = unicodedata.normalize("NFKD", word)
    folded = "".join(c for c in folded if not unicodedata.combining(c)).casefold()
    if not folded or folded in STOP_WORDS or len(folded) > MAX_WORD_CHARS:
        return None
    return _stemmer.stemWord(folded)  # type: ignore[no-any-return]


def terms_of(text_: str) -> list[str]:
    """The normalised terms of ``text_``, in order (stop words dropped)."""
    out = []
    for word in WORD_RE.findall(text_):
        normal = _normal_word(word)
        if normal:
            out.append(normal)
    return out


def normal_words(words: Iterable[str]) -> list[str]:
    """Query words as the index holds them (stop words dropped)."""
    out = []
    for word in words:
        out.extend(terms_of(word))
    return out


def field_terms(field: str, terms: Sequence[str]) -> set[str]:
    """The term strings of one field: ``t``/``b`` words and ``T``/``B`` pairs."""
    pair = field.upper()
    out = {f"{field}:{t}" for t in terms}
    out.update(f"{pair}:{a} {b}" for a, b in zip(terms, terms[1:], strict=False))
    return out


def document_hashes(keys: ContentKeys, level: str, fields: dict[str, str]) -> list[int]:
    """Sorted distinct term hashes of a document (``{"t": title, "b": body}``) under the
    active search key of ``level``."""
    key = keys.search_key(level)
    strings: set[str] = set()
    for field, value in fields.items():
        strings |= field_terms(field, terms_of(value))
    return sorted({keys.term_hash(key, s) for s in strings})


def pack(hashes: Sequence[int]) -> bytes:
    return struct.pack(f">{len(hashes)}q", *hashes)


def unpack(blob: bytes | None) -> list[int]:
    if not blob:
        return []
    return list(struct.unpack(f">{len(blob) // 8}q", blob))


# ---------------------------------------------------------------- writing


def _dialect(session_or_conn: Any) -> str:
    return session_or_conn.get_bind().dialect.name if isinstance(session_or_conn, Session) \
        else session_or_conn.dialect.name


def write_finding(conn: Any, finding_id: int, hashes: list[int]) -> None:
    """Replace one finding's index entry (``conn``: a Connection or Session)."""
    if _dialect(conn) == "postgresql":
        conn.execute(text("INSERT INTO findings_fts (finding_id, terms) VALUES (:i, :t) "
                          "ON CONFLICT (finding_id) DO UPDATE SET terms = EXCLUDED.terms"),
                     {"i": finding_id, "t": hashes})
        return
    conn.execute(delete(_FINDING_TERMS).where(_FINDING_TERMS.c.finding_id == finding_id))
    conn.execute(text("INSERT OR REPLACE INTO findings_fts (finding_id, terms) "
                      "VALUES (:i, :t)"), {"i": finding_id, "t": pack(hashes)})
    if hashes:
        conn.execute(_FINDING_TERMS.insert(), [{"term": h, "finding_id": finding_id}
                                               for h in hashes])


def write_reply(conn: Any, reply_id: int, finding_id: int, hashes: list[int] | None) -> None:
    """Replace (or with ``None``, remove: a hidden reply) one reply's index entry."""
    postgres = _dialect(conn) == "postgresql"
    if hashes is None:
        conn.execute(delete(_REPLIES_FTS).where(_REPLIES_FTS.c.reply_id == reply_id))
        if not postgres:
            conn.execute(delete(_REPLY_TERMS).where(_REPLY_TERMS.c.reply_id == reply_id))
        return
    if postgres:
        conn.execute(text("INSERT INTO replies_fts (reply_id, finding_id, terms) "
                          "VALUES (:i, :f, :t) ON CONFLICT (reply_id) DO UPDATE "
                          "SET terms = EXCLUDED.terms, finding_id = EXCLUDED.finding_id"),
                     {"i": reply_id, "f": finding_id, "t": hashes})
        return
    conn.execute(delete(_REPLY_TERMS).where(_REPLY_TERMS.c.reply_id == reply_id))
    conn.execute(text("INSERT OR REPLACE INTO replies_fts (reply_id, finding_id, terms) "
                      "VALUES (:i, :f, :t)"),
                 {"i": reply_id, "f": finding_id, "t": pack(hashes)})
    if hashes:
        conn.execute(_REPLY_TERMS.insert(), [{"term": h, "reply_id": reply_id}
                                             for h in hashes])


def index_finding(session: Session, finding: Any, level: str | None = None) -> None:
    level = level or finding.level
    write_finding(session, finding.id, document_hashes(
        sealing.keys(), level, {"t": finding.title, "b": finding.body}))


def index_reply(session: Session, reply: Any, level: str | None = None) -> None:
    if reply.hidden:
        write_reply(session, reply.id, reply.finding_id, None)
        return
    level = level or sealing.LevelLookup(session).finding(reply.finding_id)
    write_reply(session, reply.id, reply.finding_id,
                document_hashes(sealing.keys(), level, {"b": reply.body}))


def reindex_finding(session: Session, finding_id: int, level: str) -> None:
    """Rebuild the index of a finding and its replies at ``level`` (a level change)."""
    from app.findings.models import Finding, Reply

    finding = session.get(Finding, finding_id)
    if finding is not None:
        index_finding(session, finding, level)
    for reply in session.scalars(_replies_of(Reply, finding_id)):
        index_reply(session, reply, level)


def _replies_of(reply_cls: Any, finding_id: int) -> Any:
    from sqlalchemy import select

    return select(reply_cls).where(reply_cls.finding_id == finding_id)


@event.listens_for(Session, "after_flush")
def _keep_index(session: Session, _context: Any) -> None:
    """Every writer keeps the index right (the role the FTS triggers used to play)."""
    with session.no_autoflush:
        _keep_index_of(session, list(session.new) + list(session.dirty))


def _keep_index_of(session: Session, objs: list[Any]) -> None:
    from app.findings.models import Finding, Reply

    for obj in objs:
        if isinstance(obj, Finding):
            moved = sealing.take_level_change(obj)
            if moved is not None:
                sealing.take_changed(obj)
                reindex_finding(session, obj.id, moved[1])
            elif sealing.take_changed(obj) & {"title", "body"}:
                index_finding(session, obj)
        elif isinstance(obj, Reply):
            changed = sealing.take_changed(obj)
            hidden = session.is_modified(obj, include_collections=False) and \
                _hidden_changed(obj)
            if "body" in changed or hidden:
                index_reply(session, obj)


def _hidden_changed(obj: Any) -> bool:
    from sqlalchemy import inspect

    return bool(inspect(obj).attrs.hidden.history.has_changes())


# SQLite scoring: a function over the packed terms (registered on every connection).

@lru_cache(maxsize=256)
def _parse_spec(spec: bytes) -> list[tuple[float, frozenset[int]]]:
    out = []
    for part in spec.split(b";"):
        if not part:
            continue
        weight, hashes = part.split(b"=")
        out.append((float(weight), frozenset(int(h) for h in hashes.split(b",") if h)))
    return out


def score_spec(weighted: Sequence[tuple[float, Sequence[int]]]) -> bytes:
    return b";".join(f"{w}=".encode() + b",".join(str(h).encode() for h in hs)
                     for w, hs in weighted)


def sqlite_score(blob: bytes | None, spec: bytes) -> float:
    if not blob:
        return 0.0
    present = set(unpack(blob))
    return sum(weight for weight, hashes in _parse_spec(spec) if not present.isdisjoint(hashes))


def register_sqlite(dbapi_conn: Any) -> None:
    dbapi_conn.create_function("enclave_score", 2, sqlite_score, deterministic=True)


__all__ = ["LargeBinary", "document_hashes", "index_finding", "index_reply", "normal_words",
           "pack", "reindex_finding", "register_sqlite", "score_spec", "terms_of", "unpack",
           "write_finding", "write_reply"]
