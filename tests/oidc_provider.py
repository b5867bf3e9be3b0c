"""A real OpenID provider for the SSO tests: node-oidc-provider (tests/oidc/, the version
pinned in package.json and package-lock.json), run with the machine's Node.js.

``npm ci`` installs it on first use when ``tests/oidc/node_modules`` is missing (CI does
it up front). Without Node.js the tests skip, unless ENCLAVE_REQUIRE_BROWSER=1 (CI), where
it is a failure like a missing Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import requests

HERE = Path(__file__).resolve().parent / "oidc"
FORM_ACTION = re.compile(r'<form\b[^>]*\baction="([^"]+)"', re.IGNORECASE)


def _require_node() -> str:
    node = shutil.which("node")
    if node and shutil.which("npm"):
        return node
    message = "Node.js and npm are needed to run the OpenID provider the SSO tests use"
    if os.environ.get("ENCLAVE_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def ensure_installed() -> str:
    node = _require_node()
    if not (HERE / "node_modules" / "oidc-provider").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(HERE)],
                       check=True, capture_output=True, timeout=600)
    return node


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Provider:
    issuer: str
    client_id: str
    client_secret: str
    accounts: dict[str, dict[str, Any]]
    process: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)

    def sign_in(self, browser: requests.Session, response: requests.Response,
                login: str) -> requests.Response:
        """Answer the provider's sign-in and consent pages (its development interactions)
        for ``login``, starting from a response that landed on them; returns the response
        after the redirect back to Enclave has been followed."""
        for prompt in ("login", "consent"):
            if not response.url.startswith(self.issuer):
                break
            match = FORM_ACTION.search(response.text)
            assert match, f"no {prompt} form at the provider: {response.text[:500]}"
            data = {"prompt": prompt}
            if prompt == "login":
                data.update(login=login, password="any")
            response = browser.post(urljoin(response.url, match.group(1)), data=data)
        return response

    def sign_out(self, browser: requests.Session) -> requests.Response:
        """End the provider session (RP-independent logout at its end_session page): the
        provider then posts back-channel logout tokens to the clients."""
        page = browser.get(f"{self.issuer}/session/end")
        match = FORM_ACTION.search(page.text)
        assert match, page.text[:500]
        xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text)
        data = {"logout": "yes"}
        if xsrf:
            data["xsrf"] = xsrf.group(1)
        return browser.post(urljoin(page.url, match.group(1)), data=data)


@contextmanager
def running_provider(*, redirect_uri: str, backchannel_logout_uri: str,
                     accounts: dict[str, dict[str, Any]],
                     client_id: str = "enclave-test",
                     client_secret: str = "provider-issued-secret-0123456789abcdef",  # noqa: S107
                     ) -> Iterator[Provider]:
    node = ensure_installed()
    port = free_port()
    config = {"client_id": client_id, "client_secret": client_secret,
              "redirect_uri": redirect_uri, "backchannel_logout_uri": backchannel_logout_uri,
              "accounts": accounts}
    process = subprocess.Popen([node, str(HERE / "provider.mjs"), str(port)], cwd=HERE,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps(config))
    process.stdin.close()
    provider = Provider(f"http://localhost:{port}", client_id, client_secret, accounts, process)

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            provider.log.append(line.rstrip())

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if requests.get(f"{provider.issuer}/.well-known/openid-configuration",
                                timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the OpenID provider did not start:\n"
                                   + "\n".join(provider.log))
            time.sleep(0.2)
        yield provider
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
