"""Who may review what, and what a set of reviews decides.

Eligibility has two forms that must agree, like the access rule: ``exclusion`` (Python,
for single actions: one request, one flag) and ``eligible_clause`` (SQL, for the queue).
Both start from ``access`` (the reviewer must be able to read the finding) and add the
conflict-of-interest rules: never one's own finding, request or flag; with
``exclude_author_org``, never the author's organization nor one affiliated with it; never a
finding on which the reviewer declared a conflict.

``tally`` + ``decide_state`` compute a request's state from its reviews after every change;
the state stored on the row is only their cached result.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, or_, select

from app import access, state
from app.auth.models import Role, User
from app.db import db
from app.findings.models import Finding
from app.policy import ReviewPolicy
from app.review.models import ConflictDeclaration, OrgAffiliation, Review, ReviewRequest

SUBMITTED = "submitted"
APPROVED = "approved"
CHANGES = "changes_requested"
REJECTED = "rejected"
RELEASED = "released"  # publication: on the public pages
APPLIED = "applied"  # declassification: the lower level is in force
WITHDRAWN = "withdrawn"

FINAL_STATES = frozenset({RELEASED, APPLIED, WITHDRAWN})
OPEN_STATES = frozenset({SUBMITTED, APPROVED, CHANGES, REJECTED})
DECISIONS = ("approve", "changes", "reject")

STATE_LABELS = {
    SUBMITTED: "Submitted", APPROVED: "Approved", CHANGES: "Changes requested",
    REJECTED: "Rejected", RELEASED: "Released", APPLIED: "Applied", WITHDRAWN: "Withdrawn",
}


class Exclusion(enum.Enum):
    """Why a user may not review an item. ``NOT_FOUND`` answers 404: the user may not
    even know the item exists; the others are explained."""

    NOT_FOUND = "not_found"
    OWN = "own"
    AUTHOR_ORG = "author_org"
    AFFILIATED = "affiliated"
    CONFLICT = "conflict"


EXCLUSION_MESSAGES = {
    Exclusion.OWN: "You cannot review your own finding, request or flag.",
    Exclusion.AUTHOR_ORG: "Reviewers from the author's organization are excluded from "
                          "this review.",
    Exclusion.AFFILIATED: "Your organization is affiliated with the author's organization, "
                          "so you are excluded from this review.",
    Exclusion.CONFLICT: "You declared a conflict of interest on this finding, so you are "
                        "excluded from its reviews.",
}


def is_reviewer(user: Any) -> bool:
    return (user is not None and getattr(user, "is_authenticated", False)
            and access.in_good_standing(user) and user.has_role(Role.REVIEWER))


def affiliated_org_ids(org_id: int) -> set[int]:
    """Organizations declared affiliated with ``org_id`` (not including itself)."""
    rows = db.execute(select(OrgAffiliation.org_a_id, OrgAffiliation.org_b_id).where(
        or_(OrgAffiliation.org_a_id == org_id, OrgAffiliation.org_b_id == org_id))).all()
    return {b if a == org_id else a for a, b in rows}


def has_conflict(user: User, finding_id: int) -> bool:
    return db.scalar(select(ConflictDeclaration.id).where(
        ConflictDeclaration.user_id == user.id,
        ConflictDeclaration.finding_id == finding_id)) is not None


def exclusion(user: Any, finding: Finding, *, owner_ids: Iterable[int] = (),
              policy: ReviewPolicy | None = None) -> Exclusion | None:
    """Why ``user`` may not review an item about ``finding`` (None: they may).

    ``owner_ids`` are the users whose item it is besides the finding's author (the
    requester of a request, the flagger of a flag)."""
    policy = policy or state.policy().review
    if not is_reviewer(user) or not access.can_read(user, finding):
        return Exclusion.NOT_FOUND
    if user.id == finding.author_id or user.id in set(owner_ids):
        return Exclusion.OWN
    if policy.exclude_author_org:
        if user.org_id == finding.org_id:
            return Exclusion.AUTHOR_ORG
        if finding.org_id in affiliated_org_ids(user.org_id):
            return Exclusion.AFFILIATED
    if has_conflict(user, finding.id):
        return Exclusion.CONFLICT
    return None


def eligible_clause(user: Any, owner_column: Any,
                    policy: ReviewPolicy | None = None) -> ColumnElement[bool]:
    """The SQL form of ``exclusion(...) is None`` over ``Finding`` (joined) and the item's
    owner column (``ReviewRequest.requester_id`` or ``Flag.flagger_id``)."""
    policy = policy or state.policy().review
    if not is_reviewer(user):
        return false()
    clauses: list[ColumnElement[bool]] = [
        access.finding_filter(user),
        Finding.author_id != user.id,
        owner_column != user.id,
        ~exists().where(ConflictDeclaration.user_id == user.id,
                        ConflictDeclaration.finding_id == Finding.id),
    ]
    if policy.exclude_author_org:
        excluded = sorted(affiliated_org_ids(user.org_id) | {user.org_id})
        clauses.append(Finding.org_id.not_in(excluded))
    return and_(*clauses)


# ---------------------------------------------------------------- deciding


@dataclass
class Tally:
    """What the current round's reviews add up to."""

    current: list[Review] = field(default_factory=list)
    approvals: list[Review] = field(default_factory=list)
    counted_orgs: set[int] = field(default_factory=set)
    blocking: list[Review] = field(default_factory=list)  # not yet escalated
    escalated: list[Review] = field(default_factory=list)
    rejects: list[Review] = field(default_factory=list)
    changes: list[Review] = field(default_factory=list)
    quorum: int = 1

    @property
    def approvals_counted(self) -> int:
        return len(self.counted_orgs)

    @property
    def quorum_met(self) -> bool:
        return self.approvals_counted >= self.quorum

    @property
    def blocked(self) -> bool:
        return bool(self.blocking)


def tally(request: ReviewRequest, reviews: Sequence[Review], author_org_id: int,
          policy: ReviewPolicy | None = None) -> Tally:
    """Count the current round. Approvals count once per organization when
    ``distinct_orgs`` (once per reviewer otherwise), never from the author's organization
    when ``exclude_author_org``."""
    policy = policy or state.policy().review
    result = Tally(quorum=policy.quorum)
    counted_reviewers: set[int] = set()
    for review in reviews:
        if review.stale or review.round != request.round:
            continue
        result.current.append(review)
        if policy.is_blocking(review.risk):
            (result.escalated if review.escalation_id else result.blocking).append(review)
        if review.decision == "reject":
            result.rejects.append(review)
        elif review.decision == "changes":
            result.changes.append(review)
        elif review.decision == "approve":
            result.approvals.append(review)
            if policy.exclude_author_org and review.reviewer_org_id == author_org_id:
                continue
            if policy.distinct_orgs:
                result.counted_orgs.add(review.reviewer_org_id)
            else:
                counted_reviewers.add(review.reviewer_id)
    if not policy.distinct_orgs:
        # counted_orgs doubles as "distinct approvers" when orgs need not differ
        result.counted_orgs = set(counted_reviewers)
    return result


def decide_state(current: str, t: Tally) -> str:
    """The state a request is in given its tally; final states never change here.

    A reject wins over everything (an admin may reopen it, which starts a new round),
    then a request for changes (the author edits, which starts a new round); otherwise
    the request is approved once the quorum is met and no blocking-risk review stands
    unescalated."""
    if current in FINAL_STATES:
        return current
    if t.rejects:
        return REJECTED
    if t.changes:
        return CHANGES
    if t.quorum_met and not t.blocked:
        return APPROVED
    return SUBMITTED


def check_scores(scores: Any, policy: ReviewPolicy | None = None) -> dict[str, int]:
    """Validate a review's rubric scores: exactly the rubric's keys, each in range.

    Raises ``ValueError`` with a message naming the first problem."""
    policy = policy or state.policy().review
    if not isinstance(scores, dict):
        raise ValueError("Scores must map each rubric question to a whole number.")
    known = policy.rubric_keys()
    unknown = sorted(k for k in scores if k not in known)
    if unknown:
        raise ValueError(f"Unknown rubric question {unknown[0]!r}; the rubric asks "
                         f"{', '.join(known)}.")
    clean: dict[str, int] = {}
    for item in policy.rubric:
        if item.key not in scores or scores[item.key] in (None, ""):
            raise ValueError(f"Score the question {item.key!r} ({item.question}).")
        value = scores[item.key]
        if isinstance(value, str) and value.strip().lstrip("-").isascii() \
                and value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        if not item.accepts(value):
            raise ValueError(f"The score for {item.key!r} must be a whole number from "
                             f"{item.min} to {item.max} (got {scores[item.key]!r}).")
        clean[item.key] = value
    return clean


def owner_ids(request: ReviewRequest) -> list[int]:
    return [request.requester_id]

