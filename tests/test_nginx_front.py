"""The documented nginx front holds against slow clients (issue 12, item 3).

Debian's nginx runs, unprivileged-port and temp-folder style, with the repository's
deploy/nginx/enclave-http.conf and enclave-server.conf included unchanged, in front of
a real gunicorn (gunicorn.conf.py, kept small on purpose: 2 workers x 2 threads).
A few hundred clients send ``POST /login`` bodies a byte at a time; meanwhile
``/healthz`` and a signed-in page must answer within a second. The same attack straight
at gunicorn (the control) starves it, which shows the attack is real. Uploads, which
nginx passes through unbuffered, are capped per user by the app instead. The access
logs of both servers show no reset token and no query string.

Needs the nginx binary (CI installs it; ENCLAVE_REQUIRE_NGINX=1 makes its absence a
failure instead of a skip).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.conftest import redis_test_url
from tests.factories import PASSWORD, make_finding, make_org, make_user

REPO = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                  else None)
SLOW_CLIENTS = 300
SECRET_KEY = "nginx-front-test-" + "k" * 40
REDIS_URL = redis_test_url(11)  # sessions and upload slots shared by the workers

if NGINX is None:
    if os.environ.get("ENCLAVE_REQUIRE_NGINX") == "1":
        raise RuntimeError("ENCLAVE_REQUIRE_NGINX=1 but there is no nginx binary "
                           "(apt-get install nginx)")
    pytestmark = pytest.mark.skip(reason="needs nginx (apt-get install nginx); "
                                  "ENCLAVE_REQUIRE_NGINX=1 makes this a failure")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path,
                  seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{url} exited:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up:\n{log.read_text(errors='replace')[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass
class Front:
    gunicorn: str  # http://127.0.0.1:port, the app itself
    nginx: str  # http://127.0.0.1:port, through the documented front
    folder: Path
    gunicorn_log: Path


@pytest.fixture
def front(app: Any, tmp_path: Path) -> Iterator[Front]:
    settings = app.extensions["enclave.settings"]
    gport, nport = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ENCLAVE_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({
        "ENCLAVE_ENV": "test",
        "ENCLAVE_DATABASE_URL": settings.database_url,
        "ENCLAVE_INSTANCE_PATH": str(settings.instance_path),
        "ENCLAVE_KEYRING": str(settings.keyring_path),
        "ENCLAVE_SECRET_KEY": SECRET_KEY,
        "ENCLAVE_PROXY_COUNT": "1",
        "ENCLAVE_BASE_URL": f"http://127.0.0.1:{nport}",
        "ENCLAVE_LOGIN_LIMIT": "100000 per minute",
        "ENCLAVE_UPLOADS_PER_USER": "1",
        "ENCLAVE_REDIS_URL": REDIS_URL,
        "ENCLAVE_GUNICORN_BIND": f"127.0.0.1:{gport}",
        "ENCLAVE_GUNICORN_WORKERS": "2",
        "ENCLAVE_GUNICORN_THREADS": "2",
        "ENCLAVE_GUNICORN_ACCESS_LOG": "-",
    })
    redis.Redis.from_url(REDIS_URL).flushdb()
    gunicorn_log = tmp_path / "gunicorn.log"
    script = Path(sys.executable).parent / "gunicorn"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gunicorn"]
    with gunicorn_log.open("wb") as out:
        gunicorn = subprocess.Popen([*command, "-c", "gunicorn.conf.py", "wsgi:app"],
                                    cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    conf = tmp_path / "nginx.conf"
    user = "user root root;\n" if os.geteuid() == 0 else ""  # root: workers stay root
    conf.write_text(f"""{user}worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {tmp_path}/client_body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {REPO}/deploy/nginx/enclave-http.conf;
    upstream enclave {{ server 127.0.0.1:{gport}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{nport};
        access_log {tmp_path}/access.log enclave;
        include {REPO}/deploy/nginx/enclave-server.conf;
    }}
}}
""")
    nginx_log = tmp_path / "nginx.out"
    with nginx_log.open("wb") as out:
        nginx = subprocess.Popen([str(NGINX), "-p", str(tmp_path), "-c", str(conf),
                                  "-e", str(tmp_path / "error.log"), "-g", "daemon off;"],
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{gport}/healthz", gunicorn, gunicorn_log)
        wait_until_up(f"http://127.0.0.1:{nport}/healthz", nginx, nginx_log)
        yield Front(f"http://127.0.0.1:{gport}", f"http://127.0.0.1:{nport}", tmp_path,
                    gunicorn_log)
    finally:
        stop(nginx)
        stop(gunicorn)
        redis.Redis.from_url(REDIS_URL).flushdb()


@dataclass
class SlowClients:
    """``count`` connections that each send a ``POST /login`` head and then one body
    byte per ``interval`` seconds (a body of ``length`` bytes never completes)."""

    url: str
    count: int
    interval: float = 1.0
    length: int = 4000
    sockets: list[socket.socket] = field(default_factory=list)
    dropped: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> SlowClients:
        host, port = self.url.removeprefix("http://").split(":")
        head = ("POST /login HTTP/1.1\r\nHost: enclave.test\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {self.length}\r\n\r\n").encode()
        for _ in range(self.count):
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.sendall(head + b"e")
            sock.setblocking(False)
            self.sockets.append(sock)
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()
        return self

    def _trickle(self) -> None:
        while not self._stop.wait(self.interval):
            for sock in list(self.sockets):
                try:
                    sock.send(b"m")
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    self.sockets.remove(sock)
                    self.dropped += 1

    def still_open(self) -> int:
        """Connections the server has neither closed nor answered."""
        alive = 0
        for sock in self.sockets:
            try:
                sock.recv(1, socket.MSG_PEEK)  # b"" (closed) or an answer
            except BlockingIOError:  # nothing to read: still waiting for the body
                alive += 1
            except OSError:
                pass
        return alive

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for sock in self.sockets:
            sock.close()


def timed_get(session: requests.Session, url: str) -> tuple[int, float]:
    started = time.monotonic()
    try:
        status = session.get(url, timeout=2, allow_redirects=False).status_code
    except requests.RequestException:
        status = 0
    return status, time.monotonic() - started


def sign_in(base: str, email: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{base}/login", timeout=10)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
    assert token, page.text[:500]
    answer = session.post(f"{base}/login", data={
        "email": email, "password": PASSWORD, "csrf_token": token.group(1)},
        timeout=10, allow_redirects=False)
    assert answer.status_code == 302, answer.text[:500]
    return session


def test_slow_clients_do_not_starve_the_app_behind_the_documented_nginx(front, api_token):
    user = make_user(make_org(), mfa_on=False, clearance="network")
    finding = make_finding(user, level="network", title="Visible to the signed-in reader")
    reader = sign_in(front.nginx, user.email)
    page = reader.get(f"{front.nginx}/findings/{finding.id}", timeout=5)
    assert page.status_code == 200 and "Visible to the signed-in reader" in page.text
    anonymous = requests.Session()

    # The control: the same attack straight at gunicorn starves it.
    with SlowClients(front.gunicorn, count=SLOW_CLIENTS):
        time.sleep(1)
        status, seconds = timed_get(anonymous, f"{front.gunicorn}/healthz")
        assert status == 0 or seconds > 1, (status, seconds)
    for _ in range(50):  # the threads are free again once those clients left
        if timed_get(anonymous, f"{front.gunicorn}/healthz")[0] == 200:
            break
        time.sleep(0.2)

    # Through nginx: every check answers, in time, while the slow clients stay connected.
    timings: list[tuple[str, int, float]] = []
    with SlowClients(front.nginx, count=SLOW_CLIENTS) as slow:
        time.sleep(2)
        for _ in range(8):
            for name, session, url in (
                    ("healthz", anonymous, f"{front.nginx}/healthz"),
                    ("finding page", reader, f"{front.nginx}/findings/{finding.id}")):
                status, seconds = timed_get(session, url)
                timings.append((name, status, seconds))
            time.sleep(0.5)
        assert slow.dropped == 0 and slow.still_open() == SLOW_CLIENTS
    slowest = max(seconds for _, _, seconds in timings)
    print(f"\n{SLOW_CLIENTS} slow clients: {len(timings)} checks, slowest {slowest:.3f} s")
    assert all(status == 200 for _, status, _ in timings), timings
    assert slowest < 1.0, timings

    # Uploads are streamed through (unbuffered): a slow one holds the user's one slot.
    headers = api_token(user)
    host, port = front.nginx.removeprefix("http://").split(":")
    path = f"/api/v1/findings/{finding.id}/attachments?filename=notes.txt"
    upload = socket.create_connection((host, int(port)), timeout=10)
    upload.sendall((f"POST {path} HTTP/1.1\r\nHost: enclave.test\r\n"
                    f"Authorization: {headers['Authorization']}\r\n"
                    "Content-Type: application/octet-stream\r\n"
                    "Content-Length: 100000\r\n\r\n").encode() + b"x" * 100)
    slots = redis.Redis.from_url(REDIS_URL)
    sent = time.monotonic()
    deadline = sent + 15
    while not slots.zcard(f"enclave:uploads:{user.id}"):
        if time.monotonic() > deadline:
            shutil.copy(front.gunicorn_log, "/tmp/h12c_gdebug.log")
            shutil.copy(front.folder / "error.log", "/tmp/h12c_ndebug.log")
            raise AssertionError("the slow upload never reached the app")
        time.sleep(0.05)
    print(f"the slow upload held its slot after {time.monotonic() - sent:.2f} s")
    refused = requests.post(f"{front.nginx}{path}", data=b"small file", timeout=10,
                            headers={**headers, "Content-Type": "application/octet-stream"})
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "too_many_uploads"
    upload.close()

    # Neither access log carries a reset token or a query string.
    token = "resettoken" + "Q" * 30
    assert requests.get(f"{front.nginx}/reset/{token}?q=secretword", timeout=10
                        ).status_code == 404
    time.sleep(0.5)  # gunicorn writes its access line after the answer
    for log in (front.folder / "access.log", front.gunicorn_log):
        text = log.read_text(errors="replace")
        assert "/reset/[redacted]" in text, log.name
        assert token not in text and "secretword" not in text, log.name


def test_the_documented_site_file_is_valid_nginx(tmp_path):
    """deploy/nginx/enclave.conf as shipped (TLS, HTTP/2, the redirect) passes `nginx -t`
    once its paths point at this checkout and a throwaway certificate."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enclave.example.org")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "privkey.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    site = (REPO / "deploy/nginx/enclave.conf").read_text()
    for shipped, here in (("/etc/nginx/enclave/", f"{REPO}/deploy/nginx/"),
                          ("/etc/ssl/enclave/", f"{tmp_path}/"),
                          ("/var/log/nginx/", f"{tmp_path}/")):
        assert shipped in site, shipped
        site = site.replace(shipped, here)
    (tmp_path / "site.conf").write_text(site)
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""{user}pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ }}
http {{
    client_body_temp_path {tmp_path}/client_body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {tmp_path}/site.conf;
}}
""")
    checked = subprocess.run([str(NGINX), "-t", "-p", str(tmp_path), "-c", str(conf),
                              "-e", str(tmp_path / "error.log")],
                             capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr
