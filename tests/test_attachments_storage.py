"""Interrupted uploads (client gone, body error, server killed) leave no row and nothing
that `enclave storage gc` does not sweep."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from app import state
from app.attachments import service
from app.attachments.models import Attachment
from app.attachments.pipeline import BodyReadError, SealPipeline, UploadTooLarge
from app.cli import enclave
from app.crypto.stream import StreamEncryptor, decrypt_stream, new_data_key
from app.db import db
from app.errors import ServiceError
from tests import attachments_world
from tests.attachments_world import (
    ServerThread,
    attach,
    blob_files,
    blob_path,
    build_world,
    payload,
    temp_files,
)

att_app = attachments_world.att_app  # fixtures
att_client = attachments_world.att_client

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


def _no_rows() -> bool:
    db.rollback()
    return db.scalars(select(Attachment)).all() == []


def _wait_for(condition, what: str, seconds: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _send_partial_upload(port: int, token_header: str, finding_id: int, declared: int,
                         sent: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (f"POST /api/v1/findings/{finding_id}/attachments?filename=part.bin HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nAuthorization: {token_header}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n")
    sock.sendall(head.encode())
    sock.sendall(payload(sent))
    return sock


def test_body_error_mid_upload_leaves_nothing(att_app):
    w = build_world()

    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.sent = 0

        def read(self, size: int = -1) -> bytes:
            if self.sent >= 3 * MiB:
                raise ConnectionResetError("peer went away")
            self.sent += MiB
            return b"\x00" * MiB

    with pytest.raises(ServiceError) as exc:
        service.upload(w.author, w.finding.id, filename="x.bin", stream=Broken(),
                       content_length=None)
    assert exc.value.code == "upload_interrupted"
    assert _no_rows() and temp_files() == [] and blob_files() == []


def test_client_disconnect_mid_upload_real_server(att_app, api_token):
    w = build_world()
    token = api_token(w.author)["Authorization"]
    with ServerThread(att_app) as server:
        sock = _send_partial_upload(server.port, token, w.finding.id, 10 * MiB, 3 * MiB)
        _wait_for(lambda: temp_files(), "the upload to start")
        sock.close()  # the client goes away with 7 MiB still to send
        _wait_for(lambda: not temp_files(), "the server to discard the partial upload")
    assert _no_rows() and blob_files() == []


def _serve_in_subprocess(app, tmp_path: Path) -> tuple[subprocess.Popen[str], int]:  # type: ignore[no-untyped-def]
    settings = app.extensions["enclave.settings"]
    env = {**os.environ, "ENCLAVE_ENV": "test", "ENCLAVE_DATABASE_URL": settings.database_url,
           "ENCLAVE_INSTANCE_PATH": str(settings.instance_path),
           "ENCLAVE_KEYRING": str(settings.keyring_path),
           "ENCLAVE_SECRET_KEY": settings.secret_key}
    code = ("from app import create_app\n"
            "from werkzeug.serving import make_server\n"
            "server = make_server('127.0.0.1', 0, create_app(), threaded=True)\n"
            "print(server.server_port, flush=True)\n"
            "server.serve_forever()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, port


def test_server_killed_mid_upload_then_gc(att_app, api_token, tmp_path):
    w = build_world()
    token = api_token(w.author)["Authorization"]
    proc, port = _serve_in_subprocess(att_app, tmp_path)
    try:
        sock = _send_partial_upload(port, token, w.finding.id, 10 * MiB, 4 * MiB)
        _wait_for(lambda: temp_files() and temp_files()[0].stat().st_size > MiB,
                  "encrypted bytes in the temp file")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        sock.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    leftovers = temp_files()
    assert len(leftovers) == 1 and leftovers[0].name.endswith(".part")
    assert payload(4096) not in leftovers[0].read_bytes()  # ciphertext only, even in temp
    assert _no_rows() and blob_files() == []  # no row points to a partial blob

    runner = att_app.test_cli_runner()
    young = runner.invoke(enclave, ["storage", "gc"])  # 24 h default: an upload in flight
    assert young.exit_code == 0, young.output
    assert "removed 0 unreferenced blob(s) and 0 temp file(s)" in young.output
    dry = runner.invoke(enclave, ["storage", "gc", "--min-age-hours", "0", "--dry-run"])
    assert "would remove 0 unreferenced blob(s) and 1 temp file(s)" in dry.output
    assert temp_files() == leftovers
    swept = runner.invoke(enclave, ["storage", "gc", "--min-age-hours", "0"])
    assert swept.exit_code == 0, swept.output
    assert "removed 0 unreferenced blob(s) and 1 temp file(s)" in swept.output
    assert temp_files() == []


def test_gc_removes_unreferenced_and_shredded_blobs_only(att_app):
    w = build_world()
    kept = attach(w.author, w.finding, b"still here")
    shredded = attach(w.author, w.finding, b"key destroyed, blob removal failed")
    # Crash between shredding and removing the blob: the key is gone, the blob is not.
    db.execute(update(Attachment).where(Attachment.id == shredded.id)
               .values(wrapped_key=None))
    db.commit()
    # Crash between committing a blob and inserting its row.
    with state.blobs().open_writer("ab" * 16) as writer:
        writer.write(b"orphan ciphertext")
        writer.commit()
    assert len(blob_files()) == 3

    report = service.gc_blobs(min_age_seconds=3600)
    assert report.deleted_blobs == [] and report.skipped_recent == 2
    report = service.gc_blobs(min_age_seconds=0)
    assert sorted(report.deleted_blobs) == sorted(["ab" * 16, shredded.blob_id])
    assert report.kept_referenced == 1
    assert blob_files() == [blob_path(kept)]


def _pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("attachment-")]


def _sealed(enc: StreamEncryptor, key: bytes, blob: bytes) -> bytes:
    return b"".join(decrypt_stream(key, "attachment:" + "0" * 32, [enc.header() + blob]))


def test_pipeline_hashes_encrypts_and_writes_in_order():
    key = new_data_key()
    enc = StreamEncryptor(key, "attachment:" + "0" * 32, hashing=False)
    data = payload(5 * MiB + 3)
    out = io.BytesIO()
    with SealPipeline(enc, out.write, depth=2, buffer_size=256 * 1024) as pipe:
        # a reader that hands out odd-sized pieces, like a socket
        source = io.BytesIO(data)
        size = pipe.run(lambda view: source.readinto(view[:77_777]), 10 * MiB)
        out.write(pipe.finish())
    assert size == len(data) and pipe.plaintext_size == len(data)
    assert pipe.sha256_hex == hashlib.sha256(data).hexdigest()
    assert _sealed(enc, key, out.getvalue()) == data
    assert _pipeline_threads() == []


def test_pipeline_reports_a_failing_disk():
    writes: list[int] = []

    def write(view: memoryview) -> None:
        if len(writes) == 2:
            raise OSError(28, "No space left on device")
        writes.append(len(view))

    enc = StreamEncryptor(new_data_key(), "attachment:x", hashing=False)
    with (SealPipeline(enc, write, depth=2, buffer_size=64 * 1024) as pipe,
          pytest.raises(OSError, match="No space")):
        pipe.run(io.BytesIO(payload(4 * MiB)).readinto, 10 * MiB)
        pipe.finish()
    assert len(writes) == 2  # nothing written after the failure
    assert _pipeline_threads() == []


def test_pipeline_stops_at_the_budget_and_on_a_read_error():
    enc = StreamEncryptor(new_data_key(), "attachment:x", hashing=False)
    with (SealPipeline(enc, lambda view: None, buffer_size=64 * 1024) as pipe,
          pytest.raises(UploadTooLarge)):
        pipe.run(io.BytesIO(payload(MiB)).readinto, 300_000)
    assert pipe.plaintext_size <= 300_000  # what went past the budget was never queued

    def broken(view: memoryview) -> int:
        raise ConnectionResetError("client gone")

    enc = StreamEncryptor(new_data_key(), "attachment:x", hashing=False)
    with (SealPipeline(enc, lambda view: None) as pipe,
          pytest.raises(BodyReadError, match="client gone")):
        pipe.run(broken, MiB)
    assert _pipeline_threads() == []


def _open_fds_on(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:
            continue
    return count


def test_client_leaving_mid_download_releases_the_server_side(att_app, api_token):
    w = build_world()
    att = attach(w.author, w.finding, payload(24 * MiB))
    path = blob_path(att)
    with ServerThread(att_app) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # the file cannot
        sock.settimeout(30)  # fit into socket buffers
        sock.connect(("127.0.0.1", server.port))
        token = api_token(w.reader)["Authorization"]
        sock.sendall(f"GET /api/v1/attachments/{att.id} HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: {token}\r\n\r\n".encode())
        sock.recv(MiB)
        _wait_for(lambda: _open_fds_on(path) == 1, "the server to be streaming the blob")
        sock.close()
        _wait_for(lambda: _open_fds_on(path) == 0, "the server to close the blob")


def test_body_shorter_than_content_length_is_not_stored(att_app):
    """Some servers (gunicorn) end the body quietly when the client leaves early."""
    w = build_world()
    with pytest.raises(ServiceError) as exc:
        service.upload(w.author, w.finding.id, filename="short.bin",
                       stream=io.BytesIO(payload(3 * MiB)), content_length=5 * MiB)
    assert exc.value.code == "upload_interrupted"
    assert _no_rows() and temp_files() == [] and blob_files() == []


def test_client_disconnect_mid_upload_under_gunicorn(att_app, api_token, tmp_path):
    """gunicorn ends a body quietly when the client leaves: still no row, no blob."""
    settings = att_app.extensions["enclave.settings"]
    w = build_world()
    token = api_token(w.author)["Authorization"]
    port = _free_port()
    env = {**os.environ, "ENCLAVE_ENV": "test", "ENCLAVE_DATABASE_URL": settings.database_url,
           "ENCLAVE_INSTANCE_PATH": str(settings.instance_path),
           "ENCLAVE_KEYRING": str(settings.keyring_path),
           "ENCLAVE_SECRET_KEY": settings.secret_key,
           "ENCLAVE_GUNICORN_BIND": f"127.0.0.1:{port}", "ENCLAVE_GUNICORN_WORKERS": "1",
           "ENCLAVE_GUNICORN_ACCESS_LOG": "/dev/null"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c",
                             "gunicorn.conf.py", "wsgi:app"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _accepts(port), "gunicorn to listen")
        sock = _send_partial_upload(port, token, w.finding.id, 10 * MiB, 3 * MiB)
        _wait_for(lambda: temp_files(), "the upload to start")
        sock.close()
        _wait_for(lambda: not temp_files(), "the partial upload to be discarded")
        # A complete upload through the same server works.
        data = payload(2 * MiB + 5)
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall((f"POST /api/v1/findings/{w.finding.id}/attachments?filename=ok.bin "
                      f"HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\nContent-Length: "
                      f"{len(data)}\r\nConnection: close\r\n\r\n").encode() + data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        sock.close()
        assert answer.startswith(b"HTTP/1.1 201")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    db.rollback()
    assert [a.size for a in db.scalars(select(Attachment))] == [2 * MiB + 5]
    assert temp_files() == [] and len(blob_files()) == 1


def _http_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP/1.1 response with Content-Length from ``sock``: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    assert len(body) == length
    return head, body


def test_uploads_under_gunicorn_keep_the_connection_usable(att_app, api_token):
    """The body is read straight from gunicorn's socket: bodies that arrive with the
    headers, large ones, chunked ones, and the next requests on the same keep-alive
    connection all come out exactly right."""
    settings = att_app.extensions["enclave.settings"]
    w = build_world()
    token = api_token(w.author)["Authorization"]
    port = _free_port()
    env = {**os.environ, "ENCLAVE_ENV": "test", "ENCLAVE_DATABASE_URL": settings.database_url,
           "ENCLAVE_INSTANCE_PATH": str(settings.instance_path),
           "ENCLAVE_KEYRING": str(settings.keyring_path),
           "ENCLAVE_SECRET_KEY": settings.secret_key,
           "ENCLAVE_GUNICORN_BIND": f"127.0.0.1:{port}", "ENCLAVE_GUNICORN_WORKERS": "1",
           "ENCLAVE_GUNICORN_ACCESS_LOG": "/dev/null"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c",
                             "gunicorn.conf.py", "wsgi:app"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    files = {"small.bin": payload(100, seed=1), "large.bin": payload(3 * MiB + 17, seed=2),
             "one.bin": payload(1, seed=3)}
    try:
        _wait_for(lambda: _accepts(port), "gunicorn to listen")
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        ids = {}
        for name, data in files.items():  # one connection, one packet per request
            sock.sendall((f"POST /api/v1/findings/{w.finding.id}/attachments?filename={name}"
                          f" HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
                          f"Content-Type: application/octet-stream\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n").encode() + data)
            head, body = _http_answer(sock)
            assert head.startswith(b"HTTP/1.1 201"), head + body
            answer = json.loads(body)
            assert answer["sha256"] == hashlib.sha256(data).hexdigest()
            ids[name] = answer["id"]
        # chunked (gunicorn's own reader), on the same connection
        data = payload(MiB + 3, seed=4)
        sock.sendall((f"POST /api/v1/findings/{w.finding.id}/attachments?filename=c.bin "
                      f"HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
                      f"Content-Type: application/octet-stream\r\n"
                      f"Transfer-Encoding: chunked\r\n\r\n").encode())
        for i in range(0, len(data), 300_000):
            piece = data[i:i + 300_000]
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        head, body = _http_answer(sock)
        assert head.startswith(b"HTTP/1.1 201"), head + body
        assert json.loads(body)["sha256"] == hashlib.sha256(data).hexdigest()
        files["c.bin"], ids["c.bin"] = data, json.loads(body)["id"]
        for name, att_id in ids.items():  # and downloads, still on that connection
            sock.sendall((f"GET /api/v1/attachments/{att_id} HTTP/1.1\r\nHost: x\r\n"
                          f"Authorization: {token}\r\n\r\n").encode())
            head, body = _http_answer(sock)
            assert head.startswith(b"HTTP/1.1 200") and body == files[name], name
        sock.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert temp_files() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_gunicorn_bodies_are_read_straight_from_the_socket():
    """A Content-Length body of gunicorn's: what gunicorn buffered with the headers
    comes first, the rest is received straight into our buffer, and gunicorn's count
    of what is left ends at 0 without reading past the body (the next request)."""
    from gunicorn.http.body import Body, ChunkedReader, LengthReader
    from gunicorn.http.unreader import SocketUnreader

    from app.attachments.pipeline import body_reader

    data = payload(3 * MiB + 5)
    a, b = socket.socketpair()
    try:
        unreader = SocketUnreader(a)
        unreader.unread(data[:1000])  # read ahead with the headers
        body = Body(LengthReader(unreader, len(data)))
        read = body_reader(body)
        assert read.__qualname__.startswith("_gunicorn_length_body")
        sender = threading.Thread(target=b.sendall, args=(data[1000:] + b"NEXT REQUEST",))
        sender.start()
        buf = bytearray(MiB)
        got = bytearray()
        with memoryview(buf) as view:
            while n := read(view):
                got += view[:n]
        sender.join()
        assert bytes(got) == data and body.reader.length == 0
        assert a.recv(100) == b"NEXT REQUEST"  # untouched, for gunicorn's parser
        # a client gone early is an error, not a quiet end
        short = Body(LengthReader(SocketUnreader(a), 10))
        b.sendall(b"12345")
        b.shutdown(socket.SHUT_WR)
        read = body_reader(short)
        with memoryview(bytearray(100)) as view:
            assert read(view) == 5
            with pytest.raises(ConnectionResetError):
                read(view)
        assert short.failed  # gunicorn will not reuse the connection
        # chunked bodies keep gunicorn's own reader
        chunked = Body(ChunkedReader(None, SocketUnreader(a)))
        assert not body_reader(chunked).__qualname__.startswith("_gunicorn_length_body")
    finally:
        a.close()
        b.close()


def test_decrypt_ahead_sends_only_authenticated_pieces_and_stops_when_closed():
    from app.attachments.pipeline import DecryptAhead
    from app.crypto.stream import IntegrityError, StreamDecryptor, encrypt_stream

    key, ctx = new_data_key(), "attachment:" + "0" * 32
    data = payload(5 * MiB + 7)
    blob = bytearray(b"".join(encrypt_stream(key, ctx, [data])))

    def ahead(raw: bytes) -> DecryptAhead:
        dec = StreamDecryptor(key, ctx)
        return DecryptAhead(io.BytesIO(raw), dec.update, dec.finalize,
                            read_size=256 * 1024, depth=2)

    assert b"".join(ahead(bytes(blob))) == data
    blob[3 * MiB] ^= 1  # a chunk in the middle
    got = bytearray()
    pieces = ahead(bytes(blob))
    with pytest.raises(IntegrityError):
        for piece in pieces:
            got += piece
    assert data.startswith(bytes(got)) and 2 * MiB < len(got) < 3 * MiB + 1
    with pytest.raises(IntegrityError):  # stays failed
        next(pieces)
    # a client leaving after one piece: close() stops the helper
    pieces = ahead(bytes(blob))
    next(pieces)
    pieces.close()
    assert _pipeline_threads() == []
