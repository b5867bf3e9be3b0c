"""History events (audit log + the item's own event table) and notifications for reviews.

Notifications use the forum's ``Notification`` rows, which hold no text and point at the
finding: one is created only for a recipient who can read the finding now (the same
invariant as ``app.notifications.service``). A decision notified to the author carries no
actor when reviewers are anonymous.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from app import access, audit, state
from app.auth.models import ROLE_RANK, Role, User
from app.db import db, utcnow
from app.findings.models import Finding
from app.notifications.models import Notification
from app.review import rules
from app.review.models import Flag, ReviewEvent, ReviewRequest

# Notification kinds (the column holds 16 characters).
KIND_REVIEW_WORK = "review_work"  # a reviewer may review a new or resubmitted item
KIND_REVIEW_RESULT = "review_result"  # the author: a decision or state change
KIND_FLAG_OUTCOME = "flag_outcome"  # flagger and author: how a flag was resolved

DESCRIPTIONS = {
    KIND_REVIEW_WORK: "A dual-use review is waiting for you",
    KIND_REVIEW_RESULT: "There is news on a review request",
    KIND_FLAG_OUTCOME: "A dual-use flag was resolved",
}


def describe(kind: str) -> str:
    """Text for a review notification (no names: reviewers may be anonymous)."""
    return DESCRIPTIONS.get(kind, "Review activity")


def role_of(actor: Any, *, request: ReviewRequest | None = None,
            flag: Flag | None = None) -> str:
    """How an actor took part, for showing the history without names to authors."""
    if actor is None or isinstance(actor, str):
        return "system"
    finding = request.finding if request is not None else flag.finding if flag else None
    if finding is not None and actor.id in {finding.author_id,
                                           request.requester_id if request else -1}:
        return "author"
    if flag is not None and actor.id == flag.flagger_id:
        return "flagger"
    if actor.is_admin:
        return "admin"
    return "reviewer"


def event(action: str, actor: Any, *, request: ReviewRequest | None = None,
          flag: Flag | None = None, role: str | None = None, **details: Any) -> ReviewEvent:
    """Record ``action`` in the audit log and in the item's history (same transaction)."""
    target_type = "review_request" if request is not None else "review_flag"
    subject = request if request is not None else flag
    assert subject is not None
    entry = audit.record(action, actor=actor, target_type=target_type, target_id=subject.id,
                         finding_id=subject.finding_id, **details)
    row = ReviewEvent(request_id=request.id if request is not None else None,
                      flag_id=flag.id if flag is not None and request is None else None,
                      action=action, actor_id=getattr(actor, "id", None),
                      actor_role=role or role_of(actor, request=request, flag=flag),
                      audit_seq=entry.seq, created_at=utcnow(),
                      details=json.dumps(details, sort_keys=True, default=str))
    db.add(row)
    db.flush()
    return row


def notify(finding: Finding, user_ids: Iterable[int], kind: str,
           actor_id: int | None = None) -> list[Notification]:
    """One notification per active recipient who can read ``finding`` now."""
    ids = sorted({uid for uid in user_ids if uid is not None and uid != actor_id})
    if not ids:
        return []
    users = db.scalars(select(User).where(User.id.in_(ids), User.is_active.is_(True))
                       .order_by(User.id)).unique().all()
    created = []
    for user in users:
        if not access.can_read(user, finding):
            continue
        note = Notification(user_id=user.id, kind=kind, finding_id=finding.id,
                            actor_id=actor_id, created_at=utcnow())
        db.add(note)
        created.append(note)
    db.flush()
    return created


def eligible_reviewers(finding: Finding, owners: Iterable[int]) -> list[User]:
    """Every reviewer who may review an item about ``finding`` (``rules.exclusion``)."""
    roles = [r.value for r, rank in ROLE_RANK.items() if rank >= ROLE_RANK[Role.REVIEWER]]
    candidates = db.scalars(select(User).where(User.role.in_(roles),
                                               User.is_active.is_(True))
                            .order_by(User.id)).unique().all()
    owner_ids = list(owners)
    return [u for u in candidates
            if rules.exclusion(u, finding, owner_ids=owner_ids) is None]


def notify_new_work(finding: Finding, owners: Iterable[int], actor: Any) -> list[Notification]:
    owner_ids = list(owners)
    reviewers = eligible_reviewers(finding, owner_ids)
    return notify(finding, [u.id for u in reviewers], KIND_REVIEW_WORK,
                  actor_id=getattr(actor, "id", None))


def notify_result(request: ReviewRequest, actor: Any) -> list[Notification]:
    """Tell the author and the requester; the actor is hidden when reviewers are
    anonymous and the actor is not an admin acting as such."""
    anonymous = state.policy().review.anonymous_reviewers
    actor_id = getattr(actor, "id", None)
    shown = None if anonymous and role_of(actor, request=request) == "reviewer" else actor_id
    recipients = {request.requester_id, request.finding.author_id} - {actor_id}
    return notify(request.finding, recipients, KIND_REVIEW_RESULT, actor_id=shown)


def notify_flag_outcome(flag: Flag, actor: Any) -> list[Notification]:
    anonymous = state.policy().review.anonymous_reviewers
    actor_id = getattr(actor, "id", None)
    recipients = {flag.flagger_id, flag.finding.author_id} - {actor_id}
    return notify(flag.finding, recipients, KIND_FLAG_OUTCOME,
                  actor_id=None if anonymous else actor_id)



def _register() -> None:
    """Give the forum's notification list the review texts (no reviewer names)."""
    from app.notifications.service import KIND_TEXTS

    KIND_TEXTS.update(DESCRIPTIONS)


_register()
