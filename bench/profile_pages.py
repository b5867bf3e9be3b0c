#!/usr/bin/env python3
"""Where a request's time goes: cProfile over the hot pages, in one process.

    .venv/bin/python bench/profile_pages.py                   # latest + finding, 200 each
    .venv/bin/python bench/profile_pages.py --pages latest --repeat 500 --out profile.txt

It uses the database bench/findings_bench.py loaded (default ``enclave_bench``), signs in
a reader with a middle clearance through the real forms (password and TOTP), with
sessions in Redis database 13 as in production, and sends each page ``--repeat`` times
through the Flask test client under cProfile (after a warm-up). For each page it prints
the wall and CPU time per request, the number of SQL statements, the time inside the
psycopg ``execute`` calls, and the functions with the most time of their own and the most
time below them (CPU time of this process by default, ``--wall`` for wall time).
``--out`` also writes that text to a file.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for path in (str(REPO), str(REPO / "bench")):
    if path not in sys.path:
        sys.path.insert(0, path)

import findings_bench  # noqa: E402  (bench/ is on the path)

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/enclave_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"


def count_statements(app: Any) -> list[int]:
    from sqlalchemy import event

    counter = [0]

    @event.listens_for(app.extensions["enclave.engine"], "before_cursor_execute")
    def _count(*_args: Any) -> None:
        counter[0] += 1

    return counter


def profile_page(client: Any, url: str, repeat: int, counter: list[int], top: int,
                 cpu: bool) -> str:
    for _ in range(5):
        assert client.get(url).status_code == 200, url
    started, started_cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        client.get(url)
    plain = (time.perf_counter() - started) / repeat
    plain_cpu = (time.process_time() - started_cpu) / repeat
    counter[0] = 0
    profiler = cProfile.Profile(time.process_time) if cpu else cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for _ in range(repeat):
        client.get(url)
    profiler.disable()
    wall = (time.perf_counter() - started) / repeat
    stats = pstats.Stats(profiler)
    sql = sum(tt for (file, _line, name), (_cc, _nc, tt, _ct, _callers)
              in stats.stats.items()  # type: ignore[attr-defined]
              if name == "execute" and "psycopg" in file)
    # the waits are inside psycopg's execute (C wait loop); count cumulative time there
    sql = max(sql, sum(ct for (file, _line, name), (_cc, _nc, _tt, ct, _callers)
                       in stats.stats.items()  # type: ignore[attr-defined]
                       if name == "execute" and file.endswith("psycopg/cursor.py")))
    out = io.StringIO()
    clock = "this process's CPU time" if cpu else "wall time"
    out.write(f"== {url}\n{repeat} requests without the profiler: {plain * 1000:.2f} ms wall,"
              f" {plain_cpu * 1000:.2f} ms CPU of this process each; "
              f"{counter[0] / repeat:.1f} SQL statements each.\n"
              f"Under the profiler ({clock}): {wall * 1000:.2f} ms wall each, "
              f"{sql / repeat * 1000:.2f} ms each inside psycopg execute\n\n")
    for sort in ("tottime", "cumulative"):
        out.write(f"-- top {top} by {sort}\n")
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(sort).print_stats(top)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url",
                        default=os.environ.get("ENCLAVE_BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument("--pages", nargs="+", default=["latest", "finding_100_replies"],
                        choices=["latest", "category", "finding_100_replies", "search"])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument("--wall", action="store_true",
                        help="profile wall time (default: this process's CPU time, which "
                             "other load on the machine does not inflate; waits for "
                             "PostgreSQL then count only the client's side)")
    args = parser.parse_args()
    if args.database_url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] == "test":
        parser.error("refusing the database named 'test': the test suite owns it")

    import logging

    from sqlalchemy import select

    from app import create_app
    from app.db import db
    from app.findings.models import Category

    instance = Path(tempfile.mkdtemp(prefix="enclave-profile-"))
    app = create_app({"env": "development", "database_url": args.database_url,
                      "redis_url": args.redis_url, "instance_path": instance,
                      "keyring_path": instance / "keyring.json",
                      "secret_key": "profile-" + "k" * 40, "login_limit": "1000 per minute",
                      "search_limit": "100000 per minute"})
    logging.getLogger("enclave").setLevel(logging.ERROR)
    ids = findings_bench.existing_load(app, args.seed)
    user_id, secret = findings_bench.make_reader(app, role="member", clearance="restricted")
    with app.app_context():
        from app.auth.models import User

        email = db.get(User, user_id).email
        category = db.scalar(select(Category.slug).order_by(Category.id))
    client = app.test_client()
    findings_bench.sign_in(client, email, secret)
    words = ids["vocab"]
    urls = {"latest": "/findings/", "category": f"/findings/c/{category}",
            "finding_100_replies": f"/findings/{ids['bench_finding']}",
            "search": f"/findings/search?q={words[300]}+{words[700]}"}
    counter = count_statements(app)
    report = [f"Enclave request profile, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
              f", load average {os.getloadavg()[0]:.2f}, database {ids['counts']}\n"]
    for name in args.pages:
        report.append(profile_page(client, urls[name], args.repeat, counter, args.top,
                                   not args.wall))
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.write_text(text)
    app.extensions["enclave.engine"].dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
