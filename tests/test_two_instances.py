"""Two real gunicorn instances on one PostgreSQL database, one Redis and one instance
folder behave as one site: sessions, sign-out, suspension, rate limits and attachments
cross from one to the other.

Each test uses its own account and its own client address (sent as X-Forwarded-For,
with ENCLAVE_PROXY_COUNT=1), so the per-address sign-in limit of one test does not
touch another.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis

from app.config import REPO_ROOT
from tests.conftest import csrf_from, make_app, redis_test_url
from tests.factories import PASSWORD, make_finding, make_org, make_user
from tests.pg_private import private_database, requires_postgres

pytestmark = requires_postgres

REDIS_URL = redis_test_url(12)
SECRET_KEY = "two-instances-" + secrets.token_urlsafe(32)
LOGIN_LIMIT = 5


# ------------------------------------------------------------------ a tiny browser


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")


@dataclass
class Browser:
    """One cookie jar for every port on 127.0.0.1, as a browser keeps it; no redirects
    are followed. ``address`` is the client address the proxy would report."""

    address: str
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, port: int, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        sent = {"X-Forwarded-For": self.address, **(headers or {})}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            reply = Reply(response.status, response.headers, response.read())
        finally:
            conn.close()
        for raw in reply.headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                gone = (morsel["max-age"] == "0" or not morsel.value
                        or "1970" in morsel["expires"])
                if gone:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return reply

    def get(self, port: int, path: str) -> Reply:
        return self.request(port, "GET", path)

    def post_form(self, port: int, path: str, data: dict[str, str]) -> Reply:
        return self.request(port, "POST", path, urlencode(data).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})

    def sign_in(self, port: int, email: str, password: str = PASSWORD) -> Reply:
        page = self.get(port, "/login")
        assert page.status == 200, page.status
        return self.post_form(port, "/login", {
            "email": email, "password": password, "csrf_token": csrf_from(page.text)})


# ------------------------------------------------------------------ the two servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Instance:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def server_env(database_url: str, instance: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ENCLAVE_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({
        "ENCLAVE_ENV": "production",
        "ENCLAVE_DATABASE_URL": database_url,
        "ENCLAVE_REDIS_URL": REDIS_URL,
        "ENCLAVE_SECRET_KEY": SECRET_KEY,
        "ENCLAVE_KEYRING": str(instance / "keyring.json"),
        "ENCLAVE_KEYRING_UNSEALED": "allow",  # the test's own throwaway keyring
        "ENCLAVE_INSTANCE_PATH": str(instance),
        "ENCLAVE_SECURE_COOKIES": "false",
        "ENCLAVE_PROXY_COUNT": "1",
        "ENCLAVE_BASE_URL": f"http://127.0.0.1:{port}",
        "ENCLAVE_LOGIN_LIMIT": f"{LOGIN_LIMIT} per minute",
        "ENCLAVE_GUNICORN_BIND": f"127.0.0.1:{port}",
        "ENCLAVE_GUNICORN_WORKERS": "2",
        "ENCLAVE_GUNICORN_THREADS": "2",
        **extra,
    })
    return env


def gunicorn_command() -> list[str]:
    script = Path(sys.executable).parent / "gunicorn"
    prefix = [str(script)] if script.exists() else [sys.executable, "-m", "gunicorn"]
    return [*prefix, "-c", "gunicorn.conf.py", "wsgi:app"]


def start_instance(name: str, env: dict[str, str], log: Path) -> Instance:
    port = int(env["ENCLAVE_GUNICORN_BIND"].rsplit(":", 1)[1])
    with log.open("wb") as out:
        process = subprocess.Popen(gunicorn_command(), cwd=REPO_ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    return Instance(name, port, process, log)


def wait_ready(instance: Instance, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if instance.process.poll() is not None:
            raise AssertionError(f"{instance.name} exited:\n{instance.log_tail()}")
        try:
            if Browser("127.0.0.1").get(instance.port, "/healthz").status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{instance.name} not ready after {timeout}s:\n{instance.log_tail()}")


def stop_instance(instance: Instance) -> None:
    if instance.process.poll() is None:
        instance.process.terminate()
        try:
            instance.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            instance.process.kill()
            instance.process.wait(timeout=10)


# ------------------------------------------------------------------ the site


@dataclass
class Site:
    a: int
    b: int
    users: dict[str, str]  # role in the test -> email
    finding_id: int
    finding_title: str
    admin_token: str
    suspended_slug: str
    instances: list[Instance]


def build_world(database_url: str, instance: Path) -> dict[str, Any]:
    """Migrate the private database, create the keyring, and the people of the tests."""
    from app.auth.tokens import allowed_scopes, create_token
    from app.migrate import upgrade_to_head

    app = make_app(database_url, instance, secret_key=SECRET_KEY)
    try:
        with app.app_context():
            upgrade_to_head()
            lab = make_org("lab")
            other = make_org("elsewhere")
            admin = make_user(make_org("hq"), role="admin", mfa_on=False)
            users = {role: make_user(lab, mfa_on=False, name=role).email
                     for role in ("roamer", "leaver", "limited", "uploader")}
            users["suspended"] = make_user(other, mfa_on=False, name="farout").email
            author = make_user(lab, mfa_on=False, name="author")
            finding = make_finding(author, title="Shared across servers")
            _, token = create_token(admin, "two-instances", scopes=allowed_scopes(admin))
            return {"users": users, "finding_id": finding.id,
                    "finding_title": finding.title, "admin_token": token,
                    "suspended_slug": other.slug}
    finally:
        app.extensions["enclave.engine"].dispose()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    store = redis.Redis.from_url(REDIS_URL)
    store.flushdb()
    folder = tmp_path_factory.mktemp("two-instances")
    instance = folder / "instance"
    instances: list[Instance] = []
    with private_database("enclave_2i") as database_url:
        try:
            world = build_world(database_url, instance)
            assert (instance / "keyring.json").exists()
            for name in ("A", "B"):
                env = server_env(database_url, instance, free_port())
                instances.append(start_instance(name, env, folder / f"{name}.log"))
            for one in instances:
                wait_ready(one)
            yield Site(a=instances[0].port, b=instances[1].port, instances=instances,
                       **world)
        finally:
            for one in instances:
                stop_instance(one)
            store.flushdb()


def _signed_in(site: Site, who: str, address: str) -> Browser:
    browser = Browser(address)
    reply = browser.sign_in(site.a, site.users[who])
    assert reply.status == 302 and reply.location.endswith("/home"), (reply.status, reply.text)
    return browser


# ------------------------------------------------------------------ the tests


def test_a_sign_in_on_one_instance_is_valid_on_the_other(site: Site) -> None:
    browser = _signed_in(site, "roamer", "198.51.100.1")
    home = browser.get(site.b, "/home")
    assert home.status == 200, home.text
    assert "Roamer Tester" in home.text
    page = browser.get(site.b, f"/findings/{site.finding_id}")
    assert page.status == 200 and site.finding_title in page.text
    # and a form from one instance posts to the other (CSRF tokens live in the session)
    assert browser.get(site.a, "/home").status == 200


def test_signing_out_on_one_instance_ends_the_session_on_the_other(site: Site) -> None:
    browser = _signed_in(site, "leaver", "198.51.100.2")
    copy = Browser("198.51.100.2", dict(browser.cookies))  # a second tab, or a thief
    assert copy.get(site.b, "/home").status == 200
    page = browser.get(site.b, "/home")
    out = browser.post_form(site.a, "/logout", {"csrf_token": csrf_from(page.text)})
    assert out.status == 302 and "/login" in out.location
    after = copy.get(site.b, "/home")
    assert after.status == 302 and "/login" in after.location
    assert copy.get(site.b, f"/findings/{site.finding_id}").status == 302
    assert browser.get(site.a, "/home").status == 302


def test_suspending_the_org_on_one_instance_ends_access_on_the_other(site: Site) -> None:
    browser = _signed_in(site, "suspended", "198.51.100.3")
    assert browser.get(site.b, "/home").status == 200
    api = Browser("198.51.100.30")
    reply = api.request(site.a, "PATCH", f"/api/v1/admin/orgs/{site.suspended_slug}",
                        json.dumps({"status": "suspended"}).encode(),
                        {"Authorization": f"Bearer {site.admin_token}",
                         "Content-Type": "application/json"})
    assert reply.status == 200 and json.loads(reply.body)["status"] == "suspended", reply.text
    home = browser.get(site.b, "/home")
    assert home.status == 302 and "/login" in home.location
    assert browser.get(site.b, f"/findings/{site.finding_id}").status != 200


def test_rate_limits_count_across_both_instances(site: Site) -> None:
    browser = Browser("198.51.100.4")
    email = site.users["limited"]
    token = csrf_from(browser.get(site.a, "/login").text)
    wrong = {"email": email, "password": "not-the-password-at-all", "csrf_token": token}
    ports = [site.a, site.b] * LOGIN_LIMIT
    statuses = [browser.post_form(ports[i], "/login", wrong).status
                for i in range(LOGIN_LIMIT)]
    assert statuses == [401] * LOGIN_LIMIT
    over = browser.post_form(ports[LOGIN_LIMIT], "/login", wrong)
    assert over.status == 429, over.text
    # the right password does not get through either, on either instance
    right = {**wrong, "password": PASSWORD}
    assert browser.post_form(site.a, "/login", right).status == 429
    assert browser.post_form(site.b, "/login", right).status == 429


def test_an_upload_through_one_instance_downloads_through_the_other(site: Site) -> None:
    browser = _signed_in(site, "uploader", "198.51.100.5")
    page = browser.get(site.a, f"/findings/{site.finding_id}")
    assert page.status == 200
    marker = 'data-csrf="'
    start = page.text.index(marker) + len(marker)
    token = page.text[start:page.text.index('"', start)]
    data = os.urandom(3 * 1024 * 1024 + 517)
    reply = browser.request(
        site.a, "POST", f"/findings/{site.finding_id}/attachments?filename=trace.bin", data,
        {"Content-Type": "application/octet-stream", "X-CSRFToken": token})
    assert reply.status == 201, reply.text
    meta = json.loads(reply.body)
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    download = browser.get(site.b, meta["download_url"])
    assert download.status == 200
    assert download.body == data
    stranger = Browser("198.51.100.50")
    assert stranger.get(site.b, meta["download_url"]).status == 302  # not signed in
