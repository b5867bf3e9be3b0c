"""The disclosure rule (``app.disclosure``): who may learn who did what, applied by the
history, the review pages, notifications (web, API, e-mail) and the audit view.

Each test plants the names that must not travel and reads every surface the reader has."""

from __future__ import annotations

from sqlalchemy import select

from app.db import db
from app.notifications.models import Notification
from app.review import flags, service
from tests.factories import login, make_finding, make_org, make_user
from tests.review_world import approve, build_world, publish_request, seen_of


def _names(user) -> list[str]:  # type: ignore[no-untyped-def]
    return [user.display_name, user.username, user.email]


def _leaks(text: str, user) -> list[str]:  # type: ignore[no-untyped-def]
    return [n for n in _names(user) if n in text]


def _raise_by_reviewer(w):  # type: ignore[no-untyped-def]
    """A network finding flagged by rita and raised to restricted by cleo (org C)."""
    finding = make_finding(w.author, level="network", title="Steering recipe",
                           body="Layer 3 steering.")
    flag = flags.create_flag(w.reader, finding.id, reason="Too precise",
                             suggested_level="restricted")
    flags.resolve_flag(w.rev_c, flag, outcome="raise", level="restricted")
    return finding, flag


def test_revision_written_by_a_review_action_shows_the_role(app, client):
    """A flag resolved with "raise" keeps a revision: the author and other readers see
    "a reviewer", never the resolver's name; reviewers and admins see the name."""
    w = build_world()
    finding, _ = _raise_by_reviewer(w)
    for reader in (w.author, w.reader, w.colleague):
        fresh = app.test_client()
        login(fresh, reader)
        page = fresh.get(f"/findings/{finding.id}/history")
        assert page.status_code == 200
        assert not _leaks(page.text, w.rev_c), reader.username
        assert "a reviewer" in page.text
    from app.findings import service as findings

    entries = findings.history(finding, w.rev_b)
    assert entries
    from app import disclosure

    assert disclosure.editor_label(w.rev_b, finding, entries[0].revision) == \
        w.rev_c.display_name
    assert disclosure.editor_label(w.author, finding, entries[0].revision) == "a reviewer"


def test_review_result_notifications_never_name_the_reviewer_or_admin(app, client,
                                                                       api_token):
    """The author's notifications (API ``actor``, web list, e-mail) carry the role of a
    review action, not the username of the reviewer or the releasing admin."""
    w = build_world()
    req = publish_request(w)
    approve(w.rev_b, req)
    approve(w.admin, req)  # an admin reviewing counts like any reviewer
    service.release(w.admin, req, seen=seen_of(req))
    notes = db.scalars(select(Notification).where(Notification.user_id == w.author.id,
                                                  Notification.kind == "review_result")
                       ).all()
    assert notes
    body = client.get("/api/v1/notifications", headers=api_token(w.author)).get_data(
        as_text=True)
    assert '"review_result"' in body
    assert not _leaks(body, w.admin) and not _leaks(body, w.rev_b)
    login(client, w.author)
    page = client.get("/notifications/").text
    assert not _leaks(page, w.admin) and not _leaks(page, w.rev_b)
    from app.notifications import mail

    for note in notes:
        text = mail.build_message(note, w.author, w.finding).as_string()
        assert not _leaks(text, w.admin) and not _leaks(text, w.rev_b)


def test_stale_review_work_after_a_conflict_is_not_shown(app, client, api_token):
    """A reviewer who declares a conflict after being told of a flag no longer sees that
    notification (nor the flagger's name, nor it in the unread count)."""
    w = build_world()
    flags.create_flag(w.reader, w.finding.id, reason="Too precise",
                      suggested_level="confidential")
    headers = api_token(w.rev_b)
    before = client.get("/api/v1/notifications", headers=headers).get_json()
    assert [i["kind"] for i in before["items"]] == ["review_work"]
    flags.declare_conflict(w.rev_b, w.finding, "I co-wrote a related paper")
    after = client.get("/api/v1/notifications", headers=headers)
    assert after.get_json()["items"] == [] and after.get_json()["unread"] == 0
    assert not _leaks(after.get_data(as_text=True), w.reader)
    login(client, w.rev_b)
    page = client.get("/notifications/").text
    assert not _leaks(page, w.reader)
    assert "review is waiting" not in page


def test_notification_actor_is_rechecked_when_shown(app, client, api_token):
    """A reviewer (eligible, so told the flagger's name) who is later made ineligible by
    an affiliation does not see the name any more; an eligible one does."""
    w = build_world()
    flags.create_flag(w.reader, w.finding.id, reason="r", suggested_level="confidential")
    body = client.get("/api/v1/notifications", headers=api_token(w.rev_c)).get_json()
    assert body["items"][0]["actor"] == w.reader.username
    flags.add_affiliation(w.admin, w.org_c.slug, w.author_org.slug)
    body = client.get("/api/v1/notifications", headers=api_token(w.rev_c)).get_json()
    assert body["items"] == [] and body["unread"] == 0


def test_flag_page_and_api_hide_flagger_and_resolver_from_the_author(app, client,
                                                                    api_token):
    w = build_world()
    finding, flag = _raise_by_reviewer(w)
    text = client.get(f"/api/v1/review/flags/{flag.id}",
                      headers=api_token(w.author)).get_data(as_text=True)
    assert not _leaks(text, w.rev_c) and not _leaks(text, w.reader)
    login(client, w.author)
    page = client.get(f"/review/flags/{flag.id}").text
    assert not _leaks(page, w.rev_c) and not _leaks(page, w.reader)
def test_admin_audit_view_hides_text_and_people_of_unreadable_targets(app, client,
                                                                       api_token):
    """An administrator cleared for network only sees ids, actions and times of a
    restricted finding's entries, not the withdrawal reason, title, compartment, the
    people or their addresses; a cleared admin sees them."""
    hq = make_org("hq")
    low = make_user(hq, name="lowadmin", role="admin", clearance="network")
    high = make_user(hq, name="highadmin", role="admin")
    lab = make_org("lab")
    author = make_user(lab, name="secretauthor")
    finding = make_finding(author, level="restricted", title="Zanzibar title",
                           body="Zanzibar body")
    req = service.create_publication(author, finding.id, public_title="Quokka public",
                                     public_body="Quokka body")
    service.withdraw(author, req, reason="Wombat withdrawal reason")
    from app.findings import service as findings

    findings.edit_finding(author, finding, title="Zanzibar title two", body="Zanzibar body")
    db.commit()
    secrets = ["Wombat", "Quokka", "Zanzibar", "secretauthor", "lab.example"]
    low_api = client.get("/api/v1/admin/audit?per_page=100",
                         headers=api_token(low)).get_data(as_text=True)
    high_api = client.get("/api/v1/admin/audit?per_page=100",
                          headers=api_token(high)).get_data(as_text=True)
    assert "review_request_withdrawn" in low_api and "finding_edited" in low_api
    assert [s for s in secrets if s in low_api] == []
    assert "Wombat withdrawal reason" in high_api and "secretauthor" in high_api
    login(client, low)
    page = client.get("/admin/audit?per_page=100").text
    assert "review_request_withdrawn" in page
    assert [s for s in secrets if s in page] == []


def test_no_page_or_serializer_names_a_review_actor_by_itself():
    """Names of people who act on findings reach templates and API bodies only through
    ``app.disclosure`` (a ``Person`` or a label): nothing reads ``flag.flagger.username``,
    ``revision.editor.display_name``, ``note.actor.username`` and the like directly."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "app"
    pattern = re.compile(r"[\w\])]\.(flagger|resolved_by|editor|actor|requester|reviewer|admin|"
                         r"hidden_by)\.(display_name|username|email)\b")
    offenders = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".py", ".html") or path.name == "disclosure.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert offenders == []
