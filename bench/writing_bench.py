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
import subprocess
import sys
from pathlib import Path

from sidebyside import interleave, save_report, serve_timings

REPO = Path(__file__).resolve().parent.parent
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
    serve_timings(client, urls, PAGES, repo)


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
    samples, load = interleave(sides, PAGES, args.rounds, args.repeat)
    save_report("writing", samples, PAGES, commits=commits, rounds=args.rounds,
                repeat=args.repeat, load=load,
                note=("shared 2-core machine, loaded by other suites meanwhile; "
                      "before and after interleaved round by round. " + args.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
