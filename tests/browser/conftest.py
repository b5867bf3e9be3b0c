"""Browser tests: the app served on 127.0.0.1 by a real WSGI server in a thread,
driven by Playwright in the system's Chromium (/usr/bin/chromium).

Without Chromium these tests skip with a message, unless ENCLAVE_REQUIRE_BROWSER=1
(as in CI), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from tests.conftest import make_app

CHROMIUM = os.environ.get("ENCLAVE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


def _require_browser() -> None:
    if shutil.which(CHROMIUM) or Path(CHROMIUM).exists():
        return
    message = f"Chromium not found at {CHROMIUM}: install Debian's chromium to run browser tests"
    if os.environ.get("ENCLAVE_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def live_app(app, migrated, instance_dir) -> Iterator[tuple[str, object]]:  # type: ignore[no-untyped-def]
    """Serve a second app instance (same database) on a free port: its URL and the app
    (a test may swap its policy, as an operator editing policies/ and restarting would)."""
    apps: list[Any] = []  # the port comes first: the app builds its links from it
    server = make_server("127.0.0.1", 0, lambda environ, start: apps[0](environ, start),
                         threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    served = make_app(migrated, instance_dir, base_url=url)
    apps.append(served)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield url, served
    finally:
        server.shutdown()
        thread.join(timeout=10)
        served.extensions["enclave.engine"].dispose()


@pytest.fixture
def live_server(live_app) -> str:  # type: ignore[no-untyped-def]
    return live_app[0]


@pytest.fixture
def page(browser, request):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)
    errors: list[str] = []
    dialogs: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.js_errors = errors  # type: ignore[attr-defined]
    page.dialogs = dialogs  # type: ignore[attr-defined]
    yield page
    context.close()


def screenshot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
