"""Changing a finding's level as the outcome of a review (a flag raising it, a
declassification lowering it).

The findings service only lets the author or an admin raise a level and refuses to lower
one, so review outcomes apply the change here, the same way the findings service does an
edit: the old state is kept as a ``FindingRevision``, a level that requires a compartment
gets the author's organization, the attachments' data keys are rewrapped under the new
level's key in the same transaction, and the change is audit-logged. The caller commits.
"""

from __future__ import annotations

from typing import Any

from app import audit, state
from app.attachments import service as attachments
from app.db import db, utcnow
from app.findings.models import Finding, FindingOrg, FindingRevision


def _compartment_slugs(finding: Finding) -> str:
    if not finding.compartmented:
        return ""
    return " ".join(sorted(c.org.slug for c in finding.compartment))


def change_level(actor: Any, finding: Finding, new_level: str, *, why: str,
                 **details: Any) -> int:
    """Set ``finding.level`` to ``new_level``; returns how many attachment keys were
    rewrapped. ``why`` names the review item in the audit entry (e.g. ``flag:3``)."""
    policy = state.policy()
    old_level = finding.level
    if new_level == old_level:
        return 0
    db.add(FindingRevision(finding_id=finding.id, editor_id=actor.id, created_at=utcnow(),
                           old_title=finding.title, old_body=finding.body,
                           old_level=old_level, old_compartment=_compartment_slugs(finding)))
    finding.level = new_level
    finding.version = Finding.version + 1  # open edit forms of the old version are stale
    if policy.level(new_level).requires_compartment and not finding.compartmented:
        finding.compartment = [FindingOrg(org_id=finding.org_id)]
        finding.compartmented = True
    finding.updated_at = utcnow()
    db.flush()
    raised = policy.rank(new_level) > policy.rank(old_level)
    audit.record("finding_level_raised" if raised else "finding_level_lowered", actor=actor,
                 target_type="finding", target_id=finding.id, old=old_level, new=new_level,
                 via=why, **details)
    return attachments.rewrap_for_level(finding, new_level, actor=actor)
