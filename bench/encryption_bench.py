#!/usr/bin/env python3
"""The cost of content encryption, side by side: the same pages timed on a checkout from
before encryption and on this one, each against its own full-scale load, interleaved.

    .venv/bin/python bench/encryption_bench.py \\
        --before-repo ../enclave-before --before-url postgresql+psycopg://.../enc_before \\
        --after-url postgresql+psycopg://.../enc_after --after-instance /path/instance \\
        --rounds 12 --repeat 10

Both databases are loaded by their own checkout's bench/findings_bench.py (the "after"
one with ``--instance``, whose keyring sealed the load). Two child processes (one per
checkout, each importing its own ``app``) sign in a member cleared for ``restricted``
through the real forms and wait; the parent asks them in turn, alternating which goes
first, to time ``--repeat`` requests of each page, so that background load on a shared
machine falls on both alike. Pages: the latest findings, the finding with 100 replies,
the two-word search. Median and p95 per side and the ratio after/before are printed and
written to bench/results/encryption-<date>.json. Target (issue 13): latest and the
finding page at most 15% more than before.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from sidebyside import interleave, save_report, serve_timings

REPO = Path(__file__).resolve().parent.parent
PAGES = ("latest", "finding_100_replies", "search_two_words")


def child(repo: Path, url: str, instance: str | None, seed: int) -> None:
    """Serve timing requests on stdin/stdout for one checkout."""
    sys.path[:0] = [str(repo), str(repo / "bench")]
    import logging

    import findings_bench as fb

    from app import create_app

    folder = Path(instance) if instance else Path(tempfile.mkdtemp(prefix="enc-bench-"))
    app = create_app({"env": "development", "database_url": url, "instance_path": folder,
                      "keyring_path": folder / "keyring.json",
                      "secret_key": "bench-" + "k" * 40, "login_limit": "100000 per minute",
                      "api_limit": "100000 per minute", "search_limit": "100000 per minute"})
    logging.getLogger("enclave").setLevel(logging.ERROR)
    ids = fb.existing_load(app, seed)
    reader = fb.prepare(app, ids, "member", "restricted")
    words = ids["vocab"]
    urls = {"latest": "/findings/", "finding_100_replies": f"/findings/{ids['bench_finding']}",
            "search_two_words": f"/findings/search?q={words[300]}+{words[700]}"}
    client = reader["client"]
    serve_timings(client, urls, PAGES, repo)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-repo", required=True)
    parser.add_argument("--before-url", required=True)
    parser.add_argument("--after-url", required=True)
    parser.add_argument("--after-instance", required=True)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--child", nargs=3, metavar=("REPO", "URL", "INSTANCE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        repo, url, instance = args.child
        child(Path(repo), url, instance or None, args.seed)
        return 0

    def spawn(repo: str, url: str, instance: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, __file__, "--before-repo", "-", "--before-url", "-",
             "--after-url", "-", "--after-instance", "-", "--seed", str(args.seed),
             "--child", repo, url, instance],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=repo)

    sides = {"before": spawn(str(Path(args.before_repo).resolve()), args.before_url, ""),
             "after": spawn(str(REPO), args.after_url, args.after_instance)}
    commits = {}
    for name, proc in sides.items():
        assert proc.stdout is not None
        hello = json.loads(proc.stdout.readline())
        commits[name] = hello["commit"]
        print(f"{name}: ready at {hello['commit']}", flush=True)
    samples, load = interleave(sides, PAGES, args.rounds, args.repeat)
    save_report("encryption", samples, PAGES, commits=commits, rounds=args.rounds,
                repeat=args.repeat, load=load,
                note=("shared machine (other engineers' suites ran meanwhile); "
                      "before and after interleaved round by round"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
