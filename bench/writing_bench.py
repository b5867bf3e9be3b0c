#!/usr/bin/env python3
"""The cost of rich writing (math, code, figures, notebooks) on the pages everybody
reads, side by side: the same pages timed on a checkout without it and on one with it,
both against the same load (same database, same instance keyring), interleaved.

    .venv/bin/python bench/findings_bench.py --scale 0.05 --instance /tmp/inst   # load
    .venv/bin/python bench/writing_bench.py --before-repo ../before --after-repo . \\
        --url postgresql+psycopg://.../bench --instance /tmp/inst --rounds 10 --repeat 10

The "before" checkout is the same tree with the writing commits reverted, so nothing
else differs; neither checkout changes the schema. Two child processes (one per
checkout, each importing its own ``app``) sign in a member cleared for ``restricted``
and wait; the parent asks them in turn, alternating which goes first, to time
``--repeat`` requests of each page, so that background load on a shared machine falls
on both alike. Pages: the latest findings and the finding with 100 replies (its stored
renderings are read from the cache; the "after" page also resolves figures). Median and
p95 per side and the ratio after/before are printed and written to
bench/results/writing-<date>.json. Target (issue 14): at most 10% worse than before.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PAGES = ("latest", "finding_100_replies")


def child(repo: Path, url: str, instance: str, seed: int) -> None:
    """Serve timing requests on stdin/stdout for one checkout."""
    sys.path[:0] = [str(repo), str(repo / "bench")]
    import logging

    import findings_bench as fb

    from app import create_app

    folder = Path(instance)
    app = create_app({"env": "development", "database_url": url, "instance_path": folder,
                      "keyring_path": folder / "keyring.json",
                      "secret_key": "bench-" + "k" * 40, "login_limit": "100000 per minute",
                      "api_limit": "100000 per minute", "search_limit": "100000 per minute"})
    logging.getLogger("enclave").setLevel(logging.ERROR)
    import app as app_package

    assert Path(app_package.__file__).resolve().is_relative_to(repo.resolve()), \
        f"{repo} imported {app_package.__file__}"
    from app.auth.models import User
    from app.db import db

    ids = fb.existing_load(app, seed)
    with app.app_context():  # loads made before re-vetting existed have never-vetted orgs
        from sqlalchemy import text

        db.execute(text("UPDATE organizations SET vetted_at = now() WHERE vetted_at IS NULL"))
        db.commit()
    user_id, secret = fb.make_reader(app, role="member", clearance="restricted")
    with app.app_context():
        from app import access
        from app.findings.models import Finding

        reader = db.get(User, user_id)
        email = reader.email
        assert access.can_read(reader, db.get(Finding, ids["bench_finding"])), \
            access.readable_levels(reader)
    client = app.test_client()
    fb.sign_in(client, email, secret)
    urls = {"latest": "/findings/", "finding_100_replies": f"/findings/{ids['bench_finding']}"}
    for url_ in urls.values():  # warm up
        assert client.get(url_).status_code == 200, url_
    print(json.dumps({"ready": True, "commit": _commit(repo)}), flush=True)
    for line in sys.stdin:
        n = int(line)
        samples: dict[str, list[float]] = {p: [] for p in PAGES}
        for _ in range(n):
            for page in PAGES:
                t0 = time.perf_counter()
                response = client.get(urls[page])
                samples[page].append(time.perf_counter() - t0)
                assert response.status_code == 200, (page, response.status_code)
        print(json.dumps(samples), flush=True)


def _commit(repo: Path) -> str:
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip()


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"median_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(p95 * 1000, 2), "n": len(ordered)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-repo", required=True)
    parser.add_argument("--after-repo", default=str(REPO))
    parser.add_argument("--url", required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--note", default="")
    parser.add_argument("--child", nargs=1, metavar="REPO", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), args.url, args.instance, args.seed)
        return 0

    def spawn(repo: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, __file__, "--before-repo", "-", "--url", args.url,
             "--instance", args.instance, "--seed", str(args.seed), "--child", repo],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=repo)

    # one after the other: both sign in as the same bench reader, whose second factor
    # each sign-in sets anew
    sides: dict[str, subprocess.Popen[str]] = {}
    commits = {}
    for name, repo in (("before", args.before_repo), ("after", args.after_repo)):
        proc = sides[name] = spawn(str(Path(repo).resolve()))
        assert proc.stdout is not None
        hello = json.loads(proc.stdout.readline())
        commits[name] = hello["commit"]
        print(f"{name}: ready at {hello['commit']}", flush=True)
    samples: dict[str, dict[str, list[float]]] = {s: {p: [] for p in PAGES} for s in sides}
    load = [os.getloadavg()[0]]
    for r in range(args.rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for name in order:
            proc = sides[name]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{args.repeat}\n")
            proc.stdin.flush()
            for page, values in json.loads(proc.stdout.readline()).items():
                samples[name][page].extend(values)
        load.append(os.getloadavg()[0])
        print(f"round {r + 1}/{args.rounds} done (load {load[-1]:.1f})", flush=True)
    for proc in sides.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(60)
    results: dict[str, Any] = {}
    print(f"\n{'page':22} {'before med/p95 ms':>20} {'after med/p95 ms':>20} {'ratio (med)':>12}")
    for page in PAGES:
        b, a = _stats(samples["before"][page]), _stats(samples["after"][page])
        ratio = round(a["median_ms"] / b["median_ms"], 3)
        results[page] = {"before": b, "after": a, "ratio_median": ratio,
                         "ratio_p95": round(a["p95_ms"] / b["p95_ms"], 3)}
        print(f"{page:22} {b['median_ms']:>9.1f} /{b['p95_ms']:>8.1f} "
              f"{a['median_ms']:>9.1f} /{a['p95_ms']:>8.1f} {ratio:>12.3f}")
    report = {"benchmark": "writing", "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "load_average_per_round": load,
                          "note": "shared 2-core machine, loaded by other suites meanwhile; "
                                  "before and after interleaved round by round. " + args.note},
              "commits": commits, "rounds": args.rounds, "repeat": args.repeat,
              "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"writing-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
