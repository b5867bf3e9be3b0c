"""Passkeys in Chromium with its virtual authenticator (the DevTools protocol's WebAuthn
domain, through Playwright's CDP session): adding one, signing in with it alone,
confirming and removing it, a relaying look-alike origin, and a cloned credential.

WebAuthn needs a host name (browsers refuse it on IP addresses): the app is opened at
http://localhost:PORT, and ENCLAVE_BASE_URL says so."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from werkzeug.serving import make_server

from app.audit import AuditEntry
from app.auth.models import Passkey, User
from app.db import db
from tests.browser.conftest import screenshot
from tests.factories import PASSWORD, make_finding, make_org, make_user, totp_now
from tests.webauthn_soft import SoftCredential

pytestmark = pytest.mark.browser


@pytest.fixture
def site(live_app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The served app at http://localhost:PORT (its RP ID: localhost)."""
    url, served = live_app
    port = url.rsplit(":", 1)[1]
    served.extensions["enclave.settings"].base_url = f"http://localhost:{port}"
    yield f"http://localhost:{port}"


@pytest.fixture
def mirror(live_app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A look-alike origin relaying to the real app (another port: another origin, the
    same RP ID), as a phishing proxy would: it hands out the real challenges."""
    _, served = live_app
    server = make_server("127.0.0.1", 0, served, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def authenticator(context):  # type: ignore[no-untyped-def]
    """A CTAP2 platform authenticator with user verification, always approving."""
    page = context.pages[0] if context.pages else context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    found = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True,
        "automaticPresenceSimulation": True}})
    return page, cdp, found["authenticatorId"]


def inject(cdp, authenticator_id: str, credential: SoftCredential, *,  # type: ignore[no-untyped-def]
           sign_count: int = 0) -> None:
    """Put a credential (its private key) into the virtual authenticator."""
    pkcs8 = credential.key.private_bytes(serialization.Encoding.DER,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
    cdp.send("WebAuthn.addCredential", {"authenticatorId": authenticator_id, "credential": {
        "credentialId": base64.b64encode(credential.credential_id).decode(),
        "isResidentCredential": True, "rpId": credential.rp_id,
        "privateKey": base64.b64encode(pkcs8).decode(),
        "userHandle": base64.b64encode(credential.user_handle).decode(),
        "signCount": sign_count}})


def audit_actions(name: str) -> list[AuditEntry]:
    db.expire_all()
    return list(db.scalars(select(AuditEntry).where(AuditEntry.action == name)))


def test_add_sign_in_confirm_and_remove_a_passkey(browser, site, app):
    org = make_org("northwind")
    user = make_user(org, passkey=False, name="grace")
    secret = make_finding(user, level="confidential", compartment=[org],
                          title="Confidential circuits")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page, cdp, auth_id = authenticator(context)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # password and authenticator code: the confidential level stays closed
    page.goto(f"{site}/login")
    page.get_by_label("E-mail").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_label("Code from your authenticator app").fill(totp_now(user))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"{site}/home")
    assert "Needs a passkey in this session" in page.content()
    page.goto(f"{site}/findings/{secret.id}")
    assert "/account/passkeys" in page.url  # no passkey yet: add one
    screenshot(page, "passkeys-none")
    # adding the first one needs a fresh password and code
    page.get_by_role("link", name="Confirm it is you").click()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Code from your authenticator app").fill(totp_now(user, 1))
    page.get_by_role("button", name="Confirm").click()
    page.get_by_label("Name").fill("Work laptop")
    page.get_by_role("button", name="Add passkey").click()
    page.wait_for_selector("text=Passkey “Work laptop” added.")
    assert "Your recovery codes" in page.content()
    screenshot(page, "passkeys-added")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "passkeys-added-390")
    page.set_viewport_size({"width": 1280, "height": 900})
    stored = db.scalars(select(Passkey).where(Passkey.user_id == user.id)).all()
    assert [p.name for p in stored] == ["Work laptop"]
    creds = cdp.send("WebAuthn.getCredentials", {"authenticatorId": auth_id})["credentials"]
    assert len(creds) == 1 and creds[0]["rpId"] == "localhost"
    assert creds[0]["isResidentCredential"]  # discoverable: sign-in needs no e-mail

    # sign out, then sign in with the passkey alone
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{site}/login")
    screenshot(page, "passkeys-login")
    page.get_by_role("button", name="Continue with a passkey").click()
    page.wait_for_url(f"{site}/home")
    page.goto(f"{site}/findings/{secret.id}")
    assert page.url == f"{site}/findings/{secret.id}"
    assert "Confidential circuits" in page.content()
    logins = audit_actions("login")
    assert logins[-1].details_dict["method"] == "passkey"

    # removal needs a fresh passkey proof: confirm, then remove
    page.goto(f"{site}/account/passkeys")
    page.get_by_role("button", name="Remove passkey Work laptop").click()
    page.wait_for_url("**/account/confirm**")
    screenshot(page, "passkeys-confirm")
    page.get_by_role("button", name="Confirm with a passkey").click()
    page.wait_for_url(f"{site}/account/passkeys")
    page.get_by_role("button", name="Remove passkey Work laptop").click()
    page.wait_for_selector("text=Passkey “Work laptop” removed.")
    assert db.scalars(select(Passkey).where(Passkey.user_id == user.id)).all() == []
    assert audit_actions("passkey_removed")
    assert errors == []
    context.close()


def test_a_look_alike_origin_gets_nothing(browser, site, mirror, app):
    """A relaying site on another origin passes the real challenge on; the browser puts
    its own origin in the answer, and Enclave refuses it. The real site works."""
    user = make_user(make_org())
    passkey = user.passkeys[0]
    context = browser.new_context()
    page, cdp, auth_id = authenticator(context)
    inject(cdp, auth_id, user._test_authenticator.credentials[0])
    page.goto(f"{mirror}/login")
    page.get_by_role("button", name="Continue with a passkey").click()
    page.locator("#passkey-status", has_text="not valid for this site").wait_for()
    assert "/login" in page.url
    screenshot(page, "passkeys-wrong-origin")
    failed = audit_actions("login_failed")[-1]
    assert failed.details_dict["stage"] == "passkey"
    assert "origin" in failed.details_dict["reason"].lower()
    db.expire_all()
    assert db.get(Passkey, passkey.id).last_used_at is None
    page.goto(f"{site}/login")
    page.get_by_role("button", name="Continue with a passkey").click()
    page.wait_for_url(f"{site}/home")
    context.close()


def test_a_cloned_credential_is_refused(browser, site, app):
    """The thief's copy of a key has a signature counter behind the server's."""
    user = make_user(make_org())
    original = user._test_authenticator.credentials[0]
    owner = browser.new_context()
    page, cdp, auth_id = authenticator(owner)
    inject(cdp, auth_id, original, sign_count=5)
    page.goto(f"{site}/login")
    page.get_by_role("button", name="Continue with a passkey").click()
    page.wait_for_url(f"{site}/home")
    db.expire_all()
    assert db.get(User, user.id).passkeys[0].sign_count == 6
    thief = browser.new_context()
    thief_page, thief_cdp, thief_id = authenticator(thief)
    inject(thief_cdp, thief_id, original, sign_count=1)
    thief_page.goto(f"{site}/login")
    thief_page.get_by_role("button", name="Continue with a passkey").click()
    thief_page.locator("#passkey-status", has_text="copied").wait_for()
    screenshot(thief_page, "passkeys-cloned")
    assert "/login" in thief_page.url
    assert audit_actions("passkey_clone_suspected")
    owner.close()
    thief.close()


def test_second_factor_page_offers_the_passkey(browser, site, app):
    user = make_user(make_org())
    context = browser.new_context()
    page, cdp, auth_id = authenticator(context)
    inject(cdp, auth_id, user._test_authenticator.credentials[0])
    page.goto(f"{site}/login")
    page.get_by_label("E-mail").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(f"{site}/login/2fa")
    screenshot(page, "passkeys-second-factor")
    page.get_by_role("button", name="Use your passkey").click()
    page.wait_for_url(f"{site}/home")
    assert audit_actions("login")[-1].details_dict["method"] == "password+passkey"
    context.close()
