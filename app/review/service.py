"""Publication and declassification requests: creating and editing them, reviews, the
reviewer queue, the discussion thread, escalation, reopening, withdrawal and release.

The state machine lives here. After every change the state is computed again from the
current round's reviews (``rules.tally`` + ``rules.decide_state``); the stored ``state``
is that result. Every rule is checked here, whatever the path (web, API, CLI), and every
refusal happens before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, literal, select, union_all
from sqlalchemy.exc import IntegrityError

from app import access, disclosure, state, visibility
from app.attachments import service as attachments
from app.attachments.models import Attachment
from app.auth.models import User
from app.db import db, serialize_writes, utcnow
from app.errors import Conflict, Forbidden, NotFound, ServiceError
from app.findings import service as findings
from app.findings.models import Finding
from app.pagination import Page, page_args
from app.publish import content
from app.publish.pin import PinnedFile
from app.rendering import render_markdown
from app.review import notices, pins, rules
from app.review.levels import change_level
from app.review.models import (
    Escalation,
    Flag,
    RequestAttachment,
    Review,
    ReviewComment,
    ReviewEvent,
    ReviewRequest,
)
from app.review.rules import (
    APPLIED,
    APPROVED,
    CHANGES,
    FINAL_STATES,
    OPEN_STATES,
    REJECTED,
    RELEASED,
    STATE_LABELS,
    SUBMITTED,
    WITHDRAWN,
)
from app.review.text import clean_text
from app.submissions import service as submissions

PUBLICATION = "publication"
DECLASSIFICATION = "declassification"
KINDS = (PUBLICATION, DECLASSIFICATION)
COMMENT_MAX = 20_000
NOTE_MAX = 5_000
_UNSET: Any = object()


def _is_admin(user: Any) -> bool:
    return bool(user is not None and user.is_admin and access.in_good_standing(user))


def _owners(req: ReviewRequest) -> set[int]:
    return {req.requester_id, req.finding.author_id}


# ---------------------------------------------------------------- who sees a request


def viewer_role(user: Any, req: ReviewRequest) -> str | None:
    """``admin``, ``author`` (the finding's author or the requester), ``reviewer`` (may
    review it) or None (the request does not exist for them: 404)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    if not access.can_read(user, req.finding):
        return None
    if _is_admin(user):
        return "admin"
    if user.id in _owners(req):
        return "author"
    if rules.exclusion(user, req.finding, owner_ids=[req.requester_id]) is None:
        return "reviewer"
    return None


def get_request(user: Any, request_id: int) -> ReviewRequest:
    return visibility.request_or_404(user, request_id)


def _lock(req: ReviewRequest) -> None:
    """Serialize changes to one request and reload it: a row lock on PostgreSQL (so two
    reviews at once cannot both compute the state from one approval each); the write lock
    at once on SQLite."""
    serialize_writes()
    db.execute(select(ReviewRequest.id).where(ReviewRequest.id == req.id).with_for_update())
    db.refresh(req)


def request_for_review(user: Any, request_id: int) -> ReviewRequest:
    """The request, for a decision: 404 unless ``user`` is a reviewer who can read its
    finding. Conflict-of-interest exclusions are then refused by :func:`add_review` with
    a message saying why (the finding is readable to them anyway)."""
    return visibility.request_for_review(user, request_id)


def _require_owner_or_admin(user: User, finding: Finding, what: str) -> None:
    if user.id == finding.author_id or _is_admin(user):
        return
    raise Forbidden(f"Only the finding's author or an administrator can {what}.")


def _require_admin(user: Any, req: ReviewRequest, what: str, *, not_owner: bool) -> None:
    if not _is_admin(user):
        raise Forbidden(f"Only an administrator can {what}.")
    if not_owner and user.id in _owners(req):
        raise Forbidden(f"You cannot {what} on your own request; another administrator "
                        "must.")


# ---------------------------------------------------------------- creating and editing


def _open_request(finding: Finding, kind: str) -> ReviewRequest | None:
    return db.scalar(select(ReviewRequest).where(
        ReviewRequest.finding_id == finding.id, ReviewRequest.kind == kind,
        ReviewRequest.state.in_(sorted(OPEN_STATES))).limit(1))


def _flush_one_open(kind: str) -> None:
    """Write the new request; the database's partial unique index refuses a second open
    one of ``kind`` on the finding (the same answer as the check before it)."""
    try:
        db.flush()
    except IntegrityError:
        db.rollback()
        raise Conflict(f"This finding already has an open {kind} request.",
                       code="open_request") from None


def _set_files(req: ReviewRequest, files: Sequence[tuple[PinnedFile, str]]) -> None:
    keep = {a.attachment_id: a for a in req.attachments}
    rows = []
    for pinned, ctype in files:
        row = keep.get(pinned.attachment_id)
        if row is None:
            row = RequestAttachment(attachment_id=pinned.attachment_id)
        row.filename, row.size, row.sha256 = pinned.filename, pinned.size, pinned.sha256
        row.content_type = ctype
        rows.append(row)
    req.attachments = rows


def _pinned_files(req: ReviewRequest) -> list[PinnedFile]:
    return [PinnedFile(a.attachment_id or "", a.filename, a.size, a.sha256)
            for a in req.attachments]


def _pin_of(req: ReviewRequest, files: Sequence[PinnedFile] | None = None) -> str:
    return content.request_pin(
        kind=req.kind, finding_id=req.finding_id, title=req.public_title,
        body=req.public_body, files=_pinned_files(req) if files is None else files,
        embargo_until=req.embargo_until, from_level=req.from_level,
        target_level=req.target_level)


#: Who a public page credits: the author and organization, the organization, or nobody.
CREDITS = {"authors": "The author and their organization",
           "organization": "The organization only",
           "anonymous": "Nobody (anonymous)"}


def check_credit(credit: Any) -> str:
    if credit is None or credit == "":
        return "anonymous"
    if credit not in CREDITS:
        raise ServiceError("Credit is one of: " + ", ".join(CREDITS) + ".",
                           code="bad_credit", field="credit")
    return str(credit)


def credit_line(req: ReviewRequest) -> str:
    """The credit a released item shows, fixed at release ("" when anonymous): the
    author chose to be named in public, so no disclosure rule applies to this line."""
    finding = req.finding
    if req.credit == "authors":
        return f"{finding.author.display_name} ({finding.org.name})"
    if req.credit == "organization":
        return finding.org.name
    return ""


def create_publication(user: User, finding_id: int, *, public_title: Any, public_body: Any,
                       attachments: Any = None, embargo_until: Any = None,
                       embargo_tz: Any = None, note: Any = None, credit: Any = None,
                       submission: str | None = None) -> ReviewRequest:
    """The author (or an admin) asks to publish a public version of a finding.
    ``credit``: who the public page names (:data:`CREDITS`, anonymous when None).
    ``submission``: the form's one-time token (a double submission finds the first)."""
    finding = findings.get_finding(user, finding_id)
    once = submissions.claim(user, submission, "publication")
    findings.lock(finding)  # one open request per finding, even when asked twice at once
    _require_owner_or_admin(user, finding, "ask to publish this finding")
    if finding.locked:
        raise Conflict("This finding is locked after a dual-use flag; it cannot be "
                       "published.", code="locked")
    title = content.check_title(public_title)
    body = content.check_body(public_body)
    files = content.check_files(finding, attachments)
    when, tz = content.parse_embargo(embargo_until, embargo_tz)
    content.check_embargo(when)
    note = clean_text(note, "note", limit=NOTE_MAX, required=False)
    chosen_credit = check_credit(credit)
    if _open_request(finding, PUBLICATION) is not None:
        raise Conflict("This finding already has an open publication request; edit that "
                       "one instead.", code="open_request")
    now = utcnow()
    req = ReviewRequest(kind=PUBLICATION, finding_id=finding.id, requester_id=user.id,
                        state=SUBMITTED, round=1, from_level=finding.level,
                        target_level=state.policy().lowest().key, public_title=title,
                        public_body=body, public_body_html=render_markdown(body), note=note,
                        embargo_until=when, embargo_tz=tz, created_at=now, submitted_at=now,
                        updated_at=now, credit=chosen_credit)
    req.finding = finding
    _set_files(req, files)
    req.content_sha256 = _pin_of(req, [f for f, _ in files])
    db.add(req)
    _flush_one_open(PUBLICATION)
    submissions.settle(once, "request", req.id)
    notices.event("review_request_created", user, request=req, kind=PUBLICATION,
                  content_sha256=req.content_sha256, files=len(files),
                  embargo_until=when.isoformat() if when else None)
    notices.notify_new_work(finding, [user.id], user)
    db.commit()
    return req


def create_declassification(user: User, finding_id: int, *, target_level: Any,
                            note: Any = None, submission: str | None = None) -> ReviewRequest:
    """Lowering a finding's level is a request in the same queue."""
    finding = findings.get_finding(user, finding_id)
    once = submissions.claim(user, submission, "declassification")
    findings.lock(finding)  # one open request per finding, even when asked twice at once
    _require_owner_or_admin(user, finding, "ask to declassify this finding")
    policy = state.policy()
    target = (target_level or "").strip() if isinstance(target_level, str) else ""
    if not policy.is_level(target):
        raise ServiceError(f"There is no level {target!r}; levels are "
                           f"{', '.join(policy.level_keys())}.", code="unknown_level",
                           field="target_level")
    if policy.rank(target) == 0:
        raise ServiceError(f"{policy.level(target).label} is reached by a publication "
                           "request, which proposes a public version.",
                           code="level_public", field="target_level")
    if policy.rank(target) >= policy.rank(finding.level):
        raise ServiceError(f"Choose a level below the current one "
                           f"({policy.level(finding.level).label}); raising a level needs "
                           "no review.", code="level_not_lower", field="target_level")
    note = clean_text(note, "note", limit=NOTE_MAX,
                      empty="Explain why the finding can be read more widely.")
    if _open_request(finding, DECLASSIFICATION) is not None:
        raise Conflict("This finding already has an open declassification request.",
                       code="open_request")
    now = utcnow()
    req = ReviewRequest(kind=DECLASSIFICATION, finding_id=finding.id, requester_id=user.id,
                        state=SUBMITTED, round=1, from_level=finding.level,
                        target_level=target, note=note, embargo_tz=content.DEFAULT_TZ,
                        created_at=now, submitted_at=now, updated_at=now)
    req.finding = finding
    req.content_sha256 = _pin_of(req, [])
    db.add(req)
    _flush_one_open(DECLASSIFICATION)
    submissions.settle(once, "request", req.id)
    notices.event("review_request_created", user, request=req, kind=DECLASSIFICATION,
                  from_level=finding.level, target_level=target,
                  content_sha256=req.content_sha256)
    notices.notify_new_work(finding, [user.id], user)
    db.commit()
    return req


def _editable(req: ReviewRequest) -> None:
    if req.state in FINAL_STATES:
        raise Conflict(f"This request is {STATE_LABELS[req.state].lower()}; it can no "
                       "longer be changed.", code=f"request_{req.state}")
    if req.state == REJECTED and state.policy().review.reject_is_final:
        raise Conflict("This request was rejected; only an administrator can reopen it.",
                       code="request_rejected")


def edit_request(user: User, req: ReviewRequest, *, public_title: Any = _UNSET,
                 public_body: Any = _UNSET, attachments: Any = _UNSET,
                 embargo_until: Any = _UNSET, embargo_tz: Any = _UNSET,
                 target_level: Any = _UNSET, note: Any = _UNSET,
                 credit: Any = _UNSET) -> bool:
    """Edit a request. Changing pinned content starts a new round: the request returns
    to ``submitted``, earlier reviews are kept but marked stale (approvals no longer
    count); the note and the credit are not pinned content. Returns True when the pinned
    content changed."""
    if viewer_role(user, req) is None:
        raise NotFound()
    _require_owner_or_admin(user, req.finding, "edit this request")
    _lock(req)
    _editable(req)
    finding = req.finding
    title, body = req.public_title, req.public_body
    files: Sequence[tuple[PinnedFile, str]] | None = None
    when, tz = req.embargo_until, req.embargo_tz
    target = req.target_level
    if req.kind == PUBLICATION:
        if public_title is not _UNSET:
            title = content.check_title(public_title)
        if public_body is not _UNSET:
            body = content.check_body(public_body)
        if attachments is not _UNSET:
            files = content.check_files(finding, attachments)
        if embargo_until is not _UNSET or embargo_tz is not _UNSET:
            raw = embargo_until if embargo_until is not _UNSET else req.embargo_until
            when, tz = content.parse_embargo(raw, embargo_tz if embargo_tz is not _UNSET
                                             else req.embargo_tz)
            if when != req.embargo_until:
                content.check_embargo(when)
    elif target_level is not _UNSET and target_level != req.target_level:
        policy = state.policy()
        target = target_level.strip() if isinstance(target_level, str) else ""
        if not policy.is_level(target) or not (
                0 < policy.rank(target) < policy.rank(finding.level)):
            raise ServiceError("Choose a known level below the current one (and above "
                               f"{policy.lowest().label}).", code="bad_target_level",
                               field="target_level")
    new_note = req.note if note is _UNSET else clean_text(note, "note", limit=NOTE_MAX,
                                                          required=False)
    pinned = [f for f, _ in files] if files is not None else _pinned_files(req)
    new_pin = content.request_pin(kind=req.kind, finding_id=req.finding_id, title=title,
                                  body=body, files=pinned, embargo_until=when,
                                  from_level=req.from_level, target_level=target)
    new_credit = req.credit if credit is _UNSET else check_credit(credit)
    if new_credit != req.credit:
        req.credit = new_credit
        req.updated_at = utcnow()
        notices.event("review_request_credit_changed", user, request=req, credit=new_credit)
    if new_pin == req.content_sha256:
        if new_note != req.note:
            req.note = new_note
            req.updated_at = utcnow()
            notices.event("review_request_note_edited", user, request=req)
        db.commit()
        return False

    old_pin, old_state = req.content_sha256, req.state
    _start_new_round(req, "the pinned content was edited")
    req.public_title, req.public_body = title, body
    if req.kind == PUBLICATION:
        req.public_body_html = render_markdown(body)
    if files is not None:
        _set_files(req, files)
    req.embargo_until, req.embargo_tz, req.target_level = when, tz, target
    req.note = new_note
    req.content_sha256 = new_pin
    db.flush()
    notices.event("review_request_edited", user, request=req, old_sha256=old_pin,
                  content_sha256=new_pin, round=req.round, old_state=old_state)
    notices.notify_new_work(finding, [req.requester_id], user)
    db.commit()
    return True


def _start_new_round(req: ReviewRequest, why: str) -> None:
    for review in _reviews(req):
        if not review.stale:
            review.stale = True
            review.stale_reason = why
    req.round += 1
    req.state = SUBMITTED
    req.decided_at = None
    now = utcnow()
    req.submitted_at = now
    req.updated_at = now


def withdraw(user: User, req: ReviewRequest, reason: Any = None) -> None:
    if viewer_role(user, req) is None:
        raise NotFound()
    _require_owner_or_admin(user, req.finding, "withdraw this request")
    _lock(req)
    if req.state in FINAL_STATES:
        raise Conflict(f"This request is already {STATE_LABELS[req.state].lower()}.",
                       code=f"request_{req.state}")
    reason = clean_text(reason, "reason", limit=NOTE_MAX, required=False)
    old = req.state
    req.state = WITHDRAWN
    req.closed_at = req.updated_at = utcnow()
    notices.event("review_request_withdrawn", user, request=req, old_state=old,
                  reason=reason)
    db.commit()


# ---------------------------------------------------------------- reviews


def _reviews(req: ReviewRequest) -> list[Review]:
    return list(db.scalars(select(Review).where(Review.request_id == req.id)
                           .order_by(Review.created_at, Review.id)).unique())


def tally_of(req: ReviewRequest) -> rules.Tally:
    return rules.tally(req, _reviews(req), req.finding.org_id)


def recompute(req: ReviewRequest, actor: Any) -> str:
    """Compute the state from the reviews; record and announce a change."""
    new = rules.decide_state(req.state, tally_of(req))
    if new != req.state:
        old = req.state
        req.state = new
        req.decided_at = utcnow() if new in (APPROVED, REJECTED, CHANGES) else None
        notices.event("review_request_state_changed", "system", request=req, role="system",
                      old_state=old, new_state=new, round=req.round)
        notices.notify_result(req, actor)
    return req.state


def check_can_review(user: Any, req: ReviewRequest) -> None:
    """Refuse a reviewer excluded from this request (403, saying why): called right
    after the visibility gate, before what they sent is read."""
    why = rules.exclusion(user, req.finding, owner_ids=[req.requester_id])
    if why is rules.Exclusion.NOT_FOUND:
        visibility.hidden()
    if why is not None:
        raise Forbidden(rules.EXCLUSION_MESSAGES[why], code=f"excluded_{why.value}")


def _check_can_review(user: Any, req: ReviewRequest) -> None:
    check_can_review(user, req)
    if req.state in FINAL_STATES:
        raise Conflict(f"This request was {STATE_LABELS[req.state].lower()}; it takes no "
                       "more reviews.", code=f"request_{req.state}")
    if req.state == REJECTED and state.policy().review.reject_is_final:
        raise Conflict("This request was rejected; it takes no more reviews unless an "
                       "administrator reopens it.", code="request_rejected")


def why_cannot_review(user: Any, req: ReviewRequest) -> str | None:
    """For the page: why the review form is not offered (None: it is)."""
    try:
        _check_can_review(user, req)
    except NotFound:
        return "You cannot review this request."
    except ServiceError as exc:
        return exc.message
    if my_review(user, req) is not None:
        return "You reviewed this version of the request."
    return None


def my_review(user: Any, req: ReviewRequest) -> Review | None:
    return db.scalar(select(Review).where(Review.request_id == req.id,
                                          Review.reviewer_id == user.id,
                                          Review.round == req.round))


def add_review(user: User, req: ReviewRequest, *, seen: pins.Seen, decision: Any, risk: Any,
               scores: Any, comment: Any = None) -> Review:
    """One review per reviewer and round: decision, dual-use risk, rubric scores,
    comment, for the version ``seen`` (refused with 409 when the request changed since).
    The state is computed again at once."""
    _lock(req)
    _check_can_review(user, req)
    pins.check(req, seen)
    policy = state.policy().review
    if decision not in rules.DECISIONS:
        raise ServiceError(f"The decision is one of {', '.join(rules.DECISIONS)}.",
                           code="bad_decision", field="decision")
    if risk not in policy.risks:
        raise ServiceError(f"The risk is one of {', '.join(policy.risks)}.",
                           code="bad_risk", field="risk")
    try:
        clean_scores = rules.check_scores(scores, policy)
    except ValueError as exc:
        raise ServiceError(str(exc), code="bad_scores", field="scores") from None
    comment = clean_text(comment, "comment", limit=COMMENT_MAX, required=decision != "approve",
                         empty="Say what should change, or why you reject the request.")
    if my_review(user, req) is not None:
        raise Conflict("You already reviewed this version of the request; there is one "
                       "review per reviewer (a new version after an edit can be reviewed "
                       "again).", code="duplicate_review")
    review = Review(request_id=req.id, reviewer_id=user.id, reviewer_org_id=user.org_id,
                    round=req.round, content_sha256=req.content_sha256, decision=decision,
                    risk=risk, scores_json=json.dumps(clean_scores, sort_keys=True),
                    comment=comment, created_at=utcnow())
    db.add(review)
    try:
        db.flush()
    except IntegrityError:
        db.rollback()
        raise Conflict("You already reviewed this version of the request.",
                       code="duplicate_review") from None
    notices.event("review_submitted", user, request=req, role="reviewer",
                  review_id=review.id, decision=decision, risk=risk, round=req.round,
                  blocking=policy.is_blocking(risk), scores=clean_scores)
    before = req.state
    recompute(req, user)  # announces a state change to the author
    if req.state == before and (decision != "approve" or policy.is_blocking(risk)):
        notices.notify_result(req, user)
    req.updated_at = utcnow()
    db.commit()
    return review


def void_reviews_of(user: User, req: ReviewRequest, why: str) -> None:
    """Mark a reviewer's current reviews of ``req`` stale (caller commits)."""
    changed = False
    for review in _reviews(req):
        if review.reviewer_id == user.id and not review.stale and review.round == req.round:
            review.stale, review.stale_reason = True, why
            changed = True
    if changed:
        db.flush()
        notices.event("review_voided", user, request=req, role="reviewer", reason=why)
        recompute(req, user)


def escalate(user: User, req: ReviewRequest, reason: Any, *, seen: pins.Seen) -> Escalation:
    """An admin lets the request past its blocking-risk reviews, with a written reason,
    for the version ``seen``. Decisions stand: an escalated review still counts as what it
    decided."""
    if viewer_role(user, req) is None:
        raise NotFound()
    _require_admin(user, req, "escalate", not_owner=True)
    _lock(req)
    pins.check(req, seen)
    if req.state in FINAL_STATES or req.state == REJECTED:
        raise Conflict(f"This request is {STATE_LABELS[req.state].lower()}; there is "
                       "nothing to escalate.", code=f"request_{req.state}")
    reason = clean_text(reason, "reason", limit=NOTE_MAX,
                        empty="Write why the request may go ahead despite the risk rating.")
    t = tally_of(req)
    if not t.blocking:
        raise Conflict("No review blocks this request; there is nothing to escalate.",
                       code="not_blocked")
    esc = Escalation(request_id=req.id, admin_id=user.id, round=req.round, reason=reason,
                     created_at=utcnow())
    db.add(esc)
    db.flush()
    for review in t.blocking:
        review.escalation_id = esc.id
    db.flush()
    notices.event("review_request_escalated", user, request=req, role="admin",
                  escalation_id=esc.id, reason=reason,
                  reviews=[r.id for r in t.blocking], round=req.round)
    recompute(req, user)
    req.updated_at = utcnow()
    db.commit()
    return esc


def reopen(user: User, req: ReviewRequest, reason: Any, *, seen: pins.Seen) -> None:
    """An admin reopens a rejected request (the version ``seen``): a new round starts."""
    if viewer_role(user, req) is None:
        raise NotFound()
    _require_admin(user, req, "reopen a request", not_owner=True)
    _lock(req)
    pins.check(req, seen)
    if req.state != REJECTED:
        raise Conflict("Only a rejected request can be reopened.", code="not_rejected")
    reason = clean_text(reason, "reason", limit=NOTE_MAX,
                        empty="Write why the request deserves another review.")
    _start_new_round(req, "an administrator reopened the request")
    db.flush()
    notices.event("review_request_reopened", user, request=req, role="admin", reason=reason,
                  round=req.round)
    notices.notify_new_work(req.finding, [req.requester_id], user)
    notices.notify_result(req, user)
    db.commit()


# ---------------------------------------------------------------- release


def release_problems(req: ReviewRequest, now: datetime | None = None) -> list[str]:
    """Everything that stops ``req`` from being released (or applied) now."""
    if req.state in FINAL_STATES:
        return [f"The request is {STATE_LABELS[req.state].lower()}."]
    policy = state.policy()
    problems: list[str] = []
    t = tally_of(req)
    if not t.quorum_met:
        distinct = " from distinct organizations" if policy.review.distinct_orgs else ""
        problems.append(f"It needs {t.quorum} approving review(s){distinct} (none from the "
                        f"author's organization); it has {t.approvals_counted}.")
    if t.blocked:
        risks = ", ".join(sorted({r.risk for r in t.blocking}))
        problems.append(f"A review rated {risks} risk blocks it until an administrator "
                        "escalates.")
    if req.state in (REJECTED, CHANGES):
        problems.append(f"It is {STATE_LABELS[req.state].lower()}.")
    elif req.state != APPROVED and not problems:
        problems.append("It is not approved.")
    now = now or utcnow()
    if req.embargo_until is not None and now < req.embargo_until:
        problems.append("It is under embargo until "
                        f"{content.format_embargo(req.embargo_until, req.embargo_tz)}.")
    finding = req.finding
    if finding.level != req.from_level:
        problems.append(f"The finding's level changed since the request (it was "
                        f"{req.from_level}, it is {finding.level}); edit the request so "
                        "it is reviewed again.")
    if req.kind == PUBLICATION:
        if finding.locked:
            problems.append("The finding is locked after a dual-use flag.")
        missing = [a.filename for a in req.attachments if not _live_file(a, finding.id)]
        if missing:
            problems.append(f"Included file(s) no longer available: {', '.join(missing)}; "
                            "edit the request.")
        elif _pin_of(req, _current_files(req)) != req.content_sha256:
            problems.append("The content does not match its pin; edit the request so it is "
                            "reviewed again.")
    if db.scalar(select(Flag.id).where(Flag.finding_id == finding.id, Flag.state == "open")
                 .limit(1)):
        problems.append("The finding has an open dual-use flag; a reviewer must resolve it "
                        "first.")
    return problems


def _live_file(row: RequestAttachment, finding_id: int) -> Attachment | None:
    if row.attachment_id is None:
        return None
    att = db.get(Attachment, row.attachment_id)
    if att is None or not att.live or att.finding_id != finding_id:
        return None
    return att


def _current_files(req: ReviewRequest) -> list[PinnedFile]:
    """The pinned facts as the attachments stand now (their sealed plaintext hashes)."""
    files = []
    for row in req.attachments:
        att = _live_file(row, req.finding_id)
        digest = attachments.sha256_of(att) if att is not None else ""
        files.append(PinnedFile(row.attachment_id or "", att.filename if att else "",
                                att.size if att else -1, digest))
    return files


def release(user: User, req: ReviewRequest, *, seen: pins.Seen) -> ReviewRequest:
    """Admin: release an approved publication request to the public pages, or apply an
    approved declassification (the finding's level is lowered, keys rewrapped), for the
    version ``seen``."""
    if viewer_role(user, req) is None:
        raise NotFound()
    what = "release a request" if req.kind == PUBLICATION else "apply a declassification"
    _require_admin(user, req, what, not_owner=False)
    _lock(req)
    pins.check(req, seen)
    recompute(req, user)
    problems = release_problems(req)
    if problems:
        db.rollback()
        verb = "released" if req.kind == PUBLICATION else "applied"
        code = "request_" + req.state if req.state in FINAL_STATES else "not_releasable"
        raise Conflict(f"The request cannot be {verb}: " + " ".join(problems), code=code)
    now = utcnow()
    t = tally_of(req)
    if req.kind == PUBLICATION:
        req.release_texts()  # the public version becomes public content (readable)
        assert req.state == RELEASED
        req.released_at = now
        req.released_by_id = user.id
        req.public_id = (db.scalar(select(func.max(ReviewRequest.public_id))) or 0) + 1
        req.public_credit = credit_line(req)
        action = "review_request_released"
        details: dict[str, Any] = {"content_sha256": req.content_sha256,
                                   "files": len(req.attachments)}
    else:
        old = req.finding.level
        rewrapped = change_level(user, req.finding, req.target_level,
                                 why=f"request:{req.id}")
        req.state = APPLIED
        req.released_at = now
        req.released_by_id = user.id
        action = "review_declassification_applied"
        details = {"old_level": old, "new_level": req.target_level, "rewrapped": rewrapped}
    req.closed_at = req.updated_at = now
    notices.event(action, user, request=req, role="admin",
                  approvals=t.approvals_counted, **details)
    notices.notify_result(req, user)
    db.commit()
    return req


# ---------------------------------------------------------------- discussion


def add_comment(user: User, req: ReviewRequest, body: Any,
                submission: str | None = None) -> ReviewComment:
    """The thread: reviewers of the request, its author, and admins."""
    role = viewer_role(user, req)
    if role is None:
        raise NotFound()
    once = submissions.claim(user, submission, "comment")
    if req.state in FINAL_STATES:
        raise Conflict(f"This request is {STATE_LABELS[req.state].lower()}; its discussion "
                       "is closed.", code=f"request_{req.state}")
    body = clean_text(body, "body", limit=COMMENT_MAX, empty="Write a comment.")
    comment = ReviewComment(request_id=req.id, author_id=user.id, body=body,
                            body_html=render_markdown(body), created_at=utcnow())
    db.add(comment)
    db.flush()
    submissions.settle(once, "comment", comment.id)
    notices.event("review_comment_added", user, request=req, comment_id=comment.id)
    db.commit()
    return comment


def comments(req: ReviewRequest) -> list[ReviewComment]:
    return list(db.scalars(select(ReviewComment).where(ReviewComment.request_id == req.id)
                           .order_by(ReviewComment.created_at, ReviewComment.id)).unique())


def events(req: ReviewRequest) -> list[ReviewEvent]:
    return list(db.scalars(select(ReviewEvent).where(ReviewEvent.request_id == req.id)
                           .order_by(ReviewEvent.id)).unique())


# ---------------------------------------------------------------- presenting


def participant_labels(req: ReviewRequest) -> dict[int, str]:
    """Stable pseudonyms ("Reviewer 1", ...) for everyone but the owners, in order of
    their first review or comment."""
    owners = _owners(req)
    seen: list[tuple[datetime, int, int]] = []
    for r in _reviews(req):
        seen.append((r.created_at, 0, r.reviewer_id))
    for c in comments(req):
        seen.append((c.created_at, 1, c.author_id))
    labels: dict[int, str] = {}
    for _, _, uid in sorted(seen):
        if uid not in owners and uid not in labels:
            labels[uid] = f"Reviewer {len(labels) + 1}"
    return labels


#: A person as the viewer may see them (``disclosure.Person``: ``label``, ``org``, ...).
Shown = disclosure.Person


def shown(viewer: Any, req: ReviewRequest, user: User | None, labels: Mapping[int, str],
          *, role_hint: str = "") -> Shown:
    """Someone who took part in ``req`` as ``viewer`` may see them: the disclosure rule
    decides; a hidden reviewer keeps their stable pseudonym ("Reviewer 1")."""
    if user is None:
        return Shown("Enclave")
    finding = req.finding
    if user.id == finding.author_id:
        part = disclosure.Part.AUTHOR
    elif user.id == req.requester_id:
        part = disclosure.Part.REQUESTER
    elif role_hint == "admin":
        part = disclosure.Part.ADMIN
    else:
        part = disclosure.Part.REVIEWER
    pseudonym = None
    if part is disclosure.Part.REVIEWER:
        pseudonym = labels.get(user.id, "A reviewer")
    elif part in (disclosure.Part.ADMIN, disclosure.Part.REQUESTER):
        pseudonym = "An administrator"
    return disclosure.person(viewer, user, part, finding, owners=[req.requester_id],
                             pseudonym=pseudonym)


@dataclass
class RequestView:
    request: ReviewRequest
    role: str
    tally: rules.Tally
    reviews: list[tuple[Review, Shown]]
    comments: list[tuple[ReviewComment, Shown]]
    events: list[tuple[ReviewEvent, Shown]]
    escalations: list[tuple[Escalation, Shown]]
    problems: list[str]
    review_refusal: str | None
    my_review: Review | None
    can_edit: bool
    can_withdraw: bool
    can_escalate: bool
    can_reopen: bool
    can_release: bool
    can_comment: bool
    embargo_text: str
    flags: list[Flag] = field(default_factory=list)
    requester: Shown = field(default_factory=lambda: Shown("An administrator"))

    @property
    def state_label(self) -> str:
        return STATE_LABELS[self.request.state]


def view(user: User, req: ReviewRequest) -> RequestView:
    role = viewer_role(user, req)
    if role is None:
        raise NotFound()
    labels = participant_labels(req)
    rule = disclosure.For(user)  # one per page: names decided once per finding
    reviews = [(r, shown(rule, req, r.reviewer, labels)) for r in _reviews(req)]
    thread = [(c, shown(rule, req, c.author, labels)) for c in comments(req)]
    history = [(e, shown(rule, req, e.actor, labels, role_hint=e.actor_role))
               for e in events(req)]
    escalations = [(e, shown(rule, req, e.admin, labels, role_hint="admin"))
                   for e in db.scalars(select(Escalation).where(Escalation.request_id == req.id)
                                       .order_by(Escalation.id)).unique()]
    owner_or_admin = user.id == req.finding.author_id or _is_admin(user)
    final = req.state in FINAL_STATES
    reject_final = req.state == REJECTED and state.policy().review.reject_is_final
    admin_other = _is_admin(user) and user.id not in _owners(req)
    t = tally_of(req)
    return RequestView(
        request=req, role=role, tally=t, reviews=reviews, comments=thread, events=history,
        escalations=escalations,
        problems=release_problems(req) if not final else [],
        review_refusal=why_cannot_review(user, req),
        my_review=my_review(user, req),
        can_edit=owner_or_admin and not final and not reject_final,
        can_withdraw=owner_or_admin and not final,
        can_escalate=admin_other and not final and req.state != REJECTED and bool(t.blocking),
        can_reopen=admin_other and req.state == REJECTED,
        can_release=_is_admin(user) and not final,
        can_comment=not final,
        embargo_text=content.format_embargo(req.embargo_until, req.embargo_tz),
        requester=shown(rule, req, req.requester, labels),
    )


# ---------------------------------------------------------------- lists


@dataclass
class QueueItem:
    kind: str  # "request" or "flag"
    since: datetime
    request: ReviewRequest | None = None
    flag: Flag | None = None

    @property
    def finding(self) -> Finding:
        item = self.request if self.request is not None else self.flag
        assert item is not None
        return item.finding


def _queue_select(user: User) -> Any:
    requests = (
        select(literal("request").label("kind"), ReviewRequest.id.label("id"),
               ReviewRequest.submitted_at.label("since"))
        .join(Finding, Finding.id == ReviewRequest.finding_id)
        .where(ReviewRequest.state.in_([SUBMITTED, APPROVED]),
               rules.eligible_clause(user, ReviewRequest.requester_id),
               ~exists().where(Review.request_id == ReviewRequest.id,
                               Review.reviewer_id == user.id,
                               Review.round == ReviewRequest.round))
    )
    flags = (
        select(literal("flag").label("kind"), Flag.id.label("id"),
               Flag.created_at.label("since"))
        .join(Finding, Finding.id == Flag.finding_id)
        .where(Flag.state == "open", rules.eligible_clause(user, Flag.flagger_id))
    )
    return union_all(requests, flags).subquery()


def queue(user: User, args: Mapping[str, str] | None = None) -> Page:
    """Requests and flags ``user`` may review and has not reviewed yet, waiting longest
    first. Empty for anyone without the reviewer role."""
    page, per_page = page_args(args or {})
    if not rules.is_reviewer(user):
        return Page([], page, per_page, 0)
    sub = _queue_select(user)
    total = db.scalar(select(func.count()).select_from(sub)) or 0
    rows = db.execute(select(sub.c.kind, sub.c.id, sub.c.since)
                      .order_by(sub.c.since, sub.c.kind, sub.c.id)
                      .limit(per_page).offset((page - 1) * per_page)).all()
    # the page's requests and flags in one query each (not one per item)
    wanted = {kind: [ident for k, ident, _ in rows if k == kind] for kind in ("request", "flag")}
    reqs = {r.id: r for r in db.scalars(select(ReviewRequest).where(
        ReviewRequest.id.in_(wanted["request"]))).unique()} if wanted["request"] else {}
    flag_rows = {f.id: f for f in db.scalars(select(Flag).where(
        Flag.id.in_(wanted["flag"]))).unique()} if wanted["flag"] else {}
    items: list[QueueItem] = []
    for kind, ident, _since in rows:
        if kind == "request" and ident in reqs:
            items.append(QueueItem("request", reqs[ident].submitted_at, request=reqs[ident]))
        elif kind == "flag" and ident in flag_rows:
            items.append(QueueItem("flag", flag_rows[ident].created_at, flag=flag_rows[ident]))
    return Page(items, page, per_page, total)


def requests_for_finding(user: User, finding: Finding) -> list[ReviewRequest]:
    """Requests about a readable finding that ``user`` may see, newest first."""
    if not access.can_read(user, finding):
        return []
    rows = db.scalars(select(ReviewRequest).where(ReviewRequest.finding_id == finding.id)
                      .order_by(ReviewRequest.created_at.desc(), ReviewRequest.id.desc())
                      ).unique().all()
    return [r for r in rows if viewer_role(user, r) is not None]


def my_requests(user: User) -> list[ReviewRequest]:
    """Requests the user made or that concern their findings (readable ones only)."""
    query = (select(ReviewRequest).join(Finding, Finding.id == ReviewRequest.finding_id)
             .where(access.finding_filter(user),
                    (ReviewRequest.requester_id == user.id) | (Finding.author_id == user.id))
             .order_by(ReviewRequest.updated_at.desc(), ReviewRequest.id.desc()).limit(200))
    return list(db.scalars(query).unique())


def open_requests_for_admin(user: User) -> list[ReviewRequest]:
    """Admins: every open request on a finding they can read, oldest first."""
    if not _is_admin(user):
        return []
    query = (select(ReviewRequest).join(Finding, Finding.id == ReviewRequest.finding_id)
             .where(access.finding_filter(user),
                    ReviewRequest.state.in_(sorted(OPEN_STATES)))
             .order_by(ReviewRequest.submitted_at, ReviewRequest.id).limit(500))
    return list(db.scalars(query).unique())


def open_flags_for_admin(user: User) -> list[Flag]:
    if not _is_admin(user):
        return []
    query = (select(Flag).join(Finding, Finding.id == Flag.finding_id)
             .where(access.finding_filter(user), Flag.state == "open")
             .order_by(Flag.created_at, Flag.id).limit(500))
    return list(db.scalars(query).unique())


def attachable_files(user: User, finding: Finding) -> list[Attachment]:
    """The finding's live files, to choose from for a public version."""
    return attachments.list_for_finding(user, finding)


__all__ = ["APPLIED", "APPROVED", "CHANGES", "DECLASSIFICATION", "KINDS", "PUBLICATION",
           "REJECTED", "RELEASED", "SUBMITTED", "WITHDRAWN"]
