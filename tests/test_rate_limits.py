"""Rate limits counted in the real Redis (db 14, flushed before and after each test), as
production counts them across workers: sign-in, second factor, invitation acceptance,
password reset (request and link), search (page and API) and the API as a whole. Each
test shows the requests under the limit served and the one over it refused with 429."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app import state
from app.auth import service as users
from app.auth import tokens as api_tokens
from app.auth.models import User
from app.db import db
from tests.conftest import csrf_from, make_app, redis_test_url, running_app
from tests.factories import PASSWORD, login, make_org, make_user
from tests.test_auth import isolated_requests, post_code, post_login, reload, signed_in
from tests.test_password_reset import ask_for_reset, link_in, mails

__all__ = ["isolated_requests"]  # autouse: every test client is request-isolated

REDIS_URL = redis_test_url(14)
LIMIT = 3  # login, reset, search: "3 per minute"
API_LIMIT = 5
ACCOUNT_LIMIT = 5  # failed sign-ins per account from new addresses
NEW_PASSWORD = "harbour-violet-tundra-anchor"


def _flush() -> None:
    redis.Redis.from_url(REDIS_URL).flushdb()


def limited_app(migrated: str, instance_dir: Path, **overrides: Any) -> Any:
    settings = {"redis_url": REDIS_URL, "login_limit": f"{LIMIT} per minute",
                "reset_limit": f"{LIMIT} per minute", "search_limit": f"{LIMIT} per minute",
                "api_limit": f"{API_LIMIT} per minute",
                "login_account_limit": f"{ACCOUNT_LIMIT} per minute", **overrides}
    return running_app(migrated, instance_dir, **settings)


@pytest.fixture
def app(migrated: str, instance_dir: Path) -> Iterator[Flask]:
    _flush()
    with limited_app(migrated, instance_dir) as app:
        yield app
    _flush()


@pytest.fixture
def outbox(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(state.settings(), "instance_path", tmp_path)
    monkeypatch.setattr(state.settings(), "smtp_url", None)
    return tmp_path / "outbox"


def limiter_keys() -> list[str]:
    """The limiter's counters in Redis (sessions live there too, under their own prefix)."""
    return [k.decode() for k in redis.Redis.from_url(REDIS_URL).scan_iter()
            if not k.startswith(b"enclave:session:")]


def refused(response: Any, *, api: bool = False) -> bool:
    if response.status_code != 429:
        return False
    assert int(response.headers["Retry-After"]) > 0
    if api:
        return response.get_json()["error"]["code"] == "rate_limited"
    return "Too many attempts" in html.unescape(response.text)


def addr(n: int) -> dict[str, Any]:
    return {"environ_base": {"REMOTE_ADDR": f"198.51.100.{n}"}}


# ---------------------------------------------------------------- sign-in and 2FA

def test_sign_in_is_limited_per_address_in_redis(app):
    org = make_org()
    client = app.test_client()
    for n in range(LIMIT):
        response = post_login(client, f"someone{n}@{org.domain_names[0]}", "wrong-pass",
                              **addr(1))
        assert response.status_code == 401
    assert any("/198.51.100.1/auth.login/" in k for k in limiter_keys()), limiter_keys()
    user = make_user(org, mfa_on=False)
    assert refused(post_login(client, user.email, PASSWORD, **addr(1)))
    assert not signed_in(client)
    # another address is not affected
    assert post_login(app.test_client(), user.email, PASSWORD, **addr(2)).status_code == 302


def logout_all(client: FlaskClient) -> None:
    from tests.test_auth import logout

    logout(client)


def test_failures_from_an_attacker_do_not_lock_the_owner_out(app, outbox):
    """Per account and address, a slower per-account ceiling for new addresses, and an
    e-mail to the owner when it is reached (``ACCOUNT_LIMIT`` failures)."""
    user = make_user(make_org(), mfa_on=False)
    owner = app.test_client()
    assert post_login(owner, user.email, PASSWORD, **addr(50)).status_code == 302
    logout_all(owner)
    attacker = app.test_client()
    for _ in range(LIMIT):
        assert post_login(attacker, user.email, "wrong-pass", **addr(10)).status_code == 401
    assert refused(post_login(attacker, user.email, PASSWORD, **addr(10)))
    assert any(k.split("/")[-1].startswith("login-fail:") or "login-fail:" in k
               for k in limiter_keys()), limiter_keys()
    assert not any(user.email in k for k in limiter_keys() if "login-fail" in k)
    # the owner, at their usual address and at a new one, is not locked out
    assert post_login(owner, user.email, PASSWORD, **addr(50)).status_code == 302
    logout_all(owner)
    fresh = app.test_client()
    assert post_login(fresh, user.email, PASSWORD, **addr(51)).status_code == 302
    assert mails(outbox) == []
    # failures from many addresses reach the account's ceiling: new addresses are refused
    for n in range(ACCOUNT_LIMIT - LIMIT):
        assert post_login(app.test_client(), user.email, "wrong-pass",
                          **addr(60 + n)).status_code == 401
    other = app.test_client()
    assert refused(post_login(other, user.email, PASSWORD, buffered=True, **addr(70)))
    assert not signed_in(other)
    sent = mails(outbox)
    assert len(sent) == 1 and sent[0]["To"].addresses[0].addr_spec == user.email
    assert "Many failed sign-ins" in sent[0]["Subject"]
    assert "wrong-pass" not in sent[0].get_content()
    from tests.test_auth import actions

    assert actions("login_ceiling_reached")[-1].target_id == str(user.id)
    # once an hour, not once per refusal
    assert refused(post_login(app.test_client(), user.email, PASSWORD, buffered=True,
                              **addr(71)))
    assert len(mails(outbox)) == 1
    # the owner still signs in from an address they used before
    assert post_login(owner, user.email, PASSWORD, **addr(50)).status_code == 302
    assert signed_in(owner)


def test_the_account_ceiling_counts_only_failures(app):
    user = make_user(make_org(), mfa_on=False)
    for n in range(ACCOUNT_LIMIT + 1):
        client = app.test_client()
        assert post_login(client, user.email, PASSWORD, **addr(100 + n)).status_code == 302


def test_second_factor_is_limited(app):
    user = make_user(make_org())
    client = app.test_client()
    assert post_login(client, user.email, PASSWORD).status_code == 302
    for _ in range(LIMIT):
        assert post_code(client, "000000").status_code == 401
    from tests.factories import totp_now

    assert refused(post_code(client, totp_now(user)))
    assert not signed_in(client)


# ---------------------------------------------------------------- invitations

def test_invitation_acceptance_is_limited(app):
    org = make_org()
    new = users.invite(None, org, f"new@{org.domain_names[0]}", "network")
    link = f"/invite/{new.token}"
    client = app.test_client()
    csrf = csrf_from(client.get(link).text)
    form = {"username": "newbie", "display_name": "Nova Newbie", "password": NEW_PASSWORD,
            "confirm": NEW_PASSWORD, "csrf_token": csrf}
    for _ in range(LIMIT):
        response = client.post(link, data={**form, "password": "short"})
        assert response.status_code == 400
    assert refused(client.post(link, data=form))
    assert db.query(User).filter_by(username="newbie").first() is None
    # from another address the (right) form goes through
    assert client.post(link, data=form, **addr(3)).status_code == 302


# ---------------------------------------------------------------- password reset

def test_reset_requests_are_limited_per_address(app, outbox):
    org = make_org()
    client = app.test_client()
    for n in range(LIMIT):
        assert ask_for_reset(client, f"x{n}@{org.domain_names[0]}", **addr(4)).status_code == 302
    user = make_user(org, mfa_on=False)
    assert refused(ask_for_reset(client, user.email, **addr(4)))
    assert mails(outbox) == []
    assert ask_for_reset(client, user.email, **addr(5)).status_code == 302
    assert len(mails(outbox)) == 1


def test_reset_requests_are_limited_per_e_mail_address(app, outbox):
    user = make_user(make_org(), mfa_on=False)
    client = app.test_client()
    for n in range(LIMIT):
        assert ask_for_reset(client, user.email, **addr(30 + n)).status_code == 302
    assert len(mails(outbox)) == LIMIT
    # the same address, differently written, from a new client address
    assert refused(ask_for_reset(client, f"  {user.email.upper()} ", **addr(40)))
    assert len(mails(outbox)) == LIMIT


def test_the_reset_link_form_is_limited(app, outbox):
    user = make_user(make_org(), mfa_on=False)
    client = app.test_client()
    ask_for_reset(client, user.email, **addr(6))
    link = link_in(mails(outbox)[0])
    csrf = csrf_from(client.get(link).text)
    before = reload(user).password_hash
    for _ in range(LIMIT):
        response = client.post(link, data={"password": "short", "confirm": "short",
                                           "csrf_token": csrf})
        assert response.status_code == 400
    response = client.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD,
                                       "csrf_token": csrf})
    assert refused(response)
    assert reload(user).password_hash == before
    assert client.get(link).status_code == 200  # reading the form is not counted


# ---------------------------------------------------------------- search

def search(client: FlaskClient, q: str = "anything", **kw: Any) -> Any:
    return client.get("/findings/search", query_string={"q": q}, **kw)


def api_search(client: FlaskClient, headers: dict[str, str], q: str = "anything") -> Any:
    return client.get("/api/v1/findings", query_string={"q": q}, headers=headers)


def bearer(user: User) -> dict[str, str]:
    _, plaintext = api_tokens.create_token(user, "limits", scopes=["read", "write"])
    return {"Authorization": f"Bearer {plaintext}"}


def test_the_search_page_is_limited_per_user(app):
    org = make_org()
    ada, bob = make_user(org, mfa_on=False), make_user(org, mfa_on=False)
    a, b = app.test_client(), app.test_client()
    login(a, ada)
    login(b, bob)
    for _ in range(LIMIT):
        assert search(a).status_code == 200
    assert client_page_ok(a)  # the empty search form is not a search
    response = search(a)
    assert refused(response) and response.mimetype == "text/html"
    assert search(b).status_code == 200  # same address, another user
    assert search(a, **addr(7)).status_code == 429  # another address, the same user


def client_page_ok(client: FlaskClient) -> bool:
    return client.get("/findings/search").status_code == 200


def test_api_search_is_limited_per_user_and_shares_the_page_budget(app):
    org = make_org()
    ada, bob = make_user(org, mfa_on=False), make_user(org, mfa_on=False)
    client = app.test_client()
    ada_tokens = [bearer(ada), bearer(ada)]
    for n in range(LIMIT):
        assert api_search(client, ada_tokens[n % 2]).status_code == 200
    assert refused(api_search(client, ada_tokens[0]), api=True)
    assert refused(api_search(client, ada_tokens[1]), api=True)  # per user, not per token
    spec = client.get("/api/v1/openapi.json").json
    assert "429" in spec["paths"]["/findings"]["get"]["responses"]  # documented
    # a plain list (no query) is not a search
    assert client.get("/api/v1/findings", headers=ada_tokens[0]).status_code == 200
    assert api_search(client, bearer(bob)).status_code == 200
    # the page counts against the same budget
    web = app.test_client()
    login(web, ada)
    assert refused(search(web))


# ---------------------------------------------------------------- the API as a whole

def test_the_api_is_limited_per_token(app):
    user = make_user(make_org(), mfa_on=False)
    client = app.test_client()
    headers = bearer(user)
    for _ in range(API_LIMIT):
        assert client.get("/api/v1/categories", headers=headers).status_code == 200
    assert refused(client.get("/api/v1/categories", headers=headers), api=True)
    # the finding list (which also carries the search limit) still counts the API limit
    assert refused(client.get("/api/v1/findings", headers=headers), api=True)
    assert client.get("/api/v1/categories", headers=bearer(user)).status_code == 200


def test_the_finding_list_keeps_the_api_limit(app):
    user = make_user(make_org(), mfa_on=False)
    client = app.test_client()
    headers = bearer(user)
    for _ in range(API_LIMIT):
        assert client.get("/api/v1/findings", headers=headers).status_code == 200
    assert refused(client.get("/api/v1/findings", headers=headers), api=True)


# ---------------------------------------------------------------- two instances, one count

def test_two_app_instances_share_the_count_through_redis(migrated, instance_dir):
    """Two apps on one Redis, as two workers: what one counted, the other refuses. The
    second app is built after the first counted, so its limiter storage is new and knows
    only what Redis holds; emptying Redis lets it through again."""
    _flush()
    with limited_app(migrated, instance_dir) as first:
        org = make_org()
        user = make_user(org, mfa_on=False)
        client = first.test_client()
        for n in range(LIMIT):
            assert post_login(client, f"nobody{n}@{org.domain_names[0]}", "wrong-pass",
                              **addr(8)).status_code == 401
        second = make_app(migrated, instance_dir, redis_url=REDIS_URL,
                          login_limit=f"{LIMIT} per minute")
        try:
            other = second.test_client()
            assert refused(post_login(other, user.email, PASSWORD, **addr(8)))
            assert post_login(other, user.email, PASSWORD, **addr(9)).status_code == 302
            _flush()
            assert post_login(second.test_client(), user.email, PASSWORD,
                              **addr(8)).status_code == 302
        finally:
            second.extensions["enclave.engine"].dispose()
    _flush()
