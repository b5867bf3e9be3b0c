"""Absolute links come from ENCLAVE_BASE_URL, never from the request's Host header
(issue 12, item 9): a forged ``Host`` or ``X-Forwarded-Host`` must not put another host
into an invitation, a password reset e-mail or an API answer."""

from __future__ import annotations

import email
from email import policy as email_policy
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from app import state
from tests.conftest import csrf_from
from tests.factories import login, make_org, make_user
from tests.test_auth import isolated_requests

__all__ = ["isolated_requests"]

BASE = "https://enclave.example.org"
FORGED = {"Host": "evil.example", "X-Forwarded-Host": "evil.example",
          "X-Forwarded-Proto": "http"}
APP = Path(__file__).resolve().parent.parent / "app"


@pytest.fixture
def based(app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(state.settings(), "base_url", BASE + "/")
    monkeypatch.setattr(state.settings(), "instance_path", tmp_path)
    monkeypatch.setattr(state.settings(), "smtp_url", None)
    return app


@pytest.fixture
def forged(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    """A test client whose every request names another host (its cookies follow it)."""
    plain = client.open

    def open_forged(*args: Any, **kw: Any) -> Any:
        kw["headers"] = {**FORGED, **dict(kw.get("headers") or {})}
        return plain(*args, **kw)

    monkeypatch.setattr(client, "open", open_forged)
    return client


def forged_post(client: FlaskClient, url: str, data: dict[str, str], **kw: Any) -> Any:
    page = client.get(url)
    assert page.status_code == 200, (url, page.status_code)
    return client.post(url, data={**data, "csrf_token": csrf_from(page.text)}, **kw)


def test_the_invitation_link_ignores_a_forged_host(based, forged):
    hq = make_org("hq")
    make_org("acme")
    admin = make_user(hq, role="admin")
    login(forged, admin)
    page = forged.get("/admin/users")
    assert page.request.host == "evil.example"
    response = forged.post("/admin/users/invite", data={
        "email": "nova@acme.example", "org": "acme", "clearance": "network",
        "role": "member", "csrf_token": csrf_from(page.text)})
    body = response.get_data(as_text=True)
    assert response.status_code == 200, body
    assert f"{BASE}/invite/" in body
    assert "evil.example" not in body


def test_the_reset_e_mail_ignores_a_forged_host(based, forged, tmp_path):
    user = make_user(make_org(), mfa_on=False)
    response = forged_post(forged, "/forgot", {"email": user.email}, buffered=True)
    assert response.status_code == 302
    assert "evil.example" not in response.headers["Location"]
    [sent] = sorted((tmp_path / "outbox").glob("*.eml"))
    msg = email.message_from_bytes(sent.read_bytes(), policy=email_policy.default)
    content = msg.get_content()
    assert f"{BASE}/reset/" in content
    assert "evil.example" not in content


def test_the_cli_invitation_uses_the_base_url(based):
    from app.cli import enclave

    make_org("acme", domains=["acme.example"])
    result = based.test_cli_runner().invoke(enclave, [
        "user", "add", "cli@acme.example", "--org", "acme", "--clearance", "network"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith(f"{BASE}/invite/")


def test_external_url_keeps_the_base_urls_path_prefix(app, monkeypatch):
    from app.links import external_url

    monkeypatch.setattr(state.settings(), "base_url", "https://lab.example:8443/enclave/")
    with app.test_request_context("/", headers=FORGED):
        assert external_url("public.show", item_id=7) == \
            "https://lab.example:8443/enclave/public/7"


def test_no_module_builds_a_link_from_the_request_host():
    """Absolute links go through app.links: nothing asks Flask for an external URL or
    reads the request's host, root URL or full URL to build one."""
    offenders = []
    for path in APP.rglob("*"):
        if path.suffix not in {".py", ".html", ".txt", ".xml"} or path.name == "links.py":
            continue
        source = path.read_text(encoding="utf-8")
        for needle in ("_external=True", "request.host", "request.url_root",
                       "request.host_url", "request.base_url"):
            if needle in source:
                offenders.append(f"{path.relative_to(APP)}: {needle}")
    assert offenders == []
