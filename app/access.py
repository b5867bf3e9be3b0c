"""The access rule, in one place and two forms that must agree.

A user may read a finding when all hold:
1. the user is active and their organization is trusted;
2. the finding's level <= the user's effective clearance = min(clearance, org ceiling);
3. the user acknowledged the current version of every NDA the level requires;
4. the user has two-factor authentication on, if the level requires it, and, where the
   level requires a phishing-resistant factor (``mfa = "passkey"``), proved a passkey;
5. if the finding names organizations (a compartment), the user's organization is one.

``readable_levels`` + ``in_compartment`` are the Python form; ``finding_filter`` /
``visible_findings`` build the SQL form from the same ``readable_levels``. Every list,
search, feed, notification, export and API endpoint goes through ``visible_findings``.

Rule 4 looks at how the reader *proved* who they are, not only at what the account
has: a signed-in session or an API token carries its proof (``auth_proof`` on the user
object, set where the request is authenticated, see :func:`assume_proof`). Someone who
signed in with a password and an authenticator code has two factors but no passkey proof,
even if the account has a passkey: a phished password and code stay below the passkey
levels. Without a proof (another user, e.g. a notification's recipient) the account's
factors count: enrolled 2FA, a registered passkey.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, false, or_, select

from app import state
from app.db import db
from app.errors import MfaRequired, NdaRequired, NotFound, PasskeyRequired
from app.findings.models import Finding, FindingOrg
from app.ndas.models import NdaAcknowledgement
from app.policy import Policy


@dataclass(frozen=True)
class Subject:
    """The facts about a reader that the rule looks at."""

    user_id: int
    org_id: int
    active: bool
    org_trusted: bool
    clearance: str
    org_ceiling: str
    mfa: bool
    acknowledged: frozenset[tuple[str, int]]
    passkey: bool = False


#: Proofs (``auth_proof``) that count as a second factor. "operator" (a token made on the
#: command line by whoever runs the server) counts what the account has, like no proof.
SECOND_FACTOR_PROOFS = frozenset({"totp", "recovery_code", "passkey"})


class Denial(enum.Enum):
    """Why a finding is unreadable; only NDA and MFA may be shown to the user."""

    NONE = "none"
    NOT_FOUND = "not_found"
    NDA = "nda"
    MFA = "mfa"
    PASSKEY = "passkey"


_CACHE_ATTR = "_enclave_access_subject"


def subject_for(user: Any) -> Subject | None:
    """Build (and cache on the user object for this request) the reader's facts."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is not None:
        return cached
    acks = db.execute(
        select(NdaAcknowledgement.nda_key, NdaAcknowledgement.version).where(
            NdaAcknowledgement.user_id == user.id
        )
    ).all()
    mfa, passkey = _factors(user)
    subject = Subject(
        user_id=user.id,
        org_id=user.org_id,
        active=bool(user.is_active),
        org_trusted=user.org.status == "trusted",
        clearance=user.clearance,
        org_ceiling=user.org.ceiling,
        mfa=mfa,
        acknowledged=frozenset((k, v) for k, v in acks),
        passkey=passkey,
    )
    setattr(user, _CACHE_ATTR, subject)
    return subject


def _factors(user: Any) -> tuple[bool, bool]:
    """(second factor, phishing-resistant factor) of this reader (module docstring)."""
    totp = user.totp_enabled_at is not None
    proof = getattr(user, "auth_proof", None)
    if proof is None or proof == "operator":
        # not the one making the request, or a token the operator made on the command
        # line: what the account has
        has_passkey = user.has_passkeys
        return totp or has_passkey, has_passkey
    if proof == "passkey":
        return True, True
    return proof in SECOND_FACTOR_PROOFS and totp, False


def assume_proof(user: Any, proof: str | None) -> None:
    """Record how ``user`` proved who they are for this request ("password", "totp",
    "recovery_code", "passkey", "operator"); the rule reads it (module docstring)."""
    if user is not None:
        user.auth_proof = proof
        forget(user)


def forget(user: Any) -> None:
    """Drop the cached facts after a change (NDA signed, 2FA enrolled, ...)."""
    if user is not None and hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)


def _subject(user_or_subject: Any) -> Subject | None:
    if isinstance(user_or_subject, Subject):
        return user_or_subject
    return subject_for(user_or_subject)


def effective_clearance(user: Any, policy: Policy | None = None) -> str | None:
    """min(user clearance, org ceiling) by level rank; None when either is unknown."""
    policy = policy or state.policy()
    s = _subject(user)
    if s is None or not (policy.is_level(s.clearance) and policy.is_level(s.org_ceiling)):
        return None
    return min(s.clearance, s.org_ceiling, key=policy.rank)


def in_good_standing(user: Any) -> bool:
    s = _subject(user)
    return s is not None and s.active and s.org_trusted


def missing_ndas(user: Any, level: str, policy: Policy | None = None) -> list[str]:
    """NDA keys (current versions) the user still owes for ``level``."""
    policy = policy or state.policy()
    s = _subject(user)
    acked = s.acknowledged if s else frozenset()
    return [
        key for key in policy.level(level).ndas
        if (key, policy.ndas[key].version) not in acked
    ]


def readable_levels(user: Any, policy: Policy | None = None) -> set[str]:
    """The levels whose findings ``user`` may read (compartments aside)."""
    policy = policy or state.policy()
    s = _subject(user)
    if s is None or not (s.active and s.org_trusted):
        return set()
    ceiling = effective_clearance(s, policy)
    if ceiling is None:
        return set()
    return {
        level.key
        for level in policy.levels_up_to(ceiling)
        if (s.mfa or not level.mfa) and (s.passkey or not level.needs_passkey)
        and not missing_ndas(s, level.key, policy)
    }


def in_compartment(user: Any, finding: Finding) -> bool:
    s = _subject(user)
    if s is None:
        return False
    if not finding.compartmented:
        return True
    return s.org_id == finding.org_id or s.org_id in finding.compartment_org_ids


def can_read_version(user: Any, finding: Finding, level: str, compartment_slugs: str,
                     policy: Policy | None = None) -> bool:
    """The rule for an old version of ``finding`` (its level and compartment then, as a
    space-separated list of org slugs; empty = no compartment). After a declassification
    an old version can be more restricted than the finding is now."""
    if level not in readable_levels(user, policy):
        return False
    s = _subject(user)
    if s is None:
        return False
    if not compartment_slugs or s.org_id == finding.org_id:
        return True
    org = getattr(user, "org", None)
    return org is not None and org.slug in compartment_slugs.split()


def can_read(user: Any, finding: Finding, policy: Policy | None = None) -> bool:
    return finding.level in readable_levels(user, policy) and in_compartment(user, finding)


def denial(user: Any, finding: Finding, policy: Policy | None = None) -> Denial:
    """Why ``user`` may not read ``finding``.

    NDA/MFA/PASSKEY (a second factor, but no passkey proof) are only reported to a user
    who would otherwise be cleared for the finding (standing, clearance and compartment
    all fine), so nothing leaks to the uncleared.
    """
    policy = policy or state.policy()
    if can_read(user, finding, policy):
        return Denial.NONE
    s = _subject(user)
    ceiling = effective_clearance(s, policy) if s else None
    if (
        s is None
        or not (s.active and s.org_trusted)
        or ceiling is None
        or not policy.is_level(finding.level)
        or policy.rank(finding.level) > policy.rank(ceiling)
        or not in_compartment(s, finding)
    ):
        return Denial.NOT_FOUND
    if missing_ndas(s, finding.level, policy):
        return Denial.NDA
    if s.mfa and policy.level(finding.level).needs_passkey:
        return Denial.PASSKEY
    return Denial.MFA


def require_readable(user: Any, finding: Finding, *, what: str = "read it") -> None:
    """Raise the answer for an unreadable finding: 404 for everyone but an otherwise
    cleared reader, who is told the NDA or the two-factor authentication they lack."""
    why = denial(user, finding)
    if why is Denial.NONE:
        return
    if why is Denial.NDA:
        raise NdaRequired(f"Sign the agreement for this level to {what}.",
                          missing_ndas(user, finding.level))
    if why is Denial.MFA:
        raise MfaRequired(f"Turn on two-factor authentication to {what} at this level.")
    if why is Denial.PASSKEY:
        raise PasskeyRequired(f"This level needs a passkey: confirm with one to {what}.")
    raise NotFound()


def finding_filter(user: Any, policy: Policy | None = None) -> ColumnElement[bool]:
    """The SQL form of the rule, as a WHERE clause over ``Finding``."""
    levels = readable_levels(user, policy)
    s = _subject(user)
    if not levels or s is None:
        return false()
    compartment_ok = or_(
        Finding.compartmented.is_(False),
        Finding.org_id == s.org_id,
        exists().where(FindingOrg.finding_id == Finding.id, FindingOrg.org_id == s.org_id),
    )
    return and_(Finding.level.in_(sorted(levels)), compartment_ok)


def visible_findings(user: Any, policy: Policy | None = None) -> Select[tuple[Finding]]:
    """``select(Finding)`` restricted to what ``user`` may read."""
    return select(Finding).where(finding_filter(user, policy))
