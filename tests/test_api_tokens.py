"""API tokens (issue 12, item 4): scopes never beyond the owner, an expiry from the
policy, a level cap (a level that needs a second factor is read only by a token made with
a fresh second-factor proof, where the level's policy allows tokens), the last use shown
on the tokens page, and revocation when the password changes or is reset, 2FA is turned
off, the user is disabled or the organization suspended."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from app import state
from app.auth import service as users
from app.auth import tokens as api_tokens
from app.auth.models import ApiToken
from app.config import REPO_ROOT
from app.db import db, utcnow
from app.errors import ServiceError
from app.orgs import service as orgs
from tests.conftest import csrf_from, running_app
from tests.factories import PASSWORD, login, make_finding, make_org, make_user, post_form, totp_now
from tests.test_auth import NEW_PASSWORD, isolated_requests, reload, text

__all__ = ["isolated_requests"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def get(client: Any, url: str, token: str, **kw: Any) -> Any:
    return client.get(url, headers=bearer(token), **kw)


def web_token(browser: Any, name: str, scopes: tuple[str, ...] = ("read",),
              days: str = "") -> str:
    page = browser.get("/account/tokens")
    response = browser.post("/account/tokens", data={
        "name": name, "scopes": list(scopes), "days": days,
        "csrf_token": csrf_from(page.text)})
    assert response.status_code == 200, text(response)
    match = re.search(r'id="new-token">(enc_[A-Za-z0-9_-]+)<', response.text)
    assert match, "no new token on the page"
    return match.group(1)


# ---------------------------------------------------------------- scopes

def test_a_read_token_reads_and_cannot_write(client):
    user = make_user(make_org(), mfa_on=False, clearance="network")
    finding = make_finding(user)
    _, token = api_tokens.create_token(user, "reader")  # default: read only
    assert get(client, f"/api/v1/findings/{finding.id}", token).status_code == 200
    response = client.post(f"/api/v1/findings/{finding.id}/replies", json={"body": "hi"},
                           headers=bearer(token))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "insufficient_scope"
    _, writer = api_tokens.create_token(user, "writer", scopes=["read", "write"])
    response = client.post(f"/api/v1/findings/{finding.id}/replies", json={"body": "hi"},
                           headers=bearer(writer))
    assert response.status_code == 201, response.get_json()


def test_scopes_never_exceed_the_owner(client):
    member = make_user(make_org(), mfa_on=False)
    for scope in ("review", "admin"):
        with pytest.raises(ServiceError, match=scope):
            api_tokens.create_token(member, "too much", scopes=[scope])
    with pytest.raises(ServiceError, match="Unknown scope"):
        api_tokens.create_token(member, "typo", scopes=["everything"])
    assert api_tokens.allowed_scopes(member) == ["read", "write"]
    reviewer = make_user(make_org(), mfa_on=False, role="reviewer")
    _, plain = api_tokens.create_token(reviewer, "no review", scopes=["read", "write"])
    response = get(client, "/api/v1/review/queue", plain)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "insufficient_scope"
    _, full = api_tokens.create_token(reviewer, "review", scopes=["read", "review"])
    assert get(client, "/api/v1/review/queue", full).status_code == 200
    # a review decision needs the review scope even though it is a POST
    response = client.post("/api/v1/review/requests/1/decisions", json={},
                           headers=bearer(plain))
    assert response.get_json()["error"]["code"] == "insufficient_scope"
    admin = make_user(make_org(), mfa_on=False, role="admin")
    _, no_admin = api_tokens.create_token(admin, "reads", scopes=["read"])
    assert get(client, "/api/v1/admin/audit", no_admin).status_code == 403
    _, with_admin = api_tokens.create_token(admin, "admin", scopes=["admin"])
    assert get(client, "/api/v1/admin/audit", with_admin).status_code == 200
    # a role lost later is not kept by the token
    users.set_role(None, reload(reviewer), "member")
    assert get(client, "/api/v1/review/queue", full).status_code == 403


def test_the_tokens_page_offers_only_the_owners_scopes(client):
    member = make_user(make_org(), mfa_on=False)
    login(client, member)
    page = text(client.get("/account/tokens"))
    assert 'value="read"' in page and 'value="write"' in page
    assert 'value="review"' not in page and 'value="admin"' not in page
    response = post_form(client, "/account/tokens", {"name": "x", "scopes": "admin"})
    assert response.status_code == 400
    assert db.scalar(select(ApiToken).where(ApiToken.user_id == member.id)) is None


# ---------------------------------------------------------------- expiry

def test_tokens_expire_by_the_policy(client):
    user = make_user(make_org(), mfa_on=False)
    policy = state.policy()
    token, plain = api_tokens.create_token(user, "default")
    lifetime = token.expires_at - token.created_at
    assert abs(lifetime - timedelta(days=policy.token_default_days)) < timedelta(minutes=1)
    with pytest.raises(ServiceError, match="days"):
        api_tokens.create_token(user, "too long", days=policy.token_max_days + 1)
    short, short_plain = api_tokens.create_token(user, "short", days=1)
    assert get(client, "/api/v1/me", short_plain).status_code == 200
    short.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    response = get(client, "/api/v1/me", short_plain)
    assert response.status_code == 401
    assert "expired" in response.get_json()["error"]["message"]
    me = get(client, "/api/v1/me", plain).get_json()
    assert me["token"]["scopes"] == ["read"] and me["token"]["expires_at"]


def test_the_policy_sets_default_and_maximum(tmp_path):
    from app.policy import PolicyError, load_policy

    copy = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", copy)
    levels = copy / "levels.toml"
    source = levels.read_text()
    levels.write_text(source.replace("token_default_days = 30", "token_default_days = 7")
                      .replace("token_max_days = 90", "token_max_days = 14"))
    policy = load_policy(copy)
    assert (policy.token_default_days, policy.token_max_days) == (7, 14)
    levels.write_text(source.replace("token_default_days = 30", "token_default_days = 120"))
    with pytest.raises(PolicyError, match="token_default_days"):
        load_policy(copy)


# ---------------------------------------------------------------- the level cap

def test_a_token_reads_a_2fa_level_only_with_a_fresh_second_factor(client, app):
    org = make_org()
    user = make_user(org, clearance="restricted", passkey=False)
    secret = make_finding(user, level="restricted")
    login(client, user)
    fresh = web_token(client, "fresh")
    # the same session ten minutes later: its 2FA proof is no longer fresh
    with client.session_transaction() as sess:
        sess["login_at"] = int(time.time()) - 600
    page = text(client.get("/account/tokens"))
    assert "will not read levels that need a second factor" in page
    stale = web_token(client, "stale")
    rows = {t.name: t.proof for t in db.scalars(select(ApiToken))}
    assert rows == {"fresh": "totp", "stale": "password"}
    assert get(client, f"/api/v1/findings/{secret.id}", fresh).status_code == 200
    refused = get(client, f"/api/v1/findings/{secret.id}", stale)
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "mfa_required"
    assert "new token right after confirming" in refused.get_json()["error"]["message"]
    assert "restricted" not in get(client, "/api/v1/me", stale).get_json()["readable_levels"]
    # confirming (password and a code) makes the proof fresh again
    confirm = client.get("/account/confirm?next=/account/tokens")
    response = client.post("/account/confirm?next=/account/tokens", data={
        "password": PASSWORD, "code": totp_now(user, 1), "csrf_token": csrf_from(confirm.text)})
    assert response.status_code == 302
    again = web_token(client, "confirmed")
    assert get(client, f"/api/v1/findings/{secret.id}", again).status_code == 200


@pytest.fixture
def no_token_app(migrated: str, instance_dir: Path, tmp_path: Path) -> Iterator[Flask]:
    """The default policy with Restricted closed to API tokens."""
    copy = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", copy)
    levels = copy / "levels.toml"
    source = levels.read_text()
    marker = 'key = "restricted"\n'
    assert marker in source
    levels.write_text(source.replace(marker, marker + "api_tokens = false\n", 1))
    with running_app(migrated, instance_dir, policy_dir=copy) as app:
        yield app


def test_a_level_whose_policy_refuses_tokens_is_not_read_by_any_token(no_token_app):
    client = no_token_app.test_client()
    user = make_user(make_org(), clearance="restricted")
    network = make_finding(user, level="network")
    secret = make_finding(user, level="restricted")
    _, token = api_tokens.create_token(user, "passkey", proof="passkey")
    assert get(client, f"/api/v1/findings/{network.id}", token).status_code == 200
    refused = get(client, f"/api/v1/findings/{secret.id}", token)
    assert refused.status_code == 403
    assert "allows no API tokens" in refused.get_json()["error"]["message"]
    listed = get(client, "/api/v1/findings", token).get_json()["items"]
    assert [f["id"] for f in listed] == [network.id]


# ---------------------------------------------------------------- last use

def test_the_tokens_page_shows_last_use_time_and_address(client):
    user = make_user(make_org(), mfa_on=False)
    _, token = api_tokens.create_token(user, "scripts")
    login(client, user)
    assert "never" in text(client.get("/account/tokens"))
    api = client.application.test_client()
    api.get("/api/v1/me", headers=bearer(token),
            environ_base={"REMOTE_ADDR": "203.0.113.77"})
    row = db.scalar(select(ApiToken).where(ApiToken.user_id == user.id))
    db.refresh(row)
    assert row.last_used_ip == "203.0.113.77" and row.last_used_at is not None
    page = text(client.get("/account/tokens"))
    assert "203.0.113.77" in page and row.last_used_at.strftime("%Y-%m-%d %H:%M") in page
    # a use from another address is recorded at once (not only every five minutes)
    api.get("/api/v1/me", headers=bearer(token),
            environ_base={"REMOTE_ADDR": "198.51.100.5"})
    db.refresh(row)
    assert row.last_used_ip == "198.51.100.5"


# ---------------------------------------------------------------- revocation

def _live(client: Any, token: str) -> bool:
    return get(client, "/api/v1/me", token).status_code == 200


def test_a_password_change_revokes_tokens(client):
    user = make_user(make_org(), mfa_on=False)
    _, token = api_tokens.create_token(user, "t")
    users.change_password(reload(user), PASSWORD, NEW_PASSWORD)
    assert not _live(client, token)
    row = db.scalar(select(ApiToken).where(ApiToken.user_id == user.id))
    assert row.revoked_reason == "password_changed"


def test_a_password_reset_revokes_tokens(client):
    user = make_user(make_org(), mfa_on=False)
    _, token = api_tokens.create_token(user, "t")
    msg = users.request_password_reset(user.email)
    assert msg is not None
    link = re.search(r"/reset/([A-Za-z0-9_-]+)", msg.get_content()).group(1)
    users.complete_password_reset(link, NEW_PASSWORD)
    assert not _live(client, token)


def test_turning_2fa_off_revokes_tokens(client):
    user = make_user(make_org(), passkey=False)
    _, token = api_tokens.create_token(user, "t")
    users.disable_mfa(reload(user), PASSWORD, totp_now(user))
    db.commit()
    assert not _live(client, token)
    row = db.scalar(select(ApiToken).where(ApiToken.user_id == user.id))
    assert row.revoked_reason == "mfa_removed"


def test_disabling_the_user_and_suspending_the_org_revoke_tokens(client):
    org = make_org()
    user = make_user(org, mfa_on=False)
    other = make_user(org, mfa_on=False)
    _, token = api_tokens.create_token(user, "t")
    _, other_token = api_tokens.create_token(other, "t")
    users.set_active(None, reload(user), False)
    users.set_active(None, reload(user), True)
    assert not _live(client, token)  # enabling again does not revive it
    orgs.set_status(None, reload(other).org, "suspended")
    orgs.set_status(None, reload(other).org, "trusted")
    assert not _live(client, other_token)  # trusting again does not revive it
    reasons = {t.user_id: t.revoked_reason for t in db.scalars(select(ApiToken))}
    assert reasons == {user.id: "user_disabled", other.id: "org_suspended"}


# ---------------------------------------------------------------- command line

def test_cli_makes_scoped_expiring_tokens(app):
    from app.cli import enclave

    user = make_user(make_org(), mfa_on=False, role="reviewer")
    runner = app.test_cli_runner()
    result = runner.invoke(enclave, ["token", "create", user.email, "--scope", "read",
                                     "--scope", "review", "--expires-days", "7"])
    assert result.exit_code == 0, result.output
    token = db.scalar(select(ApiToken).where(ApiToken.user_id == user.id))
    assert token.scopes == "read review"
    assert abs(token.expires_at - token.created_at - timedelta(days=7)) < timedelta(minutes=1)
    result = runner.invoke(enclave, ["token", "create", user.email, "--scope", "admin"])
    assert result.exit_code != 0 and "admin" in result.output
    assert len(result.output.strip().splitlines()) == 1
