"""PostgreSQL really restarting under load, with the production server in gunicorn.

The suite's PostgreSQL server is shared and must not be restarted, so this test starts a
private cluster (initdb as the ``postgres`` OS user, trust auth on 127.0.0.1, a free
port), migrates it, and serves Enclave from it in gunicorn (ENCLAVE_ENV=production).
Several threads post findings and replies (API and reply form) and read pages while
the cluster is restarted with ``pg_ctl restart -m fast`` and then ``-m immediate``
(a crash, with recovery). Requests caught by a restart must fail cleanly (a 503 page or
JSON error, no 500, no stack trace, no hang), the pool must recover by itself (requests
succeed again within seconds, the same gunicorn workers), and nothing may be
half-written: every acknowledged write is stored with its audit entry, counters match
rows, nothing unsent exists, and the audit chain verifies.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from sqlalchemy import create_engine, text

from app.config import REPO_ROOT
from tests.conftest import csrf_from, make_app, redis_test_url
from tests.factories import make_finding, make_org, make_user
from tests.pg_private import requires_postgres
from tests.test_two_instances import (
    SECRET_KEY,
    Browser,
    Instance,
    free_port,
    server_env,
    start_instance,
    stop_instance,
    wait_ready,
)

pytestmark = requires_postgres

REDIS_URL = redis_test_url(10)
UNAVAILABLE = "The database is unavailable for a moment"
CLIENT_TIMEOUT = 20.0
RECOVERY_LIMIT = 5.0  # seconds after the server is back by which requests succeed again
REPLY_ANCHOR_RE = re.compile(r"#reply-(\d+)$")


# ------------------------------------------------------------------ a private cluster


def _pg_bin() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                      else 0)
    return versions[-1].parent if versions else None


@dataclass
class Cluster:
    bindir: Path
    folder: Path
    port: int
    as_postgres: list[str]

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run([*self.as_postgres, str(self.bindir / "pg_ctl"), "-D", str(self.data),
                        "-l", str(self.folder / "server.log"), "-w", "-t", "50", *args],
                       check=True, capture_output=True, timeout=timeout)

    def log_tail(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries in /usr/lib/postgresql/<version>/bin")
    user = getpass.getuser()
    if user == "postgres":
        as_postgres: list[str] = []
    elif os.geteuid() == 0 and shutil.which("runuser"):
        as_postgres = ["runuser", "-u", "postgres", "--"]
    else:
        pytest.skip("initdb runs only as the postgres OS user: run the suite as root "
                    "(runuser -u postgres) or as postgres")
    folder = Path(tempfile.mkdtemp(prefix="enclave-pg-"))
    if as_postgres:
        shutil.chown(folder, "postgres", "postgres")
    cluster = Cluster(bindir, folder, free_port(), as_postgres)
    started = False
    try:
        subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(cluster.data),
                        "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"],
                       check=True, capture_output=True, timeout=120)
        with (cluster.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\nport = {cluster.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{folder}'\nmax_connections = 60\n"
                       "shared_buffers = 16MB\nfsync = off\n")  # a process crash is enough
        cluster.pg_ctl("start")
        started = True
        admin = create_engine(cluster.url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE enclave"))
        admin.dispose()
        yield cluster
    finally:
        if started:
            with contextlib.suppress(subprocess.SubprocessError):
                cluster.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------ the load


@dataclass
class Outcome:
    began: float
    ended: float
    kind: str
    status: int | None
    problem: str | None  # None: succeeded or failed cleanly with 503


@dataclass
class Ledger:
    findings: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> title, body
    replies: dict[int, tuple[int, str]] = field(default_factory=dict)  # id -> finding, body
    sent_markers: set[str] = field(default_factory=set)
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _judge(kind: str, status: int, headers: Any, body: bytes) -> str | None:
    """None when the answer is a success or a clean 503; else what is wrong with it."""
    if status < 400 or status == 404:
        return None
    text_ = body.decode("utf-8", "replace")
    if status != 503:
        return f"status {status}: {text_[:200]!r}"
    if "Traceback" in text_ or "psycopg" in text_ or "sqlalchemy" in text_.lower():
        return "503 with internals"
    if headers.get("Retry-After") != "5":
        return f"503 without Retry-After: {text_[:300]!r}"
    if kind.startswith("api"):
        try:
            error = json.loads(body)["error"]
        except (ValueError, KeyError):
            return f"API 503 not JSON: {text_[:200]!r}"
        return None if error.get("code") == "database_unavailable" else f"API 503 {error}"
    return None if UNAVAILABLE in text_ and "<title>" in text_ else f"503 page {text_[:200]!r}"


class Driver:
    """Threads posting and reading in a closed loop until told to stop."""

    def __init__(self, port: int, ledger: Ledger) -> None:
        self.port = port
        self.ledger = ledger
        self.stop = threading.Event()

    def timed(self, kind: str, browser: Browser, method: str, path: str,
              body: bytes | None = None, headers: dict[str, str] | None = None
              ) -> tuple[int | None, Any, bytes]:
        began = time.monotonic()
        try:
            reply = browser.request(self.port, method, path, body, headers)
        except Exception as exc:  # noqa: BLE001 - a hang or a dropped connection
            outcome = Outcome(began, time.monotonic(), kind, None, type(exc).__name__)
            with self.ledger.lock:
                self.ledger.outcomes.append(outcome)
            return None, {}, b""
        problem = _judge(kind, reply.status, reply.headers, reply.body)
        with self.ledger.lock:
            self.ledger.outcomes.append(Outcome(began, time.monotonic(), kind, reply.status,
                                                problem))
        return reply.status, reply.headers, reply.body

    def api_writer(self, n: int, token: str, finding_id: int) -> None:
        browser = Browser(f"198.51.100.{60 + n}")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        own: list[int] = [finding_id]
        i = 0
        while not self.stop.is_set():
            i += 1
            marker = f"restart-{n}-{i}"
            with self.ledger.lock:
                self.ledger.sent_markers.add(marker)
            if i % 2:
                title, body = f"{marker} title", f"Body of {marker}.\n\nMore words here."
                status, _, data = self.timed(
                    "api post", browser, "POST", "/api/v1/findings",
                    json.dumps({"title": title, "body": body, "category": "general",
                                "level": "network"}).encode(), headers)
                if status == 201:
                    fid = int(json.loads(data)["id"])
                    own.append(fid)
                    with self.ledger.lock:
                        self.ledger.findings[fid] = (title, body)
            else:
                target = own[i % len(own)]
                body = f"Reply {marker}"
                status, _, data = self.timed(
                    "api reply", browser, "POST", f"/api/v1/findings/{target}/replies",
                    json.dumps({"body": body}).encode(), headers)
                if status == 201:
                    with self.ledger.lock:
                        self.ledger.replies[int(json.loads(data)["id"])] = (target, body)
            self.timed("api read", browser, "GET", f"/api/v1/findings/{own[-1]}",
                       headers={"Authorization": f"Bearer {token}"})

    def web_user(self, n: int, browser: Browser, finding_id: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            status, _, page = self.timed("web finding", browser, "GET",
                                         f"/findings/{finding_id}")
            if status == 200:
                marker = f"restart-web-{n}-{i}"
                with self.ledger.lock:
                    self.ledger.sent_markers.add(marker)
                body = f"Reply {marker}"
                form = {"body": body, "csrf_token": csrf_from(page.decode())}
                status, headers, _ = self.timed(
                    "web reply", browser, "POST", f"/findings/{finding_id}/replies",
                    urlencode(form).encode(),
                    {"Content-Type": "application/x-www-form-urlencoded"})
                anchor = REPLY_ANCHOR_RE.search(headers.get("Location", "")) \
                    if status == 302 else None
                if anchor:
                    with self.ledger.lock:
                        self.ledger.replies[int(anchor.group(1))] = (finding_id, body)
            self.timed("web list", browser, "GET", "/findings/")
            self.timed("web search", browser, "GET", "/findings/search?q=body")


def _server_errors(server: Instance) -> str:
    """The server's error lines and tracebacks (not the access log), for a failure."""
    lines = server.log.read_text(errors="replace").splitlines() if server.log.exists() else []
    plain = [line for line in lines if not line.startswith("{")]  # gunicorn's own
    logged = [line for line in lines if line.startswith('{"time": ') and '"ERROR"' in line]
    return ("\n".join(plain)[-8000:] + "\n" + "\n".join(logged)[-8000:]).strip()


def _workers(master: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text()
                .split()}
    except OSError:
        return set()


# ------------------------------------------------------------------ the test


def test_postgresql_restarts_under_load(cluster: Cluster, tmp_path: Path) -> None:
    from app.auth.tokens import create_token
    from app.migrate import upgrade_to_head
    from tests.findings_world import make_category

    url = cluster.url("enclave")
    instance = tmp_path / "instance"
    app = make_app(url, instance, secret_key=SECRET_KEY)
    try:
        with app.app_context():
            upgrade_to_head()
            make_category("general")
            org = make_org("lab")
            writers = [make_user(org, mfa_on=False, name=f"writer{i}", clearance="network")
                       for i in range(3)]
            readers = [make_user(org, mfa_on=False, name=f"reader{i}", clearance="network")
                       for i in range(3)]
            tokens = [create_token(u, "restart", scopes=["read", "write"])[1]
                      for u in writers]
            seed = make_finding(writers[0], title="Seed finding", body="A body to search.")
            emails = [u.email for u in readers]
            seed_id = seed.id
    finally:
        app.extensions["enclave.engine"].dispose()

    store = redis.Redis.from_url(REDIS_URL)
    store.flushdb()
    env = server_env(url, instance, free_port(), ENCLAVE_REDIS_URL=REDIS_URL,
                     ENCLAVE_GUNICORN_WORKERS="2", ENCLAVE_GUNICORN_THREADS="4",
                     ENCLAVE_API_LIMIT="100000 per minute",
                     ENCLAVE_SEARCH_LIMIT="100000 per minute")
    server: Instance | None = None
    ledger = Ledger()
    driver: Driver | None = None
    threads: list[threading.Thread] = []
    try:
        server = start_instance("restart", env, tmp_path / "gunicorn.log")
        wait_ready(server)
        browsers = []
        for n, email in enumerate(emails):
            browser = Browser(f"198.51.100.{70 + n}")
            reply = browser.sign_in(server.port, email)
            assert reply.status == 302 and reply.location.endswith("/home"), reply.text
            browsers.append(browser)
        workers_before = _workers(server.process.pid)
        driver = Driver(server.port, ledger)
        threads = [threading.Thread(target=driver.api_writer, args=(n, tokens[n], seed_id))
                   for n in range(len(tokens))]
        threads += [threading.Thread(target=driver.web_user, args=(n, b, seed_id))
                    for n, b in enumerate(browsers)]
        for t in threads:
            t.start()
        restarts: list[dict[str, Any]] = []
        time.sleep(3)
        for mode in ("fast", "immediate"):
            down = time.monotonic()
            cluster.pg_ctl("restart", "-m", mode)
            up = time.monotonic()
            restarts.append({"mode": mode, "down": down, "up": up})
            time.sleep(8)
        driver.stop.set()
        for t in threads:
            t.join(timeout=CLIENT_TIMEOUT + 10)
        assert not any(t.is_alive() for t in threads), "a client thread hung"

        outcomes = ledger.outcomes
        bad = [o for o in outcomes if o.problem is not None]
        report = []
        for r in restarts:
            hit = [o for o in outcomes if o.status == 503 and o.ended >= r["down"]
                   and o.began <= r["up"] + RECOVERY_LIMIT]
            after = [o for o in outcomes if o.began >= r["up"]]
            last_503 = max((o.ended for o in hit), default=r["up"])
            report.append({"mode": r["mode"], "restart_s": round(r["up"] - r["down"], 2),
                           "503": len(hit), "recovered_after_s":
                           round(max(0.0, last_503 - r["up"]), 2),
                           "ok_after": sum(1 for o in after if o.status and o.status < 400)})
        print("restarts:", report, "requests:", len(outcomes),
              "answered 503:", sum(1 for o in outcomes if o.status == 503),
              "acknowledged findings:", len(ledger.findings), "replies:", len(ledger.replies))
        assert not bad, f"unclean failures: {bad[:5]}\n{_server_errors(server)}"
        for n, (r, seen) in enumerate(zip(restarts, report, strict=True)):
            until = restarts[n + 1]["down"] if n + 1 < len(restarts) else float("inf")
            late = [o for o in outcomes if o.status == 503
                    and o.began > r["up"] + RECOVERY_LIMIT and o.ended < until]
            assert not late, f"503s {RECOVERY_LIMIT}s after the {r['mode']} restart: {late[:3]}"
            assert seen["ok_after"] > 0, f"nothing succeeded after the {r['mode']} restart"
        # the requests of the last seconds all succeeded, on the same gunicorn workers
        tail = [o for o in outcomes if o.began > restarts[-1]["up"] + RECOVERY_LIMIT]
        assert tail and all(o.status is not None and o.status < 400 for o in tail)
        assert server.process.poll() is None
        assert _workers(server.process.pid) == workers_before, server.log_tail()
    finally:
        if driver is not None:
            driver.stop.set()
        for t in threads:
            t.join(timeout=CLIENT_TIMEOUT + 10)
        if server is not None:
            stop_instance(server)
            # kept for a failure's post-mortem (test-artifacts/ is not committed)
            artifacts = REPO_ROOT / "test-artifacts"
            artifacts.mkdir(exist_ok=True)
            shutil.copy(server.log, artifacts / "pg-restart-gunicorn.log")
        store.flushdb()

    _check_nothing_half_written(url, instance, ledger, seed_id)


OPEN_ROWS = """
import json, sys
from sqlalchemy import select
from app import create_app
from app.db import db
from app.findings.models import Finding, Reply
with create_app().app_context():
    findings = {f.id: [f.title, f.body] for f in db.scalars(
        select(Finding).where(Finding.id != int(sys.argv[1])))}
    replies = {r.id: [r.finding_id, r.body] for r in db.scalars(select(Reply))}
print(json.dumps({"findings": findings, "replies": replies}))
"""


def _opened_rows(url: str, instance: Path, seed_id: int
                 ) -> tuple[dict[int, list[Any]], dict[int, list[Any]]]:
    """Titles and bodies as the app opens them with the server's keyring (the columns hold
    ciphertext), from a process with the server's settings."""
    env = server_env(url, instance, free_port())
    done = subprocess.run([sys.executable, "-c", OPEN_ROWS, str(seed_id)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    return ({int(k): v for k, v in rows["findings"].items()},
            {int(k): v for k, v in rows["replies"].items()})


def _check_nothing_half_written(url: str, instance: Path, ledger: Ledger, seed_id: int
                                ) -> None:
    findings, replies = _opened_rows(url, instance, seed_id)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            created = {row.target_id for row in conn.execute(text(
                "SELECT target_id FROM audit_log WHERE action = 'finding_created'"))}
            counts = {row.id: (row.reply_count, row.n) for row in conn.execute(text(
                "SELECT f.id, f.reply_count, count(r.id) AS n FROM findings f "
                "LEFT JOIN replies r ON r.finding_id = f.id GROUP BY f.id"))}
    finally:
        engine.dispose()
    assert ledger.findings and ledger.replies
    for fid, (title, body) in ledger.findings.items():
        assert fid in findings, f"acknowledged finding {fid} lost"
        assert tuple(findings[fid]) == (title, body)
    for rid, (fid, body) in ledger.replies.items():
        assert rid in replies, f"acknowledged reply {rid} lost"
        assert tuple(replies[rid]) == (fid, body)
    for fid, (title, _body) in findings.items():
        assert title.split(" ", 1)[0] in ledger.sent_markers, f"finding {fid} not sent"
        assert str(fid) in created, f"finding {fid} without its audit entry"
    for rid, (_fid, body) in replies.items():
        assert body.removeprefix("Reply ") in ledger.sent_markers, f"reply {rid} not sent"
    uneven = {fid: c for fid, c in counts.items() if c[0] != c[1]}
    assert not uneven, f"reply_count differs from the replies stored: {uneven}"

    env = server_env(url, instance, free_port())
    result = subprocess.run([str(Path(sys.executable).parent / "enclave"), "audit", "verify"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
