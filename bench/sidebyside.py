"""Before/after benchmarks measured side by side: two child processes (one per checkout)
answer "time these pages N times" on their stdin, round by round in alternating order, so
both sides see the same machine load; the figures are printed and saved in bench/results.
"""

from __future__ import annotations

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


def stats(samples: list[float]) -> dict[str, float]:
    """Median and p95 in milliseconds of ``samples`` given in seconds."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"median_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(p95 * 1000, 2), "n": len(ordered)}


def interleave(sides: dict[str, subprocess.Popen[str]], pages: list[str] | tuple[str, ...],
               rounds: int, repeat: int) -> tuple[dict[str, dict[str, list[float]]],
                                                  list[float]]:
    """Ask each side for ``repeat`` timings of every page, ``rounds`` times, alternating
    which side goes first; the samples per side and page, and the load per round."""
    samples: dict[str, dict[str, list[float]]] = {s: {p: [] for p in pages} for s in sides}
    load = [os.getloadavg()[0]]
    names = list(sides)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            proc = sides[name]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{repeat}\n")
            proc.stdin.flush()
            for page, values in json.loads(proc.stdout.readline()).items():
                samples[name][page].extend(values)
        load.append(os.getloadavg()[0])
        print(f"round {r + 1}/{rounds} done (load {load[-1]:.1f})", flush=True)
    for proc in sides.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(60)
    return samples, load


def save_report(benchmark: str, samples: dict[str, dict[str, list[float]]],
                pages: list[str] | tuple[str, ...], *, commits: dict[str, str], rounds: int,
                repeat: int, load: list[float], note: str) -> Path:
    """Print the before/after table and write it with the run's context as JSON."""
    results: dict[str, Any] = {}
    print(f"\n{'page':22} {'before med/p95 ms':>20} {'after med/p95 ms':>20} {'ratio (med)':>12}")
    for page in pages:
        b, a = stats(samples["before"][page]), stats(samples["after"][page])
        ratio = round(a["median_ms"] / b["median_ms"], 3)
        results[page] = {"before": b, "after": a, "ratio_median": ratio,
                         "ratio_p95": round(a["p95_ms"] / b["p95_ms"], 3)}
        print(f"{page:22} {b['median_ms']:>9.1f} /{b['p95_ms']:>8.1f} "
              f"{a['median_ms']:>9.1f} /{a['p95_ms']:>8.1f} {ratio:>12.3f}")
    report = {"benchmark": benchmark, "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "load_average_per_round": load, "note": note},
              "commits": commits, "rounds": rounds, "repeat": repeat, "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{benchmark}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(REPO)}")
    return out


def commit_of(repo: Path) -> str:
    """The short commit id checked out in ``repo``."""
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip()


def serve_timings(client: Any, urls: dict[str, str], pages: list[str] | tuple[str, ...],
                  repo: Path) -> None:
    """The child's side of :func:`interleave`: warm up, say ready, then for each number
    read from stdin time every page that many times and print the samples as JSON."""
    for url in urls.values():
        assert client.get(url).status_code == 200, url
    print(json.dumps({"ready": True, "commit": commit_of(repo)}), flush=True)
    for line in sys.stdin:
        samples: dict[str, list[float]] = {p: [] for p in pages}
        for _ in range(int(line)):
            for page in pages:
                t0 = time.perf_counter()
                response = client.get(urls[page])
                samples[page].append(time.perf_counter() - t0)
                assert response.status_code == 200, (page, response.status_code)
        print(json.dumps(samples), flush=True)
