"""The review rules in the service: quorum from distinct organizations, blocking risk and
escalation, final rejects and reopening, stale reviews after edits, conflicts of interest,
one review per reviewer, rubric validation, release checks, declassification."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app import audit
from app.db import db, utcnow
from app.errors import Conflict, Forbidden, NotFound, ServiceError
from app.review import flags, rules, service
from app.review.models import ConflictDeclaration, Review, ReviewEvent, ReviewRequest
from app.review.pins import current as seen_of
from tests.factories import make_finding, make_org, make_user
from tests.review_world import approve, attach, build_world, publish_request, scores


def _count(model) -> int:  # type: ignore[no-untyped-def]
    return db.scalar(select(func.count()).select_from(model)) or 0


def test_quorum_from_distinct_orgs_approves(app):
    w = build_world()
    req = publish_request(w)
    assert req.state == "submitted" and len(req.content_sha256) == 64
    approve(w.rev_b, req)
    assert req.state == "submitted"
    # a second approval from the same organization does not count twice
    same_org = make_user(w.org_b, name="bea", role="reviewer")
    approve(same_org, req)
    assert req.state == "submitted"
    assert service.tally_of(req).approvals_counted == 1
    approve(w.rev_c, req)
    assert req.state == "approved"


def test_reviewers_from_author_org_or_affiliated_or_conflicted_are_refused(app):
    w = build_world()
    req = publish_request(w)
    with pytest.raises(Forbidden, match="author's organization"):
        approve(w.colleague, req)
    flags.add_affiliation(w.admin, "authorlab", "bravo", "parent company")
    with pytest.raises(Forbidden, match="affiliated"):
        approve(w.rev_b, req)
    flags.declare_conflict(w.rev_c, w.finding, "I advised on this work")
    with pytest.raises(Forbidden, match="conflict"):
        approve(w.rev_c, req)
    own = make_finding(w.rev_d, level="restricted")
    own_req = service.create_publication(w.rev_d, own.id, public_title="t", public_body="b")
    with pytest.raises(Forbidden, match="your own"):
        approve(w.rev_d, own_req)
    assert _count(Review) == 0
    # the queue agrees with the single-item rule
    def queued(user):  # type: ignore[no-untyped-def]
        return {i.request.id for i in service.queue(user).items}

    assert queued(w.colleague) == queued(w.rev_b) == queued(w.rev_c) == {own_req.id}
    assert queued(w.rev_d) == {req.id}


def test_author_without_reviewer_role_and_unreadable_are_404(app):
    w = build_world()
    req = publish_request(w)
    with pytest.raises(NotFound):
        approve(w.reader, req)  # member, not reviewer
    low = make_user(w.org_d, name="lou", role="reviewer", clearance="network")
    with pytest.raises(NotFound):
        approve(low, req)  # cannot read a restricted finding
    with pytest.raises(NotFound):
        service.get_request(low, req.id)
    assert service.queue(low).total == 0


def test_one_review_per_reviewer(app):
    w = build_world()
    req = publish_request(w)
    approve(w.rev_b, req)
    with pytest.raises(Conflict, match="already reviewed"):
        service.add_review(w.rev_b, req, seen=seen_of(req),
                           decision="reject", risk="low", scores=scores(),
                           comment="changed my mind")
    assert _count(Review) == 1


@pytest.mark.parametrize("bad, message", [
    ({"capability_uplift": 1, "method_specificity": 1, "alignment_benefit": 1,
      "availability_elsewhere": 1, "vibes": 2}, "Unknown rubric question 'vibes'"),
    ({"capability_uplift": 5, "method_specificity": 1, "alignment_benefit": 1,
      "availability_elsewhere": 1}, "from 0 to 4"),
    ({"capability_uplift": -1, "method_specificity": 1, "alignment_benefit": 1,
      "availability_elsewhere": 1}, "from 0 to 4"),
    ({"capability_uplift": True, "method_specificity": 1, "alignment_benefit": 1,
      "availability_elsewhere": 1}, "whole number"),
    ({"capability_uplift": 1}, "Score the question 'method_specificity'"),
])
def test_rubric_refusals_change_nothing(app, bad, message):
    w = build_world()
    req = publish_request(w)
    events = _count(ReviewEvent)
    with pytest.raises(ServiceError, match=message):
        service.add_review(w.rev_b, req, seen=seen_of(req),
                           decision="approve", risk="low", scores=bad)
    assert _count(Review) == 0 and _count(ReviewEvent) == events


def test_unknown_decision_and_risk_refused(app):
    w = build_world()
    req = publish_request(w)
    with pytest.raises(ServiceError, match="decision"):
        service.add_review(w.rev_b, req, seen=seen_of(req),
                           decision="maybe", risk="low", scores=scores())
    with pytest.raises(ServiceError, match="risk"):
        service.add_review(w.rev_b, req, seen=seen_of(req),
                           decision="approve", risk="extreme", scores=scores())
    with pytest.raises(ServiceError, match="what should change"):
        service.add_review(w.rev_b, req, seen=seen_of(req),
                           decision="changes", risk="low", scores=scores())
    assert _count(Review) == 0


def test_blocking_risk_blocks_until_escalated(app):
    w = build_world()
    req = publish_request(w)
    approve(w.rev_b, req)
    approve(w.rev_c, req)
    assert req.state == "approved"
    approve(w.rev_d, req, risk="high")
    assert req.state == "submitted"
    t = service.tally_of(req)
    assert t.quorum_met and t.blocked
    with pytest.raises(Conflict, match="blocks it until an administrator escalates"):
        service.release(w.admin, req, seen=seen_of(req))
    with pytest.raises(Forbidden):
        service.escalate(w.rev_b, req, "reviewers cannot escalate", seen=seen_of(req))
    with pytest.raises(ServiceError, match="Write why"):
        service.escalate(w.admin, req, "  ", seen=seen_of(req))
    service.escalate(w.admin, req, "Risk accepted: the method is already public in a paper.",
                     seen=seen_of(req))
    assert req.state == "approved"
    with pytest.raises(Conflict, match="nothing to escalate"):
        service.escalate(w.admin, req, "again", seen=seen_of(req))
    service.release(w.admin, req, seen=seen_of(req))
    assert req.state == "released" and req.released_at is not None
    actions = [e.action for e in service.events(req)]
    assert "review_request_escalated" in actions and "review_request_released" in actions
    audited = db.scalars(select(audit.AuditEntry.action).where(
        audit.AuditEntry.target_type == "review_request")).all()
    assert {"review_submitted", "review_request_escalated",
            "review_request_released"} <= set(audited)
    assert audit.verify_chain().ok


def test_reject_is_final_until_reopened(app):
    w = build_world()
    req = publish_request(w)
    approve(w.rev_b, req)
    service.add_review(w.rev_c, req, seen=seen_of(req),
                       decision="reject", risk="medium", scores=scores(),
                       comment="Too specific.")
    assert req.state == "rejected"
    with pytest.raises(Conflict, match="rejected"):
        approve(w.rev_d, req)
    with pytest.raises(Conflict, match="rejected"):
        service.edit_request(w.author, req, public_body="new text")
    with pytest.raises(Forbidden):
        service.reopen(w.author, req, "please", seen=seen_of(req))
    service.reopen(w.admin, req, "The reject cited the wrong paper.", seen=seen_of(req))
    assert req.state == "submitted" and req.round == 2
    assert all(r.stale for r in db.scalars(select(Review)))
    approve(w.rev_c, req)  # the same reviewer may review the new round
    approve(w.rev_d, req)
    assert req.state == "approved"


def test_edit_returns_to_submitted_and_marks_reviews_stale(app):
    w = build_world()
    req = publish_request(w)
    approve(w.rev_b, req)
    approve(w.rev_c, req)
    assert req.state == "approved"
    old_pin = req.content_sha256
    assert service.edit_request(w.author, req, note="only a note") is False
    assert req.state == "approved" and req.content_sha256 == old_pin
    assert service.edit_request(w.author, req, public_body="A different public text.")
    assert req.state == "submitted" and req.round == 2 and req.content_sha256 != old_pin
    reviews = list(db.scalars(select(Review)))
    assert len(reviews) == 2 and all(r.stale for r in reviews)
    assert service.tally_of(req).approvals_counted == 0
    with pytest.raises(Conflict, match="cannot be released"):
        service.release(w.admin, req, seen=seen_of(req))


def test_changes_requested_then_edit(app):
    w = build_world()
    req = publish_request(w)
    service.add_review(w.rev_b, req, seen=seen_of(req),
                       decision="changes", risk="medium", scores=scores(2),
                       comment="Drop the second paragraph.")
    assert req.state == "changes_requested"
    service.edit_request(w.author, req, public_body="Shorter public text.")
    assert req.state == "submitted"


def test_decisions_on_withdrawn_or_released_are_refused(app):
    w = build_world()
    req = publish_request(w)
    service.withdraw(w.author, req, "not now")
    assert req.state == "withdrawn"
    with pytest.raises(Conflict, match="withdrawn"):
        approve(w.rev_b, req)
    other = make_finding(w.author, level="restricted")
    req2 = service.create_publication(w.author, other.id, public_title="T",
                                      public_body="Public body.")
    approve(w.rev_b, req2)
    approve(w.rev_c, req2)
    service.release(w.admin, req2, seen=seen_of(req2))
    with pytest.raises(Conflict, match="released"):
        approve(w.rev_d, req2)
    with pytest.raises(Conflict):
        service.withdraw(w.author, req2)
    assert _count(Review) == 2


def test_release_refused_before_embargo_then_allowed(app):
    w = build_world()
    when = (utcnow() + timedelta(days=2)).replace(microsecond=0)
    req = publish_request(w, embargo_until=when.isoformat(), embargo_tz="Europe/Berlin")
    assert req.embargo_until == when and req.embargo_tz == "Europe/Berlin"
    approve(w.rev_b, req)
    approve(w.rev_c, req)
    with pytest.raises(Conflict, match="embargo until .*Europe/Berlin"):
        service.release(w.admin, req, seen=seen_of(req))
    assert req.state == "approved"
    # time passes
    req.embargo_until = utcnow() - timedelta(minutes=1)
    db.commit()
    # the embargo is pinned: the stored content no longer matches the pin
    with pytest.raises(Conflict, match="does not match its pin"):
        service.release(w.admin, req, seen=seen_of(req))


def test_embargo_in_the_past_or_bad_zone_refused(app):
    w = build_world()
    with pytest.raises(ServiceError, match="in the past"):
        publish_request(w, embargo_until="2001-01-01T00:00")
    with pytest.raises(ServiceError, match="Unknown time zone"):
        publish_request(w, embargo_until="2099-01-01T00:00", embargo_tz="Mars/Olympus")
    with pytest.raises(ServiceError, match="not a date"):
        publish_request(w, embargo_until="next tuesday")
    assert _count(ReviewRequest) == 0


def test_release_without_quorum_refused(app):
    w = build_world()
    req = publish_request(w)
    approve(w.rev_b, req)
    with pytest.raises(Conflict, match="needs 2 approving review"):
        service.release(w.admin, req, seen=seen_of(req))
    assert req.state == "submitted"
    with pytest.raises(Forbidden):
        service.release(w.rev_c, req, seen=seen_of(req))


def test_attachment_of_another_finding_refused(app):
    w = build_world()
    own = attach(w.author, w.finding)
    other_finding = make_finding(w.author, level="restricted")
    foreign = attach(w.author, other_finding, b"secret", "other.csv")
    # another finding's file is unknown here (one answer for every id that is not one
    # of this finding's files; it never names the file)
    with pytest.raises(ServiceError, match="no attachment") as refused:
        publish_request(w, attachments=[own.id, foreign.id])
    assert refused.value.code == "unknown_attachment"
    assert "other.csv" not in refused.value.message
    with pytest.raises(ServiceError, match="no attachment"):
        publish_request(w, attachments=["0" * 32])
    assert _count(ReviewRequest) == 0
    req = publish_request(w, attachments=[own.id])
    assert [a.filename for a in req.attachments] == ["data.csv"]
    assert len(req.attachments[0].sha256) == 64


def test_only_author_or_admin_asks(app):
    w = build_world()
    with pytest.raises(Forbidden):
        service.create_publication(w.rev_b, w.finding.id, public_title="x", public_body="y")
    req = service.create_publication(w.admin, w.finding.id, public_title="x",
                                     public_body="y")
    with pytest.raises(Conflict, match="already has an open"):
        publish_request(w)
    assert req.requester_id == w.admin.id


def test_declassification_lowers_level_when_applied(app):
    w = build_world(level="confidential")
    with pytest.raises(ServiceError, match="below the current"):
        service.create_declassification(w.author, w.finding.id, target_level="confidential",
                                        note="x")
    with pytest.raises(ServiceError, match="publication request"):
        service.create_declassification(w.author, w.finding.id, target_level="public",
                                        note="x")
    att = attach(w.author, w.finding)
    req = service.create_declassification(w.author, w.finding.id, target_level="restricted",
                                          note="The partner already published it.")
    approve(w.rev_b, req)
    approve(w.rev_c, req)
    assert req.state == "approved"
    service.release(w.admin, req, seen=seen_of(req))
    assert req.state == "applied"
    db.refresh(w.finding)
    db.refresh(att)
    assert w.finding.level == "restricted"
    assert att.kek_level == "restricted"
    actions = set(db.scalars(select(audit.AuditEntry.action)))
    assert {"finding_level_lowered", "review_declassification_applied"} <= actions


def test_conflict_declaration_voids_existing_review(app):
    w = build_world()
    req = publish_request(w)
    approve(w.rev_b, req)
    approve(w.rev_c, req)
    assert req.state == "approved"
    flags.declare_conflict(w.rev_c, w.finding, "I co-authored the underlying paper")
    db.refresh(req)
    assert req.state == "submitted"
    assert db.scalar(select(func.count()).select_from(ConflictDeclaration)) == 1
    with pytest.raises(Conflict, match="already declared"):
        flags.declare_conflict(w.rev_c, w.finding, "again")


def test_queue_oldest_first_and_not_after_reviewing(app):
    w = build_world()
    first = publish_request(w)
    second_finding = make_finding(w.author, level="restricted")
    second = service.create_publication(w.author, second_finding.id, public_title="T2",
                                        public_body="B2")
    flag = flags.create_flag(w.reader, second_finding.id, reason="too specific",
                             suggested_level="confidential")
    items = service.queue(w.rev_d).items
    assert [(i.kind, (i.request or i.flag).id) for i in items] == [
        ("request", first.id), ("request", second.id), ("flag", flag.id)]
    approve(w.rev_d, first)
    assert [i.kind for i in service.queue(w.rev_d).items] == ["request", "flag"]
    # the flagger does not get their own flag
    reader_reviewer = make_user(w.org_b, name="rho", role="reviewer")
    flag2 = flags.create_flag(reader_reviewer, second_finding.id, reason="x",
                              suggested_level="restricted")
    assert flag2.id not in [i.flag.id for i in service.queue(reader_reviewer).items if i.flag]


def test_sql_and_python_eligibility_agree(app):
    """The queue (SQL form) offers exactly the requests the single-item rule allows."""
    w = build_world()
    flags.add_affiliation(w.admin, "authorlab", "charlie")
    findings = [w.finding, make_finding(w.rev_b, level="restricted"),
                make_finding(w.rev_d, level="network"),
                make_finding(w.author, level="confidential", compartment=[w.org_d])]
    reqs = [service.create_publication(f.author, f.id, public_title="t", public_body="b")
            for f in findings]
    flags.declare_conflict(w.rev_d, findings[2], "mine")
    extra = make_org("foxtrot")
    people = [w.colleague, w.rev_b, w.rev_c, w.rev_d, w.admin, w.reader,
              make_user(extra, name="fay", role="reviewer", clearance="network")]
    for person in people:
        in_queue = {i.request.id for i in service.queue(person).items if i.request}
        allowed = {r.id for r in reqs
                   if rules.exclusion(person, r.finding, owner_ids=[r.requester_id]) is None}
        assert in_queue == allowed, person.email


def test_flag_resolution_raise_rewraps_and_notifies(app):
    from app.notifications.models import Notification

    w = build_world()
    att = attach(w.author, w.finding)
    flag = flags.create_flag(w.reader, w.finding.id, reason="Gives away the recipe",
                             suggested_level="confidential")
    with pytest.raises(ServiceError, match="not lowering"):
        flags.create_flag(w.rev_b, w.finding.id, reason="x", suggested_level="network")
    with pytest.raises(Conflict, match="already have an open flag"):
        flags.create_flag(w.reader, w.finding.id, reason="x", suggested_level="restricted")
    with pytest.raises(Forbidden, match="author's organization"):
        flags.resolve_flag(w.colleague, flag, outcome="dismiss", note="fine")
    with pytest.raises(ServiceError, match="what the author should redact"):
        flags.resolve_flag(w.rev_c, flag, outcome="redact")
    flags.resolve_flag(w.rev_c, flag, outcome="raise")
    db.refresh(w.finding)
    db.refresh(att)
    assert w.finding.level == "confidential" and w.finding.compartmented
    assert att.kek_level == "confidential"
    assert flag.state == "resolved" and flag.outcome == "raise"
    # confidential names organizations: outside reviewers no longer see the finding
    with pytest.raises(NotFound):
        flags.resolve_flag(w.rev_d, flag, outcome="dismiss", note="x")
    kinds = {(n.user_id, n.kind, n.actor_id) for n in db.scalars(select(Notification))}
    # the author can still read it and hears of it, without the reviewer's name
    assert (w.author.id, "flag_outcome", None) in kinds


def test_flag_lock_and_dismiss(app):
    w = build_world()
    flag = flags.create_flag(w.reader, w.finding.id, reason="r", suggested_level="restricted")
    flags.resolve_flag(w.rev_c, flag, outcome="lock")
    db.refresh(w.finding)
    assert w.finding.locked
    with pytest.raises(Conflict, match="locked"):
        publish_request(w)
    flag2 = flags.create_flag(w.rev_b, w.finding.id, reason="r2",
                              suggested_level="restricted")
    with pytest.raises(ServiceError, match="why the flag is dismissed"):
        flags.resolve_flag(w.rev_c, flag2, outcome="dismiss")
    flags.resolve_flag(w.rev_c, flag2, outcome="dismiss", note="Not a concern.")
    assert flag2.outcome == "dismiss" and flag2.note == "Not a concern."
    with pytest.raises(Conflict, match="already resolved"):
        flags.resolve_flag(w.rev_d, flag2, outcome="lock")


def test_open_flag_blocks_release(app):
    w = build_world()
    req = publish_request(w)
    approve(w.rev_b, req)
    approve(w.rev_c, req)
    flag = flags.create_flag(w.reader, w.finding.id, reason="r", suggested_level="restricted")
    with pytest.raises(Conflict, match="open dual-use flag"):
        service.release(w.admin, req, seen=seen_of(req))
    flags.resolve_flag(w.rev_d, flag, outcome="dismiss", note="ok")
    service.release(w.admin, req, seen=seen_of(req))
    assert req.state == "released"


def test_anonymity_for_the_author(app):
    w = build_world()
    req = publish_request(w)
    approve(w.rev_b, req)
    service.add_comment(w.rev_b, req, "Could you drop the figure?")
    service.add_comment(w.author, req, "Done.")
    as_author = service.view(w.author, req)
    assert [s.label for _, s in as_author.reviews] == ["Reviewer 1"]
    assert [s.label for _, s in as_author.comments] == ["Reviewer 1", w.author.display_name]
    assert all(s.label != w.rev_b.display_name for _, s in as_author.events)
    as_reviewer = service.view(w.rev_c, req)
    assert [s.label for _, s in as_reviewer.reviews] == [w.rev_b.display_name]
    as_admin = service.view(w.admin, req)
    assert as_admin.reviews[0][1].org == w.org_b.name
    with pytest.raises(NotFound):
        service.add_comment(w.reader, req, "I am not part of this")


def test_notifications_for_reviewers_and_the_author(app):
    from app.notifications.models import Notification

    w = build_world()
    req = publish_request(w)
    work = {n.user_id for n in db.scalars(select(Notification).where(
        Notification.kind == "review_work"))}
    # eligible reviewers (and the admin, who reviews too), never the author's organization
    assert work == {w.rev_b.id, w.rev_c.id, w.rev_d.id, w.admin.id}
    service.add_review(w.rev_b, req, seen=seen_of(req),
                       decision="changes", risk="medium", scores=scores(),
                       comment="Drop the figure.")
    results = db.scalars(select(Notification).where(Notification.kind == "review_result")
                         ).all()
    assert [(n.user_id, n.actor_id) for n in results] == [(w.author.id, None)]


def test_policy_variants(app, migrated, instance_dir, tmp_path):
    """quorum 1, approvals need not come from distinct orgs nor exclude the author's
    organization, reviewers are named, and a reject is not final."""
    import shutil

    from tests.conftest import make_app

    policy_dir = tmp_path / "policies"
    shutil.copytree(Path(__file__).resolve().parents[1] / "policies", policy_dir)
    review_toml = policy_dir / "review.toml"
    text = review_toml.read_text()
    for old, new in (("quorum = 2", "quorum = 1"),
                     ("distinct_orgs = true", "distinct_orgs = false"),
                     ("exclude_author_org = true", "exclude_author_org = false"),
                     ("anonymous_reviewers = true", "anonymous_reviewers = false"),
                     ("reject_is_final = true", "reject_is_final = false")):
        assert old in text
        text = text.replace(old, new)
    review_toml.write_text(text)
    w = build_world()
    other = make_app(migrated, instance_dir, policy_dir=policy_dir)
    with other.app_context():
        req = db.get(ReviewRequest, publish_request(w).id)
        service.add_review(w.colleague, req, seen=seen_of(req),
                           decision="reject", risk="low", scores=scores(),
                           comment="Not yet.")
        assert req.state == "rejected"
        # not final: the author may edit, which starts a new round
        assert service.edit_request(w.author, req, public_body="Reworded.")
        assert req.state == "submitted"
        approve(w.colleague, req)  # the author's organization counts here
        assert req.state == "approved"
        view = service.view(w.author, req)
        assert view.reviews[-1][1].label == w.colleague.display_name
    other.extensions["enclave.engine"].dispose()


def test_the_index_of_open_requests_names_every_open_state(app):
    import re

    from app.review.models import OPEN_REQUEST_SQL

    assert set(re.findall(r"'(\w+)'", OPEN_REQUEST_SQL)) == set(rules.OPEN_STATES)
