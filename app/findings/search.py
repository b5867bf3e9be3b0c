"""Full-text search over findings and their replies, through the access filter.

User input never reaches a query language as it was typed: ``parse`` reduces it to words,
"quoted phrases", ``OR`` and exclusions (``-word`` / ``NOT word``), or refuses it with a
clear message (an unclosed quote, a dangling operator, too long). The parsed query is
compiled into keyed term hashes (``compile_query``; the index holds no words, see
``app.findings.search_index``) under the search key of every level the reader may read,
bound as parameters. The access filter (``access.finding_filter``) is part of the same
SQL statement, so a result, a count or a snippet can only come from a finding the user
may read.

Snippets are built here from the readable text (the finding, or a reply that is not
hidden): everything is HTML-escaped first, then the matched words are wrapped in <mark>.
No FTS-generated HTML is ever used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape
from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    case,
    cast,
    column,
    desc,
    false,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    table,
    union_all,
)
from sqlalchemy.exc import DBAPIError

from app import access, sealing, state
from app.auth.models import User
from app.crypto.fields import ContentKeys
from app.db import db
from app.errors import ServiceError
from app.findings import search_index
from app.findings.models import Category, Finding, Reply
from app.findings.service import FINDING_LOAD, highest_level, tune_postgres
from app.pagination import page_args
from app.policy import Level

MAX_QUERY_CHARS = 200
MAX_TERMS = 12
MAX_WORD_CHARS = 64
SNIPPET_CHARS = 220
TITLE_WEIGHT = 1.0  # a word in the title ranks above the same word in the body
BODY_WEIGHT = 0.4
REPLY_WEIGHT = 0.5  # a hit in a reply ranks below the same hit in the finding itself
SEARCH_TIMEOUT_MS = 10_000  # PostgreSQL: a search that would run longer is refused
# A broad search ranks only its newest hits: this many findings and this many replies
# (see _hit_queries). Deeper results of a broad search are reached by adding words.
RANK_CANDIDATES = 1000

WORD_RE = re.compile(r"[^\W_]+")
_OPERATORS = {"OR", "AND", "NOT"}


class SearchError(ServiceError):
    status = 400
    code = "bad_query"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="q")


@dataclass(frozen=True)
class Term:
    """One word (matched by its stem, not as a prefix) or a phrase (words in this
    order)."""

    words: tuple[str, ...]

    @property
    def phrase(self) -> bool:
        return len(self.words) > 1


@dataclass(frozen=True)
class Query:
    """Every group must match (AND); within a group any term may (OR); no exclusion may."""

    groups: tuple[tuple[Term, ...], ...]
    excluded: tuple[Term, ...]

    def positive_words(self) -> list[str]:
        return [w for group in self.groups for term in group for w in term.words]


def _tokens(raw: str) -> list[tuple[str, Any, bool]]:
    """("op", name, False) or ("term", Term, negated) items; punctuation is dropped."""
    out: list[tuple[str, Any, bool]] = []
    i, n = 0, len(raw)
    while i < n:
        if raw[i].isspace():
            i += 1
            continue
        negated = False
        if raw[i] == "-" and i + 1 < n and (raw[i + 1] == '"' or WORD_RE.match(raw[i + 1])):
            negated = True
            i += 1
        if raw[i] == '"':
            close = raw.find('"', i + 1)
            if close == -1:
                raise SearchError('A quotation mark is not closed. Put a phrase between two '
                                  '" marks, or remove the quote.')
            words = WORD_RE.findall(raw[i + 1:close].lower())
            i = close + 1
        else:
            j = i
            while j < n and not raw[j].isspace() and raw[j] != '"':
                j += 1
            chunk = raw[i:j]
            i = j
            if chunk in _OPERATORS and not negated:
                out.append(("op", chunk, False))
                continue
            words = WORD_RE.findall(chunk.lower())
        if words:
            out.append(("term", Term(tuple(words)), negated))
    return out


def parse(raw: str | None) -> Query:
    """Turn what the user typed into a safe query, or raise SearchError saying why not."""
    raw = (raw or "").replace("\x00", " ").strip()
    if not raw:
        raise SearchError("Type at least one word to search for.")
    if len(raw) > MAX_QUERY_CHARS:
        raise SearchError(f"The search is {len(raw)} characters long; the limit is "
                          f"{MAX_QUERY_CHARS}. Use fewer, more specific words.")
    groups: list[list[Term]] = []
    excluded: list[Term] = []
    pending: str | None = None  # the operator waiting for its right-hand word
    for kind, value, negated in _tokens(raw):
        if kind == "op":
            if pending is not None or (value != "NOT" and not groups and not excluded):
                raise SearchError(f"{value} needs a word on each side, e.g. "
                                  "'steering OR probing'.")
            pending = value
            continue
        term: Term = value
        if negated or pending == "NOT":
            excluded.append(term)
        elif pending == "OR":
            if not groups:
                raise SearchError("OR needs a word on each side, e.g. 'steering OR probing'.")
            groups[-1].append(term)
        else:
            groups.append([term])
        pending = None
    if pending is not None:
        raise SearchError(f"The search ends with {pending}; add a word after it or remove it.")
    if not groups:
        if excluded:
            raise SearchError("Add a word to search for; a search cannot only leave words out.")
        raise SearchError("Type at least one word (letters or digits) to search for.")
    terms = [t for g in groups for t in g] + excluded
    if sum(len(t.words) for t in terms) > MAX_TERMS:
        raise SearchError(f"Use at most {MAX_TERMS} words in a search.")
    if any(len(w) > MAX_WORD_CHARS for t in terms for w in t.words):
        raise SearchError(f"A word in the search is longer than {MAX_WORD_CHARS} characters.")
    return Query(tuple(tuple(g) for g in groups), tuple(excluded))


# ---------------------------------------------------------------- compiling


@dataclass(frozen=True)
class Match:
    """A document matches when it has any hash of ``any_of``, or every hash of one of the
    lists in ``all_of`` (a phrase: its adjacent pairs, under one key and in one field)."""

    any_of: tuple[int, ...]
    all_of: tuple[tuple[int, ...], ...]

    @property
    def empty(self) -> bool:
        return not self.any_of and not self.all_of


@dataclass(frozen=True)
class Compiled:
    """A parsed query as term hashes under every search key the reader may use."""

    groups: tuple[Match, ...]
    excluded: Match
    weights: tuple[tuple[float, tuple[int, ...]], ...]  # per positive word and field


def _match(terms: tuple[Term, ...], keys: list[bytes]) -> Match:
    any_of: set[int] = set()
    all_of: list[tuple[int, ...]] = []
    for term in terms:
        words = search_index.normal_words(term.words)
        if len(words) == 1:
            any_of.update(ContentKeys.term_hash(k, f"{f}:{words[0]}") for k in keys
                          for f in "tb")
        elif len(words) > 1:
            pairs = [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
            for k in keys:
                for f in "TB":
                    all_of.append(tuple(sorted({ContentKeys.term_hash(k, f"{f}:{p}")
                                                for p in pairs})))
    return Match(tuple(sorted(any_of)), tuple(all_of))


def compile_query(query: Query, levels: set[str] | list[str]) -> Compiled:
    """Hash the query's terms under the search keys of ``levels`` (every key version in
    the keyring), so it finds documents of every level the reader may read."""
    keys = sealing.keys().search_keys(sorted(levels))
    groups = tuple(_match(g, keys) for g in query.groups)
    excluded = _match(query.excluded, keys)
    weights: list[tuple[float, tuple[int, ...]]] = []
    for word in dict.fromkeys(search_index.normal_words(query.positive_words())):
        for field, weight in (("t", TITLE_WEIGHT), ("b", BODY_WEIGHT)):
            weights.append((weight, tuple(ContentKeys.term_hash(k, f"{field}:{word}")
                                          for k in keys)))
    return Compiled(groups, excluded, tuple(weights))


def _pg_array(values: tuple[int, ...]) -> Any:
    from sqlalchemy.dialects.postgresql import ARRAY

    return cast(literal(list(values), ARRAY(BigInteger)), ARRAY(BigInteger))


def _pg_match(m: Match, terms: Any) -> Any:
    clauses = []
    if m.any_of:
        clauses.append(terms.bool_op("&&")(_pg_array(m.any_of)))
    clauses.extend(terms.bool_op("@>")(_pg_array(a)) for a in m.all_of)
    return or_(*clauses) if clauses else false()


def _sqlite_match(m: Match, doc: Any, postings: Any, doc_col: str) -> Any:
    clauses = []
    pcol = postings.c[doc_col]
    if m.any_of:
        clauses.append(doc.in_(select(pcol).where(postings.c.term.in_(m.any_of))))
    for hashes in m.all_of:
        clauses.append(doc.in_(select(pcol).where(postings.c.term.in_(hashes))
                               .group_by(pcol).having(func.count() == len(hashes))))
    return or_(*clauses) if clauses else false()


def _where(compiled: Compiled, match: Any) -> list[Any]:
    clauses = [match(g) for g in compiled.groups]
    if not compiled.excluded.empty:
        clauses.append(not_(match(compiled.excluded)))
    return clauses


def _hit_queries(user: User, query: Query, extra: list[Any]) -> Any:
    """(finding_id, reply_id, score, from_finding) for the readable hits that get ranked,
    as one UNION ALL.

    Only a bounded candidate set is ranked: the newest ``RANK_CANDIDATES`` + 1 matching
    readable findings (by id) and as many matching visible replies, each picked by an
    indexed order with the access filter inside the same statement, then scored. A
    specific search has fewer hits than that and is ranked in full; a broad one (a word
    in a fifth of all documents, or in nearly all) ranks its newest hits instead of
    scoring hundreds of thousands of documents, and says that it did (``capped``).

    The score of a document adds, for each searched word, TITLE_WEIGHT when its title has
    the word and BODY_WEIGHT when its body has it (a reply: REPLY_WEIGHT times that)."""
    dialect = db.get_bind().dialect.name
    allowed = access.finding_filter(user)
    compiled = compile_query(query, access.readable_levels(user))
    limit = RANK_CANDIDATES + 1
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        fts_f = table("findings_fts", column("finding_id", Integer),
                      column("terms", ARRAY(BigInteger)))
        fts_r = table("replies_fts", column("reply_id", Integer),
                      column("finding_id", Integer), column("terms", ARRAY(BigInteger)))
        f_where = _where(compiled, lambda m: _pg_match(m, fts_f.c.terms))
        r_where = _where(compiled, lambda m: _pg_match(m, fts_r.c.terms))

        def score(terms: Any) -> Any:
            parts = [case((terms.bool_op("&&")(_pg_array(h)), literal(w, Float)), else_=0.0)
                     for w, h in compiled.weights]
            total = parts[0] if parts else literal(0.0, Float)
            for part in parts[1:]:
                total = total + part
            return total
    elif dialect == "sqlite":
        fts_f = table("findings_fts", column("finding_id", Integer), column("terms"))
        fts_r = table("replies_fts", column("reply_id", Integer),
                      column("finding_id", Integer), column("terms"))
        f_post = table("findings_fts_terms", column("term", BigInteger),
                       column("finding_id", Integer))
        r_post = table("replies_fts_terms", column("term", BigInteger),
                       column("reply_id", Integer))
        f_where = _where(compiled, lambda m: _sqlite_match(m, fts_f.c.finding_id, f_post,
                                                           "finding_id"))
        r_where = _where(compiled, lambda m: _sqlite_match(m, fts_r.c.reply_id, r_post,
                                                           "reply_id"))
        spec = search_index.score_spec(compiled.weights)

        def score(terms: Any) -> Any:
            return func.enclave_score(terms, literal(spec), type_=Float)
    else:  # pragma: no cover
        raise ServiceError(f"Search is not available on {dialect}.")
    # the candidates are chosen without scoring (a LIMIT subquery is never merged into
    # the outer query, so the score is computed for the candidates only)
    f_cand = (select(fts_f.c.finding_id, fts_f.c.terms)
              .select_from(fts_f.join(Finding, Finding.id == fts_f.c.finding_id))
              .where(*f_where, allowed, *extra)
              .order_by(fts_f.c.finding_id.desc()).limit(limit).subquery("f_cand"))
    # replies_fts holds only visible replies (a hidden one is taken out of the index)
    # and carries finding_id, so the replies table itself is not needed here
    r_cand = (select(fts_r.c.finding_id, fts_r.c.reply_id, fts_r.c.terms)
              .select_from(fts_r.join(Finding, Finding.id == fts_r.c.finding_id))
              .where(*r_where, allowed, *extra)
              .order_by(fts_r.c.reply_id.desc()).limit(limit).subquery("r_cand"))
    finding_hits = select(f_cand.c.finding_id, null().label("reply_id"),
                          score(f_cand.c.terms).label("score"),
                          literal(1).label("from_finding"))
    reply_hits = select(r_cand.c.finding_id, r_cand.c.reply_id,
                        score(r_cand.c.terms) * REPLY_WEIGHT, literal(0))
    return union_all(finding_hits, reply_hits).subquery("hits")


# ---------------------------------------------------------------- results


@dataclass
class SearchResult:
    finding: Finding
    score: float
    title_html: Markup
    snippet_html: Markup
    source: str  # "finding" or "reply"
    reply_id: int | None


@dataclass
class SearchPage:
    query: Query
    results: list[SearchResult]
    page: int
    per_page: int
    total: int  # readable findings among the ranked hits (all of them unless capped)
    capped: bool = False  # a broad search: only its newest hits were ranked

    @property
    def items(self) -> list[SearchResult]:
        return self.results

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def marking(self) -> Level | None:
        return highest_level(r.finding.level for r in self.results)


def search(user: User, raw: str | None, args: dict[str, str] | None = None, *,
           category: Category | None = None, level: str | None = None) -> SearchPage:
    """Ranked readable findings whose title/body or a visible reply match ``raw``."""
    query = parse(raw)
    page, per_page = page_args(args or {}, default_per_page=20)
    extra: list[Any] = []
    if category is not None:
        extra.append(Finding.category_id == category.id)
    if level is not None:
        if not state.policy().is_level(level):
            raise ServiceError(f"There is no level {level!r}.", code="unknown_level",
                               field="level")
        extra.append(Finding.level == level)
    try:
        tune_postgres(statement_timeout_ms=SEARCH_TIMEOUT_MS, custom_plans=True)
        hits = _hit_queries(user, query, extra)
        from_findings = func.sum(hits.c.from_finding)
        best = (select(hits.c.finding_id,
                       func.max(hits.c.score).label("score"),
                       func.max(hits.c.from_finding).label("direct"),
                       func.max(hits.c.reply_id).label("reply_id"),
                       func.count().over().label("total"),
                       func.sum(from_findings).over().label("finding_hits"),
                       func.sum(func.count() - from_findings).over().label("reply_hits"))
                .group_by(hits.c.finding_id)
                .order_by(desc("score"), desc(hits.c.finding_id))
                .limit(per_page).offset((page - 1) * per_page))
        rows = db.execute(best).all()
        if rows:
            total, finding_hits, reply_hits = (rows[0].total, rows[0].finding_hits,
                                               rows[0].reply_hits)
        else:
            counts = db.execute(select(func.count(func.distinct(hits.c.finding_id)),
                                       func.coalesce(func.sum(hits.c.from_finding), 0),
                                       func.count() - func.coalesce(
                                           func.sum(hits.c.from_finding), 0))).one()
            total, finding_hits, reply_hits = counts
        capped = max(int(finding_hits or 0), int(reply_hits or 0)) > RANK_CANDIDATES
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise  # the database went away: the web error handler answers 503
        db.rollback()
        if getattr(exc.orig, "sqlstate", None) == "57014":  # query_canceled: the timeout
            raise SearchError("This search matches too much to rank in time; add more "
                              "specific words.") from None
        raise SearchError("This search could not be run; try simpler words.") from None
    findings = {f.id: f for f in db.scalars(
        select(Finding).options(*FINDING_LOAD)
        .where(Finding.id.in_([r.finding_id for r in rows])))}
    reply_ids = [r.reply_id for r in rows if not r.direct and r.reply_id is not None]
    # snippets come from the decrypted text of the results shown, nothing else
    replies = {rid: sealing.reveal(Reply.body_sealed, rid, findings[fid].level, body)
               for rid, fid, body in db.execute(
                   select(Reply.id, Reply.finding_id, Reply.body_sealed)
                   .where(Reply.id.in_(reply_ids), Reply.hidden.is_(False)))
               if fid in findings} if reply_ids else {}
    terms = highlight_terms(query)
    results = []
    for row in rows:
        finding = findings.get(row.finding_id)
        if finding is None:  # deleted between the two statements
            continue
        reply_body = None if row.direct else replies.get(row.reply_id)
        if reply_body is not None:
            snippet, source, reply_id = make_snippet(reply_body, terms), "reply", row.reply_id
        else:
            snippet, source, reply_id = make_snippet(finding.body, terms), "finding", None
        results.append(SearchResult(finding, float(row.score or 0),
                                    highlight(finding.title, terms), snippet, source,
                                    reply_id))
    return SearchPage(query, results, page, per_page, int(total or 0), capped)


# ---------------------------------------------------------------- snippets

_SUFFIXES = ("ingly", "edly", "ing", "ies", "ed", "es", "s", "ly")
_MD_NOISE = re.compile(r"```[^\n]*|~~~[^\n]*|^\s{0,3}(?:#{1,6}|>|[-*+]|\d+[.)])\s+|[*_`]{1,3}",
                       re.MULTILINE)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def highlight_terms(query: Query) -> list[str]:
    """Word stems to mark in snippets (the positive words; excluded ones never match)."""
    stems = {_stem(w) for w in query.positive_words() if len(w) >= 2}
    return sorted(stems, key=len, reverse=True)


def _pattern(terms: list[str]) -> re.Pattern[str] | None:
    if not terms:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(t) for t in terms) + r")\w*",
                      re.IGNORECASE)


def _marked(text: str, pattern: re.Pattern[str] | None) -> Markup:
    if pattern is None:
        return escape(text)
    parts: list[Markup] = []
    pos = 0
    for m in pattern.finditer(text):
        parts.append(escape(text[pos:m.start()]))
        parts.append(Markup("<mark>") + escape(m.group(0)) + Markup("</mark>"))
        pos = m.end()
    parts.append(escape(text[pos:]))
    return Markup("").join(parts)


def highlight(text: str, terms: list[str]) -> Markup:
    return _marked(text, _pattern(terms))


def plain_text(markdown: str) -> str:
    text = _MD_LINK.sub(r"\1", markdown)
    text = _MD_NOISE.sub(" ", text)
    return " ".join(text.split())


def make_snippet(text: str, terms: list[str], width: int = SNIPPET_CHARS) -> Markup:
    """A window of ``text`` around the first match, escaped, matches in <mark>."""
    plain = plain_text(text)
    pattern = _pattern(terms)
    first = pattern.search(plain) if pattern else None
    start = max(0, first.start() - width // 4) if first else 0
    if start > 0:
        space = plain.rfind(" ", 0, start)
        start = space + 1 if space != -1 else start
    end = min(len(plain), start + width)
    if end < len(plain):
        space = plain.rfind(" ", start, end)
        end = space if space > start else end
    body = _marked(plain[start:end], pattern)
    return (Markup("… ") if start > 0 else Markup("")) + body + \
        (Markup(" …") if end < len(plain) else Markup(""))
