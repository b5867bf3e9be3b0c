"""Passkeys through the real endpoints, answered by a software authenticator (the browser
tests use Chromium's virtual authenticator): adding, signing in alone or as the second
factor, confirming, removal, wrong origin, cloned credentials, and what a session or a
token proved deciding the passkey levels."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from app import state
from app.audit import AuditEntry
from app.auth import mfa
from app.auth.models import Passkey, User
from app.auth.passkeys import relying_party
from app.db import db
from tests.conftest import csrf_from
from tests.factories import (
    PASSWORD,
    login,
    make_finding,
    make_org,
    make_user,
    passkey_ceremony,
    post_form,
    totp_now,
)
from tests.webauthn_soft import SoftAuthenticator


def actions(name: str) -> list[AuditEntry]:
    return list(db.scalars(select(AuditEntry).where(AuditEntry.action == name)
                           .order_by(AuditEntry.seq)))


def reload(user: User) -> User:
    db.expire_all()
    return db.get(User, user.id)


def confirm_with_code(client, user) -> None:
    response = post_form(client, "/account/confirm",
                         {"password": PASSWORD, "code": totp_now(user, 1)})  # not the login one
    assert response.status_code == 302, response.text


def register(client, authenticator: SoftAuthenticator, name: str = "Laptop", *,
             origin: str | None = None):
    csrf = csrf_from(client.get("/account/passkeys").text)
    options = client.post("/account/passkeys/options", json={},
                          headers={"X-CSRFToken": csrf})
    if options.status_code != 200:
        return options
    answer = authenticator.create(options.get_json(), origin=origin)
    # buffered: the test client closes the answer, as a server does (the e-mail goes then)
    return client.post("/account/passkeys/register", json={"name": name, "credential": answer},
                       headers={"X-CSRFToken": csrf}, buffered=True)


def signed_in_proof(client) -> str | None:
    with client.session_transaction() as sess:
        return sess.get("auth_proof") if "_user_id" in sess else None


def outbox(app) -> list[str]:
    folder = Path(state.settings().instance_path) / "outbox"
    return [p.read_text() for p in sorted(folder.glob("*.eml"))] if folder.exists() else []


def test_adding_the_first_passkey_needs_a_fresh_password_and_code(client, app, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setattr(state.settings(), "instance_path", tmp_path)
    monkeypatch.setattr(state.settings(), "smtp_url", None)
    user = make_user(make_org(), passkey=False)
    login(client, user)
    assert signed_in_proof(client) == "totp"
    authenticator = SoftAuthenticator(relying_party()[1])
    refused = register(client, authenticator)
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == \
        "reauth_required"
    wrong = post_form(client, "/account/confirm", {"password": PASSWORD, "code": "000000"})
    assert wrong.status_code == 400 and "That code is wrong" in wrong.text
    confirm_with_code(client, user)
    before = len(outbox(app))
    response = register(client, authenticator, "  Work   laptop ")
    assert response.status_code == 200, response.text
    assert response.get_json() == {"redirect": "/account/passkeys"}
    fresh = reload(user)
    assert [p.name for p in fresh.passkeys] == ["Work laptop"]
    assert actions("passkey_added")[-1].actor_id == user.id
    page = client.get("/account/passkeys").text
    assert "Work laptop" in page and "never" in page
    # the owner hears of it by e-mail (a phished password and code could add one)
    mails = outbox(app)[before:]
    assert any("A passkey was added to your account" in m and "Work laptop" in m
               for m in mails)


def test_a_second_passkey_or_a_removal_needs_a_passkey_proof(client, app):
    user = make_user(make_org())  # holds a passkey already
    login(client, user, code=totp_now(user))  # a code, not the passkey
    confirm_with_code(client, user)
    other = SoftAuthenticator(relying_party()[1])
    refused = register(client, other, "Phone")
    assert refused.get_json()["error"]["code"] == "reauth_required"
    passkey_id = reload(user).passkeys[0].id
    removal = post_form(client, f"/account/passkeys/{passkey_id}/remove", {},
                        form_url="/account/passkeys")
    assert removal.status_code == 302 and removal.location.startswith("/account/confirm")
    assert len(reload(user).passkeys) == 1
    # confirming with the passkey opens both
    confirmed = passkey_ceremony(client, user, "confirm", next_url="/account/passkeys")
    assert confirmed.status_code == 200 and confirmed.get_json()["redirect"] == \
        "/account/passkeys"
    assert register(client, other, "Phone").status_code == 200
    assert {p.name for p in reload(user).passkeys} == {"Test key", "Phone"}
    removal = post_form(client, f"/account/passkeys/{passkey_id}/remove", {},
                        form_url="/account/passkeys")
    assert removal.status_code == 302 and removal.location == "/account/passkeys"
    assert [p.name for p in reload(user).passkeys] == ["Phone"]
    assert actions("passkey_removed")[-1].target_id == str(passkey_id)
    # someone else's passkey id is simply not found
    stranger = make_user(make_org())
    theirs = stranger.passkeys[0].id
    response = post_form(client, f"/account/passkeys/{theirs}/remove", {},
                         form_url="/account/passkeys")
    assert response.status_code == 404 and db.get(Passkey, theirs) is not None


def test_sign_in_with_a_passkey_alone_opens_the_passkey_level(client, app):
    org = make_org()
    user = make_user(org)
    secret = make_finding(user, level="confidential", compartment=[org])
    response = passkey_ceremony(client, user, "login", next_url=f"/findings/{secret.id}")
    assert response.status_code == 200, response.text
    assert response.get_json()["redirect"] == f"/findings/{secret.id}"
    assert signed_in_proof(client) == "passkey"
    assert client.get(f"/findings/{secret.id}").status_code == 200
    entry = actions("login")[-1]
    assert entry.actor_id == user.id and entry.details_dict["method"] == "passkey"
    stored = reload(user).passkeys[0]
    assert stored.last_used_at is not None and stored.sign_count == 1


def test_password_and_code_stay_below_the_passkey_level(client, app):
    """What a phished password and authenticator code get: the restricted level, not the
    confidential one, even though the account has a passkey; a passkey confirmation in
    the same session opens it."""
    org = make_org()
    user = make_user(org)
    secret = make_finding(user, level="confidential", compartment=[org])
    restricted = make_finding(user, level="restricted")
    login(client, user, code=totp_now(user))
    assert signed_in_proof(client) == "totp"
    assert client.get(f"/findings/{restricted.id}").status_code == 200
    refused = client.get(f"/findings/{secret.id}")
    assert refused.status_code == 302
    assert refused.location.startswith("/account/confirm?next=")
    listing = client.get("/findings/").text
    assert secret.title not in listing and restricted.title in listing
    assert "Needs a passkey in this session" in client.get("/home").text
    confirmed = passkey_ceremony(client, user, "confirm", next_url=f"/findings/{secret.id}")
    assert confirmed.status_code == 200
    assert client.get(f"/findings/{secret.id}").status_code == 200
    assert secret.title in client.get("/findings/").text


def test_passkey_as_the_second_factor(client, app):
    user = make_user(make_org())
    response = login(client, user)  # password, then the passkey
    assert response.status_code == 302 and signed_in_proof(client) == "passkey"
    assert actions("login")[-1].details_dict["method"] == "password+passkey"


def test_a_passkey_of_someone_else_is_no_second_factor(client, app):
    org = make_org()
    victim, attacker = make_user(org), make_user(org)
    page = client.get("/login")
    client.post("/login", data={"email": victim.email, "password": PASSWORD,
                                "csrf_token": csrf_from(page.text)})
    response = passkey_ceremony(client, victim, "login",
                                authenticator=attacker._test_authenticator,
                                credential=attacker._test_authenticator.credentials[0])
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "passkey_refused"
    assert signed_in_proof(client) is None


def test_wrong_origin_is_refused(client, app):
    """A relaying look-alike site: the browser signs its own origin into the answer."""
    user = make_user(make_org())
    response = passkey_ceremony(client, user, "login", origin="https://enclave-login.example")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "passkey_refused"
    assert signed_in_proof(client) is None
    failed = actions("login_failed")[-1]
    assert failed.details_dict["stage"] == "passkey"
    assert "origin" in failed.details_dict["reason"].lower()


def test_a_cloned_credential_is_refused_by_its_counter(client, app):
    user = make_user(make_org())
    original = user._test_authenticator
    assert passkey_ceremony(client, user, "login").status_code == 200
    assert passkey_ceremony(app.test_client(), user, "login").status_code == 200  # count 2
    clone = SoftAuthenticator(original.origin, [original.credentials[0].copy(sign_count=0)])
    fresh = client.application.test_client()  # the thief's browser
    response = passkey_ceremony(fresh, user, "login", authenticator=clone)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "passkey_cloned"
    assert actions("passkey_clone_suspected")[-1].target_id == str(user.passkeys[0].id)
    assert signed_in_proof(fresh) is None


def test_ceremony_state_is_single_use_and_checked(client, app):
    user = make_user(make_org())
    csrf = csrf_from(client.get("/login").text)
    options = client.post("/passkeys/options", json={"purpose": "login"},
                          headers={"X-CSRFToken": csrf}).get_json()
    answer = user._test_authenticator.get(options)
    first = client.post("/passkeys/verify", json={"purpose": "login", "credential": answer},
                        headers={"X-CSRFToken": csrf})
    assert first.status_code == 200
    other = app.test_client()
    csrf2 = csrf_from(other.get("/login").text)
    replay = other.post("/passkeys/verify", json={"purpose": "login", "credential": answer},
                        headers={"X-CSRFToken": csrf2})
    assert replay.status_code == 401 and replay.get_json()["error"]["code"] == \
        "passkey_expired"
    bad = other.post("/passkeys/options", json={"purpose": "steal"},
                     headers={"X-CSRFToken": csrf2})
    assert bad.status_code == 400
    no_csrf = other.post("/passkeys/options", json={"purpose": "login"})
    assert no_csrf.status_code == 400
    garbage = other.post("/passkeys/verify", json={"purpose": "login", "credential": "x"},
                         headers={"X-CSRFToken": csrf2})
    assert garbage.status_code == 401


def test_disabled_users_cannot_sign_in_with_a_passkey(client, app):
    from app.auth import service

    user = make_user(make_org())
    service.set_active(None, user, False)
    response = passkey_ceremony(client, user, "login")
    assert response.status_code == 401
    assert "disabled" in response.get_json()["error"]["message"]
    assert signed_in_proof(client) is None


def test_tokens_carry_the_proof_of_the_session_that_made_them(client, app):
    org = make_org()
    user = make_user(org)
    secret = make_finding(user, level="confidential", compartment=[org])
    for proof, kwargs in (("totp", {"code": totp_now(user)}), ("passkey", {})):
        browser = app.test_client()
        login(browser, user, **kwargs)
        assert post_form(browser, "/account/tokens",
                         {"name": proof, "scopes": "read"}).status_code == 200
    from app.auth.models import ApiToken

    rows = {t.name: t.proof for t in db.scalars(select(ApiToken))}
    assert rows == {"totp": "totp", "passkey": "passkey"}
    from app.auth.tokens import create_token

    _, weak = create_token(user, "weak", proof="totp")
    _, strong = create_token(user, "strong", proof="passkey")
    refused = client.get(f"/api/v1/findings/{secret.id}",
                         headers={"Authorization": f"Bearer {weak}"})
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "passkey_required"
    ok = client.get(f"/api/v1/findings/{secret.id}",
                    headers={"Authorization": f"Bearer {strong}"})
    assert ok.status_code == 200
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {weak}"}).get_json()
    assert me["token_proof"] == "totp" and "confidential" not in me["readable_levels"]


def test_levels_say_which_factor_they_need(client, app, api_token):
    user = make_user(make_org())
    levels = client.get("/api/v1/levels", headers=api_token(user)).get_json()["items"]
    assert {lv["key"]: lv["mfa"] for lv in levels} == {
        "public": False, "network": False, "restricted": True, "confidential": "passkey"}


def test_first_passkey_of_an_account_without_2fa_brings_recovery_codes(client, app):
    user = make_user(make_org(), mfa_on=False, passkey=False)
    login(client, user)
    response = post_form(client, "/account/confirm", {"password": PASSWORD})
    assert response.status_code == 302
    authenticator = SoftAuthenticator(relying_party()[1])
    assert register(client, authenticator, "Key").status_code == 200
    page = client.get("/account/passkeys").text
    assert "Your recovery codes" in page
    fresh = reload(user)
    assert fresh.mfa_enabled and mfa.remaining_recovery_codes(fresh) == \
        mfa.RECOVERY_CODE_COUNT
    assert "Your recovery codes" not in client.get("/account/passkeys").text  # shown once
    # the second factor is asked at the next sign-in; the passkey answers it
    other = app.test_client()
    fresh._test_authenticator = authenticator
    assert login(other, fresh).status_code == 302


def test_admin_can_remove_a_members_lost_passkeys(client, app):
    from app.auth.passkeys import remove_all_passkeys

    org = make_org()
    admin = make_user(org, role="org_admin")
    member = make_user(org)
    member_client = app.test_client()
    login(member_client, member)
    assert remove_all_passkeys(admin, member) == 1
    assert reload(member).passkeys == []
    assert member_client.get("/home").status_code == 302  # every session ended
    assert actions("passkeys_reset")[-1].target_id == str(member.id)
