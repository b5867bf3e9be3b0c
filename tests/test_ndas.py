"""NDAs: what a user owes, signing with the typed name, what the signature records,
and a new NDA version closing the level again until it is signed."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app import access, state
from app.config import REPO_ROOT
from app.db import db, utcnow
from app.ndas.models import NdaAcknowledgement
from app.policy import load_policy
from tests.conftest import csrf_from, running_app
from tests.factories import login, make_org, make_user
from tests.test_auth import actions, isolated_requests, reload, text

__all__ = ["isolated_requests"]  # autouse: every test client is request-isolated

IP = {"REMOTE_ADDR": "203.0.113.9"}


def acks(user: Any, key: str | None = None) -> list[NdaAcknowledgement]:
    query = select(NdaAcknowledgement).where(NdaAcknowledgement.user_id == user.id)
    if key:
        query = query.where(NdaAcknowledgement.nda_key == key)
    return list(db.scalars(query.order_by(NdaAcknowledgement.id)))


def sign(client: FlaskClient, key: str, name: str, *, version: str | None = None,
         next_url: str | None = None) -> Any:
    url = f"/ndas/{key}" + (f"?next={next_url}" if next_url else "")
    page = client.get(url, environ_base=IP)
    assert page.status_code == 200
    data = {"signed_name": name, "csrf_token": csrf_from(page.text)}
    shown = state.policy().ndas[key].version
    assert f'name="version" type="hidden" value="{shown}"' in page.text
    if version != "omit":
        data["version"] = str(shown) if version is None else version
    return client.post(url, data=data, environ_base=IP)


# ---------------------------------------------------------------- what is owed

def test_ndas_page_lists_what_the_user_owes(client):
    user = make_user(make_org(), clearance="confidential", ndas=["network-terms"])
    login(client, user)
    page = client.get("/ndas/")
    assert page.status_code == 200
    body = text(page)
    policy = state.policy()
    for key in ("network-terms", "restricted", "confidential"):
        assert policy.ndas[key].title in body
    assert body.count("Not signed") == 2 and body.count(">Signed<") == 1
    assert "(legally binding)" in body  # the confidential NDA says so
    home = text(client.get("/home"))
    assert "You still need to sign 2 NDAs" in home


def test_only_ndas_up_to_the_effective_clearance_are_listed(client):
    # Clearance confidential, but the org's ceiling is network.
    user = make_user(make_org(ceiling="network"), clearance="confidential", ndas=[])
    login(client, user)
    body = text(client.get("/ndas/"))
    assert state.policy().ndas["network-terms"].title in body
    assert state.policy().ndas["restricted"].title not in body
    assert client.get("/ndas/restricted").status_code == 404
    assert client.get("/ndas/confidential").status_code == 404
    assert client.get("/ndas/no-such-nda").status_code == 404


def test_ndas_page_needs_a_session(client):
    response = client.get("/ndas/")
    assert response.status_code == 302 and response.location.startswith("/login")


# ---------------------------------------------------------------- signing

def test_signing_needs_the_typed_full_name(client):
    user = make_user(make_org(), clearance="network", ndas=[])
    login(client, user)
    for wrong in ("Someone Else", "User", user.display_name + " Jr"):
        response = sign(client, "network-terms", wrong)
        assert response.status_code == 400
        assert (f"Type your full name exactly as on your account ({user.display_name})."
                in text(response))
    response = sign(client, "network-terms", "")
    assert response.status_code == 400 and "This field is required." in text(response)
    assert acks(user) == []
    assert not actions("nda_acknowledged")
    assert access.readable_levels(reload(user)) == {"public"}


def test_signature_records_key_version_hash_name_and_ip(client):
    user = make_user(make_org(), clearance="network", ndas=[])
    login(client, user)
    typed = "  " + user.display_name.upper().replace(" ", "   ") + " "
    response = sign(client, "network-terms", typed)
    assert response.status_code == 302 and response.location == "/ndas/"
    nda = state.policy().ndas["network-terms"]
    [ack] = acks(user)
    assert (ack.nda_key, ack.version) == ("network-terms", nda.version)
    assert ack.text_sha256 == hashlib.sha256(nda.text.encode("utf-8")).hexdigest()
    assert ack.text_sha256 == nda.text_sha256
    assert ack.signed_name == user.display_name.upper()  # as typed, spaces tidied
    assert ack.ip == "203.0.113.9"
    assert abs(ack.created_at - utcnow()) < timedelta(minutes=1)
    entry = actions("nda_acknowledged")[-1]
    assert entry.actor_id == user.id and entry.target_id == "network-terms"
    assert entry.details_dict == {"version": nda.version, "text_sha256": nda.text_sha256}
    assert f"You signed {nda.title}, version {nda.version}." in text(client.get("/ndas/"))


def test_after_signing_the_level_becomes_readable(client):
    user = make_user(make_org(), clearance="restricted", ndas=[])
    login(client, user)
    assert access.readable_levels(reload(user)) == {"public"}
    assert sign(client, "network-terms", user.display_name).status_code == 302
    assert access.readable_levels(reload(user)) == {"public", "network"}
    assert sign(client, "restricted", user.display_name).status_code == 302
    assert access.readable_levels(reload(user)) == {"public", "network", "restricted"}
    home = text(client.get("/home"))
    assert "You still need to sign" not in home


def test_signing_walks_through_every_owed_nda_then_follows_next(client):
    user = make_user(make_org(), clearance="confidential", ndas=[])
    login(client, user)
    response = sign(client, "network-terms", user.display_name, next_url="/home")
    assert response.status_code == 302
    assert response.location == "/ndas/restricted?next=/home"
    response = sign(client, "restricted", user.display_name, next_url="/home")
    assert response.location == "/ndas/confidential?next=/home"
    response = sign(client, "confidential", user.display_name, next_url="/home")
    assert response.location == "/home"
    assert [a.nda_key for a in acks(user)] == ["network-terms", "restricted", "confidential"]
    # An off-site next is not followed.
    other = make_user(make_org(), clearance="network", ndas=[])
    client2 = client.application.test_client()
    login(client2, other)
    response = sign(client2, "network-terms", other.display_name,
                    next_url="https://evil.example/")
    assert response.location == "/ndas/"


def test_signing_twice_is_refused_without_a_second_row(client):
    user = make_user(make_org(), clearance="network", ndas=["network-terms"])
    login(client, user)
    page = client.get("/ndas/network-terms")
    assert "You signed this version." in text(page)
    response = client.post("/ndas/network-terms", data={
        "signed_name": user.display_name, "version": "1",
        "csrf_token": csrf_from(page.text)})
    assert response.status_code == 400
    assert "You already acknowledged version 1" in text(response)
    assert len(acks(user)) == 1


@pytest.mark.parametrize("version", ["0", "2", "99999999999999999999", "omit", "abc", "²",
                                     "-1", " "])
def test_a_stale_or_missing_version_is_refused(client, version):
    user = make_user(make_org(), clearance="network", ndas=[])
    login(client, user)
    response = sign(client, "network-terms", user.display_name, version=version)
    assert response.status_code == 400
    assert "This NDA changed while you were reading it; read the new version." in text(
        response)
    assert acks(user) == []
    assert access.readable_levels(reload(user)) == {"public"}


def test_signing_needs_csrf(client):
    user = make_user(make_org(), clearance="network", ndas=[])
    login(client, user)
    response = client.post("/ndas/network-terms", data={"signed_name": user.display_name,
                                                        "version": "1"})
    assert response.status_code == 400
    assert acks(user) == []


def test_api_acknowledge_refuses_a_stale_version(client, api_token):
    user = make_user(make_org(), clearance="network", ndas=[])
    headers = api_token(user)
    response = client.post("/api/v1/ndas/network-terms/acknowledge", headers=headers,
                           json={"signed_name": user.display_name, "version": 7})
    assert response.status_code == 400
    assert response.json["error"]["code"] == "nda_changed"
    response = client.post("/api/v1/ndas/network-terms/acknowledge", headers=headers,
                           json={"signed_name": "Wrong Name", "version": 1})
    assert response.status_code == 400
    assert acks(user) == []
    response = client.post("/api/v1/ndas/network-terms/acknowledge", headers=headers,
                           json={"signed_name": user.display_name, "version": 1})
    assert response.status_code == 201
    assert response.json["text_sha256"] == state.policy().ndas["network-terms"].text_sha256


# ---------------------------------------------------------------- a new NDA version

@pytest.fixture
def bumped_app(migrated: str, instance_dir: Path, tmp_path: Path) -> Iterator[Flask]:
    """The default policy with the Restricted NDA at version 2 and a changed text."""
    copy = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", copy)
    nda = copy / "ndas" / "restricted.md"
    source = nda.read_text(encoding="utf-8")
    assert "\nversion = 1\n" in source
    nda.write_text(source.replace("\nversion = 1\n", "\nversion = 2\n", 1)
                   + "\n## Added in version 2\n\nReport every copy you find outside Enclave.\n",
                   encoding="utf-8")
    with running_app(migrated, instance_dir, policy_dir=copy) as app:
        yield app


def test_a_new_nda_version_closes_the_level_until_signed_again(bumped_app):
    old = load_policy(REPO_ROOT / "policies").ndas["restricted"]
    new = state.policy().ndas["restricted"]
    assert (old.version, new.version) == (1, 2) and old.text_sha256 != new.text_sha256
    user = make_user(make_org(), clearance="restricted", ndas=["network-terms"])
    # The user signed version 1 before the operator published version 2.
    db.add(NdaAcknowledgement(user_id=user.id, nda_key="restricted", version=1,
                              text_sha256=old.text_sha256, signed_name=user.display_name,
                              ip="198.51.100.1"))
    db.commit()
    assert access.readable_levels(reload(user)) == {"public", "network"}
    assert access.missing_ndas(reload(user), "restricted") == ["restricted"]

    client = bumped_app.test_client()
    login(client, reload(user))
    assert "Version 1 signed; sign version 2" in text(client.get("/ndas/"))
    home = text(client.get("/home"))
    assert "Sign: " in home and new.title in home
    page = client.get("/ndas/restricted")
    assert "Added in version 2" in text(page) and new.text_sha256 in text(page)

    # A form still carrying version 1 (opened before the change) is refused.
    response = sign(client, "restricted", user.display_name, version="1")
    assert response.status_code == 400
    assert "This NDA changed while you were reading it" in text(response)
    assert [a.version for a in acks(user, "restricted")] == [1]
    assert access.readable_levels(reload(user)) == {"public", "network"}

    response = sign(client, "restricted", user.display_name)
    assert response.status_code == 302
    versions = [(a.version, a.text_sha256) for a in acks(user, "restricted")]
    assert versions == [(1, old.text_sha256), (2, new.text_sha256)]
    assert access.readable_levels(reload(user)) == {"public", "network", "restricted"}
    assert "You still need to sign" not in text(client.get("/home"))


def test_api_lists_the_new_version_as_owed(bumped_app, api_token):
    old = load_policy(REPO_ROOT / "policies").ndas["restricted"]
    user = make_user(make_org(), clearance="restricted", ndas=["network-terms"])
    db.add(NdaAcknowledgement(user_id=user.id, nda_key="restricted", version=1,
                              text_sha256=old.text_sha256, signed_name=user.display_name))
    db.commit()
    headers = api_token(user)
    me = bumped_app.test_client().get("/api/v1/me", headers=headers).json
    assert me["readable_levels"] == ["public", "network"]
    assert [(n["key"], n["version"]) for n in me["ndas_to_acknowledge"]] == [("restricted", 2)]
