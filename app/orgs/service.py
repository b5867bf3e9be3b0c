"""The whitelist of trusted organizations."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select, update

from app import access, audit, clock, state
from app.auth.models import ApiToken, User
from app.db import db, utcnow
from app.errors import NotFound, ServiceError
from app.orgs.models import Organization, OrgDomain, OrgStatus

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
DOMAIN_RE = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$")


def get_org(slug: str) -> Organization:
    org = db.scalar(select(Organization).where(Organization.slug == slug))
    if org is None:
        raise NotFound(f"No organization {slug!r}.")
    return org


def list_orgs() -> list[Organization]:
    return list(db.scalars(select(Organization).order_by(Organization.name)))


def member_counts() -> dict[int, int]:
    rows = db.execute(select(User.org_id, func.count()).group_by(User.org_id)).all()
    return {org_id: n for org_id, n in rows}


def _clean_domains(domains: Iterable[str], org: Organization | None = None) -> list[str]:
    cleaned: list[str] = []
    for raw in domains:
        domain = raw.strip().lower().rstrip(".")
        if not domain:
            continue
        if not DOMAIN_RE.match(domain):
            raise ServiceError(f"{raw!r} is not a domain name.", field="domains")
        try:  # the same check invitations apply, so every domain can be invited from
            validate_email(f"member@{domain}", check_deliverability=False)
        except EmailNotValidError as exc:
            raise ServiceError(f"{domain} cannot be used for e-mail: {exc}",
                               field="domains") from None
        owner = db.scalar(select(OrgDomain).where(OrgDomain.domain == domain))
        if owner is not None and (org is None or owner.org_id != org.id):
            raise ServiceError(f"{domain} already belongs to {owner.org.slug}.",
                               field="domains")
        if domain not in cleaned:
            cleaned.append(domain)
    if not cleaned:
        raise ServiceError("Give at least one e-mail domain.", field="domains")
    return cleaned


def _check_ceiling(level: str) -> None:
    if not state.policy().is_level(level):
        raise ServiceError(
            f"Unknown level {level!r}; levels are {', '.join(state.policy().level_keys())}.",
            field="ceiling",
        )


def add_org(actor: User | None, *, slug: str, name: str, domains: Iterable[str],
            ceiling: str, trusted: bool = False) -> Organization:
    slug = slug.strip().lower()
    name = " ".join(name.split())
    if not SLUG_RE.match(slug):
        raise ServiceError("A slug is 1-64 lowercase letters, digits and '-'.", field="slug")
    if not 2 <= len(name) <= 200:
        raise ServiceError("A name has 2-200 characters.", field="name")
    if db.scalar(select(Organization.id).where(Organization.slug == slug)):
        raise ServiceError(f"The slug {slug!r} is taken.", field="slug")
    _check_ceiling(ceiling)
    cleaned = _clean_domains(domains)
    status = OrgStatus.TRUSTED.value if trusted else OrgStatus.PENDING.value
    org = Organization(slug=slug, name=name, ceiling=ceiling, status=status,
                       domains=[OrgDomain(domain=d) for d in cleaned])
    db.add(org)
    db.flush()
    audit.record("org_added", actor=actor or "cli", target_type="org", target_id=org.slug,
                 name=name, domains=cleaned, ceiling=ceiling, status=status)
    db.commit()
    return org


def _check_status(actor: User | None, org: Organization, status: str) -> None:
    if status not in {s.value for s in OrgStatus}:
        raise ServiceError(f"Status must be one of pending, trusted, suspended; got {status!r}.",
                           field="status")
    if actor is not None and actor.org_id == org.id and status != OrgStatus.TRUSTED.value:
        raise ServiceError("You cannot suspend your own organization.", field="status")


def _apply_status(actor: User | None, org: Organization, status: str) -> None:
    if org.status == status:
        return
    old = org.status
    org.status = status
    org.status_changed_at = utcnow()
    if status == OrgStatus.TRUSTED.value:
        org.vetted_at = org.status_changed_at  # trusting is vetting
    if status != OrgStatus.TRUSTED.value:
        # End every member's sessions for good (as disabling a user does), so that
        # trusting the organization again later does not revive them.
        db.execute(update(User).where(User.org_id == org.id)
                   .values(session_version=User.session_version + 1))
        # ... and revoke their API tokens, so trusting it again does not revive them
        revoked = db.execute(
            update(ApiToken)
            .where(ApiToken.user_id.in_(select(User.id).where(User.org_id == org.id)),
                   ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason="org_suspended")
            .execution_options(synchronize_session="fetch")).rowcount
    audit.record("org_status_changed", actor=actor or "cli", target_type="org",
                 target_id=org.slug, old=old, new=status,
                 **({"tokens_revoked": revoked} if status != OrgStatus.TRUSTED.value
                    and revoked else {}))


def _apply_ceiling(actor: User | None, org: Organization, ceiling: str) -> None:
    if org.ceiling == ceiling:
        return
    old = org.ceiling
    org.ceiling = ceiling
    audit.record("org_ceiling_changed", actor=actor or "cli", target_type="org",
                 target_id=org.slug, old=old, new=ceiling)


@dataclass(frozen=True)
class TrustLapse:
    """The next level at which an organization's trust lapses without a renewal."""

    level: str
    label: str
    at: datetime

    @property
    def lapsed(self) -> bool:
        return clock.now() >= self.at


def trust_lapse(org: Organization) -> TrustLapse | None:
    """The first lapse among the levels up to the organization's ceiling (the highest
    level with ``revet_days`` lapses first), or None when none asks for re-vetting."""
    policy = state.policy()
    if not policy.is_level(org.ceiling):
        return None
    lapses = [(at, level) for level in policy.levels_up_to(org.ceiling)
              if (at := access.trust_lapses_at(org.vetted_at, level)) is not None]
    if not lapses:
        return None
    # the level that lapses first; among ties the lowest (its members lose most)
    at, level = min(lapses, key=lambda pair: (pair[0], pair[1].rank))
    return TrustLapse(level.key, level.label, at)


def renew_trust(actor: User | None, org: Organization) -> None:
    """An admin re-vetted the organization: its trust runs for another ``revet_days``
    from now at every level."""
    if org.status != OrgStatus.TRUSTED.value:
        raise ServiceError(f"{org.name} is {org.status}; trust it instead of renewing.",
                           code="not_trusted")
    old = org.vetted_at
    org.vetted_at = utcnow()
    audit.record("org_trust_renewed", actor=actor or "cli", target_type="org",
                 target_id=org.slug, previous=old.isoformat() if old else None)
    db.commit()


def set_status(actor: User | None, org: Organization, status: str) -> None:
    """Trust, suspend or return to pending; members feel it on their next request."""
    _check_status(actor, org, status)
    _apply_status(actor, org, status)
    db.commit()


def set_ceiling(actor: User | None, org: Organization, ceiling: str) -> None:
    _check_ceiling(ceiling)
    _apply_ceiling(actor, org, ceiling)
    db.commit()


def update_org(actor: User | None, org: Organization, *, name: str | None = None,
               domains: Iterable[str] | None = None, ceiling: str | None = None,
               status: str | None = None) -> None:
    """Validate every change first, then apply them together (all or nothing)."""
    if name is not None:
        name = " ".join(name.split())
        if not 2 <= len(name) <= 200:
            raise ServiceError("A name has 2-200 characters.", field="name")
    cleaned = _clean_domains(domains, org) if domains is not None else None
    if ceiling is not None:
        _check_ceiling(ceiling)
    if status is not None:
        _check_status(actor, org, status)
    if (name is not None and name != org.name) or (
        cleaned is not None and cleaned != org.domain_names
    ):
        keep = {d.domain: d for d in org.domains}
        if name is not None:
            org.name = name
        if cleaned is not None:
            org.domains = [keep.get(d) or OrgDomain(domain=d) for d in cleaned]
        audit.record("org_updated", actor=actor or "cli", target_type="org",
                     target_id=org.slug, name=org.name, domains=org.domain_names)
    if ceiling is not None:
        _apply_ceiling(actor, org, ceiling)
    if status is not None:
        _apply_status(actor, org, status)
    db.commit()
