"""Per-organization single sign-on against a real OpenID provider (node-oidc-provider,
started by the test) and the app served on a real port: sign-in with PKCE, state and
nonce, admission (invitation, an admin's group rule, never on the provider's word
alone), group-to-clearance mapping under the caps, passwords turned off, back-channel
logout; and the ID-token checks against tokens signed by keys the test controls."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import select
from werkzeug.serving import make_server

from app.audit import AuditEntry
from app.auth import service as users
from app.auth.models import Invitation, User
from app.cli import enclave
from app.db import db
from app.errors import Forbidden, ServiceError
from app.sso import service as sso
from app.sso.models import OrgSso, SsoSession
from tests.conftest import CSRF_RE, make_app
from tests.factories import PASSWORD, login, make_org, make_user, totp_now
from tests.oidc_provider import Provider, free_port, running_provider

ACCOUNTS = {
    "ada": {"email": "ada@sso.example", "name": "Ada Lovelace", "groups": ["researchers"]},
    "bob": {"email": "bob@sso.example", "name": "Bob Invited", "groups": []},
    "cy": {"email": "cy@sso.example", "name": "Cy Grouped", "groups": ["staff-conf"]},
    "eve": {"email": "eve@sso.example", "name": "Eve Uninvited", "groups": ["others"]},
    "mal": {"email": "mal@elsewhere.example", "name": "Mal Outside", "groups": []},
    "tia": {"email": "tia@sso.example", "name": "Tia Twofactor", "groups": []},
    "unv": {"email": "unv@sso.example", "name": "Unverified", "groups": [],
            "email_verified": False},
}


@pytest.fixture(scope="module")
def served(migrated, instance_dir) -> Iterator[tuple[str, Any]]:  # type: ignore[no-untyped-def]
    """The app on http://localhost:PORT (its base URL) and the provider that knows it."""
    port = free_port()
    base = f"http://localhost:{port}"
    served_app = make_app(migrated, instance_dir, base_url=base)
    server = make_server("127.0.0.1", port, served_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with running_provider(redirect_uri=f"{base}/sso/callback",
                              backchannel_logout_uri=f"{base}/sso/backchannel-logout",
                              accounts=ACCOUNTS) as provider:
            yield base, provider
    finally:
        server.shutdown()
        thread.join(timeout=10)
        served_app.extensions["enclave.engine"].dispose()


@pytest.fixture
def world(app, served):  # type: ignore[no-untyped-def]
    base, provider = served
    org = make_org("ssoorg", domains=["sso.example"], ceiling="confidential")
    sso.configure(None, org, issuer=provider.issuer, client_id=provider.client_id,
                  client_secret_value=provider.client_secret, passwords_allowed=True)
    return base, provider, org


def csrf(page: requests.Response) -> str:
    match = CSRF_RE.search(page.text)
    assert match, page.text[:300]
    return match.group(1) or match.group(2)


def sso_sign_in(base: str, provider: Provider, login_name: str,
                browser: requests.Session | None = None) -> tuple[requests.Session,
                                                                  requests.Response]:
    browser = browser or requests.Session()
    page = browser.get(f"{base}/login")
    response = browser.post(f"{base}/sso/start", data={
        "email": ACCOUNTS[login_name]["email"], "csrf_token": csrf(page)})
    assert response.url.startswith(provider.issuer), response.url
    return browser, provider.sign_in(browser, response, login_name)


def audit(action: str) -> list[AuditEntry]:
    db.expire_all()
    return list(db.scalars(select(AuditEntry).where(AuditEntry.action == action)
                           .order_by(AuditEntry.seq)))


def test_a_member_signs_in_through_the_provider(world):
    base, provider, org = world
    ada = make_user(org, name="ada", mfa_on=False)
    browser, landed = sso_sign_in(base, provider, "ada")
    assert landed.url == f"{base}/home", landed.url
    assert "Ada Tester" in landed.text
    db.expire_all()
    assert db.get(User, ada.id).sso_subject == "ada"
    entry = audit("login")[-1]
    assert entry.actor_id == ada.id and entry.details_dict["method"] == "sso"
    row = db.scalar(select(SsoSession).where(SsoSession.user_id == ada.id))
    assert row is not None and row.sid and row.ended_at is None
    # the authorization request carried PKCE (S256), state and nonce
    first = browser.get(f"{base}/login")
    start = browser.post(f"{base}/sso/start", data={"email": "ada@sso.example",
                                                   "csrf_token": csrf(first)},
                         allow_redirects=False)
    if start.status_code == 302 and "/home" in start.headers["Location"]:
        return  # signed in already: /login redirects; checked below with a new browser
    fresh = requests.Session()
    page = fresh.get(f"{base}/login")
    start = fresh.post(f"{base}/sso/start", data={"email": "ada@sso.example",
                                                 "csrf_token": csrf(page)},
                       allow_redirects=False)
    url = start.headers["Location"]
    for part in ("code_challenge_method=S256", "code_challenge=", "state=", "nonce=",
                 "scope=openid"):
        assert part in url, url


def test_the_second_factor_still_decides_the_levels(world):
    base, provider, org = world
    tia = make_user(org, name="tia", passkey=False)
    browser, landed = sso_sign_in(base, provider, "tia")
    assert landed.url == f"{base}/login/2fa"
    answer = browser.post(f"{base}/login/2fa", data={"code": totp_now(tia),
                                                     "csrf_token": csrf(landed)})
    assert answer.url == f"{base}/home"
    assert audit("login")[-1].details_dict["method"] == "sso+totp"


def test_an_invitation_admits_and_nobody_else_gets_in(world):
    base, provider, org = world
    admin = make_user(org, role="org_admin", clearance="restricted")
    users.invite(admin, org, "bob@sso.example", "network")
    _, landed = sso_sign_in(base, provider, "bob")
    assert landed.url == f"{base}/home"
    bob = users.get_user_by_email("bob@sso.example")
    assert bob is not None and bob.clearance == "network" and bob.password_hash is None
    assert bob.display_name == "Bob Invited" and bob.sso_subject == "bob"
    assert db.scalar(select(Invitation).where(Invitation.email == bob.email)).used_at
    # the provider's word alone admits no one
    before = db.scalar(select(User.id).order_by(User.id.desc()))
    _, refused = sso_sign_in(base, provider, "eve")
    assert refused.url.startswith(f"{base}/login")
    assert "Ask your organization" in refused.text
    assert users.get_user_by_email("eve@sso.example") is None
    assert db.scalar(select(User.id).order_by(User.id.desc())) == before
    assert audit("login_failed")[-1].details_dict["stage"] == "sso"
    # an address outside the organization's domains, or not verified, is refused
    browser = requests.Session()
    page = browser.get(f"{base}/login")
    start = browser.post(f"{base}/sso/start", data={"email": "ada@sso.example",
                                                   "csrf_token": csrf(page)})
    outside = provider.sign_in(browser, start, "mal")  # another account at the provider
    assert "is not in a domain of" in outside.text
    _, unverified = sso_sign_in(base, provider, "unv")
    assert "verified e-mail" in unverified.text


def test_an_admins_group_rule_and_mapped_clearances(world):
    base, provider, org = world
    sso.configure(None, org, issuer=provider.issuer, client_id=provider.client_id,
                  client_secret_value=None, passwords_allowed=True,
                  clearances={"staff-conf": "restricted", "researchers": "confidential"},
                  allow_groups=["staff-conf"])
    _, landed = sso_sign_in(base, provider, "cy")
    assert landed.url == f"{base}/home"
    cy = users.get_user_by_email("cy@sso.example")
    assert cy.clearance == "restricted"
    # an existing member's clearance follows their groups at each sign-in, capped by the
    # ceiling
    ada = make_user(org, name="ada", clearance="network", mfa_on=False)
    org.ceiling = "restricted"
    db.commit()
    sso_sign_in(base, provider, "ada")
    db.expire_all()
    assert db.get(User, ada.id).clearance == "restricted"  # confidential, capped
    changed = audit("clearance_changed")[-1]
    assert changed.actor == "sso" and changed.details_dict["new"] == "restricted"


def test_org_admins_configure_their_own_organization_within_their_grants(world):
    _, provider, org = world
    org_admin = make_user(org, role="org_admin", clearance="restricted")
    other = make_org("otherorg")
    common = {"issuer": provider.issuer, "client_id": "x", "client_secret_value": "s",
              "passwords_allowed": True}
    with pytest.raises(Forbidden):
        sso.configure(org_admin, other, **common)
    with pytest.raises(ServiceError, match="above what you may grant"):
        sso.configure(org_admin, org, clearances={"g": "confidential"}, **common)
    with pytest.raises(Forbidden, match="Only an administrator"):
        sso.configure(org_admin, org, allow_groups=["everyone"], **common)
    with pytest.raises(ServiceError, match="https"):
        sso.configure(None, org, **{**common, "issuer": "http://idp.example.org"})
    config = sso.configure(org_admin, org, clearances={"g": "restricted"}, **common)
    assert sso.group_clearances(config) == {"g": "restricted"}
    assert "s" not in config.client_secret_enc and sso.client_secret(config) == "s"
    assert audit("sso_configured")[-1].actor_id == org_admin.id
    assert "client_secret" not in audit("sso_configured")[-1].details


def test_passwords_off_means_the_provider_only(world, client):
    base, provider, org = world
    ada = make_user(org, name="ada", mfa_on=False)
    sso.configure(None, org, issuer=provider.issuer, client_id=provider.client_id,
                  client_secret_value=None, passwords_allowed=False)
    response = login(client, ada)
    assert response.status_code == 401
    assert "signs in through its own identity provider" in response.text
    _, landed = sso_sign_in(base, provider, "ada")
    assert landed.url == f"{base}/home"


def test_state_and_stray_answers_are_refused(world):
    base, provider, _ = world
    browser = requests.Session()
    stray = browser.get(f"{base}/sso/callback?code=abc&state=forged")
    assert stray.url == f"{base}/login" and "took too long or was not started here" \
        in stray.text
    page = browser.get(f"{base}/login")
    start = browser.post(f"{base}/sso/start", data={"email": "ada@sso.example",
                                                   "csrf_token": csrf(page)})
    assert start.url.startswith(provider.issuer)
    wrong = browser.get(f"{base}/sso/callback?code=abc&state=not-the-one")
    assert "does not belong to this browser" in wrong.text


def test_back_channel_logout_ends_the_session_it_names(world):
    base, provider, org = world
    ada = make_user(org, name="ada", mfa_on=False)
    browser, landed = sso_sign_in(base, provider, "ada")
    assert landed.url == f"{base}/home"
    other = requests.Session()  # the same person, signed in with a password elsewhere
    page = other.get(f"{base}/login")
    other.post(f"{base}/login", data={"email": ada.email, "password": PASSWORD,
                                      "csrf_token": csrf(page)})
    assert other.get(f"{base}/home").url == f"{base}/home"
    provider.sign_out(browser)  # at the provider: it posts a logout token to Enclave
    deadline = time.monotonic() + 10
    while not audit("sso_backchannel_logout") and time.monotonic() < deadline:
        time.sleep(0.2)
    entry = audit("sso_backchannel_logout")[-1]
    assert entry.details_dict["sessions_ended"] == 1 and entry.details_dict["sid"]
    assert browser.get(f"{base}/home").url.startswith(f"{base}/login")
    assert other.get(f"{base}/home").url == f"{base}/home"  # only the session it named


def test_back_channel_logout_refuses_forged_tokens(world):
    base, provider, org = world
    key = RSAKey.generate_key(2048, parameters={"kid": "forger"})
    token = jwt.encode({"alg": "RS256", "kid": "forger"}, {
        "iss": provider.issuer, "aud": provider.client_id, "iat": int(time.time()),
        "jti": "x", "sub": "ada",
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}, key)
    response = requests.post(f"{base}/sso/backchannel-logout", data={"logout_token": token},
                             timeout=10)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert requests.post(f"{base}/sso/backchannel-logout", data={}, timeout=10).status_code \
        == 400


# ---------------------------------------------------------------- ID token checks

class _Jwks(BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(type(self).body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def signer() -> Iterator[tuple[RSAKey, dict[str, Any]]]:
    """A key the test signs with, published as a JWKS on a local port."""
    key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"})
    _Jwks.body = json.dumps(KeySet([key]).as_dict(private=False)).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield key, {"jwks_uri": f"http://127.0.0.1:{server.server_port}/jwks"}
    finally:
        server.shutdown()


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": "https://idp.example.org", "aud": "client-1", "sub": "s1", "iat": now,
              "exp": now + 300, "nonce": "n1", "email": "a@sso.example"}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


EXPIRED = object()  # stands for "an hour ago", computed when the test runs


@pytest.mark.parametrize(("changes", "why"), [
    ({"iss": "https://evil.example.org"}, "iss"),
    ({"aud": "another-client"}, "aud"),
    ({"nonce": "replayed"}, "nonce"),
    ({"nonce": None}, "nonce"),
    ({"exp": EXPIRED}, "exp"),
    ({"aud": ["client-1", "other"]}, "azp"),
])
def test_id_token_claims_are_checked(app, signer, changes, why):
    """Each claim check refuses on its own (the claims are made when the test runs: made
    at collection, a slow suite let them expire first)."""
    key, metadata = signer
    config = OrgSso(issuer="https://idp.example.org", client_id="client-1")
    changes = {k: int(time.time()) - 3600 if v is EXPIRED else v for k, v in changes.items()}
    token = jwt.encode({"alg": "RS256", "kid": "k1"}, _claims(**changes), key)
    with pytest.raises(sso.SsoRefused) as refused:
        sso.verify_id_token(config, metadata, token, nonce="n1")
    assert why in refused.value.message.lower()
    good = jwt.encode({"alg": "RS256", "kid": "k1"}, _claims(), key)
    assert sso.verify_id_token(config, metadata, good, nonce="n1")["sub"] == "s1"


def test_only_signed_id_tokens_from_the_providers_keys(app, signer):
    from joserfc.jwk import OctKey

    _, metadata = signer
    config = OrgSso(issuer="https://idp.example.org", client_id="client-1")
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    forged = jwt.encode({"alg": "RS256", "kid": "k1"}, _claims(), stranger)
    symmetric = jwt.encode({"alg": "HS256"}, _claims(),
                           OctKey.import_key("client-secret-used-as-hmac-key-0123456789"))
    unsigned = ".".join(part for part in (
        _b64(json.dumps({"alg": "none"})), _b64(json.dumps(_claims())))) + "."
    for token in (forged, symmetric, unsigned, "not.a.token", ""):
        with pytest.raises(sso.SsoRefused):
            sso.verify_id_token(config, metadata, token, nonce="n1")


def _b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def test_cli_sets_the_provider_and_reads_the_secret_from_stdin(app):
    org = make_org("cliorg")
    runner = app.test_cli_runner()
    result = runner.invoke(enclave, ["org", "sso", "cliorg", "--issuer",
                                     "https://login.cliorg.example", "--client-id", "enclave",
                                     "--client-secret-stdin", "--no-passwords",
                                     "--group-clearance", "lab=restricted"],
                           input="the-secret\n")
    assert result.exit_code == 0, result.output
    assert "/sso/callback" in result.output and "the-secret" not in result.output
    config = sso.config_for(org)
    assert (config.passwords_allowed, sso.client_secret(config)) == (False, "the-secret")
    assert sso.group_clearances(config) == {"lab": "restricted"}
    bad = runner.invoke(enclave, ["org", "sso", "cliorg", "--issuer", "ftp://x",
                                  "--client-id", "e"])
    assert bad.exit_code == 1 and bad.stderr.count("\n") == 1
    assert re.search(r"error: .*https", bad.stderr)
