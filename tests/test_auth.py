"""Sign-in, second factor, sessions, throttling, passwords and 2FA enrolment, driven
through the real web forms with CSRF on.

The ``app`` fixture keeps one app context, and so one database session, pushed for the
whole test; Flask reuses it for every test request (conftest gives each request a fresh
``g``). ``IsolatedClient`` adds what a new request gets in production on top: nothing
uncommitted, and no access-rule facts cached on user objects by an earlier request
(``access.subject_for`` keeps them on the object, which outlives requests here). The
other test modules of this area import the autouse fixture below.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import access, audit, state
from app.auth import mfa
from app.auth import service as users
from app.auth.models import ApiToken, RecoveryCode, User
from app.auth.passwords import check_password_strength
from app.auth.views import PENDING_2FA_SECONDS
from app.db import db
from app.errors import ServiceError
from tests.conftest import csrf_from, running_app
from tests.factories import PASSWORD, login, make_org, make_user, post_form, totp_now

NEW_PASSWORD = "harbour-violet-tundra-anchor"
RECOVERY_CODE_RE = r"<li>([a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4})</li>"


# ---------------------------------------------------------------- request isolation

def reset_request_state() -> None:
    """What a new request gets in production: no uncommitted state, nothing cached."""
    vars(g).clear()  # Flask-Login's user and Flask-WTF's CSRF token (also done by conftest)
    db.rollback()
    for obj in list(db.identity_map.values()):
        access.forget(obj)


class IsolatedClient(FlaskClient):
    def open(self, *args: Any, **kwargs: Any) -> Any:
        reset_request_state()
        try:
            return super().open(*args, **kwargs)
        finally:
            reset_request_state()


@pytest.fixture(autouse=True)
def isolated_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test client made during the test (any app) is an IsolatedClient."""
    monkeypatch.setattr(Flask, "test_client_class", IsolatedClient)


# ---------------------------------------------------------------- helpers

def text(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def reload(user: User) -> User:
    db.rollback()
    fresh = db.get(User, user.id)
    assert fresh is not None
    access.forget(fresh)
    return fresh


def actions(action: str) -> list[audit.AuditEntry]:
    return list(db.scalars(select(audit.AuditEntry).where(audit.AuditEntry.action == action)
                           .order_by(audit.AuditEntry.seq)))


def signed_in(client: FlaskClient) -> bool:
    response = client.get("/home")
    if response.status_code == 200:
        return True
    assert response.status_code == 302 and "/login" in response.location
    return False


def post_login(client: FlaskClient, email: str, password: str, **kw: Any) -> Any:
    page = client.get("/login", **kw)
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf_token": csrf_from(page.text)}, **kw)


def post_code(client: FlaskClient, code: str) -> Any:
    page = client.get("/login/2fa")
    assert page.status_code == 200
    return client.post("/login/2fa", data={"code": code, "csrf_token": csrf_from(page.text)})


def logout(client: FlaskClient) -> Any:
    page = client.get("/home")
    return client.post("/logout", data={"csrf_token": csrf_from(page.text)})


def session_cookie(client: FlaskClient) -> str | None:
    cookie = client.get_cookie("enclave_session")
    return cookie.value if cookie else None


# ---------------------------------------------------------------- password sign-in

def test_good_password_signs_in_and_is_audited(client):
    user = make_user(make_org(), mfa_on=False)
    response = login(client, user)
    assert response.status_code == 302 and response.location == "/home"
    home = client.get("/home")
    assert home.status_code == 200 and user.display_name in home.text
    entry = actions("login")[-1]
    assert entry.actor_id == user.id and entry.details_dict["method"] == "password"
    assert reload(user).last_login_at is not None


def test_wrong_password_and_unknown_email_answer_alike(client):
    user = make_user(make_org(), mfa_on=False)
    wrong = post_login(client, user.email, "not-the-password-at-all")
    unknown = post_login(client, "nobody@nowhere.example", PASSWORD)
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert "Wrong e-mail or password." in text(response)
    assert "disabled" not in text(wrong) and "trusted" not in text(wrong)
    # Same page apart from the per-form CSRF token and the typed e-mail.
    def scrub(r: Any, email: str) -> str:
        return re.sub(r'value="[^"]*"', "", text(r).replace(email, "EMAIL"))
    assert scrub(wrong, user.email) == scrub(unknown, "nobody@nowhere.example")
    failed = actions("login_failed")
    assert [e.actor for e in failed] == [user.email, "nobody@nowhere.example"]
    assert failed[0].target_id == str(user.id) and failed[1].target_id == ""
    assert not actions("login")
    assert not signed_in(client)


def test_login_form_without_csrf_is_refused(client):
    user = make_user(make_org(), mfa_on=False)
    response = client.post("/login", data={"email": user.email, "password": PASSWORD})
    assert response.status_code == 400
    assert "The form expired" in text(response)
    assert not signed_in(client)


@pytest.mark.parametrize(("org_status", "active", "message"), [
    ("trusted", False, "This account is disabled."),
    ("pending", True, "Your organization is not yet trusted on Enclave."),
    ("suspended", True, "Your organization's access to Enclave is suspended."),
])
def test_refused_standing_gives_a_clear_message(client, org_status, active, message):
    user = make_user(make_org(status=org_status), mfa_on=False, active=active)
    response = login(client, user)
    assert response.status_code == 401
    assert message in text(response)
    assert not signed_in(client)
    refused = actions("login_refused")
    assert refused and refused[-1].details_dict["reason"] == message
    assert not actions("login")


def test_refused_standing_with_wrong_password_says_nothing_more(client):
    user = make_user(make_org(status="suspended"), mfa_on=False)
    response = post_login(client, user.email, "not-the-password-at-all")
    assert response.status_code == 401
    assert "Wrong e-mail or password." in text(response)
    assert "suspended" not in text(response)


def test_next_is_followed_only_inside_the_site(client):
    user = make_user(make_org(), mfa_on=False)
    page = client.get("/login?next=/ndas/")
    response = client.post("/login?next=/ndas/", data={
        "email": user.email, "password": PASSWORD, "csrf_token": csrf_from(page.text)})
    assert response.location == "/ndas/"
    logout(client)
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        page = client.get("/login", query_string={"next": target})
        response = client.post("/login", query_string={"next": target}, data={
            "email": user.email, "password": PASSWORD, "csrf_token": csrf_from(page.text)})
        assert response.location == "/home", target
        logout(client)


def test_session_is_fresh_after_login(client):
    user = make_user(make_org(), mfa_on=False)
    client.get("/login")
    with client.session_transaction() as sess:
        sess["planted"] = "attacker-chosen"
    before = session_cookie(client)
    assert before
    login(client, user)
    after = session_cookie(client)
    assert after and after != before
    with client.session_transaction() as sess:
        assert "planted" not in sess
        assert sess["_user_id"] == f"{user.id}:{reload(user).session_version}"


def test_session_is_fresh_after_second_factor(client):
    user = make_user(make_org())
    client.get("/login")
    with client.session_transaction() as sess:
        sess["planted"] = "attacker-chosen"
    response = post_login(client, user.email, PASSWORD)
    with client.session_transaction() as sess:
        assert "planted" not in sess and "_user_id" not in sess
    assert post_code(client, totp_now(user)).status_code == 302
    with client.session_transaction() as sess:
        assert "planted" not in sess and "pending_2fa" not in sess
    assert response.status_code == 302


# ---------------------------------------------------------------- second factor

def test_enrolled_user_needs_the_second_step(client):
    user = make_user(make_org())
    response = post_login(client, user.email, PASSWORD)
    assert response.status_code == 302 and response.location == "/login/2fa"
    assert not signed_in(client)  # the password alone signs nobody in
    assert not actions("login")
    response = post_code(client, totp_now(user))
    assert response.status_code == 302 and response.location == "/home"
    assert signed_in(client)
    assert actions("login")[-1].details_dict["method"] == "password+totp"


def test_wrong_totp_is_refused(client):
    user = make_user(make_org())
    post_login(client, user.email, PASSWORD)
    right = totp_now(user)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    response = post_code(client, wrong)
    assert response.status_code == 401
    assert "That code is wrong or was already used." in text(response)
    assert not signed_in(client)
    assert actions("login_failed")[-1].details_dict["stage"] == "second_factor"
    for junk in ("abcdef", "12345", "1234567", "0000-0000-0000", "١٢٣٤٥٦", "１２３４５６",
                 "²²²²²²", "é" * 6):
        assert post_code(client, junk).status_code == 401
    assert post_code(client, right).status_code == 302
    assert signed_in(client)


def test_replayed_totp_is_refused(client, app):
    user = make_user(make_org())
    code = totp_now(user)
    assert login(client, user, code=code).location == "/home"
    # The same code again, from another browser while the first session is open...
    other = app.test_client()
    post_login(other, user.email, PASSWORD)
    response = post_code(other, code)
    assert response.status_code == 401
    assert "already used" in text(response)
    assert not signed_in(other)
    # ... and from the first browser after signing out.
    logout(client)
    post_login(client, user.email, PASSWORD)
    assert post_code(client, code).status_code == 401
    assert not signed_in(client)


def test_code_from_an_older_step_is_refused_after_a_newer_one(client):
    user = make_user(make_org())
    assert login(client, user, code=totp_now(user)).location == "/home"
    logout(client)
    post_login(client, user.email, PASSWORD)
    # One step of clock drift is allowed, but never a step before the last used one.
    assert post_code(client, totp_now(user, -1)).status_code == 401


def test_a_totp_code_raced_from_two_requests_is_accepted_once(app):
    user = make_user(make_org())
    code = totp_now(user)
    # A second request loaded the account before the first one recorded the code.
    with Session(bind=app.extensions["enclave.engine"], expire_on_commit=False) as other:
        stale = other.get(User, user.id)
        assert stale is not None and stale.totp_last_step is None
        assert mfa.verify_totp(reload(user), code)
        db.commit()
        assert not mfa.verify_totp(stale, code)
    db.commit()
    assert reload(user).totp_last_step == mfa.matching_step(
        mfa.open_secret(reload(user)) or "", code)


def test_recovery_code_works_once(client):
    user = make_user(make_org())
    codes = mfa.new_recovery_codes(user)
    db.commit()
    assert len(codes) == mfa.RECOVERY_CODE_COUNT == 10
    post_login(client, user.email, PASSWORD)
    response = post_code(client, codes[3].upper())  # case does not matter
    assert response.status_code == 302 and response.location == "/home"
    home = client.get("/home")
    assert "You used a recovery code; 9 remain." in text(home)
    assert actions("login")[-1].details_dict["method"] == "password+recovery_code"
    assert actions("recovery_code_used")[-1].details_dict["remaining"] == 9
    logout(client)
    post_login(client, user.email, PASSWORD)
    response = post_code(client, codes[3])
    assert response.status_code == 401
    assert not signed_in(client)
    used = db.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user.id,
                                                 RecoveryCode.used_at.is_not(None))).all()
    assert len(used) == 1


def test_pending_second_factor_expires(client):
    user = make_user(make_org())
    post_login(client, user.email, PASSWORD)
    with client.session_transaction() as sess:
        pending = dict(sess["pending_2fa"])
        pending["at"] = int(time.time()) - PENDING_2FA_SECONDS - 1
        sess["pending_2fa"] = pending
    response = client.get("/login/2fa")
    assert response.status_code == 302 and response.location == "/login"
    assert "Sign in again." in text(client.get("/login"))
    # A right code posted to the stale step is refused too.
    page = client.get("/login")
    with client.session_transaction() as sess:
        sess["pending_2fa"] = pending
    response = client.post("/login/2fa", data={"code": totp_now(user),
                                               "csrf_token": csrf_from(page.text)})
    assert response.status_code == 302 and response.location == "/login"
    assert not signed_in(client)
    assert not actions("login")


def test_second_step_without_password_step_goes_back_to_login(client):
    assert client.get("/login/2fa").location == "/login"


def test_second_step_stops_when_the_account_changed_meanwhile(client):
    user = make_user(make_org())
    post_login(client, user.email, PASSWORD)
    users.set_active(None, reload(user), False)
    page = client.get("/login/2fa")
    assert page.status_code == 302 and page.location == "/login"
    assert not signed_in(client)


# ---------------------------------------------------------------- ending sessions

def test_logout_ends_every_session_of_the_user(client, app):
    user = make_user(make_org(), mfa_on=False)
    other = app.test_client()
    login(client, user)
    login(other, user)
    assert signed_in(client) and signed_in(other)
    response = logout(client)
    assert response.status_code == 302 and response.location == "/login"
    assert not signed_in(client)
    assert not signed_in(other)
    assert actions("logout")[-1].actor_id == user.id


def test_logout_needs_csrf(client):
    user = make_user(make_org(), mfa_on=False)
    login(client, user)
    assert client.post("/logout").status_code == 400
    assert signed_in(client)


def test_stolen_cookie_is_useless_after_logout(client, app):
    user = make_user(make_org(), mfa_on=False)
    login(client, user)
    stolen = session_cookie(client)
    logout(client)
    thief = app.test_client()
    thief.set_cookie("enclave_session", stolen or "")
    assert not signed_in(thief)


def test_password_change_keeps_this_session_and_ends_the_others(client, app):
    user = make_user(make_org(), mfa_on=False)
    other = app.test_client()
    login(client, user)
    login(other, user)
    response = post_form(client, "/account", {"current_password": PASSWORD,
                                              "password": NEW_PASSWORD,
                                              "confirm": NEW_PASSWORD})
    assert response.status_code == 302 and response.location == "/account"
    page = client.get("/account")
    assert page.status_code == 200
    assert "Your other sessions were signed out." in text(page)
    assert signed_in(client)
    assert not signed_in(other)
    fresh = reload(user)
    assert fresh.password_hash.startswith("$argon2id$")
    assert fresh.password_changed_at is not None
    assert actions("password_changed")[-1].actor_id == user.id
    # Old password refused, new one accepted.
    assert post_login(other, user.email, PASSWORD).status_code == 401
    assert post_login(other, user.email, NEW_PASSWORD).status_code == 302


def test_password_change_with_wrong_current_password_changes_nothing(client, app):
    user = make_user(make_org(), mfa_on=False)
    other = app.test_client()
    login(client, user)
    login(other, user)
    old_hash = reload(user).password_hash
    response = post_form(client, "/account", {"current_password": "wrong-wrong-wrong",
                                              "password": NEW_PASSWORD,
                                              "confirm": NEW_PASSWORD})
    assert response.status_code == 400
    assert "The current password is wrong." in text(response)
    assert reload(user).password_hash == old_hash
    assert signed_in(client) and signed_in(other)


def test_password_change_confirmation_must_match(client):
    user = make_user(make_org(), mfa_on=False)
    login(client, user)
    old_hash = reload(user).password_hash
    response = post_form(client, "/account", {"current_password": PASSWORD,
                                              "password": NEW_PASSWORD,
                                              "confirm": NEW_PASSWORD + "x"})
    assert response.status_code == 400
    assert "The passwords differ." in text(response)
    assert reload(user).password_hash == old_hash


def _victim_with_session_and_token(app: Flask, api_token: Any, org: Any = None
                                   ) -> tuple[User, FlaskClient, dict[str, str]]:
    victim = make_user(org or make_org(), mfa_on=False)
    headers = api_token(victim)
    web = app.test_client()
    login(web, victim)
    assert signed_in(web)
    assert web.get("/api/v1/me", headers=headers).status_code == 200
    return victim, web, headers


def test_admin_disabling_a_user_ends_sessions_and_revokes_tokens(client, app, api_token):
    victim, web, headers = _victim_with_session_and_token(app, api_token)
    admin = make_user(make_org(), role="admin")
    login(client, admin)
    response = post_form(client, f"/admin/users/{victim.id}/active", {"active": "0"},
                         form_url=f"/admin/users/{victim.id}")
    assert response.status_code == 302
    assert "disabled; their sessions ended" in text(client.get(response.location))
    assert not signed_in(web)
    me = web.get("/api/v1/me", headers=headers)
    assert me.status_code == 401 and me.json["error"]["code"] == "unauthorized"
    assert not reload(victim).is_active
    tokens = db.scalars(select(ApiToken).where(ApiToken.user_id == victim.id)).all()
    assert tokens and all(t.revoked_at is not None for t in tokens)
    assert actions("user_disabled")[-1].actor_id == admin.id
    # Enabling again does not bring the old session or token back.
    users.set_active(None, reload(victim), True)
    assert not signed_in(web)
    assert web.get("/api/v1/me", headers=headers).status_code == 401


def test_set_active_service_ends_sessions_and_revokes_tokens(app, api_token):
    victim, web, headers = _victim_with_session_and_token(app, api_token)
    users.set_active(None, reload(victim), False)
    assert not signed_in(web)
    assert web.get("/api/v1/me", headers=headers).status_code == 401
    assert db.scalar(select(func.count()).select_from(ApiToken).where(
        ApiToken.user_id == victim.id, ApiToken.revoked_at.is_(None))) == 0


def test_a_user_cannot_disable_themselves(client):
    admin = make_user(make_org(), role="admin")
    login(client, admin)
    response = post_form(client, f"/admin/users/{admin.id}/active", {"active": "0"},
                         form_url=f"/admin/users/{admin.id}")
    assert response.status_code == 302
    assert "You cannot disable your own account." in text(client.get(response.location))
    assert reload(admin).is_active


def _suspend_by_admin_page(app: Flask, client: FlaskClient, admin: User, org: Any,
                           api_token: Any) -> None:
    login(client, admin)
    response = post_form(client, f"/admin/orgs/{org.slug}", {
        "name": org.name, "domains": "\n".join(org.domain_names),
        "ceiling": org.ceiling, "status": "suspended"})
    assert response.status_code == 302, text(response)


def _suspend_by_cli(app: Flask, client: FlaskClient, admin: User, org: Any,
                    api_token: Any) -> None:
    result = app.test_cli_runner().invoke(args=["enclave", "org", "suspend", org.slug])
    assert result.exit_code == 0, result.output
    assert f"{org.slug} is suspended" in result.output


def _suspend_by_api(app: Flask, client: FlaskClient, admin: User, org: Any,
                    api_token: Any) -> None:
    response = client.patch(f"/api/v1/admin/orgs/{org.slug}", json={"status": "suspended"},
                            headers=api_token(admin))
    assert response.status_code == 200, response.json
    assert response.json["status"] == "suspended"


@pytest.mark.parametrize("suspend", [_suspend_by_admin_page, _suspend_by_cli,
                                     _suspend_by_api], ids=["admin-page", "cli", "api"])
def test_suspending_the_org_cuts_open_sessions_and_tokens(client, app, api_token, suspend):
    org = make_org()
    victim, web, headers = _victim_with_session_and_token(app, api_token, org)
    admin = make_user(make_org(), role="admin")
    suspend(app, client, admin, org, api_token)
    assert db.scalar(select(audit.AuditEntry.action).order_by(
        audit.AuditEntry.seq.desc()).limit(1)) == "org_status_changed"
    # The very next request of the open session is refused...
    assert not signed_in(web)
    assert web.get("/ndas/").status_code == 302
    # ... and so is the API token.
    me = web.get("/api/v1/me", headers=headers)
    assert me.status_code == 401
    # Signing in again is refused with the reason.
    response = login(web, victim)
    assert response.status_code == 401 and "suspended" in text(response)
    # Trusting the org again does not revive the session that was cut.
    users_org = reload(victim).org
    from app.orgs import service as orgs

    orgs.set_status(None, users_org, "trusted")
    assert not signed_in(web)


# ---------------------------------------------------------------- rate limiting

@pytest.fixture
def tight_app(migrated: str, instance_dir: Path) -> Iterator[Flask]:
    with running_app(migrated, instance_dir, login_limit="3 per minute",
                     login_account_limit="3 per minute") as app:
        yield app


def test_login_is_throttled_per_account_from_new_addresses(tight_app):
    user = make_user(make_org(), mfa_on=False)
    client = tight_app.test_client()
    for n in range(3):
        response = post_login(client, user.email, "wrong-password-here",
                              environ_base={"REMOTE_ADDR": f"10.0.0.{n + 1}"})
        assert response.status_code == 401
    # A fourth try on this account, from yet another address, with the right password.
    response = post_login(client, user.email, PASSWORD,
                          environ_base={"REMOTE_ADDR": "10.0.0.99"})
    assert response.status_code == 429
    assert "Too many attempts. Wait a moment and try again." in text(response)
    assert not signed_in(client)
    # Other accounts from a fresh address are not affected.
    other = make_user(make_org(), mfa_on=False)
    response = post_login(client, other.email, PASSWORD,
                          environ_base={"REMOTE_ADDR": "10.0.0.100"})
    assert response.status_code == 302


def test_login_is_throttled_per_address(tight_app):
    org = make_org()
    client = tight_app.test_client()
    addr = {"REMOTE_ADDR": "192.0.2.7"}
    for n in range(3):
        response = post_login(client, f"someone{n}@{org.domain_names[0]}", "whatever-pass",
                              environ_base=addr)
        assert response.status_code == 401
    user = make_user(org, mfa_on=False)
    response = post_login(client, user.email, PASSWORD, environ_base=addr)
    assert response.status_code == 429
    assert "Too many attempts" in text(response)
    # The login page itself still loads.
    assert client.get("/login", environ_base=addr).status_code == 200


def test_second_factor_is_throttled(tight_app):
    user = make_user(make_org())
    client = tight_app.test_client()
    assert post_login(client, user.email, PASSWORD).status_code == 302
    for _ in range(3):
        assert post_code(client, "000000").status_code == 401
    response = post_code(client, totp_now(user))
    assert response.status_code == 429
    assert "Too many attempts" in text(response)
    assert not signed_in(client)


def test_throttled_answer_is_a_page_that_says_when_to_retry(tight_app):
    client = tight_app.test_client()
    for _ in range(3):
        post_login(client, "x@y.example", "whatever-pass")
    response = post_login(client, "x@y.example", "whatever-pass")
    assert response.status_code == 429
    assert response.mimetype == "text/html"
    assert "Slow down" in text(response) and "Traceback" not in text(response)
    assert int(response.headers["Retry-After"]) > 0


# ---------------------------------------------------------------- passwords

@pytest.mark.parametrize(("password", "reason"), [
    ("short-pw", "Use at least 12 characters."),
    ("password1234567", "This is similar to a commonly used password"),
    ("x" * 1025, "Use at most 1024 characters."),
])
def test_weak_passwords_are_refused_with_the_reason(app, password, reason):
    with pytest.raises(ServiceError) as info:
        check_password_strength(password, min_length=12, user_inputs=["ann@acme.example"])
    assert reason in info.value.message
    assert info.value.field == "password"


@pytest.mark.parametrize("password", [
    "jonathan.smithers@acme.example!",
    "jonathan.smithers@acme.example-Zebra-Quasar-91",
    "Zebra-Quasar-jsmithers-91",
    "Zebra-Quasar-Jonathan Smithers",
])
def test_passwords_containing_the_email_or_name_are_refused(app, password):
    with pytest.raises(ServiceError) as info:
        check_password_strength(password, min_length=12, user_inputs=[
            "jonathan.smithers@acme.example", "jsmithers", "Jonathan Smithers"])
    assert info.value.field == "password"
    assert info.value.message


def test_a_good_passphrase_is_accepted(app):
    check_password_strength(NEW_PASSWORD, min_length=12,
                            user_inputs=["jonathan.smithers@acme.example", "jsmithers"])


@pytest.mark.parametrize(("new", "reason"), [
    ("short-pw", "Use at least 12 characters."),
    ("password1234567", "similar to a commonly used password"),
    ("EMAIL-Zebra-Quasar-91", "e-mail"),
])
def test_password_change_form_refuses_weak_passwords(client, new, reason):
    user = make_user(make_org(), mfa_on=False)
    new = new.replace("EMAIL", user.email)
    login(client, user)
    old_hash = reload(user).password_hash
    response = post_form(client, "/account", {"current_password": PASSWORD,
                                              "password": new, "confirm": new})
    assert response.status_code == 400
    assert reason in text(response)
    assert reload(user).password_hash == old_hash
    assert not actions("password_changed")


def test_passwords_are_stored_as_argon2id(app):
    org = make_org()
    user = users.create_user(email=f"alice@{org.domain_names[0]}", org=org,
                             clearance="network", role="member", password=NEW_PASSWORD)
    assert user.password_hash.startswith("$argon2id$")
    assert NEW_PASSWORD not in user.password_hash


# ---------------------------------------------------------------- 2FA enrolment

def _enrol(client: FlaskClient, user: User) -> tuple[str, Any]:
    page = client.get("/account/2fa")
    assert page.status_code == 200
    secret = mfa.open_secret(reload(user))
    assert secret
    response = client.post("/account/2fa", data={"code": pyotp.TOTP(secret).now(),
                                                 "csrf_token": csrf_from(page.text)})
    return secret, response


def test_enrolment_page_shows_a_qr_code_and_the_key(client):
    user = make_user(make_org(), mfa_on=False)
    login(client, user)
    page = client.get("/account/2fa")
    assert page.status_code == 200
    body = text(page)
    assert "<svg" in body and "</svg>" in body
    assert "<script" not in body.lower()
    secret = mfa.open_secret(reload(user))
    assert secret and secret in body
    # Reloading the page keeps the same key (the app in the phone stays valid).
    assert secret in text(client.get("/account/2fa"))
    assert not reload(user).mfa_enabled


def test_enrolment_with_a_wrong_code_keeps_2fa_off(client):
    user = make_user(make_org(), mfa_on=False)
    login(client, user)
    page = client.get("/account/2fa")
    secret = mfa.open_secret(reload(user))
    right = pyotp.TOTP(secret).now()
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for code in (wrong, "١٢٣٤٥٦", "abc"):
        response = client.post("/account/2fa", data={"code": code,
                                                     "csrf_token": csrf_from(page.text)})
        assert response.status_code == 400
        assert "That code does not match." in text(response)
    assert not reload(user).mfa_enabled


def test_enrolment_turns_2fa_on_and_shows_ten_recovery_codes(client, app):
    user = make_user(make_org(), mfa_on=False)
    other = app.test_client()
    login(client, user)
    login(other, user)
    secret, response = _enrol(client, user)
    assert response.status_code == 200
    codes = re.findall(RECOVERY_CODE_RE, text(response))
    assert len(codes) == 10 and len(set(codes)) == 10
    assert "Two-factor authentication is on." in text(response)
    assert reload(user).mfa_enabled
    assert mfa.remaining_recovery_codes(reload(user)) == 10
    assert actions("mfa_enabled")[-1].actor_id == user.id
    # This browser stays signed in; the other one must sign in again, with 2FA now.
    assert signed_in(client)
    assert not signed_in(other)
    assert post_login(other, user.email, PASSWORD).location == "/login/2fa"
    assert post_code(other, codes[0]).status_code == 302
    assert signed_in(other)


def test_enrolment_page_once_on_offers_turning_off(client):
    user = make_user(make_org())
    login(client, user)
    page = client.get("/account/2fa")
    assert page.status_code == 200
    assert "Two-factor authentication is on" in text(page)
    assert "<svg" not in text(page)


def test_turning_2fa_off_needs_the_password_and_a_code(client):
    user = make_user(make_org(), clearance="confidential", passkey=False)
    login(client, user)
    # no passkey: the confidential level (mfa = "passkey") stays closed
    assert access.readable_levels(reload(user)) == {"public", "network", "restricted"}
    response = post_form(client, "/account/2fa/disable",
                         {"password": "not-my-password", "code": totp_now(user, 1)},
                         form_url="/account/2fa")
    assert response.status_code == 302
    assert "The password is wrong." in text(client.get(response.location))
    assert reload(user).mfa_enabled
    # The password alone (a session left open, a stolen password) is not enough.
    for code in ("", "000000", "abcd-efgh-ijkl-mnop"):
        response = post_form(client, "/account/2fa/disable",
                             {"password": PASSWORD, "code": code}, form_url="/account/2fa")
        assert response.status_code == 302
        assert reload(user).mfa_enabled, code
    assert actions("mfa_disable_refused")[-1].details_dict["reason"] == "code"
    response = post_form(client, "/account/2fa/disable",
                         {"password": PASSWORD, "code": totp_now(user, 1)},
                         form_url="/account/2fa")
    assert response.status_code == 302 and response.location == "/account"
    assert "Two-factor authentication is off." in text(client.get("/account"))
    fresh = reload(user)
    assert not fresh.mfa_enabled and fresh.totp_secret_enc is None
    assert mfa.remaining_recovery_codes(fresh) == 0
    assert signed_in(client)
    # Levels whose policy requires 2FA close at once, in both forms of the rule.
    policy = state.policy()
    assert {lv.key for lv in policy.levels if lv.mfa} == {"restricted", "confidential"}
    assert access.readable_levels(fresh) == {"public", "network"}
    home = text(client.get("/home"))
    assert "Needs two-factor authentication." in home


def test_turning_2fa_off_with_a_recovery_code_uses_it(client):
    user = make_user(make_org(), passkey=False)
    codes = mfa.new_recovery_codes(user)
    db.commit()
    login(client, user)
    response = post_form(client, "/account/2fa/disable",
                         {"password": PASSWORD, "code": codes[0]}, form_url="/account/2fa")
    assert response.status_code == 302 and response.location == "/account"
    assert not reload(user).mfa_enabled


def test_recovery_codes_have_80_bits_and_are_hashed_like_passwords(client):
    user = make_user(make_org())
    codes = mfa.new_recovery_codes(user)
    db.commit()
    for code in codes:
        letters = code.replace("-", "")
        assert len(letters) == 16 and re.fullmatch(r"[a-z2-7]{16}", letters)  # 16 x 5 bits
    rows = db.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user.id)).all()
    hashes = [r.code_hash for r in rows]
    assert all(h.startswith("$argon2id$") for h in hashes)
    # OWASP's minimum Argon2id parameters: enough for an 80-bit secret, and ten of them
    # are made at once (the password's parameters made the demo seed five times slower)
    assert {h.split("$")[3] for h in hashes} == {"m=19456,t=2,p=1"}
    assert len({h.split("$")[4] for h in hashes}) == 10  # each with its own salt
    for code in codes:
        assert code.replace("-", "") not in " ".join(hashes)
    assert mfa.use_recovery_code(reload(user), codes[5].upper())
    db.commit()
    assert not mfa.use_recovery_code(reload(user), codes[5])
    # typed without the dashes, it still works at sign-in
    post_login(client, user.email, PASSWORD)
    response = post_code(client, codes[2].replace("-", " "))
    assert response.status_code == 302 and signed_in(client)


def test_older_sha256_recovery_codes_still_work_once_and_ask_for_new_ones(client):
    import hashlib

    user = make_user(make_org(), passkey=False)
    old = "1a2b-3c4d-5e6f"
    db.add(RecoveryCode(user_id=user.id,
                        code_hash=hashlib.sha256(b"1a2b3c4d5e6f").hexdigest()))
    db.commit()
    login(client, user)
    assert "older, shorter" in text(client.get("/account/2fa"))
    assert mfa.use_recovery_code(reload(user), old)
    db.commit()
    assert not mfa.use_recovery_code(reload(user), old)


def test_regenerating_recovery_codes_voids_the_old_ones(client):
    user = make_user(make_org())
    old = mfa.new_recovery_codes(user)
    db.commit()
    login(client, user, code=totp_now(user))
    response = post_form(client, "/account/2fa/recovery-codes", {"code": totp_now(user, 1)},
                         form_url="/account/2fa")
    assert response.status_code == 200
    new = re.findall(RECOVERY_CODE_RE, text(response))
    assert len(new) == 10 and not set(new) & set(old)
    assert not mfa.use_recovery_code(reload(user), old[0])


def test_enrolment_needs_a_session(client):
    response = client.get("/account/2fa")
    assert response.status_code == 302 and response.location.startswith("/login")


# ---------------------------------------------------------------- oversized bodies

def test_oversized_form_body_answers_413_with_a_page(client):
    limit = state.settings().max_form_bytes
    response = client.post("/login", data={"email": "a@b.example", "password": "x" * (limit + 1)})
    assert response.status_code == 413
    assert "The request is too large." in text(response)
    assert "Traceback" not in text(response)


def test_oversized_form_body_of_a_signed_in_user_answers_413(client):
    user = make_user(make_org(), mfa_on=False)
    login(client, user)
    old_hash = reload(user).password_hash
    limit = state.settings().max_form_bytes
    response = client.post("/account", data={"current_password": PASSWORD,
                                             "password": "y" * (limit + 1)})
    assert response.status_code == 413
    assert "The request is too large." in text(response)
    assert reload(user).password_hash == old_hash
    assert signed_in(client)


def test_oversized_json_body_answers_413_as_json(client, api_token):
    user = make_user(make_org(), mfa_on=False)
    headers = api_token(user)
    limit = state.settings().max_form_bytes
    response = client.post("/api/v1/ndas/network-terms/acknowledge", headers=headers,
                           data=b"{" + b" " * (limit + 1) + b"}",
                           content_type="application/json")
    assert response.status_code == 413
    assert response.json["error"]["code"] == "too_large"


# ---------------------------------------------------------------- NUL characters

def test_nul_in_a_form_field_is_refused_with_a_page(client):
    user = make_user(make_org(), mfa_on=False)
    page = client.get("/login")
    response = client.post("/login", data={"email": user.email + "\x00", "password": PASSWORD,
                                           "csrf_token": csrf_from(page.text)})
    assert response.status_code == 400
    assert "The request contains a NUL character" in text(response)
    assert not actions("login") and not actions("login_failed")
    assert not signed_in(client)


def test_nul_in_the_path_or_query_of_a_page_is_refused(client):
    admin = make_user(make_org(), role="admin", mfa_on=False)
    login(client, admin)
    for url in ("/admin/orgs/%00", "/ndas/?next=%00", "/admin/users?page=1%00"):
        response = client.get(url)
        assert response.status_code == 400, url
        assert "NUL character" in text(response)
