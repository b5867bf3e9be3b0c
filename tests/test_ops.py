"""Health, metrics, logs with request ids, and Redis-backed sessions (real Redis)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
import uuid

import pytest
import redis

from app.sessions import RETRY_AFTER_SECONDS
from tests.conftest import make_app, redis_test_url, running_app
from tests.factories import PASSWORD, login, make_org, make_user

REDIS_URL = redis_test_url(15)


def test_healthz_reports_checks_without_secrets_or_counts(client, app):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "storage", "keyring"}
    text = response.text.lower()
    assert "key" not in text.replace("keyring", "") and "finding" not in text


def test_metrics_only_for_allowed_addresses_or_admins(client, app):
    client.get("/healthz")
    local = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert local.status_code == 200 and "enclave_http_requests_total" in local.text
    outside = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert outside.status_code == 404
    admin = make_user(make_org(), role="admin", mfa_on=False)
    login(client, admin)
    as_admin = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert as_admin.status_code == 200


def test_every_response_carries_a_request_id_that_the_logs_use(client, app, caplog):
    response = client.get("/healthz", headers={"X-Request-Id": "req-abc"})
    assert response.headers["X-Request-Id"] == "req-abc"
    assert len(client.get("/healthz").headers["X-Request-Id"]) == 16

    from app.ops import RequestIdFilter

    record = logging.LogRecord("enclave.x", logging.INFO, __file__, 1, "hello", None, None)
    from app.context import request_id

    token = request_id.set("req-xyz")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id.reset(token)
    assert record.request_id == "req-xyz"


def test_json_log_lines(capsys):
    from app.ops import configure_logging

    configure_logging(json_logs=True)
    logging.getLogger("enclave.test").warning("disk almost full")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    data = json.loads(line)
    assert data["message"] == "disk almost full" and data["level"] == "WARNING"
    assert "request_id" in data
    configure_logging(json_logs=False)


@pytest.fixture
def redis_app(migrated, instance_dir):  # type: ignore[no-untyped-def]
    redis.Redis.from_url(REDIS_URL).flushdb()
    with running_app(migrated, instance_dir, redis_url=REDIS_URL) as app:
        yield app
    redis.Redis.from_url(REDIS_URL).flushdb()


def test_sessions_live_in_redis_and_logout_deletes_them(redis_app):
    client = redis_app.test_client()
    user = make_user(make_org(), mfa_on=False)
    store = redis.Redis.from_url(REDIS_URL)
    client.get("/login")
    before = {k for k in store.scan_iter("enclave:session:*")}
    login(client, user)
    after = {k for k in store.scan_iter("enclave:session:*")}
    assert after and not (after & before), "the session id must change at sign-in"
    cookie = client.get_cookie("enclave_session").value
    assert len(cookie) < 80 and "." not in cookie  # an opaque id, not signed data
    assert client.get("/home").status_code == 200
    # the same session id works from another "worker" (a second app on the same Redis)
    other = make_app(redis_app.extensions["enclave.settings"].database_url,
                     redis_app.extensions["enclave.settings"].instance_path,
                     redis_url=REDIS_URL)
    other_client = other.test_client()
    other_client.set_cookie("enclave_session", cookie)
    assert other_client.get("/home").status_code == 200
    from tests.conftest import csrf_from

    page = client.get("/home")
    client.post("/logout", data={"csrf_token": csrf_from(page.text)})
    assert other_client.get("/home").status_code == 302
    other.extensions["enclave.engine"].dispose()


def test_redis_down_refuses_sign_in_but_serves_the_rest(migrated, instance_dir):
    dead = "redis://127.0.0.1:6399/0"  # nothing listens there
    with running_app(migrated, instance_dir, redis_url=dead) as app:
        user = make_user(make_org(), mfa_on=False)
        client = app.test_client()
        assert client.get("/healthz").json["checks"]["redis"] == "fail"
        assert client.get("/login").status_code == 200
        response = client.post("/login", data={"email": user.email, "password": "x"})
        assert response.status_code == 503
        assert "session store is unreachable" in response.text
        # rate limiting fell back to per-process memory instead of failing requests
        assert client.get(f"/levels.css?{uuid.uuid4().hex}").status_code == 200


# ------------------------------------------------------------------ Redis going away


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name} {record.levelname} {record.getMessage()}")


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("redis-server did not start")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_stopping_and_coming_back(migrated, instance_dir, api_token):
    """A real Redis server stops while the app runs, then comes back: the API keeps
    serving (rate limits fall back to per-process memory, still enforced, with a logged
    warning), pages that need no session keep serving, sign-in is refused with a 503
    only while the session store is unreachable, and works again once it is back."""
    from app.sessions import ResilientRedisSessionInterface as Interface
    from tests.conftest import csrf_from
    from tests.test_two_instances import free_port

    # an earlier test's outage trips the per-process circuit breaker: let it close
    time.sleep(max(0.0, Interface._down_until - time.monotonic()))
    port = free_port()
    server = _start_redis(port)
    records = _Records()
    watched = [logging.getLogger(n) for n in ("flask-limiter", "enclave.sessions")]
    try:
        with running_app(migrated, instance_dir, redis_url=f"redis://127.0.0.1:{port}/0",
                         api_limit="4 per minute") as app:
            for logger in watched:
                logger.addHandler(records)
            user = make_user(make_org(), mfa_on=False)
            headers = api_token(user)
            web = app.test_client()
            login(web, user)
            assert web.get("/home").status_code == 200
            api = app.test_client()
            assert api.get("/api/v1/me", headers=headers).status_code == 200

            _stop(server)
            statuses = [api.get("/api/v1/me", headers=headers).status_code for _ in range(6)]
            # counted again from zero in this process's memory, and still limited
            assert statuses[:4] == [200] * 4 and statuses[4:] == [429, 429], statuses
            assert any("flask-limiter WARNING" in m and "falling back to in-memory" in m
                       for m in records.messages), records.messages
            assert web.get("/healthz").json == {
                "status": "degraded", "checks": {"database": "ok", "storage": "ok",
                                                 "keyring": "ok", "redis": "fail"}}
            # the session cannot be read: the user is sent to sign in, which is refused
            assert web.get("/home").status_code == 302
            page = web.get("/login")
            assert page.status_code == 200
            refused = web.post("/login", data={"email": user.email, "password": PASSWORD,
                                               "csrf_token": csrf_from(page.text)})
            assert refused.status_code == 503
            assert "session store is unreachable" in refused.text
            assert any("enclave.sessions WARNING" in m and "unreachable" in m
                       for m in records.messages), records.messages

            server = _start_redis(port)  # empty: the old sessions are gone with it
            time.sleep(RETRY_AFTER_SECONDS + 0.5)  # the session store's circuit breaker
            again = app.test_client()
            login(again, user)
            assert again.get("/home").status_code == 200
            assert again.get("/healthz").json["status"] == "ok"
    finally:
        for logger in watched:
            logger.removeHandler(records)
        _stop(server)


def test_metrics_in_production_needs_the_bearer_token(client, app, monkeypatch):
    from app import state

    settings = state.settings()
    monkeypatch.setattr(settings, "env", "production")
    token = "m" * 40
    local = {"REMOTE_ADDR": "127.0.0.1"}
    # behind a proxy on the same host every request comes from loopback: not enough
    assert client.get("/metrics", environ_base=local).status_code == 404
    assert client.get("/metrics", environ_base=local,
                      headers={"Authorization": f"Bearer {token}"}).status_code == 404
    monkeypatch.setattr(settings, "metrics_token", token)
    assert client.get("/metrics", environ_base=local).status_code == 404
    for wrong in ("Bearer " + "m" * 39, "Bearer " + "m" * 41, "Basic " + token, token):
        assert client.get("/metrics", environ_base=local,
                          headers={"Authorization": wrong}).status_code == 404, wrong
    right = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"},
                       headers={"Authorization": f"Bearer {token}"})
    assert right.status_code == 200 and "enclave_http_requests_total" in right.text
    admin = make_user(make_org(), role="admin", mfa_on=False)
    login(client, admin)
    assert client.get("/metrics", environ_base=local).status_code == 404
