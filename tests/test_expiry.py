# ruff: noqa: F811  (the attachment fixtures are imported, then taken as arguments)
"""Grants that lapse: a clearance grant's end date, NDA renewal (``renew_days``) and an
organization's re-vetting (``revet_days``), on a controlled clock (no sleeps). A lapsed
grant behaves exactly like no grant on the very next request: lists, search,
notifications, files and API tokens. Then the warning e-mails before each lapse."""

from __future__ import annotations

import email
from datetime import timedelta
from email import policy as email_policy
from pathlib import Path

import pytest
from sqlalchemy import select

from app import access, state
from app.auth.models import User
from app.cli import enclave
from app.db import db
from app.expiry import service as expiry
from app.expiry.models import ExpiryNotice
from app.orgs.models import Organization
from tests.attachments_world import att_app, att_client, attach  # noqa: F401
from tests.factories import login, make_finding, make_org, make_user, post_form

DAY = timedelta(days=1)


def run(app, *args):  # type: ignore[no-untyped-def]
    return app.test_cli_runner().invoke(enclave, list(args))


@pytest.fixture
def outbox(app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(state.settings(), "instance_path", tmp_path)
    monkeypatch.setattr(state.settings(), "smtp_url", None)
    return tmp_path / "outbox"


def mails(folder: Path) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(p.read_bytes(), policy=email_policy.default)
            for p in sorted(folder.glob("*.eml"))] if folder.exists() else []


def fresh(user: User) -> User:
    """The user as the next request sees them."""
    db.expire_all()
    user = db.get(User, user.id)
    access.forget(user)
    return user


def what_the_api_shows(client, headers) -> dict[str, object]:  # type: ignore[no-untyped-def]
    me = client.get("/api/v1/me", headers=headers).get_json()
    listed = client.get("/api/v1/findings", headers=headers).get_json()
    found = client.get("/api/v1/findings?q=lantern", headers=headers).get_json()
    return {"effective": me["effective_clearance"],
            "listed": sorted(f["title"] for f in listed["items"]),
            "found": sorted(f["title"] for f in found["items"])}


def test_a_clearance_grant_lapses_like_no_grant_on_the_next_request(
        att_app, att_client, clock, api_token):  # noqa: F811
    org = make_org("lab")
    author = make_user(org, name="alice")
    reader = make_user(org, name="rita")
    network = make_finding(author, level="network", title="Network lantern")
    secret = make_finding(author, level="confidential", title="Secret lantern",
                          compartment=[org])
    att = attach(author, secret, b"secret lantern notes\n", filename="notes.txt")
    headers = api_token(reader)
    until = (clock.now() + 3 * DAY).date()
    result = run(att_app, "user", "clearance", reader.email, "confidential",
                 "--until", until.isoformat())
    assert result.exit_code == 0, result.output
    assert f"until {until.isoformat()}" in result.output

    # the grant holds through the whole of its last day (UTC)
    clock.set_time(clock.now().replace(hour=0, minute=0) + 3 * DAY + timedelta(hours=23))
    assert what_the_api_shows(att_client, headers) == {
        "effective": "confidential", "listed": ["Network lantern", "Secret lantern"],
        "found": ["Network lantern", "Secret lantern"]}
    assert att_client.get(f"/api/v1/attachments/{att.id}", headers=headers).status_code == 200
    # a reply the reader would be told about
    from app.findings import service as findings
    from app.notifications import service as notes

    notes.watch_finding(fresh(reader), secret)
    findings.add_reply(fresh(author), secret, "A new lantern note.")
    assert notes.list_for(fresh(reader)).total == 1

    clock.advance(timedelta(hours=1))  # the next day has begun: lapsed
    shown = what_the_api_shows(att_client, headers)
    assert shown == {"effective": "public", "listed": [], "found": []}
    assert att_client.get(f"/api/v1/findings/{secret.id}", headers=headers).status_code == 404
    gone = att_client.get(f"/api/v1/attachments/{att.id}", headers=headers)
    missing = att_client.get(f"/api/v1/attachments/{'0' * 32}", headers=headers)
    assert (gone.status_code, gone.get_json()) == (missing.status_code, missing.get_json())
    assert notes.list_for(fresh(reader)).total == 0
    # the web pages agree: the finding is missing, the list is empty
    login(att_client, reader)
    assert att_client.get(f"/findings/{secret.id}").status_code == 404
    assert att_client.get(f"/findings/{network.id}").status_code == 404
    assert "Secret lantern" not in att_client.get("/findings/").text

    # renewing (a new end date) restores it at once
    r = run(att_app, "user", "clearance", reader.email, "confidential")
    assert r.exit_code == 0 and "(no end date)" in r.output
    assert what_the_api_shows(att_client, headers)["effective"] == "confidential"


def test_grant_end_dates_are_checked_everywhere(app, client, clock, api_token):
    org = make_org("lab")
    admin = make_user(org, name="ada", role="admin")
    member = make_user(org, name="max", clearance="network")
    yesterday = (clock.now() - DAY).date().isoformat()
    result = run(app, "user", "clearance", member.email, "restricted", "--until", yesterday)
    assert result.exit_code == 1 and "cannot end in the past" in result.stderr
    bad = run(app, "user", "clearance", member.email, "restricted", "--until", "31/12/2027")
    assert bad.exit_code == 1 and "YYYY-MM-DD" in bad.stderr
    assert fresh(member).clearance == "network"  # nothing changed

    # the API: same rules, JSON errors, then a grant with an end date
    headers = api_token(admin)
    url = f"/api/v1/admin/users/{member.id}"
    r = client.patch(url, json={"clearance": "restricted", "clearance_until": yesterday},
                     headers=headers)
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "bad_date"
    until = (clock.now() + 30 * DAY).date().isoformat()
    r = client.patch(url, json={"clearance": "restricted", "clearance_until": until},
                     headers=headers)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["clearance_until"] == until
    r = client.patch(url, json={"clearance_until": None}, headers=headers)
    assert r.get_json()["clearance_until"] is None
    assert client.patch("/api/v1/admin/users/999999", json={}, headers=headers).status_code \
        == 404

    # the members page
    login(client, admin)
    page = f"/admin/users/{member.id}"
    r = post_form(client, page, {"clearance": "restricted", "role": "member",
                                 "clearance_until": until})
    assert r.status_code == 302
    member = fresh(member)
    assert member.clearance_expires_at is not None
    assert member.clearance_expires_at.date().isoformat() > until
    assert f"until {until}" in client.get("/admin/users").text
    r = post_form(client, page, {"clearance": "restricted", "role": "member",
                                 "clearance_until": yesterday})
    assert r.status_code == 400 and "cannot end in the past" in r.text


def test_nda_signatures_need_renewing_after_renew_days(app, client, clock, api_token):
    org = make_org("lab")
    author = make_user(org, name="alice")
    reader = make_user(org, name="rita")
    secret = make_finding(author, level="restricted", title="Restricted lantern")
    headers = api_token(reader)
    assert client.get(f"/api/v1/findings/{secret.id}", headers=headers).status_code == 200

    clock.advance(364 * DAY)  # within the warning period: renewing is offered, not needed
    login(client, reader)
    assert client.get(f"/findings/{secret.id}").status_code == 200
    assert "Renew it now" in client.get("/ndas/restricted").text

    clock.advance(2 * DAY)  # a year and a day: lapsed at every level that asks
    org.vetted_at = clock.now()  # (the organization was re-vetted meanwhile)
    db.commit()
    headers = api_token(reader)  # tokens live at most token_max_days: a new one
    r = client.get(f"/api/v1/findings/{secret.id}", headers=headers)
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "nda_required"
    assert client.get("/api/v1/findings", headers=headers).get_json()["total"] == 0
    page = client.get(f"/findings/{secret.id}")
    assert page.status_code == 302 and "/ndas" in page.location
    assert "Renewal due since" in client.get("/ndas/").text
    me = client.get("/api/v1/me", headers=headers).get_json()
    assert {n["key"] for n in me["ndas_to_acknowledge"]} == {"network-terms", "restricted",
                                                              "confidential"}
    assert all(n["renewal"] for n in me["ndas_to_acknowledge"])

    for key in ("network-terms", "restricted"):
        r = post_form(client, f"/ndas/{key}", {"signed_name": reader.display_name,
                                               "version": "1"})
        assert r.status_code == 302, r.text
    assert client.get(f"/findings/{secret.id}").status_code == 200
    assert client.get(f"/api/v1/findings/{secret.id}", headers=headers).status_code == 200
    # a renewal is a new signature; the old one stays on record
    from app.ndas.models import NdaAcknowledgement

    rows = db.scalars(select(NdaAcknowledgement).where(
        NdaAcknowledgement.user_id == reader.id,
        NdaAcknowledgement.nda_key == "restricted")).all()
    assert len(rows) == 2
    # and signing again right away is refused, as before
    r = client.post("/api/v1/ndas/restricted/acknowledge", headers=headers,
                    json={"signed_name": reader.display_name})
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "already_acknowledged"


def test_organization_trust_lapses_level_by_level_until_re_vetted(app, client, clock,
                                                                   api_token):
    org = make_org("lab")
    admin = make_user(make_org("hq"), name="ada", role="admin")
    author = make_user(org, name="alice")
    titles = {level: make_finding(author, level=level, title=f"{level} lantern").title
              for level in ("network", "restricted")}
    def listed() -> set[str]:
        # a new token each time: tokens live at most token_max_days, the clock jumps years
        return {f["title"] for f in client.get("/api/v1/findings",
                                              headers=api_token(author)).get_json()["items"]}

    def sign_again() -> None:
        """Keep the NDA signatures current: only the trust lapses here."""
        from app.ndas.models import NdaAcknowledgement

        for ack in db.scalars(select(NdaAcknowledgement)
                              .where(NdaAcknowledgement.user_id == author.id)):
            ack.created_at = clock.now()
        db.commit()

    assert listed() == set(titles.values())
    clock.advance(366 * DAY)  # restricted and confidential ask for yearly re-vetting
    sign_again()
    assert listed() == {titles["network"]}
    assert client.get("/api/v1/me", headers=api_token(author)).get_json()["effective_clearance"] \
        == "network"
    org_json = client.get("/api/v1/admin/orgs",
                          headers=api_token(admin)).get_json()["items"]
    lab = next(o for o in org_json if o["slug"] == "lab")
    assert lab["revet_due"]["lapsed"] is True and lab["revet_due"]["level"] == "restricted"

    clock.advance(365 * DAY)  # two years: network (730 days) lapses too
    sign_again()
    assert listed() == set()

    login(client, admin)
    r = post_form(client, "/admin/orgs/lab/renew", {}, form_url="/admin/orgs/lab")
    assert r.status_code == 302
    assert listed() == set(titles.values())
    assert "re-vetted" not in run(app, "org", "renew", "nosuch").output
    r = run(app, "org", "renew", "lab")
    assert r.exit_code == 0 and "next re-vetting due" in r.output
    org = db.scalar(select(Organization).where(Organization.slug == "lab"))
    db.refresh(org)
    org.status = "pending"
    db.commit()
    r = run(app, "org", "renew", "lab")
    assert r.exit_code == 1 and "trust it instead" in r.stderr


def test_warning_emails_go_once_before_each_lapse(app, clock, outbox):
    lab = make_org("lab")
    admin = make_user(make_org("hq"), name="ada", role="admin")
    lab_admin = make_user(lab, name="lena", role="org_admin")
    member = make_user(lab, name="max")
    member.clearance_expires_at = clock.now() + 20 * DAY
    db.commit()
    assert expiry.send_warnings() == []  # nothing lapses within 14 days yet

    clock.advance(355 * DAY)  # signatures and the lab's trust lapse in 10 days; the
    member.clearance_expires_at = clock.now() + 5 * DAY  # grant in 5
    db.commit()
    result = run(app, "expiry", "warn")
    assert result.exit_code == 0, result.output
    sent = mails(outbox)
    by_subject: dict[str, set[str]] = {}
    for msg in sent:
        by_subject.setdefault(" ".join(str(msg["Subject"]).split()), set()).add(str(msg["To"]))
    grant = [s for s in by_subject if "clearance ends" in s]
    assert len(grant) == 1 and by_subject[grant[0]] == {f"Max Tester <{member.email}>"}
    renew = [s for s in by_subject if "Renew your signature" in s]
    assert len(renew) == 3, by_subject  # network terms, restricted, confidential: each once
    assert all(member.email in " ".join(by_subject[s]) for s in renew)
    revet = [s for s in by_subject if s.startswith("[Enclave] Re-vet lab")]
    assert len(revet) == 1, list(by_subject)
    recipients = " ".join(by_subject[revet[0]])
    assert admin.email in recipients and lab_admin.email in recipients
    assert member.email not in recipients
    # no content, only levels and dates
    assert all("lantern" not in msg.get_content() for msg in sent)

    again = run(app, "expiry", "warn")
    assert again.exit_code == 0 and "0 warning(s) sent" in again.output
    assert len(mails(outbox)) == len(sent)
    assert db.scalar(select(ExpiryNotice.id).where(ExpiryNotice.kind == "org")) is not None

    # a renewal moves the lapse: the next warning is a new one, a year on
    run(app, "org", "renew", "lab")
    clock.advance(360 * DAY)
    dry = run(app, "expiry", "warn", "--dry-run")
    assert "would warn: Lab Research's trust" in dry.output
    listing = run(app, "expiry", "list", "--days", "30")
    assert "org\tlab" in listing.output
