"""Helpers shared by the browser journeys: signing in through the pages, numbered
screenshots, and a recorder for the upload widget (app/static/upload.js).

The widget reloads the finding page once every queued file is stored, so its progress
bars and status lines are gone by the time a test looks. ``UPLOAD_RECORDER`` is an init
script that watches the queue with a MutationObserver and keeps, per file, whether a
progress bar was shown, the highest value it reached, the row's final state and status
text, in sessionStorage (which survives the reload)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from tests.browser.conftest import ARTIFACTS
from tests.factories import PASSWORD

UPLOAD_RECORDER = r"""
(() => {
  const KEY = '__uploads';
  const snap = () => {
    const seen = JSON.parse(sessionStorage.getItem(KEY) || '{}');
    for (const li of document.querySelectorAll('.upload-queue li')) {
      const name = (li.querySelector('.upload-name') || {}).textContent || '';
      const bar = li.querySelector('progress');
      const was = seen[name] || {bar: false, max: 0, values: []};
      const value = bar ? Number(bar.value) : 0;
      if (bar && !was.values.includes(value)) was.values.push(value);
      seen[name] = {
        bar: was.bar || !!bar,
        max: Math.max(was.max, value),
        values: was.values,
        done: li.classList.contains('upload-done'),
        failed: li.classList.contains('upload-failed'),
        status: (li.querySelector('.upload-status') || {}).textContent || '',
      };
    }
    sessionStorage.setItem(KEY, JSON.stringify(seen));
  };
  const start = () => {
    new MutationObserver(snap).observe(document.body, {
      subtree: true, childList: true, characterData: true, attributes: true,
      attributeFilter: ['value', 'class'],
    });
  };
  if (document.body) start(); else document.addEventListener('DOMContentLoaded', start);
})();
"""

# Drop files (name, base64 bytes, MIME type) on the first .upload-zone the way a
# browser does: dragenter, dragover, drop, all carrying one DataTransfer.
DROP_FILES = r"""
(files) => {
  const zone = document.querySelector('.upload-zone');
  const dt = new DataTransfer();
  for (const f of files) {
    const raw = atob(f.b64);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
    dt.items.add(new File([bytes], f.name, {type: f.type}));
  }
  const fire = (type) => zone.dispatchEvent(new DragEvent(type, {
    bubbles: true, cancelable: true, dataTransfer: dt}));
  const accepted = [fire('dragenter'), fire('dragover')];
  const highlighted = zone.classList.contains('dragging');
  fire('drop');
  return {enterCancelled: !accepted[0], overCancelled: !accepted[1], highlighted: highlighted,
          count: dt.files.length};
}
"""


def drop_files(page: Any, files: list[tuple[str, bytes, str]]) -> dict[str, Any]:
    return page.evaluate(DROP_FILES, [
        {"name": n, "b64": base64.b64encode(b).decode(), "type": t} for n, b, t in files])


def recorded_uploads(page: Any) -> dict[str, Any]:
    return json.loads(page.evaluate("() => sessionStorage.getItem('__uploads') || '{}'"))


class Shots:
    """Full-page screenshots numbered in the order taken: ``<folder>/NN-<step>.png``."""

    def __init__(self, folder: str) -> None:
        self.dir = ARTIFACTS / folder
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("*.png"):
            old.unlink()
        self.n = 0
        self.taken: list[Path] = []

    def __call__(self, page: Any, step: str) -> Path:
        self.n += 1
        path = self.dir / f"{self.n:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


def new_page(browser: Any, *, init_script: str | None = None) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    if init_script:
        page.add_init_script(init_script)
    return context, page


def sign_in(page: Any, live: str, email: str, *, password: str = PASSWORD,
            code: str | None = None) -> None:
    """Through /login (and /login/2fa when ``code`` is given); ends on /home."""
    page.goto(f"{live}/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    if code is not None:
        page.get_by_label("Code from your authenticator app").fill(code)
        page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"{live}/home")


FINDING_URL = re.compile(r".*/findings/(\d+)$")
