#!/usr/bin/env python3
"""Encrypted attachments: memory and throughput through the running app, against the
machine's own limits measured in the same run; and key rotation over many rows.

    .venv/bin/python bench/attachments_bench.py                     # 1 GiB and 4 GiB
    .venv/bin/python bench/attachments_bench.py --sizes 64M,256M    # a quick run

What it does, for each size:

* starts the app (gunicorn with the project's gunicorn.conf.py, gthread workers; or the
  Werkzeug server with ``--server werkzeug``) on 127.0.0.1 with a fresh instance folder;
* disk limit: writes the same number of bytes to a file in the blob directory and
  fdatasyncs it (like ``dd ... conv=fdatasync``);
* upload: POSTs a file generated on the fly (never stored in plaintext) to the API and
  checks the SHA-256 the server reports;
* loopback limit: a separate process reads the disk-limit file back and sends it over a
  loopback TCP socket without decryption (read + sendall; sendfile is reported too),
  from the disk, not the page cache: the file and the blob are both evicted from it
  (posix_fadvise DONTNEED after a sync) before they are read;
  the receiving side is the same loop as the download client's;
* download: GETs the attachment and checks length and CRC-32 of what arrives;
* server memory: every worker's VmRSS at rest, then VmHWM (peak, reset through
  /proc/<pid>/clear_refs before each transfer) and VmRSS sampled every 20 ms.

Stamping (``--stamp-sizes``, default 1G): a PDF of that size made on the fly (200 pages,
each followed by a binary filler object, so the page objects are spread over the whole
file) is uploaded to a Network finding (downloads: original) and to a Confidential one
(downloads: stamped), and both are downloaded one after the other: MiB/s, time to the
first byte and server memory of the stamped copy side by side with the original, or the
refusal if the copy cannot be made.

Then it inserts ``--rotate-rows`` attachment rows with real wrapped keys and times
``enclave keys rotate`` on them. Figures are printed and written as JSON to
bench/results/. Requirements (issue 4): peak server memory < at rest + 100 MiB;
throughput each way >= 60% of the machine's limit; rotation of 100,000 rows < 60 s.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
BLOCK = 1024 * 1024
MiB = 1024 * 1024

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# ------------------------------------------------------------------ data


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": MiB, "G": 1024 * MiB}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


class Generated:
    """``size`` bytes made on the fly: a random 1 MiB block with the block number in
    its first 8 bytes (so no two blocks are equal). Nothing is kept in memory or disk."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.base = os.urandom(BLOCK)

    def blocks(self) -> Iterator[memoryview]:
        """One reused buffer, rewritten in place: valid until the next block is asked for
        (no per-block allocation, so the client costs as little CPU as possible)."""
        buf = bytearray(self.base)
        view = memoryview(buf)
        full, rest = divmod(self.size, BLOCK)
        for i in range(full + (1 if rest else 0)):
            buf[:8] = i.to_bytes(8, "big")
            yield view if i < full else view[:rest]

    def digests(self) -> tuple[str, int]:
        sha, crc = hashlib.sha256(), 0
        for block in self.blocks():
            sha.update(block)
            crc = zlib.crc32(block, crc)
        return sha.hexdigest(), crc


class GeneratedPdf:
    """A valid PDF of about ``size`` bytes made on the fly: ``pages`` text pages, each
    followed by an unreferenced binary filler stream, then a classic xref table."""

    def __init__(self, size: int, pages: int = 200) -> None:
        self.pages = pages
        self.filler = max(0, (size - 4096 * pages) // pages)
        self.base = os.urandom(BLOCK)
        self.size = sum(len(piece) for piece in self._pieces(measure=True))

    def _pieces(self, measure: bool = False) -> Iterator[bytes | memoryview]:
        offsets: dict[int, int] = {}
        pos = 0

        def obj(num: int, body: bytes) -> bytes:
            nonlocal pos
            offsets[num] = pos
            data = f"{num} 0 obj\n".encode() + body + b"\nendobj\n"
            pos += len(data)
            return data

        head = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
        pos += len(head)
        yield head
        kids = " ".join(f"{4 + 3 * i} 0 R" for i in range(self.pages))
        yield obj(1, b"<< /Type /Catalog /Pages 2 0 R >>")
        yield obj(2, f"<< /Type /Pages /Count {self.pages} /Kids [{kids}] >>".encode())
        yield obj(3, b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
        for i in range(self.pages):
            page, content, filler = 4 + 3 * i, 5 + 3 * i, 6 + 3 * i
            yield obj(page, (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                             f"/Contents {content} 0 R /Resources << /Font << /F1 3 0 R >> "
                             f">> >>").encode())
            text = f"BT /F1 28 Tf 72 700 Td (Benchmark page {i + 1}) Tj ET".encode()
            yield obj(content, f"<< /Length {len(text)} >>\nstream\n".encode() + text
                      + b"\nendstream")
            offsets[filler] = pos
            start = f"{filler} 0 obj\n<< /Length {self.filler} >>\nstream\n".encode()
            pos += len(start)
            yield start
            full, rest = divmod(self.filler, BLOCK)
            if measure:  # the size only: one stand-in for the filler's bytes
                yield _Sized(self.filler)
            else:
                for _ in range(full):
                    yield memoryview(self.base)
                if rest:
                    yield memoryview(self.base)[:rest]
            pos += self.filler
            tail = b"\nendstream\nendobj\n"
            pos += len(tail)
            yield tail
        count = 3 + 3 * self.pages + 1
        xref = [b"xref", f"0 {count}".encode(), b"0000000000 65535 f\r"]
        xref += [f"{offsets[n]:010d} 00000 n\r".encode() for n in range(1, count)]
        at = pos
        yield b"\n".join(xref) + b"\n"
        yield (f"trailer\n<< /Size {count} /Root 1 0 R >>\nstartxref\n{at}\n%%EOF\n"
               ).encode()

    def blocks(self) -> Iterator[bytes | memoryview]:
        yield from self._pieces()

    def digests(self) -> tuple[str, int]:
        sha, crc = hashlib.sha256(), 0
        for block in self.blocks():
            sha.update(block)
            crc = zlib.crc32(block, crc)
        return sha.hexdigest(), crc


class _Sized(bytes):
    """A stand-in counted by its ``n`` when only the total size is measured."""

    def __new__(cls, n: int) -> _Sized:
        obj = super().__new__(cls, b"")
        obj.n = n  # type: ignore[attr-defined]
        return obj

    def __len__(self) -> int:
        return self.n  # type: ignore[attr-defined,no-any-return]


# ------------------------------------------------------------------ memory


def _status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


class MemoryWatch:
    """Peak RSS of the server processes during one transfer."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.rest = {pid: _status(pid)["VmRSS"] for pid in pids}
        self.sampled = dict(self.rest)
        self.hwm_reset = True
        for pid in pids:
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM
            except OSError:
                self.hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for pid in self.pids:
                rss = _status(pid)["VmRSS"]
                self.sampled[pid] = max(self.sampled[pid], rss)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = {}
        for pid in self.pids:
            peak = self.sampled[pid]
            if self.hwm_reset:
                peak = max(peak, _status(pid)["VmHWM"])
            self.peak[pid] = peak

    def report(self) -> dict[str, Any]:
        pid = max(self.pids, key=lambda p: self.peak[p] - self.rest[p])
        return {"pid": pid, "rest_mib": self.rest[pid] / MiB, "peak_mib": self.peak[pid] / MiB,
                "delta_mib": (self.peak[pid] - self.rest[pid]) / MiB,
                "peak_from_vmhwm": self.hwm_reset}


# ------------------------------------------------------------------ the app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def prepare_instance(env: dict[str, str]) -> dict[str, Any]:
    """``enclave init``, then a trusted org, a member, a network finding and a token."""
    subprocess.run([sys.executable, "-m", "app.cli_main", "init"], env=env, cwd=REPO,
                   check=True, capture_output=True)
    os.environ.update(env)
    from app import create_app
    from app.auth.service import create_token, create_user
    from app.db import db
    from app.findings.models import Finding
    from app.ndas.service import acknowledge
    from app.orgs.service import add_org

    app = create_app()
    with app.app_context():
        org = add_org(None, slug="bench", name="Bench Lab", domains=["bench.example"],
                      ceiling="confidential", trusted=True)
        user = create_user(email="bench@bench.example", org=org, clearance="confidential",
                           role="member", password=secrets.token_urlsafe(24),
                           display_name="Bench Runner")
        for key in ("network-terms", "restricted", "confidential"):
            acknowledge(user, key, user.display_name)
        from app.db import utcnow
        from app.findings.models import FindingOrg

        user.totp_enabled_at = utcnow()  # (the token is what signs in; the rule wants 2FA)
        finding = Finding(title="Benchmark", body="Attachments benchmark.", level="network",
                          author_id=user.id, org_id=org.id)
        secret = Finding(title="Benchmark (stamped)", body="Stamped copies.",
                         level="confidential", author_id=user.id, org_id=org.id,
                         compartmented=True, compartment=[FindingOrg(org_id=org.id)])
        db.add_all([finding, secret])
        db.commit()
        _, token = create_token(user, "bench")
        info = {"finding_id": finding.id, "user_id": user.id, "org_id": org.id,
                "token": token, "stamped_finding_id": secret.id}
    app.extensions["enclave.engine"].dispose()
    return info


class Server:
    def __init__(self, kind: str, env: dict[str, str], workdir: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.log = (workdir / f"{kind}.log").open("wb")
        env = {**env, "ENCLAVE_GUNICORN_BIND": f"127.0.0.1:{self.port}",
               "ENCLAVE_GUNICORN_WORKERS": "2", "ENCLAVE_GUNICORN_ACCESS_LOG": "/dev/null",
               "ENCLAVE_GUNICORN_TIMEOUT": "120"}
        if kind == "gunicorn":
            cmd = [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py",
                   "wsgi:app"]
        else:
            cmd = [sys.executable, "-c",
                   "from werkzeug.serving import run_simple\n"
                   "from wsgi import app\n"
                   f"run_simple('127.0.0.1', {self.port}, app, threaded=True)\n"]
        self.proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)

    def worker_pids(self) -> list[int]:
        if self.kind == "gunicorn":
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                pids = _children(self.proc.pid)
                if len(pids) >= 2:
                    return pids
                time.sleep(0.1)
            raise SystemExit("gunicorn workers did not start")
        return [self.proc.pid]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# ------------------------------------------------------------------ transfers


def upload(port: int, token: str, finding_id: int, data: Any,
           filename: str = "bench.bin") -> tuple[float, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    conn.putrequest("POST", f"/api/v1/findings/{finding_id}/attachments?filename={filename}")
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(data.size))
    conn.endheaders()
    for block in data.blocks():
        conn.send(block)
    response = conn.getresponse()
    body = json.loads(response.read())
    elapsed = time.perf_counter() - started
    conn.close()
    if response.status != 201:
        raise SystemExit(f"upload failed: {response.status} {body}")
    return elapsed, body


def receive_into(read_into: Any, expected: int) -> tuple[int, int]:
    """The receiving loop shared by the download and the loopback baseline."""
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    total, crc = 0, 0
    while True:
        n = read_into(view)
        if not n:
            break
        crc = zlib.crc32(view[:n], crc)
        total += n
    if total != expected:
        raise SystemExit(f"received {total} bytes, expected {expected}")
    return total, crc


def download(port: int, token: str, att_id: str, size: int) -> tuple[float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    conn.request("GET", f"/api/v1/attachments/{att_id}",
                 headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    if response.status != 200:
        raise SystemExit(f"download failed: {response.status} {response.read()[:200]!r}")
    _, crc = receive_into(response.readinto, size)
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed, crc


def evict(path: Path) -> None:
    """Drop a file's (clean) pages from the page cache, so the next read is from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def disk_write_limit(path: Path, data: Generated) -> float:
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for block in data.blocks():
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view):]
        os.fdatasync(fd)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
    return elapsed


_SENDER = r"""
import os, socket, sys
path, mode = sys.argv[1], sys.argv[2]
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
with open(path, "rb", buffering=0) as f:
    if mode == "sendfile":
        size, offset = os.fstat(f.fileno()).st_size, 0
        while offset < size:
            offset += os.sendfile(conn.fileno(), f.fileno(), offset, size - offset)
    else:
        buf = bytearray(1024 * 1024); view = memoryview(buf)
        while n := f.readinto(buf):
            conn.sendall(view[:n])
conn.close()
"""


def loopback_limit(path: Path, size: int, mode: str) -> float:
    """Read the file back and send it over loopback in another process, no decryption.
    The file is dropped from the page cache first, as the blob is before its download."""
    evict(path)
    proc = subprocess.Popen([sys.executable, "-c", _SENDER, str(path), mode],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        receive_into(sock.recv_into, size)
    elapsed = time.perf_counter() - started
    proc.wait(60)
    return elapsed


def api_delete(port: int, token: str, att_id: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("DELETE", f"/api/v1/attachments/{att_id}",
                 headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    response.read()
    conn.close()
    if response.status != 204:
        raise SystemExit(f"delete failed: {response.status}")


def mbps(size: int, seconds: float) -> float:
    return size / MiB / seconds


# ------------------------------------------------------------------ rotation


def rotation_bench(env: dict[str, str], info: dict[str, Any], rows: int) -> dict[str, Any]:
    """Insert ``rows`` attachment rows with real wrapped keys, then time ``keys rotate``."""
    os.environ.update(env)
    from sqlalchemy import insert

    from app import create_app
    from app.attachments.models import Attachment
    from app.attachments.service import blob_context
    from app.crypto.stream import new_data_key
    from app.crypto.wrap import key_wrap_aad, seal, wrap_key
    from app.db import db, utcnow

    app = create_app()
    with app.app_context():
        ring = app.extensions["enclave.keyring"]
        version, kek = ring.kek("network")
        started = time.perf_counter()
        now = utcnow()
        batch: list[dict[str, Any]] = []
        for i in range(rows):
            att_id = secrets.token_hex(16)
            batch.append({
                "id": att_id, "finding_id": info["finding_id"], "uploader_id": info["user_id"],
                "filename": f"row-{i}.bin", "content_type": "application/octet-stream",
                "size": 1, "blob_id": secrets.token_hex(16),
                "sha256_sealed": seal(ring.app_key(), os.urandom(32),
                                      f"attachment-sha256:{att_id}".encode()),
                "wrapped_key": wrap_key(kek, new_data_key(),
                                        key_wrap_aad(att_id, "network", version)),
                "kek_level": "network", "kek_version": version, "created_at": now,
            })
            if len(batch) == 5000:
                db.execute(insert(Attachment), batch)
                db.commit()
                batch = []
        if batch:
            db.execute(insert(Attachment), batch)
            db.commit()
        inserted = time.perf_counter() - started
        _ = blob_context
    app.extensions["enclave.engine"].dispose()

    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "app.cli_main", "keys", "rotate"], env=env,
                            cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"keys rotate failed: {result.stderr}")
    return {"rows": rows, "insert_seconds": inserted, "rotate_seconds": elapsed,
            "output": result.stdout.strip().splitlines()}


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1G,4G", help="comma-separated, e.g. 64M,1G,4G")
    parser.add_argument("--rotate-rows", type=int, default=100_000)
    parser.add_argument("--server", choices=["gunicorn", "werkzeug"], default="gunicorn")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the instance (and its blobs) go; the disk under test")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each size this many times (the machine may be shared)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--stamp-sizes", default="1G",
                        help="PDF sizes for the stamped-copy comparison ('' for none)")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]

    workdir = Path(tempfile.mkdtemp(prefix="enclave-attachments-bench-", dir=args.workdir))
    instance = workdir / "instance"
    env = {**os.environ, "ENCLAVE_ENV": "development",
           "ENCLAVE_INSTANCE_PATH": str(instance),
           "ENCLAVE_DATABASE_URL": f"sqlite:///{instance / 'enclave.db'}",
           "ENCLAVE_KEYRING": str(instance / "keyring.json"),
           "ENCLAVE_SECRET_KEY": secrets.token_urlsafe(32),
           "ENCLAVE_API_LIMIT": "100000 per minute", "ENCLAVE_LOG_JSON": "0"}
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "server": args.server, "cpus": os.cpu_count(),
        "transfers": [], "criteria": {"memory_delta_mib_max": 100, "throughput_ratio_min": 0.6,
                                      "rotate_100k_seconds_max": 60},
    }
    print(f"work directory {workdir} ({args.server})", flush=True)
    try:
        info = prepare_instance(env)
        server = Server(args.server, env, workdir)
        try:
            pids = server.worker_pids()
            warm = Generated(MiB)
            _, body = upload(server.port, info["token"], info["finding_id"], warm)
            download(server.port, info["token"], body["id"], warm.size)
            api_delete(server.port, info["token"], body["id"])
            for size in sizes:
                for _ in range(args.repeat):
                    results["transfers"].append(
                        transfer_bench(server, pids, info, size, instance / "blobs"))
            results["stamping"] = [
                stamp_bench(server, pids, info, parse_size(s), instance / "blobs")
                for s in args.stamp_sizes.split(",") if s.strip()]
        finally:
            server.stop()
        if args.rotate_rows:
            print(f"rotation: inserting {args.rotate_rows} rows with wrapped keys ...",
                  flush=True)
            results["rotation"] = rotation_bench(env, info, args.rotate_rows)
            rot = results["rotation"]
            print(f"rotation: enclave keys rotate over {rot['rows']} rows took "
                  f"{rot['rotate_seconds']:.1f}s (process start included)")
            for line in rot["output"]:
                print(f"  {line}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    summarize(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"attachments-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {out.relative_to(REPO)}")


def summarize(results: dict[str, Any]) -> None:
    print("\nsize      upload  ratio  download  ratio(copy)  ratio(sendfile)  "
          "mem up/down (MiB over rest)")
    for t in results["transfers"]:
        print(f"{t['size'] / MiB:6.0f}M  {t['upload_mib_s']:6.0f}  {t['upload_ratio']:5.2f}  "
              f"{t['download_mib_s']:8.0f}  {t['download_ratio']:11.2f}  "
              f"{t['download_ratio_vs_sendfile']:15.2f}  "
              f"{t['memory_upload']['delta_mib']:.1f} / {t['memory_download']['delta_mib']:.1f}")
    worst_mem = max((max(t["memory_upload"]["delta_mib"], t["memory_download"]["delta_mib"])
                     for t in results["transfers"]), default=0.0)
    results["summary"] = {
        "worst_memory_delta_mib": worst_mem,
        "min_upload_ratio": min((t["upload_ratio"] for t in results["transfers"]),
                                default=None),
        "min_download_ratio": min((t["download_ratio"] for t in results["transfers"]),
                                  default=None),
        "rotate_seconds": results.get("rotation", {}).get("rotate_seconds"),
    }
    print(f"worst server memory over rest: {worst_mem:.1f} MiB (limit 100)")
    for st in results.get("stamping", []):
        if st.get("refused"):
            print(f"stamped PDF {st['size'] / MiB:.0f} MiB: refused ({st['refused']})")
            continue
        print(f"stamped PDF {st['size'] / MiB:6.0f}M: original {st['original_mib_s']:.0f} "
              f"MiB/s, stamped {st['stamped_mib_s']:.0f} MiB/s "
              f"({st['stamped_mib_s'] / st['original_mib_s']:.2f} of it), first byte after "
              f"{st['stamped_first_byte_s']:.2f}s (original {st['original_first_byte_s']:.2f}s),"
              f" memory +{st['memory_original']['delta_mib']:.1f} / "
              f"+{st['memory_stamped']['delta_mib']:.1f} MiB")


def timed_get(port: int, token: str, att_id: str) -> dict[str, Any]:
    """GET an attachment: status, seconds to the first byte and to the end, bytes, the
    copy code and the body's first bytes (for refusals)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1200)
    started = time.perf_counter()
    conn.request("GET", f"/api/v1/attachments/{att_id}",
                 headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    first = response.readinto(view)
    first_at = time.perf_counter() - started
    head = bytes(view[:first][:400])
    total = first
    while n := response.readinto(view):
        total += n
    elapsed = time.perf_counter() - started
    conn.close()
    return {"status": response.status, "first_byte_s": first_at, "seconds": elapsed,
            "bytes": total, "code": response.getheader("X-Enclave-Copy"), "head": head}


def stamp_bench(server: Server, pids: list[int], info: dict[str, Any], size: int,
                blob_dir: Path) -> dict[str, Any]:
    """The same PDF downloaded as the original (Network) and as a stamped copy
    (Confidential), one after the other, both read from the disk."""
    data = GeneratedPdf(size)
    print(f"\n== stamped PDF, {data.size / MiB:.0f} MiB, {data.pages} pages ==", flush=True)
    _, plain = upload(server.port, info["token"], info["finding_id"], data, "bench.pdf")
    _, secret = upload(server.port, info["token"], info["stamped_finding_id"], data,
                       "bench.pdf")
    result: dict[str, Any] = {"size": data.size, "pages": data.pages}
    runs = {}
    for label, att in (("original", plain), ("stamped", secret)):
        os.sync()
        for blob in (p for p in blob_dir.rglob("*") if p.is_file()):
            evict(blob)
        with MemoryWatch(pids) as mem:
            got = timed_get(server.port, info["token"], att["id"])
        runs[label] = got
        result[f"memory_{label}"] = mem.report()
        if got["status"] != 200:
            result["refused"] = f"{got['status']}: {got['head'].decode(errors='replace')}"
            print(f"{label:9s} refused: {result['refused']}", flush=True)
            continue
        result[f"{label}_mib_s"] = mbps(got["bytes"], got["seconds"])
        result[f"{label}_first_byte_s"] = got["first_byte_s"]
        result[f"{label}_bytes"] = got["bytes"]
        print(f"{label:9s} {mbps(got['bytes'], got['seconds']):8.1f} MiB/s  first byte "
              f"{got['first_byte_s']:.2f}s  {got['bytes']} bytes  server peak "
              f"+{mem.report()['delta_mib']:.1f} MiB"
              + (f"  copy {got['code']}" if got["code"] else ""), flush=True)
    if "stamped_bytes" in result:
        result["update_bytes"] = result["stamped_bytes"] - data.size
    for att in (plain, secret):
        api_delete(server.port, info["token"], att["id"])
    return result


def transfer_bench(server: Server, pids: list[int], info: dict[str, Any], size: int,
                   blob_dir: Path) -> dict[str, Any]:
    """One size: each transfer is bracketed by its machine-limit measurement, taken just
    before and just after it (the mean is the limit), and every disk-writing step starts
    with nothing dirty in the page cache (``sync``), so neither side inherits the other's
    writeback."""
    label = f"{size / MiB / 1024:.2f} GiB" if size >= 1024 * MiB else f"{size / MiB:.0f} MiB"
    print(f"\n== {label} ==", flush=True)
    data = Generated(size)
    sha, crc = data.digests()
    baseline = blob_dir / "bench-disk-limit.bin"

    os.sync()
    disk = [disk_write_limit(baseline, data)]
    os.sync()
    with MemoryWatch(pids) as mem_up:
        up, body = upload(server.port, info["token"], info["finding_id"], data)
    if body["sha256"] != sha or body["size"] != size:
        raise SystemExit("upload: the server's SHA-256 or size does not match")
    os.sync()
    disk.append(disk_write_limit(baseline, data))
    disk_s = sum(disk) / len(disk)
    print(f"disk write+fdatasync   {mbps(size, disk_s):8.1f} MiB/s "
          f"(before {mbps(size, disk[0]):.0f}, after {mbps(size, disk[1]):.0f})")
    print(f"upload                 {mbps(size, up):8.1f} MiB/s  ratio {disk_s / up:.2f}  "
          f"server peak +{mem_up.report()['delta_mib']:.1f} MiB", flush=True)

    copy = [loopback_limit(baseline, size, "copy")]
    sendfile = loopback_limit(baseline, size, "sendfile")
    os.sync()
    for blob in (p for p in blob_dir.rglob("*") if p.is_file() and p != baseline):
        evict(blob)  # both reads start from the disk, not the page cache
    with MemoryWatch(pids) as mem_down:
        down, got_crc = download(server.port, info["token"], body["id"], size)
    if got_crc != crc:
        raise SystemExit("download: the bytes differ from what was uploaded")
    copy.append(loopback_limit(baseline, size, "copy"))
    baseline.unlink()
    copy_s = sum(copy) / len(copy)
    print(f"read+send loopback     {mbps(size, copy_s):8.1f} MiB/s "
          f"(before {mbps(size, copy[0]):.0f}, after {mbps(size, copy[1]):.0f}; "
          f"sendfile {mbps(size, sendfile):.0f})")
    print(f"download               {mbps(size, down):8.1f} MiB/s  ratio {copy_s / down:.2f} "
          f"(vs sendfile {sendfile / down:.2f})  server peak "
          f"+{mem_down.report()['delta_mib']:.1f} MiB", flush=True)
    api_delete(server.port, info["token"], body["id"])
    return {
        "size": size,
        "disk_write_mib_s": mbps(size, disk_s), "upload_mib_s": mbps(size, up),
        "upload_ratio": disk_s / up,
        "loopback_copy_mib_s": mbps(size, copy_s),
        "loopback_sendfile_mib_s": mbps(size, sendfile),
        "download_mib_s": mbps(size, down), "download_ratio": copy_s / down,
        "download_ratio_vs_sendfile": sendfile / down,
        "memory_upload": mem_up.report(), "memory_download": mem_down.report(),
        "seconds": {"disk_before": disk[0], "upload": up, "disk_after": disk[1],
                    "copy_before": copy[0], "sendfile": sendfile, "download": down,
                    "copy_after": copy[1]},
    }


if __name__ == "__main__":
    main()
