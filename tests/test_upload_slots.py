"""ENCLAVE_UPLOADS_PER_USER: the uploads one user may stream at once (issue 12, item 3).

Upload bodies pass the nginx front unbuffered, so slow uploads hold app threads; a user
with their slots full is refused (429) before any byte is read, and gets a slot back
when an upload ends, finished or broken. Counted in Redis (shared by every worker) and,
without Redis, per process. Real server (Werkzeug on a port), real sockets, real Redis."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.error import HTTPError

import pytest
import redis
from werkzeug.serving import make_server

from app.attachments import slots
from tests.conftest import redis_test_url, running_app
from tests.factories import make_finding, make_org, make_user

REDIS_URL = redis_test_url(14)


@pytest.fixture(params=["redis", "per-process"])
def served(request: Any, migrated: str, instance_dir: Any) -> Iterator[tuple[Any, str]]:
    extra = {"redis_url": REDIS_URL} if request.param == "redis" else {}
    if extra:
        redis.Redis.from_url(REDIS_URL).flushdb()
    with running_app(migrated, instance_dir, uploads_per_user=2, **extra) as app:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield app, f"127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            thread.join(timeout=10)
    if extra:
        redis.Redis.from_url(REDIS_URL).flushdb()


def held(app: Any, user_id: int) -> int:
    client = app.extensions.get("enclave.redis")
    if client is not None:
        return int(client.zcard(f"enclave:uploads:{user_id}"))
    return slots._local.get(user_id, 0)


def wait_for(check: Callable[[], bool], what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def slow_upload(address: str, path: str, token: str, size: int = 100_000) -> socket.socket:
    """An upload whose body has barely started, held open."""
    host, port = address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {address}\r\n"
                  f"Authorization: Bearer {token}\r\n"
                  "Content-Type: application/octet-stream\r\n"
                  f"Content-Length: {size}\r\n\r\n").encode() + b"x" * 10)
    return sock


def upload(address: str, path: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(  # noqa: S310
        f"http://{address}{path}", data=b"a whole small file",
        headers={"Authorization": f"Bearer {token}",
                 "Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return int(response.status), response.read().decode()
    except HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_user_streams_at_most_the_configured_uploads_at_once(served, api_token):
    app, address = served
    org = make_org()
    user = make_user(org)
    other = make_user(org)
    finding = make_finding(user, level="network")
    token = api_token(user)["Authorization"].split()[1]
    other_token = api_token(other)["Authorization"].split()[1]
    path = f"/api/v1/findings/{finding.id}/attachments?filename=notes.txt"

    first = slow_upload(address, path, token)
    second = slow_upload(address, path, token)
    wait_for(lambda: held(app, user.id) == 2, "two slow uploads hold two slots")
    status, body = upload(address, path, token)
    assert status == 429 and "too_many_uploads" in body, (status, body)
    assert held(app, user.id) == 2  # the refused one took no slot
    # someone else's uploads are not counted against this user
    assert upload(address, path, other_token)[0] == 201

    first.close()  # a broken upload gives its slot back
    wait_for(lambda: held(app, user.id) == 1, "the broken upload's slot is released")
    assert upload(address, path, token)[0] == 201
    second.close()
    wait_for(lambda: held(app, user.id) == 0, "every slot is released")
