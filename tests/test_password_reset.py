"""Password reset by e-mail, through the real forms (CSRF on) and the real outbox or an
SMTP server: one answer for every address, single-use hashed links that expire and
supersede each other, sessions end and two-factor authentication stays on."""

from __future__ import annotations

import email
import hashlib
import re
from datetime import timedelta
from email import policy as email_policy
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from app import audit, state
from app.auth import service as users
from app.auth.models import PasswordReset, User
from app.db import db, utcnow
from app.orgs import service as orgs
from tests.conftest import csrf_from
from tests.factories import PASSWORD, login, make_org, make_user, totp_now
from tests.test_auth import (
    actions,
    isolated_requests,
    post_code,
    post_login,
    reload,
    signed_in,
    text,
)
from tests.test_notifications import smtp_server

__all__ = ["isolated_requests", "smtp_server"]  # fixtures

NEW_PASSWORD = "harbour-violet-tundra-anchor"
LINK_RE = re.compile(r"http://[^/\s]+(/reset/[A-Za-z0-9_-]+)")
INVALID = "This password reset link is invalid or has expired. Ask for a new one."


@pytest.fixture
def outbox(app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """E-mail goes to <instance>/outbox/; give this test its own instance folder."""
    monkeypatch.setattr(state.settings(), "instance_path", tmp_path)
    monkeypatch.setattr(state.settings(), "smtp_url", None)
    return tmp_path / "outbox"


def mails(folder: Path) -> list[email.message.EmailMessage]:
    if not folder.exists():
        return []
    return [email.message_from_bytes(p.read_bytes(), policy=email_policy.default)
            for p in sorted(folder.glob("*.eml"))]


def ask_for_reset(client: FlaskClient, address: str, **kw: Any) -> Any:
    """The request form, as a browser sends it. ``buffered`` makes the test client close
    the response, as a WSGI server does after the last byte (the e-mail goes then)."""
    page = client.get("/forgot")
    assert page.status_code == 200
    return client.post("/forgot", data={"email": address, "csrf_token": csrf_from(page.text)},
                       buffered=True, **kw)


def link_in(message: email.message.EmailMessage) -> str:
    match = LINK_RE.search(message.get_content())
    assert match, "no reset link in the e-mail"
    return match.group(1)


def reset(client: FlaskClient, link: str, password: str = NEW_PASSWORD,
          confirm: str | None = None) -> Any:
    page = client.get(link)
    assert page.status_code == 200, page.status_code
    return client.post(link, data={"password": password,
                                   "confirm": password if confirm is None else confirm,
                                   "csrf_token": csrf_from(page.text)})


def resets() -> list[PasswordReset]:
    db.rollback()
    return list(db.scalars(select(PasswordReset).order_by(PasswordReset.id)))


# ---------------------------------------------------------------- asking for a link

def test_the_login_page_offers_the_reset(client):
    page = client.get("/login")
    assert 'href="/forgot"' in page.text and "Forgot your password?" in page.text


def test_a_link_is_e_mailed_and_only_its_hash_is_kept(client, outbox):
    user = make_user(make_org(), mfa_on=False)
    response = ask_for_reset(client, user.email.upper())
    assert response.status_code == 302 and response.location.endswith("/login")
    sent = mails(outbox)
    assert len(sent) == 1
    assert sent[0]["To"].addresses[0].addr_spec == user.email
    assert "Reset your password" in sent[0]["Subject"]
    token = link_in(sent[0]).rsplit("/", 1)[1]
    assert len(token) >= 43  # secrets.token_urlsafe(32)
    (row,) = resets()
    assert row.user_id == user.id and row.used_at is None and row.revoked_at is None
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    minutes = state.settings().password_reset_minutes
    assert minutes == 60
    assert abs((row.expires_at - row.created_at) - timedelta(minutes=minutes)) < \
        timedelta(seconds=1)
    # The token is nowhere in the database or the audit log; the request is audited.
    (entry,) = actions("password_reset_requested")
    assert entry.actor_id == user.id and token not in entry.details
    assert all(token not in (e.details or "") for e in db.scalars(select(audit.AuditEntry)))


def test_the_e_mail_goes_only_after_the_answer(client, outbox):
    user = make_user(make_org(), mfa_on=False)
    page = client.get("/forgot")
    response = client.post("/forgot", data={"email": user.email,
                                            "csrf_token": csrf_from(page.text)})
    assert response.status_code == 302
    assert mails(outbox) == []  # the answer is complete; the server has not closed it yet
    response.close()
    assert len(mails(outbox)) == 1


def _answer(client: FlaskClient, address: str) -> tuple[int, str, str]:
    response = ask_for_reset(client, address)
    landing = client.get(response.location)
    flashed = re.findall(r'class="flash[^"]*"[^>]*>(.*?)<', landing.text, re.S)
    return response.status_code, response.location, " ".join(flashed)


def test_every_address_gets_the_same_answer_and_only_good_standing_gets_mail(app, outbox):
    org = make_org()
    good = make_user(org, mfa_on=False)
    disabled = make_user(org, mfa_on=False, active=False)
    pending = make_user(make_org(status="pending"), mfa_on=False)
    suspended_org = make_org()
    suspended = make_user(suspended_org, mfa_on=False)
    orgs.set_status(None, suspended_org, "suspended")
    answers = {}
    for address in (good.email, f"nobody@{org.domain_names[0]}", "not-an-address",
                    disabled.email, pending.email, suspended.email):
        answers[address] = _answer(app.test_client(), address)
    assert len(set(answers.values())) == 1, answers
    status, location, flashed = answers[good.email]
    assert (status, location) == (302, "/login")
    assert "If that address belongs to an active Enclave account" in flashed
    assert [m["To"].addresses[0].addr_spec for m in mails(outbox)] == [good.email]
    assert [r.user_id for r in resets()] == [good.id]
    entries = actions("password_reset_requested")
    assert len(entries) == 6
    assert sum('"sent": true' in e.details for e in entries) == 1


def test_the_request_form_needs_csrf(client, outbox):
    user = make_user(make_org(), mfa_on=False)
    response = client.post("/forgot", data={"email": user.email}, buffered=True)
    assert response.status_code == 400
    assert resets() == [] and mails(outbox) == [] and not actions("password_reset_requested")


def test_a_signed_in_user_is_sent_to_the_password_change(client):
    user = make_user(make_org(), mfa_on=False)
    login(client, user)
    response = client.get("/forgot")
    assert response.status_code == 302 and response.location.endswith("/account")


def test_smtp_is_used_when_configured(client, outbox, smtp_server, monkeypatch):
    port = smtp_server.server_address[1]
    monkeypatch.setattr(state.settings(), "smtp_url",
                        f"smtp://127.0.0.1:{port}?from=enclave@lab.example")
    user = make_user(make_org(), mfa_on=False)
    assert ask_for_reset(client, user.email).status_code == 302
    assert not outbox.exists()
    assert len(smtp_server.messages) == 1
    msg = email.message_from_bytes(smtp_server.messages[0], policy=email_policy.default)
    assert msg["From"] == "enclave@lab.example"
    assert msg["To"].addresses[0].addr_spec == user.email
    assert link_in(msg).startswith("/reset/")


# ---------------------------------------------------------------- using the link

def test_the_reset_sets_the_password_ends_sessions_and_keeps_2fa(app, outbox):
    user = make_user(make_org())  # two-factor on
    elsewhere = app.test_client()
    login(elsewhere, user)
    assert signed_in(elsewhere)
    guest = app.test_client()
    ask_for_reset(guest, user.email)
    link = link_in(mails(outbox)[0])
    version = reload(user).session_version
    response = reset(guest, link)
    assert response.status_code == 302 and response.location.endswith("/login")
    fresh = reload(user)
    assert fresh.session_version == version + 1
    assert fresh.mfa_enabled and fresh.totp_secret_enc  # 2FA stays on
    assert fresh.password_changed_at is not None
    assert not signed_in(elsewhere)  # every existing session ended
    # The old password no longer works; the new one does, and still asks for the code.
    assert post_login(app.test_client(), user.email, PASSWORD).status_code == 401
    client = app.test_client()
    response = post_login(client, user.email, NEW_PASSWORD)
    assert response.status_code == 302 and response.location.endswith("/login/2fa")
    assert not signed_in(client)
    # (the next step's code: the current one was used by the first sign-in above)
    assert post_code(client, totp_now(user, offset_steps=1)).status_code == 302
    assert signed_in(client)
    (row,) = resets()
    assert row.used_at is not None
    (entry,) = actions("password_reset_completed")
    assert entry.actor_id == user.id
    assert link.rsplit("/", 1)[1] not in entry.details


def test_the_link_works_once(app, outbox):
    user = make_user(make_org(), mfa_on=False)
    guest = app.test_client()
    ask_for_reset(guest, user.email)
    link = link_in(mails(outbox)[0])
    assert reset(guest, link).status_code == 302
    changed = reload(user).password_hash
    page = guest.get(link)
    assert page.status_code == 404 and INVALID in text(page)
    response = guest.post(link, data={"password": "another-quiet-river-42",
                                       "confirm": "another-quiet-river-42",
                                       "csrf_token": csrf_from(guest.get("/login").text)})
    assert response.status_code == 404 and INVALID in text(response)
    assert reload(user).password_hash == changed
    assert len(actions("password_reset_completed")) == 1


def test_an_expired_link_is_refused(app, outbox):
    user = make_user(make_org(), mfa_on=False)
    guest = app.test_client()
    ask_for_reset(guest, user.email)
    link = link_in(mails(outbox)[0])
    page = guest.get(link)
    assert page.status_code == 200
    csrf = csrf_from(page.text)
    (row,) = resets()
    row.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    before = reload(user).password_hash
    assert guest.get(link).status_code == 404
    response = guest.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD,
                                       "csrf_token": csrf})
    assert response.status_code == 404 and INVALID in text(response)
    assert reload(user).password_hash == before
    assert post_login(app.test_client(), user.email, PASSWORD).status_code == 302


def test_the_expiry_follows_the_setting(app, outbox, monkeypatch):
    monkeypatch.setattr(state.settings(), "password_reset_minutes", 5)
    user = make_user(make_org(), mfa_on=False)
    ask_for_reset(app.test_client(), user.email)
    (row,) = resets()
    assert abs((row.expires_at - row.created_at) - timedelta(minutes=5)) < timedelta(seconds=1)
    assert "for 5 minutes" in mails(outbox)[0].get_content()


@pytest.mark.parametrize("token", ["nonsense", "x" * 43, "%C3%A9t%C3%A9"])
def test_an_unknown_link_is_refused(client, token):
    response = client.get(f"/reset/{token}")
    assert response.status_code == 404
    assert INVALID in text(response) and 'href="/forgot"' in response.text


def test_a_new_request_supersedes_the_older_links(app, outbox):
    user = make_user(make_org(), mfa_on=False)
    guest = app.test_client()
    ask_for_reset(guest, user.email)
    ask_for_reset(guest, user.email)
    first, second = (link_in(m) for m in mails(outbox))
    assert guest.get(first).status_code == 404
    older, newer = resets()
    assert older.revoked_at is not None and newer.revoked_at is None
    assert reset(guest, second).status_code == 302


def test_a_link_stops_working_when_the_account_loses_good_standing(app, outbox):
    user = make_user(make_org(), mfa_on=False)
    guest = app.test_client()
    ask_for_reset(guest, user.email)
    link = link_in(mails(outbox)[0])
    users.set_active(None, reload(user), False)
    page = guest.get(link)
    assert page.status_code == 404 and INVALID in text(page)


def test_the_new_password_follows_the_strength_rules(app, outbox):
    user = make_user(make_org(), mfa_on=False)
    guest = app.test_client()
    ask_for_reset(guest, user.email)
    link = link_in(mails(outbox)[0])
    before = reload(user).password_hash
    for password, confirm, reason in [
        ("short-pw", None, "Use at least 12 characters."),
        ("password1234567", None, "similar to a commonly used password"),
        (f"{user.username}-Zebra-Quasar-91", None, "username or name"),
        (NEW_PASSWORD, NEW_PASSWORD + "!", "The passwords differ."),
    ]:
        response = reset(guest, link, password, confirm)
        assert response.status_code == 400, password
        assert reason in text(response)
    assert reload(user).password_hash == before
    assert resets()[0].used_at is None
    assert reset(guest, link).status_code == 302  # the link still works once it is right


def test_the_reset_form_needs_csrf(app, outbox):
    user = make_user(make_org(), mfa_on=False)
    guest = app.test_client()
    ask_for_reset(guest, user.email)
    link = link_in(mails(outbox)[0])
    before = reload(user).password_hash
    response = guest.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 400
    assert reload(user).password_hash == before and resets()[0].used_at is None


def test_the_service_refuses_a_used_link(app, outbox):
    user = make_user(make_org(), mfa_on=False)
    ask_for_reset(app.test_client(), user.email)
    token = link_in(mails(outbox)[0]).rsplit("/", 1)[1]
    users.complete_password_reset(token, NEW_PASSWORD)
    from app.errors import NotFound

    with pytest.raises(NotFound):
        users.complete_password_reset(token, "another-quiet-river-42")
    assert db.get(User, user.id) is not None
