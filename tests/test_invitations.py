"""Invitations: who may invite whom, at what clearance and role; the link works once,
expires, and the accept form refuses bad input without creating anything."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.auth import service as users
from app.auth.models import Invitation, User
from app.db import db, utcnow
from app.errors import Forbidden, NotFound, ServiceError
from app.orgs import service as orgs
from tests.conftest import csrf_from
from tests.factories import PASSWORD, login, make_org, make_user, post_form
from tests.test_auth import actions, isolated_requests, post_login, reload, text

__all__ = ["isolated_requests"]  # autouse: every test client is request-isolated

NEW_PASSWORD = "harbour-violet-tundra-anchor"
LINK_RE = re.compile(r'id="invite-link">[^<]*?(/invite/[A-Za-z0-9_-]+)<')


def count(model: Any) -> int:
    return db.scalar(select(func.count()).select_from(model)) or 0


def invite_via_page(client: FlaskClient, **data: str) -> Any:
    return post_form(client, "/admin/users/invite", data, form_url="/admin/users")


def link_from(response: Any) -> str:
    match = LINK_RE.search(response.get_data(as_text=True))
    assert match, "no invitation link on the page"
    return match.group(1)


def accept(client: FlaskClient, link: str, *, username: str = "newbie",
           display_name: str = "Nova Newbie", password: str = NEW_PASSWORD,
           confirm: str | None = None, csrf_page: str | None = None) -> Any:
    page = client.get(csrf_page or link)
    return client.post(link, data={
        "username": username, "display_name": display_name, "password": password,
        "confirm": password if confirm is None else confirm,
        "csrf_token": csrf_from(page.text)})


@pytest.fixture
def world(app: Any) -> dict[str, Any]:
    hq = make_org("hq", ceiling="confidential")
    acme = make_org("acme", ceiling="restricted", domains=["acme.example", "acme.org"])
    other = make_org("other", ceiling="confidential")
    return {
        "hq": hq, "acme": acme, "other": other,
        "admin": make_user(hq, role="admin", name="root"),
        "acme_admin": make_user(acme, role="org_admin", clearance="network",
                                name="acmeboss"),
    }


# ---------------------------------------------------------------- the happy path

def test_a_blank_invitation_starts_at_the_lowest_members_level(client, world):
    login(client, world["admin"])
    page = client.get("/admin/users").get_data(as_text=True)
    assert '<option selected value="network">' in page
    assert '<option selected value="public">' not in page


def test_admin_invites_and_the_link_creates_the_account(client, app, world):
    login(client, world["admin"])
    response = invite_via_page(client, email="Nova@ACME.example", org="acme",
                               clearance="restricted", role="reviewer")
    assert response.status_code == 200
    assert "Invitation for nova@acme.example created." in text(response)
    link = link_from(response)
    invitation = db.scalar(select(Invitation))
    assert invitation.email == "nova@acme.example"
    assert invitation.org_id == world["acme"].id
    assert (invitation.clearance, invitation.role) == ("restricted", "reviewer")
    assert invitation.invited_by_id == world["admin"].id
    hours = app.extensions["enclave.settings"].invitation_hours
    assert abs(invitation.expires_at - (utcnow() + timedelta(hours=hours))) < timedelta(
        minutes=1)
    assert invitation.token_hash not in link  # only the hash is stored
    assert actions("invitation_created")[-1].details_dict["email"] == "nova@acme.example"

    guest = app.test_client()
    page = guest.get(link)
    assert page.status_code == 200
    assert "nova@acme.example" in text(page) and world["acme"].name in text(page)
    response = accept(guest, link)
    assert response.status_code == 302 and response.location == "/login"
    user = db.scalar(select(User).where(User.email == "nova@acme.example"))
    assert user is not None
    assert (user.username, user.display_name) == ("newbie", "Nova Newbie")
    assert (user.org_id, user.clearance, user.role) == (world["acme"].id, "restricted",
                                                        "reviewer")
    assert user.password_hash.startswith("$argon2id$")
    assert not user.mfa_enabled
    assert reload_invitation(invitation).used_at is not None
    assert actions("invitation_accepted")[-1].actor_id == user.id
    assert post_login(guest, "nova@acme.example", NEW_PASSWORD).status_code == 302


def reload_invitation(invitation: Invitation) -> Invitation:
    db.rollback()
    fresh = db.get(Invitation, invitation.id)
    assert fresh is not None
    return fresh


def test_the_link_works_once(client, app, world):
    new = users.invite(world["admin"], world["acme"], "once@acme.example", "network")
    link = f"/invite/{new.token}"
    guest = app.test_client()
    assert accept(guest, link).status_code == 302
    before = (count(User), reload(db.scalar(select(User).where(
        User.email == "once@acme.example"))).password_hash)
    # Opening it again...
    page = guest.get(link)
    assert page.status_code == 404
    assert "This invitation link was already used. Sign in instead." in text(page)
    # ... or posting to it again with another username and password changes nothing.
    response = accept(guest, link, username="second", password="another-quiet-river-42",
                      csrf_page="/login")
    assert response.status_code == 404
    assert "already used" in text(response)
    user = db.scalar(select(User).where(User.email == "once@acme.example"))
    assert (count(User), user.password_hash) == before
    assert db.scalar(select(User).where(User.username == "second")) is None
    with pytest.raises(NotFound):
        users.accept_invitation(new.token, username="third", display_name="Third Person",
                                password="another-quiet-river-42")


def test_an_expired_link_is_refused(app, world):
    new = users.invite(world["admin"], world["acme"], "late@acme.example", "network")
    new.invitation.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    guest = app.test_client()
    link = f"/invite/{new.token}"
    page = guest.get(link)
    assert page.status_code == 404
    assert "This invitation link has expired. Ask for a new one." in text(page)
    response = accept(guest, link, csrf_page="/login")
    assert response.status_code == 404
    assert db.scalar(select(User).where(User.email == "late@acme.example")) is None
    assert reload_invitation(new.invitation).used_at is None


@pytest.mark.parametrize("token", ["nonsense", "x" * 43, "%C3%A9t%C3%A9"])
def test_an_unknown_link_is_refused(app, world, token):
    response = app.test_client().get(f"/invite/{token}")
    assert response.status_code == 404
    assert "This invitation link is not valid." in text(response)


def test_a_link_with_a_nul_character_is_refused(app, world):
    response = app.test_client().get("/invite/abc%00def")
    assert response.status_code == 400
    assert "NUL character" in text(response)


def test_a_signed_in_user_is_not_offered_the_invitation(client, world):
    new = users.invite(world["admin"], world["acme"], "mine@acme.example", "network")
    login(client, world["acme_admin"])
    response = client.get(f"/invite/{new.token}")
    assert response.status_code == 302 and response.location == "/home"
    assert "Sign out before accepting an invitation." in text(client.get("/home"))
    assert reload_invitation(new.invitation).used_at is None


def test_open_invitations_are_listed_for_the_orgs_one_manages(client, app, world):
    users.invite(world["admin"], world["acme"], "open@acme.example", "network")
    users.invite(world["admin"], world["other"], "elsewhere@other.example", "network")
    gone = users.invite(world["admin"], world["acme"], "gone@acme.example", "network")
    gone.invitation.expires_at = utcnow() - timedelta(minutes=1)
    used = users.invite(world["admin"], world["acme"], "used@acme.example", "network")
    db.commit()
    users.accept_invitation(used.token, username="used", display_name="Used Up",
                            password=NEW_PASSWORD)
    login(client, world["acme_admin"])
    page = text(client.get("/admin/users"))
    assert "open@acme.example" in page
    for hidden in ("elsewhere@other.example", "gone@acme.example"):
        assert hidden not in page, hidden
    # Still listed right after creating another one.
    response = invite_via_page(client, email="next@acme.example", org="acme",
                               clearance="network", role="member")
    assert "open@acme.example" in text(response) and "next@acme.example" in text(response)


def test_the_cli_prints_a_link_that_works(app, world):
    result = app.test_cli_runner().invoke(args=[
        "enclave", "user", "add", "cli@acme.example", "--org", "acme",
        "--clearance", "network"])
    assert result.exit_code == 0, result.output
    link = result.output.strip().splitlines()[-1]
    path = link[link.index("/invite/"):]
    assert accept(app.test_client(), path, username="cliuser").status_code == 302
    assert db.scalar(select(User).where(User.username == "cliuser")).clearance == "network"


# ---------------------------------------------------------------- what may be offered

@pytest.mark.parametrize("email", [
    "eve@evil.example", "eve@sub.acme.example", "eve@acme.example.evil.example",
    "eve@acmeexample", "not-an-email",
])
def test_an_email_outside_the_org_domains_is_refused(client, world, email):
    login(client, world["admin"])
    response = invite_via_page(client, email=email, org="acme", clearance="network",
                               role="member")
    assert response.status_code == 400
    body = text(response)
    assert ("is not in a domain of Acme Research (acme.example, acme.org)" in body
            or "Not a valid e-mail address" in body), body
    assert count(Invitation) == 0
    assert "invite-link" not in body


def test_any_domain_of_the_org_may_be_invited(client, world):
    login(client, world["admin"])
    response = invite_via_page(client, email="bo@acme.org", org="acme",
                               clearance="network", role="member")
    assert response.status_code == 200 and link_from(response)


def test_clearance_above_the_org_ceiling_is_refused(client, world):
    login(client, world["admin"])
    response = invite_via_page(client, email="hi@acme.example", org="acme",
                               clearance="confidential", role="member")
    assert response.status_code == 400
    assert ("Clearance 'confidential' is above what you may grant in acme ('restricted')."
            in text(response))
    assert count(Invitation) == 0


def test_unknown_level_or_role_is_refused(client, world):
    login(client, world["admin"])
    for data in ({"clearance": "cosmic", "role": "member"},
                 {"clearance": "network", "role": "overlord"}):
        response = invite_via_page(client, email="x@acme.example", org="acme", **data)
        assert response.status_code == 400
        assert "Not a valid choice" in text(response)
    assert count(Invitation) == 0


def test_an_existing_account_is_not_invited_again(client, world):
    login(client, world["admin"])
    response = invite_via_page(client, email=world["acme_admin"].email, org="acme",
                               clearance="network", role="member")
    assert response.status_code == 400
    assert "already has an account" in text(response)
    assert count(Invitation) == 0


def test_org_admin_invites_into_their_own_org(client, app, world):
    login(client, world["acme_admin"])
    page = client.get("/admin/users")
    assert page.status_code == 200
    options = re.findall(r'<option[^>]*value="([^"]+)"', page.text)
    assert "hq" not in options and "other" not in options and "admin" not in options
    response = invite_via_page(client, email="mate@acme.example", org="acme",
                               clearance="network", role="org_admin")
    assert response.status_code == 200
    guest = app.test_client()
    assert accept(guest, link_from(response), username="mate").status_code == 302
    mate = db.scalar(select(User).where(User.username == "mate"))
    assert (mate.org_id, mate.clearance, mate.role) == (world["acme"].id, "network",
                                                        "org_admin")


def test_org_admin_cannot_invite_into_another_org(client, world):
    login(client, world["acme_admin"])
    response = invite_via_page(client, email="spy@hq.example", org="hq",
                               clearance="network", role="member")
    assert response.status_code == 400
    assert count(Invitation) == 0
    with pytest.raises(Forbidden):
        users.invite(world["acme_admin"], world["hq"], "spy@hq.example", "network")
    assert count(Invitation) == 0


def test_org_admin_cannot_invite_above_their_own_clearance(client, world):
    login(client, world["acme_admin"])  # clearance network, org ceiling restricted
    response = invite_via_page(client, email="up@acme.example", org="acme",
                               clearance="restricted", role="member")
    assert response.status_code == 400
    assert "above what you may grant in acme ('network')" in text(response)
    assert count(Invitation) == 0


def test_org_admin_limit_is_their_effective_clearance(app, world):
    # Own clearance confidential, but the org ceiling (restricted) is what counts.
    boss = make_user(world["acme"], role="org_admin", clearance="confidential")
    assert users.grantable_clearance(boss, world["acme"]) == "restricted"
    users.invite(boss, world["acme"], "ok@acme.example", "restricted")
    with pytest.raises(ServiceError, match="above what you may grant"):
        users.invite(boss, world["acme"], "no@acme.example", "confidential")
    assert count(Invitation) == 1


def test_org_admin_never_grants_the_admin_role(client, world):
    login(client, world["acme_admin"])
    response = invite_via_page(client, email="boss@acme.example", org="acme",
                               clearance="network", role="admin")
    assert response.status_code == 400
    assert "Not a valid choice" in text(response)
    with pytest.raises(Forbidden, match="cannot grant the role 'admin'"):
        users.invite(world["acme_admin"], world["acme"], "boss@acme.example", "network",
                     "admin")
    assert count(Invitation) == 0


def test_org_admin_of_a_suspended_org_cannot_invite(world):
    orgs.set_status(None, world["acme"], "suspended")
    with pytest.raises(Forbidden):
        users.invite(reload(world["acme_admin"]), world["acme"], "x@acme.example", "public")
    assert count(Invitation) == 0


@pytest.mark.parametrize("role", ["member", "reviewer"])
def test_members_and_reviewers_cannot_reach_member_management(client, world, role):
    user = make_user(world["acme"], role=role)
    login(client, user)
    assert client.get("/admin/users").status_code == 404
    assert client.get(f"/admin/users/{world['acme_admin'].id}").status_code == 404
    response = post_form(client, "/admin/users/invite", {
        "email": "x@acme.example", "org": "acme", "clearance": "network", "role": "member"},
        form_url="/account")
    assert response.status_code == 404
    assert count(Invitation) == 0
    with pytest.raises(Forbidden):
        users.invite(reload(user), world["acme"], "x@acme.example", "network")


def test_invitation_clearance_follows_a_lowered_ceiling(app, world):
    new = users.invite(world["admin"], world["acme"], "low@acme.example", "restricted")
    orgs.set_ceiling(None, world["acme"], "network")
    user = users.accept_invitation(new.token, username="low", display_name="Low Level",
                                   password=NEW_PASSWORD)
    assert user.clearance == "network"


# ---------------------------------------------------------------- the accept form

@pytest.mark.parametrize(("fields", "message"), [
    ({"username": "A b!"}, "A username is 3-40 letters, digits, '.', '_' or '-'."),
    ({"username": "ab"}, "A username is 3-40 letters"),
    ({"username": "taken"}, "That username is taken."),
    ({"display_name": "X"}, "Give your full name (2-120 characters)."),
    ({"password": "short-pw"}, "Use at least 12 characters."),
    ({"password": "password1234567"}, "similar to a commonly used password"),
    ({"password": "weak@acme.example-Zebra-Quasar-91"}, "e-mail address"),
    ({"confirm": NEW_PASSWORD + "!"}, "The passwords differ."),
    ({"username": ""}, "This field is required."),
])
def test_accept_form_errors_re_render_and_create_nothing(app, world, fields, message):
    make_user(world["hq"], name="taken")
    new = users.invite(world["admin"], world["acme"], "weak@acme.example", "network")
    link = f"/invite/{new.token}"
    guest = app.test_client()
    users_before = count(User)
    response = accept(guest, link, **fields)
    assert response.status_code == 400
    body = text(response)
    assert message in body
    assert 'name="username"' in body and "weak@acme.example" in body  # the form again
    assert count(User) == users_before
    assert reload_invitation(new.invitation).used_at is None
    assert not actions("invitation_accepted")
    # The same link still works once the input is right.
    assert accept(guest, link, username="fine").status_code == 302


def test_accept_form_needs_csrf(app, world):
    new = users.invite(world["admin"], world["acme"], "csrf@acme.example", "network")
    response = app.test_client().post(f"/invite/{new.token}", data={
        "username": "csrf", "display_name": "Cee Ess", "password": NEW_PASSWORD,
        "confirm": NEW_PASSWORD})
    assert response.status_code == 400
    assert count(User) == 2  # the world's two users only
    assert reload_invitation(new.invitation).used_at is None


def test_old_password_of_nobody_does_not_sign_in(app, world):
    # The new account signs in only with the password chosen on the accept form.
    new = users.invite(world["admin"], world["acme"], "pw@acme.example", "network")
    guest = app.test_client()
    accept(guest, f"/invite/{new.token}", username="pw")
    assert post_login(guest, "pw@acme.example", PASSWORD).status_code == 401


# ---------------------------------------------------------------- the grant must still stand

def test_an_invitation_from_a_since_disabled_inviter_is_refused(app, world):
    new = users.invite(world["acme_admin"], world["acme"], "orphan@acme.example", "network")
    users.set_active(None, world["acme_admin"], False)
    guest = app.test_client()
    link = f"/invite/{new.token}"
    page = guest.get(link)
    assert page.status_code == 404
    assert "the account that sent it has been disabled" in text(page)
    response = accept(guest, link, csrf_page="/login")
    assert response.status_code == 404
    assert "has been disabled" in text(response)
    assert db.scalar(select(User).where(User.email == "orphan@acme.example")) is None
    assert reload_invitation(new.invitation).used_at is None
    with pytest.raises(NotFound):
        users.accept_invitation(new.token, username="orphan", display_name="Or Phan",
                                password=NEW_PASSWORD)
    # The inviter back in good standing: the invitation works again.
    users.set_active(None, reload(world["acme_admin"]), True)
    assert accept(guest, link, username="orphan").status_code == 302


@pytest.mark.parametrize("status", ["suspended", "pending"])
def test_an_invitation_into_an_org_no_longer_trusted_is_refused(app, world, status):
    new = users.invite(world["admin"], world["acme"], "lapsed@acme.example", "network")
    orgs.set_status(None, world["acme"], status)
    guest = app.test_client()
    link = f"/invite/{new.token}"
    page = guest.get(link)
    assert page.status_code == 404
    assert "Acme Research is not currently trusted on Enclave" in text(page)
    response = accept(guest, link, csrf_page="/login")
    assert response.status_code == 404
    assert db.scalar(select(User).where(User.email == "lapsed@acme.example")) is None
    assert reload_invitation(new.invitation).used_at is None
    assert not actions("invitation_accepted")
