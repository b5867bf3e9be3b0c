#!/usr/bin/env python3
"""Findings forum at scale: bulk-load a PostgreSQL database, then time the pages.

    ENCLAVE_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/enclave_bench \\
        .venv/bin/python bench/findings_bench.py              # full scale
    ... bench/findings_bench.py --scale 0.1                   # 10,000 findings, ...
    ... bench/findings_bench.py --skip-load                   # time an existing load

Full scale (``--scale 1``): 100,000 findings, 1,000,000 replies, 1,000 users, 100
organizations, every level, 50 compartments (sets of organizations). The database named
in the URL is emptied (DROP SCHEMA public CASCADE) and migrated to head, then filled with
COPY (triggers off, full-text tables filled set-based afterwards, then VACUUM ANALYZE).
It refuses a database named ``test`` (the test suite's).

Then, through the Flask test client, signed in through the real forms (password and
TOTP), it times for a member with a middle clearance (restricted) and for an admin who
reads every level, their requests interleaved so that background load falls on both
alike: the latest findings (page 1, and page 500 reached by its keyset cursor), the same
page 500 through the API's offset pagination (with its total), a category page, a
finding page with 100 replies, and searches (two mid-frequency words, one broad word,
one word in nearly every document). It also times the list and search SQL alone with
each reader's filter and with no filter at all, to isolate the cost of the access rule.
It prints EXPLAIN (ANALYZE, BUFFERS) of the statements behind the latest findings, a
category page, the finding's replies and the broad search, as the member's pages send them.
Median and p95 are printed and written as JSON to bench/results/ with the machine, the
PostgreSQL settings and the date. Targets (issue 3): pages median < 30 ms and p95 < 60
ms, search p95 < 100 ms, filter overhead <= 15 % over the admin's query.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import platform
import random
import re
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PASSWORD = "lantern-quartz-orbit-meadow"
LEVELS = [("network", 0.55), ("restricted", 0.30), ("confidential", 0.15)]
FULL = {"findings": 100_000, "replies": 1_000_000, "users": 1_000, "orgs": 100,
        "compartments": 50, "categories": 20}
BENCH_REPLIES = 100
BENCH_TITLE = "Benchmark finding with 100 replies"
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "pre", "gen", "dor", "lin",
             "qua", "ber", "sol", "tix", "mur", "zen", "pha", "cro", "el", "an", "is", "ost"]
DOMAIN = ["attention", "head", "circuit", "feature", "latent", "sparse", "autoencoder",
          "steering", "vector", "probe", "layer", "residual", "stream", "ablation", "patching",
          "activation", "superposition", "polysemantic", "neuron", "token", "embedding",
          "logit", "lens", "induction", "copying", "refusal", "jailbreak", "evaluation",
          "benchmark", "uplift", "gradient", "finetuning", "reward", "model", "scaling"]


# ------------------------------------------------------------------ text


class Vocabulary:
    """~3,000 words with a Zipf-like frequency, so that search terms have realistic
    document frequencies (rank 1 is in most documents, rank 1,000 in very few)."""

    def __init__(self, rng: random.Random, size: int = 3000) -> None:
        words: list[str] = list(DOMAIN)
        seen = set(words)
        while len(words) < size:
            word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
            if word not in seen:
                seen.add(word)
                words.append(word)
        rng.shuffle(words)
        self.words = words
        weights = [1 / (rank + 1) ** 1.05 for rank in range(len(words))]
        total = 0.0
        self.cum: list[float] = []
        for w in weights:
            total += w
            self.cum.append(total)

    def sample(self, rng: random.Random, n: int) -> list[str]:
        return rng.choices(self.words, cum_weights=self.cum, k=n)

    def text(self, rng: random.Random, lo: int, hi: int) -> str:
        words = self.sample(rng, rng.randint(lo, hi))
        sentences, i = [], 0
        while i < len(words):
            n = rng.randint(6, 14)
            chunk = words[i:i + n]
            sentences.append(" ".join(chunk).capitalize() + ".")
            i += n
        return " ".join(sentences)


def as_html(text: str) -> str:
    """What the renderer makes of one plain paragraph (bulk rows skip markdown-it)."""
    return f"<p>{html.escape(text, quote=False)}</p>\n"


# ------------------------------------------------------------------ loading


def scaled(scale: float) -> dict[str, int]:
    counts = {k: max(1, int(v * scale)) for k, v in FULL.items()}
    counts["orgs"] = max(10, counts["orgs"])
    counts["users"] = max(50, counts["users"])
    counts["compartments"] = min(50, max(5, counts["compartments"]))
    counts["categories"] = min(20, max(4, counts["categories"]))
    counts["findings"] = max(16_000, counts["findings"])  # a member's page 500 must exist
    counts["replies"] = max(BENCH_REPLIES * 2, counts["replies"])
    return counts


def reset_and_migrate(app: Any) -> None:
    from sqlalchemy import text

    from app.migrate import upgrade_to_head

    engine = app.extensions["enclave.engine"]
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    upgrade_to_head(engine)


def copy_rows(cur: Any, table: str, columns: list[str], rows: Iterator[tuple[Any, ...]]) -> int:
    n = 0
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


def load(app: Any, counts: dict[str, int], seed: int) -> dict[str, Any]:
    """Fill the database; returns the ids the measurements need."""
    from app import state
    from app.auth.passwords import hash_password

    rng = random.Random(seed)
    vocab = Vocabulary(rng)
    policy = state.policy()
    ndas = {key: (nda.version, nda.text_sha256) for key, nda in policy.ndas.items()}
    level_ndas = {lv.key: lv.ndas for lv in policy.levels}
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=730)
    pw_hash = hash_password(PASSWORD)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    engine = app.extensions["enclave.engine"]
    raw = engine.raw_connection()
    conn = raw.driver_connection
    cur = conn.cursor()
    cur.execute("SET session_replication_role = replica")  # no triggers, no FK checks
    cur.execute("SET maintenance_work_mem = '512MB'")

    # organizations: mostly trusted, a few pending/suspended, ceilings mixed
    n_orgs = counts["orgs"]
    orgs = []
    for i in range(1, n_orgs + 1):
        status = "suspended" if i % 50 == 7 else "pending" if i % 50 == 13 else "trusted"
        ceiling = ("confidential" if i % 10 < 6 else "restricted" if i % 10 < 9
                   else "network")
        orgs.append((i, f"org{i:03d}", f"Organization {i:03d}", status, ceiling, now, now))
    copy_rows(cur, "organizations", ["id", "slug", "name", "status", "ceiling", "created_at",
                                     "status_changed_at"], iter(orgs))
    copy_rows(cur, "org_domains", ["id", "org_id", "domain"],
              ((i, i, f"org{i:03d}.example") for i in range(1, n_orgs + 1)))
    trusted_orgs = [o[0] for o in orgs if o[3] == "trusted"]

    # users: clearance mix; most have signed their NDAs and turned 2FA on
    users = []
    acks = []
    ack_id = 0
    for i in range(1, counts["users"] + 1):
        org_id = (i - 1) % n_orgs + 1
        r = rng.random()
        clearance = "network" if r < 0.3 else "restricted" if r < 0.7 else "confidential"
        mfa = rng.random() < 0.8
        users.append((i, f"user{i:04d}@org{org_id:03d}.example", f"user{i:04d}",
                      f"User {i:04d}", org_id, clearance, "member", pw_hash, True,
                      now if mfa else None, 1, now))
        signed = level_ndas[clearance] if rng.random() < 0.9 else level_ndas["network"]
        for key in signed:
            ack_id += 1
            acks.append((ack_id, i, key, ndas[key][0], ndas[key][1], f"User {i:04d}", now))
    copy_rows(cur, "users", ["id", "email", "username", "display_name", "org_id",
                             "clearance", "role", "password_hash", "is_active",
                             "totp_enabled_at", "session_version", "created_at"], iter(users))
    copy_rows(cur, "nda_acknowledgements", ["id", "user_id", "nda_key", "version",
                                            "text_sha256", "signed_name", "created_at"],
              iter(acks))
    user_org = {u[0]: u[4] for u in users}

    # categories: the migration's four plus more
    cur.execute("SELECT id FROM categories ORDER BY id")
    category_ids = [r[0] for r in cur.fetchall()]
    extra = []
    next_id = max(category_ids) + 1
    while len(category_ids) + len(extra) < counts["categories"]:
        extra.append((next_id, f"topic-{next_id}", f"Topic {next_id}", ""))
        next_id += 1
    copy_rows(cur, "categories", ["id", "slug", "name", "description"], iter(extra))
    category_ids += [c[0] for c in extra]

    # compartments: 50 sets of 2-6 trusted organizations
    compartments = [rng.sample(trusted_orgs, rng.randint(2, 6))
                    for _ in range(counts["compartments"])]

    # findings, oldest first; replies spread Zipf-like, one finding gets exactly 100
    n_find = counts["findings"]
    n_rep = counts["replies"]
    step = (now - start) / n_find
    reply_plan = [0] * (n_find + 1)
    weights = [rng.paretovariate(1.5) for _ in range(n_find)]
    scale_w = (n_rep - BENCH_REPLIES) / sum(weights)
    for fid in range(1, n_find + 1):
        reply_plan[fid] = int(weights[fid - 1] * scale_w)
    bench_finding = n_find - 30  # recent, so it also appears near the top of lists
    reply_plan[bench_finding] = BENCH_REPLIES
    short = (n_rep - sum(reply_plan[1:]))
    for _ in range(max(0, short)):
        fid = rng.randint(1, n_find)
        if fid != bench_finding:
            reply_plan[fid] += 1
    body_pool = [vocab.text(rng, 40, 120) for _ in range(5000)]
    reply_pool = [vocab.text(rng, 12, 60) for _ in range(20000)]

    from app.crypto.fields import content_keys
    from app.findings import search_index

    keys = content_keys(state.keyring())
    finding_level: list[str] = [""] * (n_find + 1)
    finding_terms: list[list[int]] = []
    reply_terms: dict[tuple[str, int], list[int]] = {}  # (level, pool index) -> hashes

    def finding_rows() -> Iterator[tuple[Any, ...]]:
        for fid in range(1, n_find + 1):
            r = rng.random()
            level = "network" if r < LEVELS[0][1] else \
                "restricted" if r < LEVELS[0][1] + LEVELS[1][1] else "confidential"
            if fid == bench_finding:
                level = "restricted"
            author = rng.randint(1, counts["users"])
            compartmented = (level == "confidential" or
                             (level == "restricted" and rng.random() < 0.1) or
                             (level == "network" and rng.random() < 0.03)) \
                and fid != bench_finding
            created = start + step * fid
            title = " ".join(vocab.sample(rng, rng.randint(4, 9))).capitalize()
            if fid == bench_finding:
                title = BENCH_TITLE
            body = rng.choice(body_pool) + " " + " ".join(vocab.sample(rng, 8))
            n = reply_plan[fid]
            last_reply = created + timedelta(minutes=n) if n else None
            compartment_rows.append((fid, compartmented, user_org[author]))
            finding_level[fid] = level
            # stored as the application stores them: sealed under the level's key, and
            # the search index as keyed term hashes
            finding_terms.append(search_index.document_hashes(keys, level,
                                                              {"t": title, "b": body}))
            yield (fid, keys.seal("findings", fid, "title", level, title),
                   keys.seal("findings", fid, "body", level, body),
                   keys.seal("findings", fid, "body_html", level, as_html(body)),
                   level, compartmented, False,
                   rng.choice(category_ids), author, user_org[author], n, created, created,
                   last_reply)

    compartment_rows: list[tuple[int, bool, int]] = []
    copy_rows(cur, "findings", ["id", "title", "body", "body_html", "level", "compartmented",
                                "locked", "category_id", "author_id", "org_id", "reply_count",
                                "created_at", "updated_at", "last_reply_at"], finding_rows())

    def finding_org_rows() -> Iterator[tuple[int, int]]:
        for fid, compartmented, author_org in compartment_rows:
            if compartmented:
                for org_id in sorted(set(rng.choice(compartments)) | {author_org}):
                    yield (fid, org_id)

    copy_rows(cur, "finding_orgs", ["finding_id", "org_id"], finding_org_rows())
    timings["findings_s"] = time.perf_counter() - t0

    reply_index: list[tuple[int, int, list[int]]] = []

    def reply_rows() -> Iterator[tuple[Any, ...]]:
        rid = 0
        for fid in range(1, n_find + 1):
            created = start + step * fid
            level = finding_level[fid]
            for k in range(reply_plan[fid]):
                rid += 1
                pick = rng.randrange(len(reply_pool))
                body = reply_pool[pick]
                hashes = reply_terms.get((level, pick))
                if hashes is None:
                    hashes = reply_terms[(level, pick)] = search_index.document_hashes(
                        keys, level, {"b": body})
                reply_index.append((rid, fid, hashes))
                yield (rid, fid, rng.randint(1, counts["users"]),
                       keys.seal("replies", rid, "body", level, body),
                       keys.seal("replies", rid, "body_html", level, as_html(body)),
                       created + timedelta(minutes=k + 1), False, b"")

    t1 = time.perf_counter()
    n_replies = copy_rows(cur, "replies", ["id", "finding_id", "author_id", "body",
                                           "body_html", "created_at", "hidden",
                                           "hidden_reason"], reply_rows())
    timings["replies_s"] = time.perf_counter() - t1
    for table in ("organizations", "org_domains", "users", "nda_acknowledgements",
                  "categories", "findings", "replies"):
        cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))")
    cur.execute("SET session_replication_role = origin")
    conn.commit()

    # the search index: keyed term hashes computed above, copied in, then indexed
    t2 = time.perf_counter()
    cur.execute("DROP INDEX findings_fts_terms_gin")
    cur.execute("DROP INDEX replies_fts_terms_gin")
    with cur.copy("COPY findings_fts (finding_id, terms) FROM STDIN") as copy:
        copy.set_types(["int4", "int8[]"])
        for fid, hashes in enumerate(finding_terms, start=1):
            copy.write_row((fid, hashes))
    with cur.copy("COPY replies_fts (reply_id, finding_id, terms) FROM STDIN") as copy:
        copy.set_types(["int4", "int4", "int8[]"])
        for row in reply_index:
            copy.write_row(row)
    cur.execute("CREATE INDEX findings_fts_terms_gin ON findings_fts USING gin (terms)")
    cur.execute("CREATE INDEX replies_fts_terms_gin ON replies_fts USING gin (terms)")
    conn.commit()
    timings["fulltext_s"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    conn.autocommit = True
    cur.execute("VACUUM ANALYZE")
    conn.autocommit = False
    timings["vacuum_analyze_s"] = time.perf_counter() - t3
    cur.close()
    raw.close()
    timings["total_s"] = time.perf_counter() - t0
    return {"bench_finding": bench_finding, "replies": n_replies, "timings": timings,
            "vocab": vocab.words}


def existing_load(app: Any, seed: int) -> dict[str, Any]:
    """What ``load`` returned, read back from the database (``--skip-load``)."""
    from sqlalchemy import func, select, text

    from app.db import db
    from app.findings.models import Finding

    with app.app_context():
        bench_finding = next((f.id for f in db.scalars(
            select(Finding).where(Finding.reply_count == BENCH_REPLIES)) if f.title == BENCH_TITLE),
            None)
        if bench_finding is None:
            raise SystemExit("no benchmark load in this database; run without --skip-load")
        counts = {table: db.scalar(text(f"SELECT count(*) FROM {table}"))  # noqa: S608
                  for table in ("findings", "replies", "users", "organizations",
                                "categories")}
        counts["compartments"] = db.scalar(select(func.count(func.distinct(Finding.id)))
                                           .where(Finding.compartmented.is_(True)))
    vocab = Vocabulary(random.Random(seed))  # the load's first use of its generator
    return {"bench_finding": bench_finding, "replies": counts["replies"], "timings": None,
            "vocab": vocab.words, "counts": counts}


# ------------------------------------------------------------------ the two readers


def make_reader(app: Any, *, role: str, clearance: str) -> tuple[Any, str]:
    """A real account with a TOTP secret, in a trusted organization with a confidential
    ceiling, every NDA of its clearance signed."""
    import pyotp
    from sqlalchemy import select

    from app import state
    from app.auth import mfa
    from app.auth.models import User
    from app.auth.passwords import hash_password
    from app.db import db, utcnow
    from app.ndas.models import NdaAcknowledgement
    from app.orgs.models import Organization

    with app.app_context():
        org = db.scalar(select(Organization).where(Organization.status == "trusted",
                                                   Organization.ceiling == "confidential")
                        .order_by(Organization.id))
        name = f"bench-{role}-{clearance}"
        user = db.scalar(select(User).where(User.username == name))
        if user is None:
            user = User(email=f"{name}@{org.slug}.example", username=name,
                        display_name=name.title(), org_id=org.id, clearance=clearance,
                        role=role, password_hash=hash_password(PASSWORD), is_active=True)
            db.add(user)
            db.flush()
            policy = state.policy()
            for key in policy.level(clearance).ndas:
                nda = policy.ndas[key]
                db.add(NdaAcknowledgement(user_id=user.id, nda_key=key, version=nda.version,
                                          text_sha256=nda.text_sha256, signed_name=name))
        secret = pyotp.random_base32()
        user.totp_secret_enc = mfa.seal_secret(user, secret)
        user.totp_enabled_at = utcnow()
        user.totp_last_step = None
        db.commit()
        return user.id, secret


def sign_in(client: Any, email: str, secret: str) -> None:
    import pyotp

    def csrf(page: str) -> str:
        m = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page)
        assert m, "no CSRF token"
        return m.group(1)

    page = client.get("/login").text
    r = client.post("/login", data={"email": email, "password": PASSWORD,
                                    "csrf_token": csrf(page)})
    assert r.status_code == 302, r.status_code
    page = client.get("/login/2fa").text
    r = client.post("/login/2fa", data={"code": pyotp.TOTP(secret).now(),
                                        "csrf_token": csrf(page)})
    assert r.status_code == 302 and "/login" not in r.location, "2FA sign-in failed"


# ------------------------------------------------------------------ timing


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"median_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(p95 * 1000, 2), "min_ms": round(ordered[0] * 1000, 2),
            "n": len(ordered)}


def time_it(fn: Callable[[], Any], repeat: int, warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return stats(samples)


def time_pair(fns: dict[str, Callable[[], Any]], repeat: int, warmup: int = 3
              ) -> dict[str, dict[str, float]]:
    """Time several readers' requests interleaved, so that background load on the
    machine falls on all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {who: [] for who in fns}
    for _ in range(repeat):
        for who, fn in fns.items():
            t = time.perf_counter()
            fn()
            samples[who].append(time.perf_counter() - t)
    return {who: stats(s) for who, s in samples.items()}


def get_ok(client: Any, url: str, headers: dict[str, str] | None = None,
           allowed: tuple[int, ...] = (200,)) -> Callable[[], Any]:
    def run() -> Any:
        r = client.get(url, headers=headers or {})
        assert r.status_code in allowed, (url, r.status_code, r.get_data(as_text=True)[:300])
        return r

    return run


def sql_timings(user: Any, queries: dict[str, str], repeat: int) -> dict[str, Any]:
    """The list and search statements alone, with this reader's filter and without."""
    from sqlalchemy import select

    from app import access
    from app.db import db
    from app.findings import search
    from app.findings.models import Finding
    from app.findings.service import tune_postgres

    access.forget(user)
    tune_postgres()
    base = select(Finding.id).order_by(Finding.created_at.desc(), Finding.id.desc())
    allowed = base.where(access.finding_filter(user))
    two = queries["search_two_words"]
    out = {
        "sql_latest_page_1_filtered": time_it(
            lambda: db.execute(allowed.limit(26)).all(), repeat),
        "sql_latest_page_1_unfiltered": time_it(
            lambda: db.execute(base.limit(26)).all(), repeat),
        "sql_offset_page_500_filtered": time_it(
            lambda: db.execute(allowed.offset(499 * 25).limit(25)).all(), repeat),
        "sql_offset_page_500_unfiltered": time_it(
            lambda: db.execute(base.offset(499 * 25).limit(25)).all(), repeat),
        "service_search_two_words": time_it(lambda: search.search(user, two), repeat),
    }
    for name, q in queries.items():
        try:
            out[name.replace("search_", "search_total_")] = search.search(user, q).total
        except search.SearchError as exc:
            out[name.replace("search_", "search_total_")] = f"refused: {exc.message}"
    db.rollback()
    return out


def prepare(app: Any, ids: dict[str, Any], role: str, clearance: str) -> dict[str, Any]:
    from sqlalchemy import select

    from app import access
    from app.auth.models import User
    from app.auth.service import create_token
    from app.db import db
    from app.findings import service
    from app.findings.models import Category, Finding

    user_id, secret = make_reader(app, role=role, clearance=clearance)
    with app.app_context():
        user = db.get(User, user_id)
        email = user.email
        _, token = create_token(user, "bench")
        listing = service.page_findings(user, {"page": "500", "per_page": "25"})
        before = db.scalar(select(Finding).where(access.finding_filter(user))
                           .order_by(Finding.created_at.desc(), Finding.id.desc())
                           .offset(499 * 25 - 1).limit(1))
        prepared = {
            "user_id": user_id, "first_of_500": listing.items[0].id,
            "cursor": service.encode_cursor(before), "readable": listing.total,
            "category": db.scalar(select(Category.slug).order_by(Category.id)),
            "headers": {"Authorization": f"Bearer {token}"},
        }
        assert access.can_read(user, db.get(Finding, ids["bench_finding"]))
    client = app.test_client()
    sign_in(client, email, secret)
    page500 = client.get(f"/findings/?before={prepared['cursor']}&p=500").text
    assert f'data-finding="{prepared["first_of_500"]}"' in page500, "keyset page 500 is off"
    prepared["client"] = client
    return prepared


def measure(app: Any, ids: dict[str, Any], repeat: int) -> dict[str, Any]:
    from app.auth.models import User
    from app.db import db

    words = ids["vocab"]
    # ranks in the Zipf vocabulary: 300 and 700 are each in ~1-3% of documents (a
    # typical, specific search), 150 alone in ~5%, 2 in nearly every document (a worst case)
    queries = {"search_two_words": f"{words[300]} {words[700]}",
               "search_one_word": words[150],
               "search_common_word": words[2]}
    readers = {"member": prepare(app, ids, "member", "restricted"),
               "admin": prepare(app, ids, "admin", "confidential")}
    pages: dict[str, Callable[[dict[str, Any]], tuple[str, bool]]] = {
        "latest_page_1": lambda r: ("/findings/", False),
        "latest_page_500_keyset": lambda r: (f"/findings/?before={r['cursor']}&p=500", False),
        "category_page": lambda r: (f"/findings/c/{r['category']}", False),
        "finding_100_replies": lambda r: (f"/findings/{ids['bench_finding']}", False),
        "search_two_words": lambda r: (f"/findings/search?q={queries['search_two_words']}",
                                       False),
        "search_one_word": lambda r: (f"/findings/search?q={queries['search_one_word']}",
                                      False),
        "search_common_word": lambda r: (
            f"/findings/search?q={queries['search_common_word']}", False),
        "api_latest_page_500_offset": lambda r: ("/api/v1/findings?page=500&per_page=25",
                                                 True),
        "api_search_two_words": lambda r: (
            f"/api/v1/findings?q={queries['search_two_words']}", True),
    }
    out: dict[str, Any] = {"queries": queries, "member": {}, "admin": {}}
    for name, make in pages.items():
        fns = {}
        for who, r in readers.items():
            url, api = make(r)
            allowed = (200, 400) if name == "search_common_word" else (200,)
            fns[who] = get_ok(r["client"], url, r["headers"] if api else None, allowed)
        n = max(5, repeat // 4) if name == "search_common_word" else repeat
        for who, result in time_pair(fns, n).items():
            out[who][name] = result
        print(f"  {name}: member {out['member'][name]['median_ms']} ms, "
              f"admin {out['admin'][name]['median_ms']} ms (median)", flush=True)
    for who, r in readers.items():
        with app.app_context():
            out[who].update(sql_timings(db.get(User, r["user_id"]), queries, repeat))
        out[who]["readable_findings"] = r["readable"]
    out["explain"] = explain_hot_queries(app, readers["member"]["user_id"], ids,
                                         queries["search_one_word"])
    out["filter_overhead_member_vs_admin"] = {
        name: round(out["member"][name]["median_ms"] / out["admin"][name]["median_ms"] - 1, 3)
        for name in out["member"] if isinstance(out["member"][name], dict)
    }
    return out


# ------------------------------------------------------------------ query plans


def explain_hot_queries(app: Any, user_id: int, ids: dict[str, Any], search_query: str
                        ) -> dict[str, list[dict[str, Any]]]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statements the hot pages send, as the services
    send them for reader ``user_id`` (captured from the engine, then explained with their
    own parameters, after the same SET LOCALs): the latest findings, a category page,
    the finding's replies and a search. Returns {page: [{"sql", "plan"}]}."""
    from sqlalchemy import event, select

    from app.auth.models import User
    from app.db import db
    from app.findings import search, service
    from app.findings.models import Category, Finding

    engine = app.extensions["enclave.engine"]
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    pages: dict[str, Callable[[Any], Any]] = {
        "latest": lambda user: service.list_findings(user),
        "category": lambda user: service.list_findings(
            user, category=db.scalar(select(Category).order_by(Category.id))),
        "finding_replies": lambda user: service.replies_page(
            user, service.get_finding(user, ids["bench_finding"])),
        "search": lambda user: search.search(user, search_query),
    }
    out: dict[str, list[dict[str, Any]]] = {}
    with app.app_context():
        for name, run in pages.items():
            user = db.get(User, user_id)
            db.get(Finding, ids["bench_finding"])  # loads outside the capture
            captured.clear()
            event.listen(engine, "before_cursor_execute", capture)
            try:
                run(user)
            finally:
                event.remove(engine, "before_cursor_execute", capture)
            db.rollback()
            plans = []
            conn = db.connection()
            for statement, parameters in captured:
                if statement.lstrip().upper().startswith("SET "):
                    conn.exec_driver_sql(statement)
                    continue
                if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
                    continue
                rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement,
                                            parameters).all()
                plans.append({"sql": statement, "plan": [r[0] for r in rows]})
            db.rollback()
            out[name] = plans
    return out


def print_plans(plans: dict[str, list[dict[str, Any]]]) -> None:
    for name, statements in plans.items():
        for i, item in enumerate(statements, 1):
            print(f"\n--- EXPLAIN {name} #{i}: {' '.join(item['sql'].split())[:160]}")
            print("\n".join(item["plan"]))


# ------------------------------------------------------------------ report


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"host": socket.gethostname(), "platform": platform.platform(), "cpu": cpu,
            "cpus": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "load_average": os.getloadavg()}


def pg_settings(app: Any) -> dict[str, str]:
    from sqlalchemy import text

    with app.extensions["enclave.engine"].connect() as conn:
        out = {"version": str(conn.execute(text("SELECT version()")).scalar())}
        for name in ("shared_buffers", "work_mem", "effective_cache_size", "jit",
                     "max_parallel_workers_per_gather"):
            out[name] = str(conn.execute(text(f"SHOW {name}")).scalar())
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("ENCLAVE_DATABASE_URL"))
    parser.add_argument("--scale", type=float, default=1.0,
                        help="1.0 = 100k findings, 1M replies, 1k users (default)")
    parser.add_argument("--repeat", type=int, default=40, help="timed requests per page")
    parser.add_argument("--skip-load", action="store_true",
                        help="time the database as it is (loaded by an earlier run)")
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--instance", default=None,
                        help="instance folder (its keyring seals the loaded content: give the "
                             "same one to --skip-load runs); default: a new temporary one")
    args = parser.parse_args()
    url = args.database_url or ""
    if not url.startswith("postgresql"):
        parser.error("set ENCLAVE_DATABASE_URL (or --database-url) to a PostgreSQL database")
    if url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] == "test":
        parser.error("refusing the database named 'test': the test suite owns it")

    from app import create_app

    instance = Path(args.instance) if args.instance else \
        Path(tempfile.mkdtemp(prefix="enclave-bench-"))
    instance.mkdir(parents=True, exist_ok=True)
    app = create_app({"env": "development", "database_url": url, "instance_path": instance,
                      "keyring_path": instance / "keyring.json",
                      "secret_key": "bench-" + "k" * 40, "login_limit": "1000 per minute",
                      "api_limit": "100000 per minute",
                      "search_limit": "100000 per minute"})
    import logging

    logging.getLogger("enclave").setLevel(logging.ERROR)
    counts = scaled(args.scale)
    if args.skip_load:
        ids = existing_load(app, args.seed)
        print(f"using the existing load ({ids['counts']})")
    else:
        print(f"loading {counts} into {url.rsplit('@', 1)[-1]} ...", flush=True)
        with app.app_context():
            reset_and_migrate(app)
            ids = load(app, counts, args.seed)
        ids["counts"] = counts
        print("load:", {k: round(v, 1) for k, v in ids["timings"].items()}, flush=True)
    load_before = os.getloadavg()
    results = measure(app, ids, args.repeat)

    print(f"\n{'page':34} {'member median/p95 ms':>22} {'admin median/p95 ms':>22}")
    for name, m in results["member"].items():
        if not isinstance(m, dict):
            continue
        a = results["admin"][name]
        print(f"{name:34} {m['median_ms']:>10.1f} /{m['p95_ms']:>8.1f}  "
              f"{a['median_ms']:>10.1f} /{a['p95_ms']:>8.1f}")
    print("\nreadable findings: member", results["member"]["readable_findings"],
          "admin", results["admin"]["readable_findings"])
    for who in ("member", "admin"):
        print(f"search hits for the {who} (two words / one word / common word):",
              results[who]["search_total_two_words"], results[who]["search_total_one_word"],
              results[who]["search_total_common_word"])
    print("queries:", results["queries"])
    print("member vs admin (median):", results["filter_overhead_member_vs_admin"])
    print_plans(results["explain"])

    report = {"benchmark": "findings", "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {**machine(), "load_average_before": load_before},
              "postgresql": pg_settings(app), "scale": args.scale,
              "counts": ids["counts"], "replies_loaded": ids.get("replies"),
              "load_timings_s": ids.get("timings"), "repeat": args.repeat,
              "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"findings-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(REPO)}")
    app.extensions["enclave.engine"].dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
