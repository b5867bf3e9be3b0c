"""Admin pages: the organization whitelist (add, edit all-or-nothing, suspend, trust)
and member management (clearance, role, disabling) with who may do what."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app import access
from app.auth import service as users
from app.auth.models import User
from app.db import db
from app.errors import Forbidden
from app.orgs.models import Organization, OrgDomain
from tests.factories import login, make_org, make_user, post_form
from tests.test_auth import actions, isolated_requests, reload, signed_in, text

__all__ = ["isolated_requests"]  # autouse: every test client is request-isolated


def org(slug: str) -> Organization:
    db.rollback()
    found = db.scalar(select(Organization).where(Organization.slug == slug))
    assert found is not None
    return found


def snapshot(slug: str) -> tuple[Any, ...]:
    o = org(slug)
    return (o.name, tuple(o.domain_names), o.ceiling, o.status, o.status_changed_at)


def org_count() -> int:
    return db.scalar(select(func.count()).select_from(Organization)) or 0


def add_org(client: FlaskClient, **data: Any) -> Any:
    form = {"slug": "newlab", "name": "New Lab", "domains": "newlab.example",
            "ceiling": "restricted"}
    form.update(data)
    return post_form(client, "/admin/orgs/", form)


def edit_org(client: FlaskClient, slug: str, **data: Any) -> Any:
    o = org(slug)
    form = {"name": o.name, "domains": "\n".join(o.domain_names), "ceiling": o.ceiling,
            "status": o.status}
    form.update(data)
    return post_form(client, f"/admin/orgs/{slug}", form)


@pytest.fixture
def admin(app: Any) -> User:
    return make_user(make_org("hq", ceiling="confidential"), role="admin", name="root")


@pytest.fixture
def admin_client(client: FlaskClient, admin: User) -> FlaskClient:
    assert login(client, admin).status_code == 302
    return client


# ---------------------------------------------------------------- who may see

@pytest.mark.parametrize("role", ["member", "reviewer", "org_admin"])
def test_non_admins_get_404_on_admin_pages(client, admin, role):
    make_org("target")
    user = make_user(make_org(), role=role)
    login(client, user)
    for url in ("/admin/orgs/", "/admin/orgs/target", "/admin/orgs/hq", "/admin/audit"):
        assert client.get(url).status_code == 404, url
    before = snapshot("target")
    for url, data in (("/admin/orgs/", {"slug": "sneaky", "name": "Sneaky",
                                        "domains": "sneaky.example", "ceiling": "network"}),
                      ("/admin/orgs/target", {"name": "Taken Over", "domains": "x.example",
                                              "ceiling": "public", "status": "suspended"})):
        response = post_form(client, url, data, form_url="/account")
        assert response.status_code == 404, url
    assert snapshot("target") == before
    assert db.scalar(select(Organization).where(Organization.slug == "sneaky")) is None


def test_anonymous_visitors_are_sent_to_sign_in(client, admin):
    for url in ("/admin/orgs/", "/admin/users", "/admin/audit"):
        response = client.get(url)
        assert response.status_code == 302 and response.location.startswith("/login"), url


def test_admin_sees_every_org_with_member_counts(admin_client):
    make_user(make_org("acme"), name="alice")
    page = text(admin_client.get("/admin/orgs/"))
    assert "Acme Research" in page and "Hq Research" in page


# ---------------------------------------------------------------- adding an org

def test_admin_adds_a_pending_org(admin_client, admin):
    response = add_org(admin_client, domains="NewLab.example\nnewlab.example\nlab2.example")
    assert response.status_code == 302 and response.location == "/admin/orgs/"
    assert "Added New Lab (pending)." in text(admin_client.get("/admin/orgs/"))
    new = org("newlab")
    assert (new.name, new.status, new.ceiling) == ("New Lab", "pending", "restricted")
    assert new.domain_names == ["lab2.example", "newlab.example"]
    entry = actions("org_added")[-1]
    assert entry.actor_id == admin.id and entry.target_id == "newlab"


def test_admin_adds_a_trusted_org(admin_client):
    assert add_org(admin_client, trusted="y").status_code == 302
    assert org("newlab").status == "trusted"


@pytest.mark.parametrize(("data", "message"), [
    ({"slug": "Bad Slug!"}, "A slug is 1-64 lowercase letters, digits and '-'."),
    ({"slug": "-dash"}, "A slug is 1-64 lowercase letters"),
    ({"slug": "hq"}, "The slug 'hq' is taken."),
    ({"name": "X"}, "A name has 2-200 characters."),
    ({"domains": "not a domain"}, "'not' is not a domain name."),
    ({"domains": "exa_mple.com"}, "'exa_mple.com' is not a domain name."),
    ({"domains": "lab.localhost"}, "lab.localhost cannot be used for e-mail"),
    ({"domains": "ok.example hq.example"}, "hq.example already belongs to hq."),
    ({"domains": "HQ.example."}, "hq.example already belongs to hq."),
    ({"domains": ""}, "This field is required."),
    ({"ceiling": "cosmic"}, "Not a valid choice."),
    ({"slug": ""}, "This field is required."),
])
def test_add_org_errors_re_render_and_add_nothing(admin_client, data, message):
    before = org_count()
    domains_before = db.scalar(select(func.count()).select_from(OrgDomain))
    response = add_org(admin_client, **data)
    assert response.status_code == 400
    body = text(response)
    assert message in body
    assert 'action="/admin/orgs/"' in body  # the form again, with what was typed
    if data.get("name", "") == "" and data.get("slug"):
        assert f'value="{data["slug"]}"' in body
    assert org_count() == before
    assert db.scalar(select(func.count()).select_from(OrgDomain)) == domains_before
    assert not actions("org_added")


def test_add_org_needs_csrf(admin_client):
    response = admin_client.post("/admin/orgs/", data={
        "slug": "nocsrf", "name": "No Csrf", "domains": "nocsrf.example",
        "ceiling": "network"})
    assert response.status_code == 400
    assert db.scalar(select(Organization).where(Organization.slug == "nocsrf")) is None


# ---------------------------------------------------------------- editing an org

def test_admin_edits_every_field(admin_client, admin):
    make_org("acme", ceiling="restricted", domains=["acme.example", "old.example"])
    response = edit_org(admin_client, "acme", name="Acme Labs",
                        domains="acme.example\nnew.example", ceiling="network",
                        status="suspended")
    assert response.status_code == 302
    assert "Saved Acme Labs." in text(admin_client.get("/admin/orgs/"))
    acme = org("acme")
    assert (acme.name, acme.domain_names, acme.ceiling, acme.status) == (
        "Acme Labs", ["acme.example", "new.example"], "network", "suspended")
    assert [e.details_dict["new"] for e in actions("org_ceiling_changed")] == ["network"]
    assert [e.details_dict["new"] for e in actions("org_status_changed")] == ["suspended"]
    assert actions("org_updated")[-1].details_dict["name"] == "Acme Labs"
    # The removed domain is free for another organization now.
    other = add_org(admin_client, slug="oldco", domains="old.example")
    assert other.status_code == 302


@pytest.mark.parametrize(("data", "message"), [
    ({"domains": "acme.example\nnot a domain"}, "is not a domain name."),
    ({"domains": "acme.example\nhq.example"}, "hq.example already belongs to hq."),
    ({"name": "X"}, "A name has 2-200 characters."),
    ({"ceiling": "cosmic"}, "Not a valid choice."),
    ({"status": "deleted"}, "Not a valid choice."),
    ({"domains": ""}, "This field is required."),
])
def test_edit_org_is_all_or_nothing(admin_client, data, message):
    make_org("acme", ceiling="restricted")
    before = snapshot("acme")
    change = {"name": "Renamed Labs", "domains": "acme.example\nextra.example",
              "ceiling": "network", "status": "suspended"}
    change.update(data)
    response = edit_org(admin_client, "acme", **change)
    assert response.status_code == 400
    assert message in text(response)
    assert snapshot("acme") == before
    assert db.scalar(select(OrgDomain).where(OrgDomain.domain == "extra.example")) is None
    for action in ("org_updated", "org_ceiling_changed", "org_status_changed"):
        assert not actions(action), action


def test_edit_of_an_unknown_org_is_404(admin_client):
    assert admin_client.get("/admin/orgs/nope").status_code == 404


def test_admin_cannot_suspend_their_own_org(admin_client):
    before = snapshot("hq")
    response = edit_org(admin_client, "hq", status="suspended")
    assert response.status_code == 400
    assert "You cannot suspend your own organization." in text(response)
    assert snapshot("hq") == before
    assert signed_in(admin_client)


def test_suspend_then_trust_again(admin_client, app):
    acme = make_org("acme", ceiling="restricted")
    member = make_user(acme, clearance="restricted")
    assert edit_org(admin_client, "acme", status="suspended").status_code == 302
    assert org("acme").status == "suspended"
    assert access.readable_levels(reload(member)) == set()
    assert edit_org(admin_client, "acme", status="trusted").status_code == 302
    assert org("acme").status == "trusted"
    assert access.readable_levels(reload(member)) == {"public", "network", "restricted"}
    changes = [(e.details_dict["old"], e.details_dict["new"])
               for e in actions("org_status_changed")]
    assert changes == [("trusted", "suspended"), ("suspended", "trusted")]
    # A member can sign in again once trusted.
    assert login(app.test_client(), reload(member)).status_code == 302


def test_trusting_a_pending_org_lets_its_members_in(admin_client, app):
    make_org("fresh", status="pending")
    member = make_user(org("fresh"), mfa_on=False)
    assert login(app.test_client(), member).status_code == 401
    assert edit_org(admin_client, "fresh", status="trusted").status_code == 302
    assert login(app.test_client(), reload(member)).status_code == 302


def test_lowering_the_ceiling_lowers_effective_clearance(admin_client):
    acme = make_org("acme", ceiling="confidential")
    member = make_user(acme, clearance="confidential")
    assert access.effective_clearance(reload(member)) == "confidential"
    assert edit_org(admin_client, "acme", ceiling="network").status_code == 302
    fresh = reload(member)
    assert fresh.clearance == "confidential"
    assert access.effective_clearance(fresh) == "network"
    assert access.readable_levels(fresh) == {"public", "network"}


def test_unchanged_edit_writes_no_audit_entry(admin_client):
    make_org("acme")
    assert edit_org(admin_client, "acme").status_code == 302
    for action in ("org_updated", "org_ceiling_changed", "org_status_changed"):
        assert not actions(action), action


# ---------------------------------------------------------------- member management

def edit_user(client: FlaskClient, user: User, **data: str) -> Any:
    fresh = reload(user)
    form = {"clearance": fresh.clearance, "role": fresh.role}
    form.update(data)
    return post_form(client, f"/admin/users/{user.id}", form)


@pytest.fixture
def acme(app: Any) -> dict[str, Any]:
    acme = make_org("acme", ceiling="restricted")
    return {"org": acme,
            "boss": make_user(acme, role="org_admin", clearance="network", name="boss"),
            "member": make_user(acme, clearance="public", name="mem", mfa_on=False)}


def test_admin_changes_clearance_and_role(admin_client, admin, acme):
    response = edit_user(admin_client, acme["member"], clearance="restricted",
                         role="reviewer")
    assert response.status_code == 302
    fresh = reload(acme["member"])
    assert (fresh.clearance, fresh.role) == ("restricted", "reviewer")
    assert actions("clearance_changed")[-1].details_dict == {
        "email": fresh.email, "old": "public", "new": "restricted"}
    assert actions("role_changed")[-1].details_dict["new"] == "reviewer"


def test_admin_cannot_grant_above_the_org_ceiling(admin_client, acme):
    response = edit_user(admin_client, acme["member"], clearance="confidential")
    assert response.status_code == 400
    assert "above what you may grant in acme ('restricted')" in text(response)
    assert reload(acme["member"]).clearance == "public"


def test_org_admin_sees_only_their_own_members(client, admin, acme):
    stranger = make_user(make_org("other"), name="stranger")
    login(client, acme["boss"])
    page = text(client.get("/admin/users"))
    assert acme["member"].email in page
    assert stranger.email not in page and admin.email not in page
    assert client.get(f"/admin/users/{stranger.id}").status_code == 404
    response = post_form(client, f"/admin/users/{stranger.id}",
                         {"clearance": "public", "role": "member"}, form_url="/admin/users")
    assert response.status_code == 404
    response = post_form(client, f"/admin/users/{stranger.id}/active", {"active": "0"},
                         form_url="/admin/users")
    assert response.status_code == 404
    assert reload(stranger).is_active and reload(stranger).clearance == "confidential"


def test_org_admin_manages_members_up_to_their_own_clearance(client, acme):
    login(client, acme["boss"])
    assert edit_user(client, acme["member"], clearance="network").status_code == 302
    assert reload(acme["member"]).clearance == "network"
    response = edit_user(client, acme["member"], clearance="restricted")
    assert response.status_code == 400
    assert "above what you may grant in acme ('network')" in text(response)
    assert reload(acme["member"]).clearance == "network"
    response = edit_user(client, acme["member"], role="admin")
    assert response.status_code == 400 and "Not a valid choice" in text(response)
    assert reload(acme["member"]).role == "member"


def test_org_admin_cannot_change_themselves(client, acme):
    login(client, acme["boss"])
    response = edit_user(client, acme["boss"], clearance="public")
    assert response.status_code == 400
    assert "You cannot change your own clearance." in text(response)
    response = edit_user(client, acme["boss"], role="member")
    assert response.status_code == 400
    assert "You cannot change your own role." in text(response)
    fresh = reload(acme["boss"])
    assert (fresh.clearance, fresh.role) == ("network", "org_admin")


def test_org_admin_cannot_touch_an_admin_of_their_org(client, acme):
    site_admin = make_user(acme["org"], role="admin", clearance="network", name="siteadmin")
    login(client, acme["boss"])
    for change in ({"clearance": "public"}, {"role": "member"},
                   {"clearance": "public", "role": "member"}):
        response = edit_user(client, site_admin, **change)
        assert response.status_code == 400, change
        assert "Only an admin can change an admin's" in text(response)
        fresh = reload(site_admin)
        assert (fresh.clearance, fresh.role) == ("network", "admin"), change
    response = post_form(client, f"/admin/users/{site_admin.id}/active", {"active": "0"},
                         form_url=f"/admin/users/{site_admin.id}")
    assert response.status_code == 302
    assert "You cannot manage this account." in text(client.get(response.location))
    assert reload(site_admin).is_active
    assert not actions("clearance_changed") and not actions("role_changed")


def test_user_edit_is_all_or_nothing(admin_client, acme):
    # A fine role with a refused clearance changes neither (the reverse case, a fine
    # clearance with a refused role, is the admin-target test above).
    response = edit_user(admin_client, acme["member"], clearance="confidential",
                         role="org_admin")
    assert response.status_code == 400
    fresh = reload(acme["member"])
    assert (fresh.clearance, fresh.role) == ("public", "member")
    assert not actions("clearance_changed") and not actions("role_changed")


def test_service_update_checks_both_changes_before_writing(app, acme):
    boss, member = acme["boss"], acme["member"]
    site_admin = make_user(acme["org"], role="admin", clearance="public", name="sa")
    with pytest.raises(Forbidden):
        users.update_user(boss, site_admin, clearance="network", role="member")
    with pytest.raises(Forbidden):
        users.update_user(boss, member, clearance="network", role="admin")
    db.rollback()
    assert (reload(member).clearance, reload(member).role) == ("public", "member")
    assert (reload(site_admin).clearance, reload(site_admin).role) == ("public", "admin")
    users.update_user(boss, reload(member), clearance="network", role="reviewer")
    assert (reload(member).clearance, reload(member).role) == ("network", "reviewer")


def test_org_admin_disables_and_enables_a_member(client, app, acme):
    victim_client = app.test_client()
    login(victim_client, acme["member"])
    login(client, acme["boss"])
    response = post_form(client, f"/admin/users/{acme['member'].id}/active", {"active": "0"},
                         form_url=f"/admin/users/{acme['member'].id}")
    assert response.status_code == 302
    assert not reload(acme["member"]).is_active
    assert not signed_in(victim_client)
    assert login(victim_client, reload(acme["member"])).status_code == 401
    response = post_form(client, f"/admin/users/{acme['member'].id}/active", {"active": "1"},
                         form_url=f"/admin/users/{acme['member'].id}")
    assert response.status_code == 302
    assert reload(acme["member"]).is_active
    assert login(victim_client, reload(acme["member"])).status_code == 302
    assert [e.action for e in actions("user_disabled") + actions("user_enabled")] == [
        "user_disabled", "user_enabled"]


def test_disable_needs_csrf(admin_client, acme):
    response = admin_client.post(f"/admin/users/{acme['member'].id}/active",
                                 data={"active": "0"})
    assert response.status_code == 400
    assert reload(acme["member"]).is_active


def test_audit_log_page_for_admins(admin_client):
    page = admin_client.get("/admin/audit")
    assert page.status_code == 200 and "login" in text(page)
    verified = admin_client.get("/admin/audit?verify=1")
    assert "Chain intact" in text(verified)


def test_audit_log_filters_and_readable_details(app, admin, admin_client):
    """Filters by actor (e-mail, user name or #id), action, target and day; details are a
    key/value list, not raw JSON."""
    from datetime import timedelta

    from app import audit
    from app.db import utcnow

    other = make_user(make_org("filterorg"), name="filterer")
    audit.record("token_created", actor=other, target_type="api_token", target_id="77",
                 name="ci token", scopes=["read"])
    audit.record("org_renewed", actor="system", target_type="org", target_id="filterorg")
    db.commit()

    def rows(query: str) -> list[str]:
        page = admin_client.get("/admin/audit" + query)
        assert page.status_code == 200, query
        return re.findall(r'<span class="action">([^<]+)</span>', page.text)

    assert rows("?actor=filterer") == ["token created"]
    assert rows(f"?actor=%23{other.id}") == ["token created"]
    assert rows(f"?actor={other.email.upper()}") == ["token created"]
    assert rows("?actor=system") == ["org renewed"]
    assert rows("?actor=nobody-here") == []
    assert rows("?action=token_created") == ["token created"]
    assert rows("?target_type=api_token&target_id=77") == ["token created"]
    assert rows("?target_type=org&target_id=nothing") == []
    today = utcnow().date()
    assert "token created" in rows(f"?since={today.isoformat()}&until={today.isoformat()}")
    assert rows(f"?until={(today - timedelta(days=1)).isoformat()}") == []
    refused = admin_client.get("/admin/audit?since=yesterday")
    assert refused.status_code == 200 and "A date is written YYYY-MM-DD." in refused.text
    page = admin_client.get("/admin/audit?action=token_created").text
    assert "<dt>scopes</dt>" in page and "<dt>name</dt><dd>ci token</dd>" in page
    assert '{"name"' not in page  # not the raw JSON object
    # the pager keeps the filters
    for _ in range(30):
        audit.record("token_created", actor=other, target_type="api_token", target_id="78")
    db.commit()
    page = admin_client.get("/admin/audit?actor=filterer").text
    assert "actor=filterer" in re.search(r'<a rel="next" href="([^"]+)"', page).group(1)
