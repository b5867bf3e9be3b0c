"""Dual-use flags on findings, conflicts of interest, and organization affiliations.

A reader flags a finding with a reason and a suggested level; the flag enters the review
queue, and one eligible reviewer (``rules.exclusion``) resolves it: raise the level
(applied at once, attachment keys rewrapped), lock the finding, ask the author to redact,
or dismiss it with a reason. The flagger and the author are notified of the outcome.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app import access, audit, state, visibility
from app.auth.models import User
from app.db import db, utcnow
from app.errors import Conflict, Forbidden, NotFound, ServiceError
from app.findings import service as findings
from app.findings.models import Finding
from app.orgs.models import Organization
from app.review import notices, rules
from app.review.levels import change_level
from app.review.models import ConflictDeclaration, Flag, OrgAffiliation, ReviewRequest
from app.review.text import clean_text
from app.submissions import service as submissions

OUTCOMES = {
    "raise": "Raise the level",
    "lock": "Lock the finding",
    "redact": "Ask the author to redact",
    "dismiss": "Dismiss",
}


# ---------------------------------------------------------------- flags


def create_flag(user: User, finding_id: int, *, reason: str | None,
                suggested_level: str | None, submission: str | None = None) -> Flag:
    """Any reader flags a finding. One open flag per reader and finding; the form's
    one-time ``submission`` token sends a double submission to the first flag."""
    finding = findings.get_finding(user, finding_id)
    once = submissions.claim(user, submission, "flag")
    findings.lock(finding)  # one open flag per reader, even when sent twice at once
    policy = state.policy()
    reason = clean_text(reason, "reason", limit=5000,
                        empty="Say why this finding is a dual-use concern.")
    level = (suggested_level or "").strip() or finding.level
    if not policy.is_level(level):
        raise ServiceError(f"There is no level {level!r}; levels are "
                           f"{', '.join(policy.level_keys())}.", code="unknown_level",
                           field="suggested_level")
    if policy.rank(level) < policy.rank(finding.level):
        raise ServiceError("A flag can suggest keeping or raising the level, not lowering "
                           "it; ask for a declassification to lower a level.",
                           code="level_lower", field="suggested_level")
    if db.scalar(select(Flag.id).where(Flag.finding_id == finding.id,
                                       Flag.flagger_id == user.id, Flag.state == "open")):
        raise Conflict("You already have an open flag on this finding; reviewers will "
                       "resolve it.", code="duplicate_flag")
    flag = Flag(finding_id=finding.id, flagger_id=user.id, reason=reason,
                suggested_level=level, level_at_flag=finding.level, state="open",
                created_at=utcnow())
    db.add(flag)
    try:
        db.flush()  # a partial unique index: one open flag per reader and finding
    except IntegrityError:
        db.rollback()
        raise Conflict("You already have an open flag on this finding; reviewers will "
                       "resolve it.", code="duplicate_flag") from None
    submissions.settle(once, "flag", flag.id)
    notices.event("review_flag_created", user, flag=flag, suggested_level=level,
                  level=finding.level)
    notices.notify_new_work(finding, [user.id], user)
    db.commit()
    return flag


def flag_role(user: Any, flag: Flag) -> str | None:
    """How ``user`` may see a flag: admin, reviewer (eligible), flagger, author; None."""
    if user is None or not access.can_read(user, flag.finding):
        return None
    if user.is_admin and access.in_good_standing(user):
        return "admin"
    if user.id == flag.flagger_id:
        return "flagger"
    if user.id == flag.finding.author_id:
        return "author"
    if rules.exclusion(user, flag.finding, owner_ids=[flag.flagger_id]) is None:
        return "reviewer"
    return None


def get_flag(user: Any, flag_id: int) -> Flag:
    return visibility.flag_or_404(user, flag_id)


def flag_for_review(user: Any, flag_id: int) -> Flag:
    """The flag, for resolving it: 404 unless ``user`` sees it or is a reviewer who can
    read its finding; :func:`check_can_resolve` then explains any exclusion (403)."""
    return visibility.flag_for_review(user, flag_id)


def flags_for_finding(user: Any, finding: Finding) -> list[Flag]:
    """Flags on a readable finding that ``user`` may see, newest first."""
    if not access.can_read(user, finding):
        return []
    rows = db.scalars(select(Flag).where(Flag.finding_id == finding.id)
                      .order_by(Flag.created_at.desc(), Flag.id.desc())).unique().all()
    return [f for f in rows if flag_role(user, f) is not None]


def check_can_resolve(user: Any, flag: Flag) -> None:
    """Refuse a reviewer excluded from this flag (403, saying why): called right after
    the visibility gate, before what they sent is read."""
    why = rules.exclusion(user, flag.finding, owner_ids=[flag.flagger_id])
    if why is rules.Exclusion.NOT_FOUND:
        visibility.hidden()
    if why is not None:
        raise Forbidden(rules.EXCLUSION_MESSAGES[why], code=f"excluded_{why.value}")


def resolve_flag(user: User, flag: Flag, *, outcome: str | None, level: str | None = None,
                 note: str | None = None) -> Flag:
    """Resolve an open flag (eligible reviewers; admins who are not its owners)."""
    finding = flag.finding
    check_can_resolve(user, flag)
    # one resolution per flag, even when two reviewers act at once (row lock on PostgreSQL)
    db.execute(select(Flag.id).where(Flag.id == flag.id).with_for_update())
    db.refresh(flag)
    if not flag.is_open:
        raise Conflict("This flag is already resolved.", code="flag_resolved")
    outcome = (outcome or "").strip()
    if outcome not in OUTCOMES:
        raise ServiceError(f"Choose an outcome: {', '.join(OUTCOMES)}.", code="bad_outcome",
                           field="outcome")
    policy = state.policy()
    needs_note = outcome in ("dismiss", "redact")
    note = clean_text(note, "note", limit=5000, required=needs_note,
                      empty="Say why the flag is dismissed." if outcome == "dismiss"
                      else "Say what the author should redact.")
    new_level = ""
    if outcome == "raise":
        new_level = (level or "").strip() or flag.suggested_level
        if not policy.is_level(new_level):
            raise ServiceError(f"There is no level {new_level!r}.", code="unknown_level",
                               field="level")
        if policy.rank(new_level) <= policy.rank(finding.level):
            raise ServiceError(f"Choose a level above the finding's current level "
                               f"({policy.level(finding.level).label}).",
                               code="level_not_higher", field="level")
        if new_level not in access.readable_levels(user):
            raise ServiceError(f"You cannot raise the finding to "
                               f"{policy.level(new_level).label}: you could not read it "
                               "there. Ask a reviewer cleared for that level.",
                               code="level_above_clearance", field="level")
    if outcome == "lock" and finding.locked:
        raise Conflict("The finding is already locked.", code="already_locked")

    details: dict[str, Any] = {"outcome": outcome}
    if outcome == "raise":
        old = finding.level
        rewrapped = change_level(user, finding, new_level, why=f"flag:{flag.id}")
        details.update(old_level=old, new_level=new_level, rewrapped=rewrapped)
    elif outcome == "lock":
        finding.locked = True
        audit.record("finding_locked", actor=user, target_type="finding",
                     target_id=finding.id, via=f"flag:{flag.id}")
    flag.state = "resolved"
    flag.outcome = outcome
    flag.outcome_level = new_level
    flag.note = note
    flag.resolved_by_id = user.id
    flag.resolved_at = utcnow()
    notices.event("review_flag_resolved", user, flag=flag, role="reviewer", **details)
    notices.notify_flag_outcome(flag, user)
    db.commit()
    return flag


# ---------------------------------------------------------------- conflicts


def declare_conflict(user: User, finding: Finding, reason: str | None) -> ConflictDeclaration:
    """A reviewer excludes themselves from every review of ``finding``. Their reviews of
    its open requests become stale (they no longer count)."""
    from app.review import service  # circular: service imports this module

    if not rules.is_reviewer(user) or not access.can_read(user, finding):
        raise NotFound()
    reason = clean_text(reason, "reason", limit=2000,
                        empty="Say briefly what the conflict is (kept for admins).")
    if rules.has_conflict(user, finding.id):
        raise Conflict("You already declared a conflict on this finding.",
                       code="duplicate_conflict")
    declaration = ConflictDeclaration(user_id=user.id, finding_id=finding.id, reason=reason,
                                      created_at=utcnow())
    db.add(declaration)
    db.flush()
    audit.record("review_conflict_declared", actor=user, target_type="finding",
                 target_id=finding.id)
    requests = db.scalars(select(ReviewRequest).where(
        ReviewRequest.finding_id == finding.id,
        ReviewRequest.state.in_(sorted(rules.OPEN_STATES)))).unique().all()
    for req in requests:
        service.void_reviews_of(user, req, "the reviewer declared a conflict")
    db.commit()
    return declaration


# ---------------------------------------------------------------- affiliations


def list_affiliations() -> list[OrgAffiliation]:
    return list(db.scalars(select(OrgAffiliation).order_by(OrgAffiliation.id)).unique())


def _org(slug: str | None, field: str) -> Organization:
    slug = (slug or "").strip().lower()
    org = db.scalar(select(Organization).where(Organization.slug == slug))
    if org is None:
        raise ServiceError(f"There is no organization {slug!r}.", code="unknown_org",
                           field=field)
    return org


def add_affiliation(actor: Any, org_a: str | None, org_b: str | None,
                    note: str | None = "") -> OrgAffiliation:
    """Admin: declare two organizations affiliated (symmetric)."""
    if actor is not None and not (actor.is_admin and access.in_good_standing(actor)):
        raise Forbidden("Only administrators keep the list of affiliated organizations.")
    a, b = _org(org_a, "org_a"), _org(org_b, "org_b")
    if a.id == b.id:
        raise ServiceError("Choose two different organizations.", code="same_org",
                           field="org_b")
    low, high = sorted((a.id, b.id))
    if db.scalar(select(OrgAffiliation.id).where(OrgAffiliation.org_a_id == low,
                                                 OrgAffiliation.org_b_id == high)):
        raise Conflict(f"{a.name} and {b.name} are already affiliated.",
                       code="duplicate_affiliation")
    note = clean_text(note, "note", limit=300, required=False)
    row = OrgAffiliation(org_a_id=low, org_b_id=high, note=note,
                         created_by_id=getattr(actor, "id", None), created_at=utcnow())
    db.add(row)
    db.flush()
    audit.record("org_affiliation_added", actor=actor or "cli", target_type="org_affiliation",
                 target_id=row.id, orgs=f"{a.slug} {b.slug}", note=note)
    db.commit()
    return row


def find_affiliation(org_a: str | None, org_b: str | None) -> OrgAffiliation:
    a, b = _org(org_a, "org_a"), _org(org_b, "org_b")
    low, high = sorted((a.id, b.id))
    row = db.scalar(select(OrgAffiliation).where(OrgAffiliation.org_a_id == low,
                                                 OrgAffiliation.org_b_id == high))
    if row is None:
        raise NotFound(f"{a.slug} and {b.slug} are not affiliated.")
    return row


def remove_affiliation(actor: Any, affiliation_id: int) -> None:
    if actor is not None and not (actor.is_admin and access.in_good_standing(actor)):
        raise Forbidden("Only administrators keep the list of affiliated organizations.")
    row = db.get(OrgAffiliation, affiliation_id)
    if row is None:
        raise NotFound("No such affiliation.")
    orgs = f"{row.org_a.slug} {row.org_b.slug}"
    db.delete(row)
    audit.record("org_affiliation_removed", actor=actor or "cli",
                 target_type="org_affiliation", target_id=affiliation_id, orgs=orgs)
    db.commit()
