"""Builders for test worlds, going through the models directly (fast) and the
services where the rule under test lives there."""

from __future__ import annotations

import itertools
import os
from typing import Any

import pyotp
import pytest
from flask.testing import FlaskClient

from app import state
from app.auth import mfa
from app.auth.models import Passkey, User
from app.auth.passwords import hash_password
from app.db import db, utcnow
from app.findings.models import Finding, FindingOrg
from app.ndas.models import NdaAcknowledgement
from app.orgs.models import Organization, OrgDomain

PASSWORD = "lantern-quartz-orbit-meadow"
_counter = itertools.count(1)
_PASSWORD_HASH: list[str] = []


def password_hash() -> str:
    if not _PASSWORD_HASH:
        _PASSWORD_HASH.append(hash_password(PASSWORD))
    return _PASSWORD_HASH[0]


def make_org(slug: str | None = None, *, status: str = "trusted",
             ceiling: str = "confidential", domains: list[str] | None = None) -> Organization:
    slug = slug or f"org{next(_counter)}"
    org = Organization(slug=slug, name=f"{slug.title()} Research", status=status,
                       ceiling=ceiling,
                       domains=[OrgDomain(domain=d) for d in (domains or [f"{slug}.example"])])
    db.add(org)
    db.commit()
    return org


def make_user(org: Organization, *, clearance: str = "confidential", role: str = "member",
              name: str | None = None, ndas: str | list[str] = "all", mfa_on: bool = True,
              active: bool = True, passkey: bool | None = None) -> User:
    """A user; with 2FA on (``mfa_on``) they also hold a passkey unless ``passkey=False``
    (a software authenticator: ``user._test_authenticator``), and :func:`login` uses it."""
    n = next(_counter)
    local = name or f"user{n}"
    user = User(email=f"{local}@{org.domain_names[0]}", username=local,
                display_name=f"{local.title()} Tester", org_id=org.id, clearance=clearance,
                role=role, password_hash=password_hash(), is_active=active)
    db.add(user)
    db.flush()
    policy = state.policy()
    keys = list(policy.ndas) if ndas == "all" else list(ndas)
    for key in keys:
        nda = policy.ndas[key]
        db.add(NdaAcknowledgement(user_id=user.id, nda_key=key, version=nda.version,
                                  text_sha256=nda.text_sha256, signed_name=user.display_name))
    if mfa_on:
        secret = pyotp.random_base32()
        user.totp_secret_enc = mfa.seal_secret(user, secret)
        user.totp_enabled_at = utcnow()
        user._test_totp_secret = secret  # type: ignore[attr-defined]
    if passkey or (passkey is None and mfa_on):
        add_test_passkey(user)
    db.commit()
    return user


def add_test_passkey(user: User, name: str = "Test key") -> Passkey:
    """Register a passkey of a software authenticator (``user._test_authenticator``)
    straight in the database (the registration ceremony has its own tests)."""
    from app.auth.passkeys import relying_party
    from tests.webauthn_soft import SoftAuthenticator, b64url

    rp_id, origin = relying_party()
    authenticator = getattr(user, "_test_authenticator", None) or SoftAuthenticator(origin)
    from webauthn import base64url_to_bytes

    handle = base64url_to_bytes(user.passkeys[0].user_handle) if user.passkeys \
        else os.urandom(32)
    cred, cose = authenticator.new_credential(rp_id, handle)
    passkey = Passkey(user_id=user.id, name=name, credential_id=b64url(cred.credential_id),
                      user_handle=b64url(handle), public_key=cose, sign_count=0,
                      transports="internal", aaguid="00000000-0000-0000-0000-000000000000")
    user.passkeys.append(passkey)
    db.commit()
    user._test_authenticator = authenticator  # type: ignore[attr-defined]
    return passkey


def passkey_ceremony(client: FlaskClient, user: User | None, purpose: str, *,
                     authenticator: Any = None, origin: str | None = None,
                     next_url: str = "", credential: Any = None) -> Any:
    """Sign in (purpose "login") or confirm ("confirm") with the user's software
    authenticator through the real endpoints; returns the verify response."""
    from tests.conftest import csrf_from

    authenticator = authenticator or user._test_authenticator  # type: ignore[union-attr]
    page = client.get("/login" if purpose == "login" and not _pending(client) else
                      "/account/passkeys" if purpose == "confirm" else "/login/2fa")
    csrf = csrf_from(page.text)
    options = client.post("/passkeys/options", json={"purpose": purpose},
                          headers={"X-CSRFToken": csrf})
    assert options.status_code == 200, options.text
    answer = authenticator.get(options.get_json(), origin=origin, credential=credential)
    return client.post("/passkeys/verify", json={"purpose": purpose, "credential": answer,
                                                 "next": next_url},
                       headers={"X-CSRFToken": csrf})


def _pending(client: FlaskClient) -> bool:
    with client.session_transaction() as sess:
        return "pending_2fa" in sess


def make_finding(author: User, *, level: str = "network", title: str | None = None,
                 body: str = "Body text.", compartment: list[Organization] | None = None,
                 ) -> Finding:
    finding = Finding(title=title or f"Finding {next(_counter)}", body=body, level=level,
                      author_id=author.id, org_id=author.org_id,
                      compartmented=bool(compartment))
    if compartment:
        ids = {o.id for o in compartment} | {author.org_id}
        finding.compartment = [FindingOrg(org_id=i) for i in sorted(ids)]
    db.add(finding)
    db.commit()
    return finding


def totp_now(user: User, offset_steps: int = 0) -> str:
    import time

    secret = user._test_totp_secret  # type: ignore[attr-defined]
    return pyotp.TOTP(secret).at(time.time() + 30 * offset_steps)


def login(client: FlaskClient, user: User, password: str = PASSWORD, *,
          code: str | None = None, with_passkey: bool | None = None) -> Any:
    """Sign in through the real forms (CSRF on), with the second factor if enrolled:
    the user's test passkey (by default when they hold one and no ``code`` is given),
    else the authenticator code."""
    if with_passkey is None:
        with_passkey = code is None and hasattr(user, "_test_authenticator")
    from tests.conftest import csrf_from

    page = client.get("/login")
    response = client.post("/login", data={"email": user.email, "password": password,
                                           "csrf_token": csrf_from(page.text)})
    second = response.status_code == 302 and "/login/2fa" in response.location
    if second and with_passkey:
        verified = passkey_ceremony(client, user, "login")
        assert verified.status_code == 200, verified.text
        # the page's script follows the JSON answer's redirect: hand back that redirect,
        # as the code form answers it
        from werkzeug.wrappers import Response

        return Response(status=302, headers={"Location": verified.get_json()["redirect"]})
    if user.mfa_enabled and second:
        page = client.get("/login/2fa")
        response = client.post("/login/2fa", data={
            "code": code or totp_now(user), "csrf_token": csrf_from(page.text)})
    return response


def post_form(client: FlaskClient, url: str, data: dict[str, Any], *,
              form_url: str | None = None) -> Any:
    from tests.conftest import csrf_from

    page = client.get(form_url or url)
    assert page.status_code == 200, (form_url or url, page.status_code)
    return client.post(url, data={**data, "csrf_token": csrf_from(page.text)})


@pytest.fixture
def api_token():  # type: ignore[no-untyped-def]
    from app.auth.tokens import allowed_scopes, create_token

    def make(user: User) -> dict[str, str]:
        # as `enclave token create --scope ...` makes it, with every scope the owner's
        # role allows (the proof behind web-made tokens is tested in test_passkeys, the
        # scopes in test_api_tokens)
        _, plaintext = create_token(user, "test", proof="operator",
                                    scopes=allowed_scopes(user))
        return {"Authorization": f"Bearer {plaintext}"}

    return make


__all__ = ["PASSWORD", "add_test_passkey", "api_token", "login", "make_finding", "make_org",
           "make_user", "passkey_ceremony", "post_form", "totp_now"]
