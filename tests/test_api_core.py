from __future__ import annotations

from sqlalchemy import select

from app.auth.models import ApiToken
from app.db import db
from app.ndas.models import NdaAcknowledgement
from app.orgs.models import Organization
from tests.factories import make_org, make_user


def test_requests_without_or_with_bad_token_get_json_401(client, app):
    for headers in ({}, {"Authorization": "Bearer enc_nope"}, {"Authorization": "Basic x"}):
        response = client.get("/api/v1/me", headers=headers)
        assert response.status_code == 401
        assert response.json["error"]["code"] == "unauthorized"


def test_cookie_session_is_not_accepted_by_the_api(client, app):
    from tests.factories import login

    user = make_user(make_org(), mfa_on=False)
    login(client, user)
    assert client.get("/home").status_code == 200
    assert client.get("/api/v1/me").status_code == 401


def test_me_reports_clearance_levels_and_owed_ndas(client, app, api_token):
    org = make_org(ceiling="restricted")
    user = make_user(org, clearance="confidential", ndas=["network-terms"], mfa_on=False)
    body = client.get("/api/v1/me", headers=api_token(user)).json
    assert body["clearance"] == "confidential"
    assert body["effective_clearance"] == "restricted"
    assert body["readable_levels"] == ["public", "network"]
    assert [n["key"] for n in body["ndas_to_acknowledge"]] == ["restricted"]
    assert body["organization"]["slug"] == org.slug


def test_token_is_stored_hashed_and_revocation_works(client, app, api_token):
    user = make_user(make_org())
    headers = api_token(user)
    plaintext = headers["Authorization"].split()[1]
    row = db.scalar(select(ApiToken).where(ApiToken.user_id == user.id))
    assert plaintext not in (row.token_hash, row.prefix) and len(row.token_hash) == 64
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    from app.auth.tokens import revoke_token

    revoke_token(user, row.id)
    assert client.get("/api/v1/me", headers=headers).status_code == 401


def test_levels_in_policy_order(client, app, api_token):
    user = make_user(make_org())
    items = client.get("/api/v1/levels", headers=api_token(user)).json["items"]
    assert [i["key"] for i in items] == ["public", "network", "restricted", "confidential"]
    assert items[2]["mfa"] is True and items[3]["requires_compartment"] is True


def test_nda_acknowledge_through_api(client, app, api_token):
    user = make_user(make_org(), ndas=["network-terms"])
    headers = api_token(user)
    listing = client.get("/api/v1/ndas", headers=headers).json["items"]
    restricted = next(i for i in listing if i["key"] == "restricted")
    assert restricted["current"] is False
    bad = client.post("/api/v1/ndas/restricted/acknowledge", json={"signed_name": "Someone Else"},
                      headers=headers)
    assert bad.status_code == 400 and "full name" in bad.json["error"]["message"]
    missing = client.post("/api/v1/ndas/restricted/acknowledge", json={}, headers=headers)
    assert missing.status_code == 400 and missing.json["error"]["code"] == "missing_field"
    not_json = client.post("/api/v1/ndas/restricted/acknowledge", data="x", headers=headers)
    assert not_json.status_code == 400 and not_json.json["error"]["code"] == "bad_json"
    assert db.scalar(select(NdaAcknowledgement).where(
        NdaAcknowledgement.user_id == user.id, NdaAcknowledgement.nda_key == "restricted")) is None
    ok = client.post("/api/v1/ndas/restricted/acknowledge",
                     json={"signed_name": user.display_name}, headers=headers)
    assert ok.status_code == 201
    ack = db.scalar(select(NdaAcknowledgement).where(
        NdaAcknowledgement.user_id == user.id, NdaAcknowledgement.nda_key == "restricted"))
    assert ack.text_sha256 == restricted["text_sha256"] and ack.signed_name == user.display_name
    me = client.get("/api/v1/me", headers=headers).json
    assert "restricted" in me["readable_levels"]
    unknown = client.post("/api/v1/ndas/nope/acknowledge", json={"signed_name": "x"},
                          headers=headers)
    assert unknown.status_code == 404


def test_admin_org_endpoints(client, app, api_token):
    admin = make_user(make_org("hq"), role="admin")
    member = make_user(make_org())
    headers = api_token(admin)
    assert client.get("/api/v1/admin/orgs", headers=api_token(member)).status_code == 403
    created = client.post("/api/v1/admin/orgs", headers=headers, json={
        "slug": "newlab", "name": "New Lab", "domains": ["newlab.example"],
        "ceiling": "restricted"})
    assert created.status_code == 201 and created.json["status"] == "pending"
    dup = client.post("/api/v1/admin/orgs", headers=headers, json={
        "slug": "newlab", "name": "Again", "domains": ["other.example"], "ceiling": "network"})
    assert dup.status_code == 400 and "taken" in dup.json["error"]["message"]
    patched = client.patch("/api/v1/admin/orgs/newlab", headers=headers,
                           json={"status": "trusted", "ceiling": "confidential"})
    assert patched.status_code == 200
    assert patched.json["status"] == "trusted" and patched.json["ceiling"] == "confidential"
    bad = client.patch("/api/v1/admin/orgs/newlab", headers=headers,
                       json={"status": "suspended", "ceiling": "top-secret"})
    assert bad.status_code == 400
    org = db.scalar(select(Organization).where(Organization.slug == "newlab"))
    db.refresh(org)
    assert org.status == "trusted" and org.ceiling == "confidential"  # nothing half-applied
    assert client.patch("/api/v1/admin/orgs/ghost", headers=headers,
                        json={"status": "trusted"}).status_code == 404
    listing = client.get("/api/v1/admin/orgs?per_page=1&page=2", headers=headers).json
    assert listing["per_page"] == 1 and listing["total"] == 3 and listing["pages"] == 3
    assert client.get("/api/v1/admin/orgs?page=zero", headers=headers).status_code == 400


def test_suspending_org_kills_its_tokens_immediately(client, app, api_token):
    org = make_org()
    user = make_user(org)
    headers = api_token(user)
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    org.status = "suspended"
    db.commit()
    assert client.get("/api/v1/me", headers=headers).status_code == 401


def test_admin_audit_endpoint(client, app, api_token):
    admin = make_user(make_org(), role="admin")
    headers = api_token(admin)
    body = client.get("/api/v1/admin/audit?action=token_created", headers=headers).json
    assert body["total"] == 1 and body["items"][0]["action"] == "token_created"


def test_openapi_lists_every_api_rule(client, app):
    spec = client.get("/api/v1/openapi.json").json
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = rule.rule.removeprefix("/api/v1")
        path = path.replace("<int:", "{").replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (method, path) in documented, f"{method} {path} missing from the spec"


def test_unknown_api_path_is_json_404(client, app, api_token):
    user = make_user(make_org())
    response = client.get("/api/v1/nothing-here", headers=api_token(user))
    assert response.status_code in (401, 404)
    assert "error" in response.json
