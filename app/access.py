"""The access rule, in one place and two forms that must agree.

A user may read a finding when all hold:
1. the user is active and their organization is trusted;
2. the finding's level <= the user's effective clearance = min(clearance, org ceiling),
   where a clearance grant past its end date counts as the lowest level (public), and the
   ceiling counts only up to the highest level whose ``revet_days`` have not run out
   since an admin last vetted the organization;
3. the user acknowledged the current version of every NDA the level requires, within the
   level's ``renew_days`` when it has them;
4. the user has two-factor authentication on, if the level requires it, and, where the
   level requires a phishing-resistant factor (``mfa = "passkey"``), proved a passkey;
5. if the finding names organizations (a compartment), the user's organization is one.

Time comes from ``app.clock`` once per request (the subject's ``now``), so a grant lapses
on the very next request, and the SQL form, built from the same ``readable_levels``,
agrees on both databases.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select

from app import clock, state
from app.db import db
from app.errors import MfaRequired, NdaRequired, NotFound, PasskeyRequired
from app.findings.models import Finding, FindingOrg
from app.ndas.models import NdaAcknowledgement
from app.policy import Level, Policy


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
    #: when each acknowledged (key, version) was last signed (renewal); a pair missing
    #: here counts as signed long ago (it lapses at any level with ``renew_days``)
    signed_at: Mapping[tuple[str, int], datetime] = field(default_factory=dict, hash=False,
                                                          compare=False)
    #: the clearance grant's end (None: none)
    clearance_expires_at: datetime | None = None
    #: when an admin last vetted the organization (None: never)
    org_vetted_at: datetime | None = None
    #: the time the rule is judged at: one instant for the whole request
    now: datetime = field(default_factory=clock.now)
    passkey: bool = False
    #: the request came with an API token: only levels whose policy allows tokens
    token: bool = False


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
#: outside a request (commands, background sends) cached facts are judged again after
#: this long, so a long-running command does not judge grants at its start time
_UNSCOPED_CACHE = timedelta(seconds=1)


def _request_key() -> str | None:
    """What scopes the cached facts: the request (its id), so that no object carried from
    one request to the next (a session kept open across requests, as tests do) brings
    facts, or the time they were judged at, along. None outside a request."""
    from flask import g, has_request_context

    return g.get("request_id") if has_request_context() else None


def subject_for(user: Any) -> Subject | None:
    """Build (and cache on the user object for this request) the reader's facts."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    key = _request_key()
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is not None and cached[0] == key and (
            key is not None or abs(clock.now() - cached[1].now) < _UNSCOPED_CACHE):
        return cached[1]
    acks = db.execute(
        select(NdaAcknowledgement.nda_key, NdaAcknowledgement.version,
               func.max(NdaAcknowledgement.created_at))
        .where(NdaAcknowledgement.user_id == user.id)
        .group_by(NdaAcknowledgement.nda_key, NdaAcknowledgement.version)
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
        acknowledged=frozenset((k, v) for k, v, _ in acks),
        passkey=passkey,
        signed_at={(k, v): as_utc(at) for k, v, at in acks},
        clearance_expires_at=getattr(user, "clearance_expires_at", None),
        org_vetted_at=getattr(user.org, "vetted_at", None),
        now=clock.now(),
        token=bool(getattr(user, "auth_token", False)),
    )
    setattr(user, _CACHE_ATTR, (key, subject))
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


def assume_proof(user: Any, proof: str | None, *, token: bool = False) -> None:
    """Record how ``user`` proved who they are for this request ("password", "totp",
    "recovery_code", "passkey", "operator"), and whether through an API token (which
    reads only levels whose policy has ``api_tokens``); the rule reads it (module
    docstring). A token's proof is the fresh proof its maker gave when making it."""
    if user is not None:
        user.auth_proof = proof
        user.auth_token = token
        forget(user)


def forget(user: Any) -> None:
    """Drop the cached facts after a change (NDA signed, 2FA enrolled, ...)."""
    if user is not None and hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)


def _subject(user_or_subject: Any) -> Subject | None:
    if isinstance(user_or_subject, Subject):
        return user_or_subject
    return subject_for(user_or_subject)


#: the lapse time of a grant that never started (never vetted, never signed)
LONG_AGO = datetime.min.replace(tzinfo=UTC)


def as_utc(at: datetime) -> datetime:
    """``func.max`` over a UTC column comes back naive on SQLite."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def clearance_lapsed(user: Any) -> bool:
    """The clearance grant had an end date and it has passed."""
    s = _subject(user)
    return (s is not None and s.clearance_expires_at is not None
            and s.now >= s.clearance_expires_at)


def granted_clearance(user: Any, policy: Policy | None = None) -> str | None:
    """The clearance the grant gives now: the lowest level once it lapsed."""
    policy = policy or state.policy()
    s = _subject(user)
    if s is None or not policy.is_level(s.clearance):
        return None
    return policy.lowest().key if clearance_lapsed(s) else s.clearance


def trust_lapses_at(vetted_at: datetime | None, level: Level) -> datetime | None:
    """When an organization vetted at ``vetted_at`` stops being trusted at ``level``
    (None: never). Never vetted counts as lapsed long ago."""
    if not level.revet_days:
        return None
    if vetted_at is None:
        return LONG_AGO
    return vetted_at + timedelta(days=level.revet_days)


def vetted_ceiling(user: Any, policy: Policy | None = None) -> str | None:
    """The organization's ceiling, cut down to the highest level whose trust has not
    lapsed (``revet_days``; the loader makes them shrink going up, so every level below
    a vetted one is vetted too)."""
    policy = policy or state.policy()
    s = _subject(user)
    if s is None or not policy.is_level(s.org_ceiling):
        return None
    ceiling = policy.lowest().key
    for level in policy.levels_up_to(s.org_ceiling):
        lapses = trust_lapses_at(s.org_vetted_at, level)
        if lapses is not None and s.now >= lapses:
            break
        ceiling = level.key
    return ceiling


def effective_clearance(user: Any, policy: Policy | None = None) -> str | None:
    """min(granted clearance, vetted org ceiling) by level rank; None when either is
    unknown."""
    policy = policy or state.policy()
    s = _subject(user)
    if s is None:
        return None
    granted, ceiling = granted_clearance(s, policy), vetted_ceiling(s, policy)
    if granted is None or ceiling is None:
        return None
    return min(granted, ceiling, key=policy.rank)


def nda_lapses_at(signed_at: datetime | None, level: Level) -> datetime | None:
    """When a signature made at ``signed_at`` stops counting for ``level`` (None: not
    by time; it still lapses when the NDA's version changes)."""
    if not level.renew_days:
        return None
    if signed_at is None:
        return LONG_AGO
    return signed_at + timedelta(days=level.renew_days)


def nda_holds(s: Subject, key: str, level: Level, policy: Policy) -> bool:
    """The subject signed the current version of NDA ``key``, recently enough for
    ``level``."""
    pair = (key, policy.ndas[key].version)
    if pair not in s.acknowledged:
        return False
    lapses = nda_lapses_at(s.signed_at.get(pair), level)
    return lapses is None or s.now < lapses


def in_good_standing(user: Any) -> bool:
    s = _subject(user)
    return s is not None and s.active and s.org_trusted


def missing_ndas(user: Any, level: str, policy: Policy | None = None) -> list[str]:
    """NDA keys the user still owes for ``level``: never signed in their current
    version, or signed longer ago than the level's ``renew_days``."""
    policy = policy or state.policy()
    s = _subject(user)
    lv = policy.level(level)
    if s is None:
        return list(lv.ndas)
    return [key for key in lv.ndas if not nda_holds(s, key, lv, policy)]


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
        and (level.api_tokens or not s.token)
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
    s = _subject(user)
    if why in (Denial.MFA, Denial.PASSKEY) and s is not None and s.token:
        level = state.policy().level(finding.level)
        reason = ("this level's policy allows no API tokens" if not level.api_tokens else
                  "make a new token right after confirming your second factor (the "
                  "account's tokens page)")
        error = PasskeyRequired if why is Denial.PASSKEY else MfaRequired
        raise error(f"This token cannot {what} at this level: {reason}.")
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
