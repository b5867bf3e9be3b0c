#!/usr/bin/env python3
"""A long mixed soak of the production stack: Enclave in gunicorn (``gunicorn.conf.py``,
ENCLAVE_ENV=production) on PostgreSQL and Redis, driven over loopback from this process.

    .venv/bin/python bench/soak_bench.py                          # 10 minutes, c16
    .venv/bin/python bench/soak_bench.py --minutes 2 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/enclave_soak

It uses the database that bench/findings_bench.py loaded (default ``enclave_bench``) and
adds its own signed-in users of mixed clearances (network, restricted, confidential in
turn; password and TOTP through the real forms), each with an API token. Each of
``--concurrency`` threads is one user on one keep-alive connection in a closed loop,
choosing the next request from a realistic mix: the latest findings, finding pages,
category pages and searches (web pages, session cookie), new findings, replies (through
the API and through the reply form) and uploads of 64 KiB - 4 MiB of random bytes
(API). Every write carries this run's marker.

It reports requests done by kind with latency percentiles, and the errors: any answer
that is not 2xx/3xx and not an expected 404/429, and any transport error, by kind.
Afterwards it checks for lost writes: every finding, reply and upload the client saw
acknowledged must be in the database with exactly the content sent (title, body,
level; reply body; attachment size, and SHA-256 and bytes by downloading them), with its
audit entry; nothing carrying the run's marker may exist that the client did not send;
and the audit chain must verify. Every ``--rss-interval`` seconds it samples the RSS of
the gunicorn master and every worker; memory is flat when the mean total RSS over the
last minute is within 10 % of the mean over the first minute after the warm-up (gunicorn
recycles workers after ``max_requests``; the recycles are counted and reported).

Results are printed with the machine and date and written as JSON to
bench/results/soak-<timestamp>.json. Sessions and rate limits use Redis database 11
(emptied first). The server's instance folder (keyring, encrypted blobs) is temporary,
so the run's attachment rows are deleted from the database when it ends (and any left
by a killed run when it starts): the app refuses to start on attachments its keyring
cannot open. The findings and replies it posted stay (marked ``soak-<run>``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
for path in (str(REPO), str(REPO / "bench")):
    if path not in sys.path:
        sys.path.insert(0, path)

import findings_bench  # noqa: E402  (bench/ is on the path)
import load_bench  # noqa: E402
from load_bench import Connection, Session, percentile  # noqa: E402

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/enclave_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/11"
# kind -> weight (per cent of requests). Reads dominate, as on a forum.
MIX = {
    "latest": 24, "finding": 26, "category": 10, "search": 12,
    "post": 7, "reply_api": 8, "reply_form": 6, "upload": 4, "download": 3,
}
EXPECTED = {404, 429}
MIN_UPLOAD, MAX_UPLOAD = 64 * 1024, 4 * 1024 * 1024
CSRF_RE = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')
REPLY_ANCHOR_RE = re.compile(r"#reply-(\d+)$")
FLAT_TARGET = 0.10


# ------------------------------------------------------------------ what the client saw


@dataclass
class Ledger:
    """Writes sent, by outcome: acknowledged (with the server's id) or not."""

    findings: dict[int, dict[str, str]] = field(default_factory=dict)
    replies: dict[int, dict[str, Any]] = field(default_factory=dict)
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    unacknowledged: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class User:
    session: Session
    token: str
    readable: list[int]  # finding ids this user may read (a sample)
    own: list[int] = field(default_factory=list)  # findings this user posted in the run
    uploads: list[str] = field(default_factory=list)  # acknowledged attachment ids


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    expected: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    bytes_up: int = 0

    def add(self, kind: str, seconds: float, status: int | None, problem: str | None) -> None:
        self.latencies.setdefault(kind, []).append(seconds)
        if problem is not None:
            self.errors[f"{kind}: {problem}"] += 1
        elif status in EXPECTED:
            self.expected[f"{kind}: {status}"] += 1


# ------------------------------------------------------------------ set-up



def _like(value: str, pattern: str) -> bool:
    """SQL LIKE with % only, in Python (texts are encrypted in the database)."""
    import fnmatch

    return fnmatch.fnmatchcase(value, pattern.replace("%", "*"))

def forget_soak_uploads(url: str) -> int:
    """Remove the soak's attachment rows: their keys go with the run's temporary keyring,
    and the app refuses to start on a database whose attachments its keyring cannot open
    (other benchmarks share the database). Run at the end, and at the start in case an
    earlier run was killed."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            return int(conn.execute(text(
                "DELETE FROM attachments WHERE filename LIKE 'soak-%'")).rowcount)
    finally:
        engine.dispose()


def prepare(app: Any, accounts: list[tuple[str, str, str]], run: str, sample: int
            ) -> dict[str, Any]:
    """API tokens for the users, readable findings for each clearance, the categories."""
    from sqlalchemy import func, select

    from app import access
    from app.auth.models import User as UserModel
    from app.auth.service import create_token
    from app.db import db
    from app.findings.models import Category, Finding

    with app.app_context():
        tokens: dict[str, str] = {}
        readable: dict[str, list[int]] = {}
        for email, clearance, _ in accounts:
            user = db.scalar(select(UserModel).where(UserModel.email == email))
            tokens[email] = create_token(user, f"soak {run}")[1]
            if clearance not in readable:
                ids = db.scalars(select(Finding.id).where(access.finding_filter(user))
                                 .order_by(func.random()).limit(sample)).all()
                readable[clearance] = list(ids)
        categories = list(db.scalars(select(Category.slug).order_by(Category.id)))
        db.commit()
    return {"tokens": tokens, "readable": readable, "categories": categories}


# ------------------------------------------------------------------ the load


class Soak:
    def __init__(self, port: int, users: list[User], categories: list[str], words: list[str],
                 run: str, ledger: Ledger, seed: int) -> None:
        self.port = port
        self.users = users
        self.categories = categories
        self.words = words
        self.run = run
        self.ledger = ledger
        self.seed = seed
        self.tallies = [Tally() for _ in users]
        self.kinds = list(MIX)
        self.weights = [MIX[k] for k in self.kinds]

    # one request -------------------------------------------------------------

    def text(self, rng: random.Random, lo: int, hi: int) -> str:
        return " ".join(rng.choice(self.words) for _ in range(rng.randint(lo, hi)))

    def call(self, conn: Connection, tally: Tally, kind: str, method: str, path: str,
             body: bytes | None = None, headers: dict[str, str] | None = None,
             ok: tuple[int, ...] = (200,)) -> tuple[int | None, Any, bytes]:
        began = time.monotonic()
        status: int | None = None
        reply_headers: Any = None
        data = b""
        problem = None
        try:
            status, reply_headers, data = conn.request(method, path, body, headers)
            if status not in ok and status not in EXPECTED and not 300 <= status < 400:
                problem = f"status {status}"
        except Exception as exc:  # noqa: BLE001 - counted and reported
            problem = type(exc).__name__
            conn.close()
        tally.add(kind, time.monotonic() - began, status, problem)
        return status, reply_headers, data

    def api(self, user: User, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {user.token}", **(extra or {})}

    def web(self, user: User, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**user.session.header(), **(extra or {})}

    def target(self, rng: random.Random, user: User) -> int:
        """A finding to read or write to: often one of the user's own, else a readable one."""
        if user.own and rng.random() < 0.4:
            return rng.choice(user.own)
        return rng.choice(user.readable)

    def unacked(self, what: str, **details: Any) -> None:
        with self.ledger.lock:
            self.ledger.unacknowledged.append({"what": what, **details})

    def step(self, i: int, rng: random.Random, conn: Connection, n: int) -> None:
        user, tally = self.users[i], self.tallies[i]
        kind = rng.choices(self.kinds, weights=self.weights)[0]
        marker = f"soak-{self.run}-{i}-{n}"
        if kind == "download" and not user.uploads:
            kind = "finding"
        if kind == "upload" and not user.own:
            kind = "post"  # files go to the user's own findings
        if kind == "latest":
            self.call(conn, tally, kind, "GET", "/findings/", headers=self.web(user))
        elif kind == "finding":
            fid = self.target(rng, user)
            self.call(conn, tally, kind, "GET", f"/findings/{fid}", headers=self.web(user))
        elif kind == "category":
            slug = rng.choice(self.categories)
            page = f"?p={rng.randint(2, 5)}" if rng.random() < 0.3 else ""
            self.call(conn, tally, kind, "GET", f"/findings/c/{slug}{page}",
                      headers=self.web(user))
        elif kind == "search":
            words = [self.words[rng.randint(50, 1500)] for _ in range(rng.choice((1, 2, 2)))]
            self.call(conn, tally, kind, "GET", f"/findings/search?q={quote(' '.join(words))}",
                      headers=self.web(user))
        elif kind == "post":
            sent = {"title": f"{marker} {self.text(rng, 3, 8)}"[:300],
                    "body": f"{self.text(rng, 30, 200)}\n\n{marker}",
                    "category": rng.choice(self.categories), "level": user.session.clearance}
            status, _, data = self.call(
                conn, tally, kind, "POST", "/api/v1/findings", json.dumps(sent).encode(),
                self.api(user, {"Content-Type": "application/json"}), ok=(201,))
            if status == 201:
                fid = int(json.loads(data)["id"])
                user.own.append(fid)
                with self.ledger.lock:
                    self.ledger.findings[fid] = {**sent, "marker": marker}
            else:
                self.unacked("finding", marker=marker, status=status)
        elif kind == "reply_api":
            fid = self.target(rng, user)
            body = f"{self.text(rng, 5, 80)}\n\n{marker}"
            status, _, data = self.call(
                conn, tally, kind, "POST", f"/api/v1/findings/{fid}/replies",
                json.dumps({"body": body}).encode(),
                self.api(user, {"Content-Type": "application/json"}), ok=(201,))
            if status == 201:
                with self.ledger.lock:
                    self.ledger.replies[int(json.loads(data)["id"])] = {
                        "finding_id": fid, "body": body, "marker": marker}
            elif status != 404:
                self.unacked("reply", marker=marker, status=status)
        elif kind == "reply_form":
            fid = self.target(rng, user)
            status, headers, data = self.call(conn, tally, "finding", "GET", f"/findings/{fid}",
                                              headers=self.web(user))
            token = CSRF_RE.search(data.decode("utf-8", "replace")) if status == 200 else None
            if token is None:
                return
            body = f"{self.text(rng, 5, 80)}\n\n{marker}"
            status, headers, _ = self.call(
                conn, tally, kind, "POST", f"/findings/{fid}/replies",
                urlencode({"body": body, "csrf_token": token.group(1)}).encode(),
                self.web(user, {"Content-Type": "application/x-www-form-urlencoded"}),
                ok=(302,))
            anchor = REPLY_ANCHOR_RE.search(headers.get("Location", "")) if status == 302 else None
            if anchor:
                with self.ledger.lock:
                    self.ledger.replies[int(anchor.group(1))] = {
                        "finding_id": fid, "body": body, "marker": marker}
            elif status != 404:
                self.unacked("reply", marker=marker, status=status)
        elif kind == "upload":
            fid = rng.choice(user.own)
            size = int(MIN_UPLOAD * (MAX_UPLOAD / MIN_UPLOAD) ** rng.random())  # log-uniform
            blob = rng.randbytes(size)
            digest = hashlib.sha256(blob).hexdigest()
            filename = f"{marker}.bin"
            status, _, data = self.call(
                conn, tally, kind, "POST",
                f"/api/v1/findings/{fid}/attachments?filename={quote(filename)}", blob,
                self.api(user, {"Content-Type": "application/octet-stream"}), ok=(201,))
            tally.bytes_up += size
            if status == 201:
                meta = json.loads(data)
                user.uploads.append(meta["id"])
                with self.ledger.lock:
                    self.ledger.uploads[meta["id"]] = {
                        "finding_id": fid, "filename": filename, "size": size,
                        "sha256": digest, "answered_sha256": meta["sha256"],
                        "token": user.token}
            elif status != 404:
                self.unacked("upload", filename=filename, status=status)
        elif kind == "download":
            att = rng.choice(user.uploads)
            status, _, data = self.call(conn, tally, kind, "GET", f"/api/v1/attachments/{att}",
                                        headers=self.api(user))
            if status == 200:
                with self.ledger.lock:
                    want = self.ledger.uploads[att]
                if hashlib.sha256(data).hexdigest() != want["sha256"]:
                    tally.errors["download: content differs"] += 1

    def run_threads(self, stop_at: float) -> None:
        def worker(i: int) -> None:
            rng = random.Random(self.seed * 1000 + i)
            conn = Connection(self.port)
            n = 0
            while time.monotonic() < stop_at:
                n += 1
                self.step(i, rng, conn, n)
            conn.close()

        threads = [threading.Thread(target=worker, args=(i,), daemon=True)
                   for i in range(len(self.users))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


# ------------------------------------------------------------------ memory


def children(pid: int) -> list[int]:
    try:
        raw = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(x) for x in raw.split()]
    except OSError:
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
        return out


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    """Total RSS of the gunicorn master and its workers every ``interval`` seconds."""

    def __init__(self, master: int, interval: float, t0: float) -> None:
        super().__init__(daemon=True)
        self.master, self.interval, self.t0 = master, interval, t0
        self.samples: list[dict[str, Any]] = []
        self.workers_seen: set[int] = set()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            workers = children(self.master)
            self.workers_seen.update(workers)
            per = {str(p): rss_kib(p) for p in [self.master, *workers]}
            self.samples.append({"t": round(time.monotonic() - self.t0, 1),
                                 "total_kib": sum(per.values()), "workers": len(workers),
                                 "per_pid_kib": per})
            self.stopped.wait(self.interval)


def flatness(samples: list[dict[str, Any]], warmup: float, end: float) -> dict[str, Any]:
    window = min(60.0, (end - warmup) / 2)
    first = [s["total_kib"] for s in samples if warmup <= s["t"] < warmup + window]
    last = [s["total_kib"] for s in samples if end - window <= s["t"] <= end]
    if not first or not last:
        return {"window_s": window, "met": None}
    a, b = sum(first) / len(first), sum(last) / len(last)
    change = b / a - 1
    return {"window_s": window, "first_mean_mib": round(a / 1024, 1),
            "last_mean_mib": round(b / 1024, 1), "change": round(change, 3),
            "first_samples": len(first), "last_samples": len(last),
            "met": abs(change) <= FLAT_TARGET}


# ------------------------------------------------------------------ lost writes


def check_writes(app: Any, ledger: Ledger, run: str, port: int, download_sample: int,
                 seed: int) -> dict[str, Any]:
    """Compare what the client saw acknowledged with the database, and downloads."""
    from sqlalchemy import select

    from app.attachments.models import Attachment
    from app.audit import AuditEntry, verify_chain
    from app.db import db
    from app.findings.models import Finding, Reply

    like = f"soak-{run}-%"
    sent_markers = {u.get("marker") or u.get("filename") for u in ledger.unacknowledged}
    problems: Counter[str] = Counter()
    examples: list[str] = []

    def bad(kind: str, detail: str) -> None:
        problems[kind] += 1
        if len(examples) < 20:
            examples.append(f"{kind}: {detail}")

    with app.app_context():
        audited = {(a, t) for a, t in db.execute(
            select(AuditEntry.action, AuditEntry.target_id).where(AuditEntry.action.in_(
                ("finding_created", "attachment_uploaded"))))}
        rows = {f.id: f for f in db.scalars(select(Finding)) if _like(f.title, like)}
        for fid, sent in ledger.findings.items():
            row = rows.pop(fid, None)
            if row is None:
                bad("finding lost", str(fid))
            elif (row.title, row.body, row.level) != (sent["title"], sent["body"], sent["level"]):
                bad("finding differs", str(fid))
            elif ("finding_created", str(fid)) not in audited:
                bad("finding without audit entry", str(fid))
        late = [f for f in rows.values() if f.title.split(" ", 1)[0] in sent_markers]
        for f in rows.values():
            if f not in late:
                bad("finding not sent", f"{f.id} {f.title[:60]!r}")
        replies = {r.id: r for r in db.scalars(select(Reply)) if _like(r.body, f"%{like}")}
        for rid, sent in ledger.replies.items():
            row = replies.pop(rid, None)
            if row is None:
                bad("reply lost", str(rid))
            elif (row.body, row.finding_id) != (sent["body"], sent["finding_id"]):
                bad("reply differs", str(rid))
        late_replies = [r for r in replies.values()
                        if r.body.rsplit("\n", 1)[-1] in sent_markers]
        for r in replies.values():
            if r not in late_replies:
                bad("reply not sent", str(r.id))
        atts = {a.id: a for a in db.scalars(select(Attachment).where(
            Attachment.deleted_at.is_(None))) if _like(a.filename, like)}
        for aid, sent in ledger.uploads.items():
            row = atts.pop(aid, None)
            if row is None:
                bad("upload lost", aid)
            elif (row.size, row.finding_id, row.filename) != (
                    sent["size"], sent["finding_id"], sent["filename"]):
                bad("upload differs", aid)
            elif sent["answered_sha256"] != sent["sha256"]:
                bad("upload answered a different sha256", aid)
            elif ("attachment_uploaded", aid) not in audited:
                bad("upload without audit entry", aid)
        late_uploads = [a for a in atts.values() if a.filename in sent_markers]
        for a in atts.values():
            if a not in late_uploads:
                bad("upload not sent", a.id)
        db.rollback()
        chain = verify_chain()

    ids = sorted(ledger.uploads)
    rng = random.Random(seed)
    sample = ids if download_sample <= 0 or download_sample >= len(ids) else rng.sample(
        ids, download_sample)
    conn = Connection(port)
    downloaded = 0
    for aid in sample:
        sent = ledger.uploads[aid]
        try:
            status, _, data = conn.request("GET", f"/api/v1/attachments/{aid}",
                                           headers={"Authorization": f"Bearer {sent['token']}"})
        except Exception as exc:  # noqa: BLE001
            bad("download failed", f"{aid} {type(exc).__name__}")
            conn.close()
            continue
        if status != 200:
            bad("download failed", f"{aid} status {status}")
        elif len(data) != sent["size"] or hashlib.sha256(data).hexdigest() != sent["sha256"]:
            bad("download differs", aid)
        else:
            downloaded += 1
    conn.close()
    return {
        "acknowledged": {"findings": len(ledger.findings), "replies": len(ledger.replies),
                         "uploads": len(ledger.uploads)},
        "unacknowledged_sent": len(ledger.unacknowledged),
        "stored_though_unacknowledged": {"findings": len(late), "replies": len(late_replies),
                                         "uploads": len(late_uploads)},
        "downloads_verified": downloaded, "downloads_sampled": len(sample),
        "problems": dict(problems), "examples": examples,
        "lost_writes": sum(v for k, v in problems.items() if "lost" in k),
        "audit_chain": {"ok": chain.ok, "checked": chain.checked, "reason": chain.reason},
    }


# ------------------------------------------------------------------ the run


def summarize(tallies: list[Tally], seconds: float) -> dict[str, Any]:
    by_kind: dict[str, list[float]] = {}
    errors: Counter[str] = Counter()
    expected: Counter[str] = Counter()
    for t in tallies:
        for k, v in t.latencies.items():
            by_kind.setdefault(k, []).extend(v)
        errors.update(t.errors)
        expected.update(t.expected)
    kinds = {}
    for kind, values in sorted(by_kind.items()):
        ordered = sorted(values)
        kinds[kind] = {"requests": len(ordered), "rps": round(len(ordered) / seconds, 2),
                       "p50_ms": round(percentile(ordered, 0.5) * 1000, 1),
                       "p95_ms": round(percentile(ordered, 0.95) * 1000, 1),
                       "p99_ms": round(percentile(ordered, 0.99) * 1000, 1),
                       "max_ms": round(ordered[-1] * 1000, 1)}
    total = sum(k["requests"] for k in kinds.values())
    return {"requests": total, "rps": round(total / seconds, 1), "by_kind": kinds,
            "errors": sum(errors.values()), "error_kinds": dict(errors.most_common()),
            "expected": dict(expected.most_common()),
            "uploaded_mib": round(sum(t.bytes_up for t in tallies) / 2**20, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url",
                        default=os.environ.get("ENCLAVE_BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("--warmup", type=float, default=30.0,
                        help="seconds of load before the memory baseline starts")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rss-interval", type=float, default=5.0)
    parser.add_argument("--download-sample", type=int, default=0,
                        help="uploads to download and compare at the end (0: all)")
    parser.add_argument("--readable-sample", type=int, default=2000,
                        help="readable findings per clearance to choose pages from")
    parser.add_argument("--seed", type=int, default=20261121,
                        help="the seed bench/findings_bench.py loaded with")
    args = parser.parse_args()
    url = args.database_url
    if not url.startswith("postgresql"):
        parser.error("--database-url must name a PostgreSQL database")
    if url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] == "test":
        parser.error("refusing the database named 'test': the test suite owns it")

    import logging

    import redis

    from app import create_app

    run = secrets.token_hex(3)
    removed = forget_soak_uploads(url)
    folder = Path(tempfile.mkdtemp(prefix="enclave-soak-"))
    instance = folder / "instance"
    secret_key = secrets.token_urlsafe(48)
    app = create_app({"env": "development", "database_url": url, "instance_path": instance,
                      "keyring_path": instance / "keyring.json", "secret_key": secret_key})
    logging.getLogger("enclave").setLevel(logging.ERROR)
    ids = findings_bench.existing_load(app, args.seed)
    print(f"run {run}; database: {ids['counts']}", flush=True)
    accounts = load_bench.make_users(app, args.concurrency)
    setup = prepare(app, accounts, run, args.readable_sample)
    redis.Redis.from_url(args.redis_url).flushdb()

    metrics = folder / "metrics"
    metrics.mkdir()
    env = load_bench.production_env(
        load_bench.clean_env(("WORKERS", "THREADS", "MAX_REQUESTS")), url=url,
        redis_url=args.redis_url, secret_key=secret_key, instance=instance, metrics=metrics)
    ledger = Ledger()
    server = None
    try:
        server = load_bench.start_server("enclave", "wsgi:app", env, folder, "/healthz")
        users = []
        for email, clearance, totp in accounts:
            session = load_bench.sign_in(server.port, email, clearance, totp)
            users.append(User(session, setup["tokens"][email], setup["readable"][clearance]))
        soak = Soak(server.port, users, setup["categories"], ids["vocab"], run, ledger,
                    args.seed)
        started = datetime.now(UTC)
        load_before = os.getloadavg()
        t0 = time.monotonic()
        total = args.warmup + args.minutes * 60
        sampler = RssSampler(server.process.pid, args.rss_interval, t0)
        sampler.start()
        stop_at = t0 + total

        def progress() -> None:
            while time.monotonic() < stop_at - 1:
                time.sleep(min(60.0, max(1.0, stop_at - time.monotonic() - 1)))
                done = sum(len(v) for t in soak.tallies for v in t.latencies.values())
                errs = sum(sum(t.errors.values()) for t in soak.tallies)
                last = sampler.samples[-1]["total_kib"] / 1024 if sampler.samples else 0
                print(f"  {time.monotonic() - t0:6.0f} s  {done} requests  {errs} errors  "
                      f"rss {last:.0f} MiB", flush=True)

        threading.Thread(target=progress, daemon=True).start()
        cpu_before = time.process_time()
        soak.run_threads(stop_at)
        elapsed = time.monotonic() - t0
        driver_cpu = (time.process_time() - cpu_before) / elapsed
        sampler.stopped.set()
        sampler.join()
        print("load done; checking writes ...", flush=True)
        writes = check_writes(app, ledger, run, server.port, args.download_sample, args.seed)
        server_alive = server.process.poll() is None
    finally:
        if server is not None:
            server.stop()
        forget_soak_uploads(url)

    summary = summarize(soak.tallies, elapsed)
    memory = flatness(sampler.samples, args.warmup, elapsed)
    workers_seen = len(sampler.workers_seen)
    initial_workers = sampler.samples[0]["workers"] if sampler.samples else 0
    gunicorn_settings = {k.lower(): env.get(f"ENCLAVE_GUNICORN_{k}", "config default")
                         for k in ("WORKERS", "THREADS", "MAX_REQUESTS")}
    info = findings_bench.machine()
    print(f"\nEnclave soak, {started:%Y-%m-%d %H:%M} UTC, {info['host']}, {info['cpu']} "
          f"x{info['cpus']}, {info['memory']}, load average before {load_before}")
    print(f"{args.minutes:g} min + {args.warmup:g} s warm-up at concurrency "
          f"{args.concurrency}, gunicorn {gunicorn_settings}, database {ids['counts']}")
    print(f"\n{'kind':12} {'requests':>9} {'req/s':>7} {'p50':>7} {'p95':>7} {'p99':>8} "
          f"{'max':>8} ms")
    for kind, k in summary["by_kind"].items():
        print(f"{kind:12} {k['requests']:>9} {k['rps']:>7} {k['p50_ms']:>7} {k['p95_ms']:>7} "
              f"{k['p99_ms']:>8} {k['max_ms']:>8}")
    print(f"{'all':12} {summary['requests']:>9} {summary['rps']:>7}   "
          f"(uploaded {summary['uploaded_mib']} MiB, driver cpu {driver_cpu:.2f})")
    print(f"\nerrors: {summary['errors']} {summary['error_kinds'] or ''}")
    print(f"expected 404/429: {summary['expected'] or 'none'}")
    print(f"writes acknowledged: {writes['acknowledged']}, sent without acknowledgement: "
          f"{writes['unacknowledged_sent']} (stored anyway: "
          f"{writes['stored_though_unacknowledged']})")
    print(f"lost writes: {writes['lost_writes']}; problems: {writes['problems'] or 'none'}")
    print(f"downloads verified: {writes['downloads_verified']}/{writes['downloads_sampled']}; "
          f"audit chain: {writes['audit_chain']}")
    verdict = {None: "n/a", True: "met", False: "MISSED"}[memory["met"]]
    print(f"memory (gunicorn master + workers, mean total RSS): first "
          f"{memory.get('first_mean_mib')} MiB, last {memory.get('last_mean_mib')} MiB, "
          f"change {memory.get('change')} over {memory['window_s']:.0f} s windows -> "
          f"{verdict} (target within {FLAT_TARGET:.0%}); worker processes seen "
          f"{workers_seen} (started with {initial_workers}: "
          f"{max(0, workers_seen - initial_workers)} recycled); server alive at the end: "
          f"{server_alive}")

    report = {"benchmark": "soak", "run": run, "date": started.isoformat(timespec="seconds"),
              "machine": {**info, "load_average_before": load_before,
                          "load_average_after": os.getloadavg()},
              "postgresql": findings_bench.pg_settings(app), "database": ids["counts"],
              "gunicorn": gunicorn_settings, "minutes": args.minutes,
              "warmup_s": args.warmup, "elapsed_s": round(elapsed, 1),
              "concurrency": args.concurrency, "mix_percent": MIX,
              "users": {c: sum(1 for a in accounts if a[1] == c)
                        for c in load_bench.CLEARANCES},
              "driver_cpu_share": round(driver_cpu, 2), "results": summary,
              "writes": writes, "memory": {**memory, "workers_seen": workers_seen,
                                           "initial_workers": initial_workers,
                                           "samples": sampler.samples},
              "server_alive_at_end": server_alive,
              "old_soak_attachments_removed": removed}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"soak-{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(REPO)}")
    app.extensions["enclave.engine"].dispose()
    shutil.rmtree(folder, ignore_errors=True)
    clean = (summary["errors"] == 0 and writes["lost_writes"] == 0 and not writes["problems"]
             and writes["audit_chain"]["ok"] and server_alive)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
