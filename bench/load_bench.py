#!/usr/bin/env python3
"""The production stack under load: Enclave in gunicorn (``gunicorn.conf.py``,
ENCLAVE_ENV=production) on PostgreSQL and Redis, driven over loopback from this process,
against a bare Flask route served by the same gunicorn configuration (the ceiling).

    .venv/bin/python bench/load_bench.py                      # 20 s per point
    .venv/bin/python bench/load_bench.py --duration 60 --concurrency 8 16 32

It uses the database that bench/findings_bench.py loaded (100,000 findings, 1,000,000
replies; default ``enclave_bench``) as it is, and adds its own signed-in users (password
and TOTP, through the real forms) of mixed clearances: network, restricted and
confidential, in turn. For each page and each concurrency it runs a fixed number of
threads for a fixed time, each thread one keep-alive connection and one user session,
sending the next request as soon as the last answer is read (a closed loop), and reports
requests per second and latency p50/p95/p99 as the client sees it, and the errors.

Pages: the latest findings, the finding with 100 replies (readers cleared for it), a
two-word search across the million replies (filtered by access), the latest findings
for readers of every level (the access filter's baseline), and the bare route.
After the load it prints EXPLAIN (ANALYZE, BUFFERS) of the statements behind the latest
findings, a category page, the finding's replies and the search, as a restricted reader's
pages send them. Results, plans included, are printed with the machine and date and
written as JSON to bench/results/.
Sessions and rate limits use Redis database 13 (emptied first).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
for path in (str(REPO), str(REPO / "bench")):
    if path not in sys.path:
        sys.path.insert(0, path)

import findings_bench  # noqa: E402  (bench/ is on the path)

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/enclave_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
CLEARANCES = ("network", "restricted", "confidential")
CSRF_RE = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')
TARGETS = {
    "latest: throughput >= 40% of the bare route's": ("latest", "ratio", 0.40),
    "latest: p95 < 60 ms at concurrency 8": ("latest", "p95@8", 60.0),
    "finding with 100 replies: throughput >= 25% of the bare route's": ("finding_100_replies",
                                                                         "ratio", 0.25),
    "search: p95 < 100 ms": ("search_two_words", "p95", 100.0),
    "access filter: latest (mixed readers) within 15% of readers of every level": (
        "latest", "filter", 0.15),
}


# ------------------------------------------------------------------ HTTP


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                self.close()
                if attempt:
                    raise
                continue
            if response.will_close:
                self.close()
            return response.status, response.headers, data
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Session:
    """A signed-in user: the cookie to send."""

    email: str
    clearance: str
    cookies: dict[str, str] = field(default_factory=dict)

    def header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    def keep(self, headers: Any) -> None:
        for raw in headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                self.cookies[name] = morsel.value


def sign_in(port: int, email: str, clearance: str, totp_secret: str) -> Session:
    import pyotp

    session = Session(email, clearance)
    conn = Connection(port)

    def get(path: str) -> str:
        status, headers, body = conn.request("GET", path, headers=session.header())
        session.keep(headers)
        assert status == 200, (path, status)
        return body.decode()

    def post(path: str, data: dict[str, str]) -> str:
        status, headers, _ = conn.request(
            "POST", path, urlencode(data).encode(),
            {**session.header(), "Content-Type": "application/x-www-form-urlencoded"})
        session.keep(headers)
        assert status == 302, (path, status)
        return headers.get("Location", "")

    token = CSRF_RE.search(get("/login"))
    assert token, "no CSRF token on the sign-in page"
    post("/login", {"email": email, "password": findings_bench.PASSWORD,
                    "csrf_token": token.group(1)})
    token = CSRF_RE.search(get("/login/2fa"))
    assert token, "no CSRF token on the 2FA page"
    where = post("/login/2fa", {"code": pyotp.TOTP(totp_secret).now(),
                                "csrf_token": token.group(1)})
    assert "/login" not in where, f"2FA sign-in failed for {email}"
    conn.close()
    return session


# ------------------------------------------------------------------ users


def make_users(app: Any, count: int) -> list[tuple[str, str, str]]:
    """``count`` accounts (email, clearance, TOTP secret), clearances in turn, each with
    the NDAs of its clearance and a fresh TOTP secret sealed with this run's keyring."""
    import pyotp
    from sqlalchemy import select

    from app import state
    from app.auth import mfa
    from app.auth.models import User
    from app.auth.passwords import hash_password
    from app.db import db, utcnow
    from app.ndas.models import NdaAcknowledgement
    from app.orgs.models import Organization

    out = []
    with app.app_context():
        org = db.scalar(select(Organization).where(Organization.status == "trusted",
                                                   Organization.ceiling == "confidential")
                        .order_by(Organization.id))
        pw_hash = hash_password(findings_bench.PASSWORD)
        policy = state.policy()
        for i in range(count):
            clearance = CLEARANCES[i % len(CLEARANCES)]
            name = f"load-{clearance}-{i}"
            user = db.scalar(select(User).where(User.username == name))
            if user is None:
                user = User(email=f"{name}@{org.slug}.example", username=name,
                            display_name=name.title(), org_id=org.id, clearance=clearance,
                            role="member", password_hash=pw_hash, is_active=True)
                db.add(user)
                db.flush()
                for key in policy.level(clearance).ndas:
                    nda = policy.ndas[key]
                    db.add(NdaAcknowledgement(user_id=user.id, nda_key=key,
                                              version=nda.version,
                                              text_sha256=nda.text_sha256, signed_name=name))
            secret = pyotp.random_base32()
            user.totp_secret_enc = mfa.seal_secret(user, secret)
            user.totp_enabled_at = utcnow()
            user.totp_last_step = None
            out.append((user.email, clearance, secret))
        db.commit()
    return out


# ------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def clean_env(gunicorn_settings: tuple[str, ...]) -> dict[str, str]:
    """This process's environment without Enclave's settings, keeping only the gunicorn
    settings named (ENCLAVE_GUNICORN_<name>) that the caller set."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ENCLAVE_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    for name in gunicorn_settings:
        if os.environ.get(f"ENCLAVE_GUNICORN_{name}"):
            env[f"ENCLAVE_GUNICORN_{name}"] = os.environ[f"ENCLAVE_GUNICORN_{name}"]
    return env


def production_env(base: dict[str, str], *, url: str, redis_url: str, secret_key: str,
                   instance: Path, metrics: Path) -> dict[str, str]:
    """The production app's environment for a benchmark: rate limits lifted (one client
    sends far more than a person would), no Secure cookies on plain-HTTP loopback."""
    return {**base, "ENCLAVE_ENV": "production", "ENCLAVE_DATABASE_URL": url,
            "ENCLAVE_REDIS_URL": redis_url, "ENCLAVE_SECRET_KEY": secret_key,
            "ENCLAVE_KEYRING": str(instance / "keyring.json"),
            "ENCLAVE_KEYRING_UNSEALED": "allow",  # a throwaway keyring of this run
            "ENCLAVE_INSTANCE_PATH": str(instance), "ENCLAVE_SECURE_COOKIES": "false",
            "ENCLAVE_BASE_URL": "http://127.0.0.1",  # links are not followed here
            "ENCLAVE_PROXY_COUNT": "0",  # the load client connects to gunicorn directly
            "ENCLAVE_LOGIN_LIMIT": "100000 per minute",
            "ENCLAVE_API_LIMIT": "100000 per minute",
            "ENCLAVE_SEARCH_LIMIT": "100000 per minute",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics)}


def start_server(name: str, wsgi: str, env: dict[str, str], folder: Path, ready: str
                 ) -> Server:
    port = free_port()
    log = folder / f"{name}.log"
    gunicorn = Path(sys.executable).parent / "gunicorn"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(gunicorn), "-c", "gunicorn.conf.py", wsgi], cwd=REPO,
            env={**env, "ENCLAVE_GUNICORN_BIND": f"127.0.0.1:{port}"},
            stdout=out, stderr=subprocess.STDOUT)
    server = Server(name, port, process, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited:\n{log.read_text()[-3000:]}")
        try:
            if Connection(port).request("GET", ready)[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.3)
    server.stop()
    raise SystemExit(f"{name} did not start:\n{log.read_text()[-3000:]}")


# ------------------------------------------------------------------ load


@dataclass
class Page:
    name: str
    port: int
    path: str
    sessions: list[Session]  # empty: no session (the bare route)
    check: Callable[[bytes], bool] = lambda body: True


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_point(page: Page, concurrency: int, duration: float, warmup: float
              ) -> dict[str, Any]:
    """``concurrency`` threads in a closed loop for ``warmup`` + ``duration`` seconds;
    only requests that start inside the measured window count."""
    start_at = time.monotonic() + 0.5
    measure_from = start_at + warmup
    stop_at = measure_from + duration
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[list[str]] = [[] for _ in range(concurrency)]

    def worker(i: int) -> None:
        conn = Connection(page.port)
        headers = page.sessions[i % len(page.sessions)].header() if page.sessions else {}
        while time.monotonic() < start_at:
            time.sleep(0.001)
        while True:
            began = time.monotonic()
            if began >= stop_at:
                break
            try:
                status, _, body = conn.request("GET", page.path, headers=headers)
                problem = None if status == 200 and page.check(body) else f"status {status}"
            except Exception as exc:  # noqa: BLE001 - counted and reported
                problem = type(exc).__name__
                conn.close()
            ended = time.monotonic()
            if began >= measure_from:
                if problem:
                    errors[i].append(problem)
                else:
                    latencies[i].append(ended - began)
        conn.close()

    cpu_before = time.process_time()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    driver_cpu = (time.process_time() - cpu_before) / (warmup + duration + 0.5)
    ordered = sorted(x for per in latencies for x in per)
    failed = [e for per in errors for e in per]
    if not ordered:
        return {"requests": 0, "errors": len(failed), "error_kinds": sorted(set(failed))}
    return {
        "requests": len(ordered), "errors": len(failed),
        "error_kinds": sorted(set(failed)),
        "rps": round(len(ordered) / duration, 1),
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 1),
        "p95_ms": round(percentile(ordered, 0.95) * 1000, 1),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "driver_cpu_share": round(driver_cpu, 2),
    }


# ------------------------------------------------------------------ the run


def check_targets(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    bare = results.get("bare", {})
    for label, (page, kind, limit) in TARGETS.items():
        points = results.get(page)
        if not points:
            continue
        if kind == "ratio":
            ratios = {c: round(p["rps"] / bare[c]["rps"], 3) for c, p in points.items()
                      if c in bare and "rps" in p and bare[c].get("rps")}
            out[label] = {"value": ratios, "met": all(r >= limit for r in ratios.values())}
        elif kind == "p95@8":
            p95 = points.get("8", {}).get("p95_ms")
            if p95 is not None:
                out[label] = {"value": p95, "met": p95 < limit}
        elif kind == "p95":
            p95s = {c: p.get("p95_ms") for c, p in points.items()}
            out[label] = {"value": p95s, "met": all(v is not None and v < limit
                                                     for v in p95s.values())}
        elif kind == "filter":
            top = results.get("latest_every_level", {})
            costs = {c: round(p["p50_ms"] / top[c]["p50_ms"] - 1, 3)
                     for c, p in points.items() if top.get(c, {}).get("p50_ms") and "p50_ms" in p}
            out[label] = {"value": costs, "met": all(v <= limit for v in costs.values())}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url",
                        default=os.environ.get("ENCLAVE_BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--pages", nargs="+",
                        default=["bare", "latest", "latest_every_level",
                                 "finding_100_replies", "search_two_words"])
    parser.add_argument("--seed", type=int, default=20261121,
                        help="the seed bench/findings_bench.py loaded with")
    parser.add_argument("--keyring", default=None,
                        help="the keyring bench/findings_bench.py sealed the load with "
                             "(its --instance folder's keyring.json); copied for this run")
    args = parser.parse_args()
    url = args.database_url
    if not url.startswith("postgresql"):
        parser.error("--database-url must name a PostgreSQL database")
    if url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] == "test":
        parser.error("refusing the database named 'test': the test suite owns it")

    import logging

    import redis

    from app import create_app

    folder = Path(tempfile.mkdtemp(prefix="enclave-load-"))
    instance = folder / "instance"
    if args.keyring:
        instance.mkdir(parents=True, mode=0o700)
        shutil.copy(args.keyring, instance / "keyring.json")
    secret_key = secrets.token_urlsafe(48)
    app = create_app({"env": "development", "database_url": url, "instance_path": instance,
                      "keyring_path": instance / "keyring.json", "secret_key": secret_key})
    logging.getLogger("enclave").setLevel(logging.ERROR)
    ids = findings_bench.existing_load(app, args.seed)
    words = ids["vocab"]
    query = f"{words[300]} {words[700]}"
    print(f"database: {ids['counts']}", flush=True)
    accounts = make_users(app, max(args.concurrency))
    app.extensions["enclave.engine"].dispose()
    redis.Redis.from_url(args.redis_url).flushdb()

    metrics = folder / "metrics"
    metrics.mkdir()
    base_env = clean_env(("WORKERS", "THREADS"))  # the caller tunes gunicorn for both
    enclave_env = production_env(base_env, url=url, redis_url=args.redis_url,
                                 secret_key=secret_key, instance=instance, metrics=metrics)
    servers: list[Server] = []
    try:
        enclave = start_server("enclave", "wsgi:app", enclave_env, folder, "/healthz")
        servers.append(enclave)
        bare = start_server("bare", "bench.bare_wsgi:app", base_env, folder, "/bare")
        servers.append(bare)
        sessions = [sign_in(enclave.port, email, clearance, secret)
                    for email, clearance, secret in accounts]
        cleared = [s for s in sessions if s.clearance != "network"]
        top = [s for s in sessions if s.clearance == "confidential"]
        title = findings_bench.BENCH_TITLE.encode()
        pages = {
            "bare": Page("bare", bare.port, "/bare", []),
            "latest": Page("latest", enclave.port, "/findings/", sessions,
                           lambda b: b'data-finding="' in b),
            "latest_every_level": Page("latest_every_level", enclave.port, "/findings/", top,
                                       lambda b: b'data-finding="' in b),
            "finding_100_replies": Page("finding_100_replies", enclave.port,
                                        f"/findings/{ids['bench_finding']}", cleared,
                                        lambda b: title in b),
            "search_two_words": Page("search_two_words", enclave.port,
                                     f"/findings/search?q={quote(query)}", sessions),
        }
        started = datetime.now(UTC)
        load_before = os.getloadavg()
        results: dict[str, dict[str, Any]] = {}
        for name in args.pages:
            page = pages[name]
            for concurrency in args.concurrency:
                point = run_point(page, concurrency, args.duration, args.warmup)
                results.setdefault(name, {})[str(concurrency)] = point
                print(f"  {name:22} c={concurrency:<3} {point.get('rps', 0):>8} req/s  "
                      f"p50 {point.get('p50_ms', '-'):>7} p95 {point.get('p95_ms', '-'):>7} "
                      f"p99 {point.get('p99_ms', '-'):>7} ms  errors {point['errors']}  "
                      f"driver cpu {point.get('driver_cpu_share', '-')}", flush=True)
    finally:
        for server in servers:
            server.stop()

    # the plans of the hot statements, as a restricted reader's pages send them, after
    # the load (the cache as the pages left it)
    from sqlalchemy import select

    from app.auth.models import User
    from app.db import db

    with app.app_context():
        reader = db.scalar(select(User.id).where(User.email == next(
            a[0] for a in accounts if a[1] == "restricted")))
    plans = findings_bench.explain_hot_queries(app, reader, ids, query)
    findings_bench.print_plans(plans)

    targets = check_targets(results)
    gunicorn_settings = {
        "workers": enclave_env.get("ENCLAVE_GUNICORN_WORKERS", "config default"),
        "threads": enclave_env.get("ENCLAVE_GUNICORN_THREADS", "config default")}
    print(f"\nEnclave load benchmark, {started:%Y-%m-%d %H:%M} UTC, "
          f"{findings_bench.machine()['cpu']} x{os.cpu_count()}, gunicorn {gunicorn_settings},"
          f" {args.duration:.0f} s per point")
    print(f"{'page':22} {'c':>3} {'req/s':>9} {'p50':>7} {'p95':>7} {'p99':>7} {'errors':>7}")
    for name, points in results.items():
        for c, p in points.items():
            print(f"{name:22} {c:>3} {p.get('rps', 0):>9} {p.get('p50_ms', '-'):>7} "
                  f"{p.get('p95_ms', '-'):>7} {p.get('p99_ms', '-'):>7} {p['errors']:>7}")
    for label, verdict in targets.items():
        print(f"{'met ' if verdict['met'] else 'MISSED'} {label}: {verdict['value']}")

    report = {"benchmark": "load", "date": started.isoformat(timespec="seconds"),
              "machine": {**findings_bench.machine(), "load_average_before": load_before},
              "postgresql": findings_bench.pg_settings(app), "database": ids["counts"],
              "gunicorn": gunicorn_settings, "duration_s": args.duration,
              "warmup_s": args.warmup, "concurrency": args.concurrency,
              "search_query": query, "users": {c: sum(1 for a in accounts if a[1] == c)
                                               for c in CLEARANCES},
              "results": results, "targets": targets, "explain": plans}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"load-{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(REPO)}")
    app.extensions["enclave.engine"].dispose()
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
