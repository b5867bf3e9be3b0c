"""SCIM 2.0 deprovisioning against the app served on a real port, driven by scim2-client
(an RFC 7644 client, over HTTP): discovery, create (only with an invitation), read,
search, replace, PATCH active (ending sessions and tokens at once), delete, the bearer
token scoped to one organization, and every call in the audit log."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_models import PatchOp, PatchOperation, SCIMException, SearchRequest
from sqlalchemy import select
from werkzeug.serving import make_server

from app.audit import AuditEntry
from app.auth import service as users
from app.auth import tokens as api_tokens
from app.auth.models import ApiToken, User
from app.cli import enclave
from app.db import db
from app.scim.models import ScimToken
from tests.conftest import CSRF_RE, make_app
from tests.factories import PASSWORD, make_org, make_user
from tests.oidc_provider import free_port


@pytest.fixture(scope="module")
def base(migrated, instance_dir) -> Iterator[str]:  # type: ignore[no-untyped-def]
    port = free_port()
    url = f"http://localhost:{port}"
    served = make_app(migrated, instance_dir, base_url=url)
    server = make_server("127.0.0.1", port, served, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        thread.join(timeout=10)
        served.extensions["enclave.engine"].dispose()


def scim_token(app, slug: str) -> str:  # type: ignore[no-untyped-def]
    result = app.test_cli_runner().invoke(enclave, ["org", "scim-token", slug])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def client_for(base: str, slug: str, token: str) -> SyncSCIMClient:
    http = Client(base_url=f"{base}/scim/v2/{slug}",
                  headers={"Authorization": f"Bearer {token}"})
    scim = SyncSCIMClient(http)
    scim.discover()
    return scim


@pytest.fixture
def world(app, base):  # type: ignore[no-untyped-def]
    org = make_org("acme", domains=["acme.example"])
    admin = make_user(org, role="org_admin", clearance="restricted")
    token = scim_token(app, "acme")
    scim = client_for(base, "acme", token)
    return org, admin, token, scim


def audit(action: str) -> list[AuditEntry]:
    db.expire_all()
    return list(db.scalars(select(AuditEntry).where(AuditEntry.action == action)
                           .order_by(AuditEntry.seq)))


def test_create_needs_an_invitation(world):
    org, admin, _, scim = world
    User_ = scim.get_resource_model("User")
    with pytest.raises(SCIMException) as refused:
        scim.create(User_(user_name="newbie@acme.example", display_name="New Bie"))
    assert refused.value.to_error().status == 403
    assert users.get_user_by_email("newbie@acme.example") is None
    assert audit("scim_create_refused")[-1].details_dict["reason"] == "no invitation"
    users.invite(admin, org, "newbie@acme.example", "network")
    created = scim.create(User_(user_name="newbie@acme.example", display_name="New Bie",
                                external_id="idp-42"))
    assert created.user_name == "newbie@acme.example" and created.active is True
    assert created.external_id == "idp-42" and created.meta.location.endswith(
        f"/Users/{created.id}")
    account = users.get_user_by_email("newbie@acme.example")
    assert account.clearance == "network" and account.password_hash is None
    with pytest.raises(SCIMException) as twice:
        scim.create(User_(user_name="newbie@acme.example"))
    assert twice.value.to_error().status == 409
    with pytest.raises(SCIMException) as outside:
        scim.create(User_(user_name="someone@elsewhere.example"))
    assert outside.value.to_error().status == 400


def test_read_search_and_replace(world):
    org, _, _, scim = world
    User_ = scim.get_resource_model("User")
    member = make_user(org, name="mona")
    other_org_user = make_user(make_org("rival"), name="rick")
    got = scim.query(User_, str(member.id))
    assert got.user_name == member.email and got.display_name == member.display_name
    found = scim.query(User_, query_parameters=SearchRequest(
        filter=f'userName eq "{member.email.upper()}"'))
    assert found.total_results == 1 and found.resources[0].id == str(member.id)
    everyone = scim.query(User_)
    assert {u.user_name for u in everyone.resources} >= {member.email}
    assert other_org_user.email not in {u.user_name for u in everyone.resources}
    with pytest.raises(SCIMException) as hidden:
        scim.query(User_, str(other_org_user.id))
    assert hidden.value.to_error().status == 404
    got.display_name = "Mona Renamed"
    replaced = scim.replace(got)
    assert replaced.display_name == "Mona Renamed"
    db.expire_all()
    assert db.get(User, member.id).display_name == "Mona Renamed"
    got.user_name = "someone-else@acme.example"
    with pytest.raises(SCIMException) as immutable:
        scim.replace(got)
    assert immutable.value.to_error().scim_type == "mutability"


def _login(base: str, user: User) -> requests.Session:
    browser = requests.Session()
    page = browser.get(f"{base}/login")
    token = CSRF_RE.search(page.text)
    browser.post(f"{base}/login", data={"email": user.email, "password": PASSWORD,
                                        "csrf_token": token.group(1) or token.group(2)})
    assert browser.get(f"{base}/home").url == f"{base}/home"
    return browser


def test_deactivating_ends_every_session_and_token_at_once(world, base):
    org, _, _, scim = world
    User_ = scim.get_resource_model("User")
    leaver = make_user(org, name="lea", mfa_on=False)
    browser = _login(base, leaver)
    _, api = api_tokens.create_token(leaver, "laptop", proof="operator")
    headers = {"Authorization": f"Bearer {api}"}
    assert requests.get(f"{base}/api/v1/me", headers=headers, timeout=10).status_code == 200
    patch = PatchOp[User_](operations=[PatchOperation[User_](
        op=PatchOperation.Op.replace_, path="active", value=False)])
    result = scim.modify(User_, str(leaver.id), patch)
    assert result is None or result.active is False
    assert browser.get(f"{base}/home").url.startswith(f"{base}/login")
    assert requests.get(f"{base}/api/v1/me", headers=headers, timeout=10).status_code == 401
    db.expire_all()
    assert db.scalar(select(ApiToken.revoked_at).where(ApiToken.user_id == leaver.id))
    disabled = [e for e in audit("user_disabled") if e.target_id == str(leaver.id)][-1]
    assert disabled.actor == "scim:acme"
    # back again (SCIM deactivated it, so SCIM may re-activate it)
    again = PatchOp[User_](operations=[PatchOperation[User_](
        op=PatchOperation.Op.replace_, value={"active": True})])
    scim.modify(User_, str(leaver.id), again)
    db.expire_all()
    assert db.get(User, leaver.id).is_active


def test_an_account_an_admin_disabled_stays_disabled(world):
    org, admin, _, scim = world
    User_ = scim.get_resource_model("User")
    member = make_user(org, name="max")
    users.set_active(admin, member, False)
    patch = PatchOp[User_](operations=[PatchOperation[User_](
        op=PatchOperation.Op.replace_, path="active", value=True)])
    with pytest.raises(SCIMException) as refused:
        scim.modify(User_, str(member.id), patch)
    assert refused.value.to_error().status == 403
    db.expire_all()
    assert not db.get(User, member.id).is_active


def test_delete_disables_and_hides_the_account(world, base):
    org, _, _, scim = world
    User_ = scim.get_resource_model("User")
    member = make_user(org, name="dee", mfa_on=False)
    browser = _login(base, member)
    scim.delete(User_, str(member.id))
    with pytest.raises(SCIMException) as gone:
        scim.query(User_, str(member.id))
    assert gone.value.to_error().status == 404
    db.expire_all()
    kept = db.get(User, member.id)
    assert kept is not None and not kept.is_active and kept.scim_deleted_at
    assert browser.get(f"{base}/home").url.startswith(f"{base}/login")
    assert audit("scim_user_deleted")[-1].target_id == str(member.id)


def test_the_token_opens_one_organization_only(app, world, base):
    org, _, token, _ = world
    make_org("rival")
    rival_token = scim_token(app, "rival")

    def status(slug: str, bearer: str | None) -> Any:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        return requests.get(f"{base}/scim/v2/{slug}/Users", headers=headers, timeout=10)

    assert status("acme", token).status_code == 200
    for slug, bearer in (("acme", rival_token), ("rival", token), ("acme", None),
                         ("acme", "scim_forged"), ("nosuchorg", token)):
        answer = status(slug, bearer)
        assert answer.status_code == 401, (slug, bearer)
        assert answer.headers["Content-Type"].startswith("application/scim+json")
        assert answer.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    fresh = scim_token(app, "acme")  # rotating revokes the old one
    assert status("acme", token).status_code == 401
    assert status("acme", fresh).status_code == 200
    assert db.scalar(select(ScimToken.token_hash).where(ScimToken.token_hash == fresh)) is None
    calls = audit("scim_request")
    assert any(e.actor == "scim:acme" and e.details_dict["method"] == "GET"
               and e.details_dict["status"] == 200 for e in calls)
    # refused calls (no valid token) have no actor: logged, not written to the audit log
    assert not any(e.details_dict["status"] == 401 for e in calls)


def test_bad_requests_get_scim_errors_and_change_nothing(world, base):
    org, _, token, _ = world
    member = make_user(org, name="bo")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    url = f"{base}/scim/v2/acme/Users/{member.id}"
    for body in ({"Operations": []},
                 {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                  "Operations": [{"op": "replace", "path": "userName", "value": "x"}]},
                 {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                  "Operations": [{"op": "replace", "path": "active", "value": "maybe"}]}):
        answer = requests.patch(url, json=body, headers=headers, timeout=10)
        assert answer.status_code == 400 and answer.json()["status"] == "400"
    bad_filter = requests.get(f"{base}/scim/v2/acme/Users",
                              params={"filter": 'name.familyName co "x"'}, headers=headers,
                              timeout=10)
    assert bad_filter.status_code == 400 and bad_filter.json()["scimType"] == "invalidFilter"
    db.expire_all()
    assert db.get(User, member.id).is_active
