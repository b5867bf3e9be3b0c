"""Builders for test worlds, going through the models directly (fast) and the
services where the rule under test lives there."""

from __future__ import annotations

import itertools
from typing import Any

import pyotp
import pytest
from flask.testing import FlaskClient

from app import state
from app.auth import mfa
from app.auth.models import User
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
              active: bool = True) -> User:
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
    db.commit()
    return user


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
          code: str | None = None) -> Any:
    """Sign in through the real forms (CSRF on), with the second factor if enrolled."""
    from tests.conftest import csrf_from

    page = client.get("/login")
    response = client.post("/login", data={"email": user.email, "password": password,
                                           "csrf_token": csrf_from(page.text)})
    if user.mfa_enabled and response.status_code == 302 and "/login/2fa" in response.location:
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
    from app.auth.service import create_token

    def make(user: User) -> dict[str, str]:
        _, plaintext = create_token(user, "test")
        return {"Authorization": f"Bearer {plaintext}"}

    return make


__all__ = ["PASSWORD", "api_token", "login", "make_finding", "make_org", "make_user",
           "post_form", "totp_now"]
