"""API tokens: bearer tokens for /api/v1 with scopes, an expiry, a level cap (through
the proof they carry, see app/access.py), their last use, and revocation."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update

from app import access, audit, state
from app.auth.models import ApiToken, Role, User
from app.auth.service import sha256_hex, standing_problem
from app.db import db, utcnow
from app.errors import NotFound, ServiceError
from app.orgs.models import OrgStatus

TOKEN_PREFIX = "enc_"  # noqa: S105  (a public marker, not a secret)

#: what a token may do: read (GET), write (other member actions), review (reviewer
#: actions), admin (org admin and admin actions); the owner's role must also allow it
SCOPES = ("read", "write", "review", "admin")
_SCOPE_ROLE = {"review": Role.REVIEWER, "admin": Role.ORG_ADMIN}
#: proofs that count as a second factor for a token (see app/access.py)
FRESH_SECOND_FACTOR = frozenset({"totp", "recovery_code", "passkey"})


def allowed_scopes(user: User) -> list[str]:
    """The scopes ``user``'s role allows a token to carry."""
    return [s for s in SCOPES if s not in _SCOPE_ROLE or user.has_role(_SCOPE_ROLE[s])]


def _check_scopes(user: User, scopes: list[str] | tuple[str, ...] | None) -> str:
    wanted = list(dict.fromkeys(scopes if scopes is not None else ["read"]))
    if not wanted:
        raise ServiceError("Choose at least one scope.", field="scopes", code="bad_scope")
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown:
        raise ServiceError(f"Unknown scope {unknown[0]!r}: use {', '.join(SCOPES)}.",
                           field="scopes", code="bad_scope")
    beyond = [s for s in wanted if s not in allowed_scopes(user)]
    if beyond:
        raise ServiceError(f"Your role does not allow a token with the {beyond[0]!r} scope.",
                           field="scopes", code="bad_scope")
    return " ".join(s for s in SCOPES if s in wanted)


def _check_days(days: int | None) -> int:
    policy = state.policy()
    if days is None:
        return policy.token_default_days
    if isinstance(days, bool) or not isinstance(days, int) or not \
            1 <= days <= policy.token_max_days:
        raise ServiceError(f"A token lives 1 to {policy.token_max_days} days.",
                           field="days", code="bad_days")
    return days


def create_token(user: User, name: str, *, actor: User | str | None = None,
                 proof: str = "operator", scopes: list[str] | tuple[str, ...] | None = None,
                 days: int | None = None) -> tuple[ApiToken, str]:
    """A new bearer token; the plaintext is returned once and only its hash is kept.

    ``scopes``: what it may do (default read only), never beyond the owner's role.
    ``days``: how long it lives (default and maximum from the policy). ``proof``: the
    *fresh* proof its maker gave (the tokens page passes the session's proof only when it
    is recent, else "password"); a token reads a level that needs a second factor only
    from a second-factor proof, and only where the level's policy allows tokens. The
    default, "operator", is the command line and other server-side callers (the
    account's factors count)."""
    name = " ".join((name or "").split()) or "token"
    if len(name) > 80:
        raise ServiceError("A token name has at most 80 characters.", field="name")
    if user.org.status != OrgStatus.TRUSTED.value or not user.is_active:
        raise ServiceError(f"{user.email} is not in good standing; no token was made.")
    scope_text = _check_scopes(user, scopes)
    lifetime = _check_days(days)
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user_id=user.id, name=name, token_hash=sha256_hex(plaintext),
                     prefix=plaintext[: len(TOKEN_PREFIX) + 6], proof=proof,
                     scopes=scope_text, expires_at=utcnow() + timedelta(days=lifetime))
    db.add(token)
    db.flush()
    audit.record("token_created", actor=actor or user, target_type="api_token",
                 target_id=token.id, user=user.email, name=name, proof=proof,
                 scopes=scope_text, days=lifetime)
    db.commit()
    return token, plaintext


def revoke_token(actor: User, token_id: int) -> None:
    token = db.get(ApiToken, token_id)
    if token is None or (token.user_id != actor.id and not actor.is_admin):
        raise NotFound("No such token.")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        token.revoked_reason = "owner" if token.user_id == actor.id else "admin"
        audit.record("token_revoked", actor=actor, target_type="api_token",
                     target_id=token.id)
        db.commit()


def revoke_all_tokens(user: User, reason: str, *, proofs: frozenset[str] | None = None,
                      actor: User | str | None = None) -> int:
    """Revoke ``user``'s live tokens (those made with one of ``proofs``, if given) and
    audit it; the caller commits. Returns how many."""
    query = update(ApiToken).where(ApiToken.user_id == user.id,
                                   ApiToken.revoked_at.is_(None))
    if proofs is not None:
        query = query.where(ApiToken.proof.in_(sorted(proofs)))
    done = db.execute(query.values(revoked_at=utcnow(), revoked_reason=reason)
                      .execution_options(synchronize_session="fetch"))
    count = int(done.rowcount or 0)  # type: ignore[attr-defined]
    if count:
        audit.record("tokens_revoked", actor=actor or user, target_type="user",
                     target_id=user.id,
                     reason=reason, count=count)
    return count


@dataclass
class TokenUse:
    """A live token and its user, for one API request."""

    token: ApiToken
    user: User


def token_for(plaintext: str, address: str | None = None) -> TokenUse | None:
    """The live token ``plaintext`` names (not revoked, not expired, its user in good
    standing), with its last use (time, address) updated; None otherwise."""
    if not plaintext.startswith(TOKEN_PREFIX) or len(plaintext) > 200:
        return None
    wanted = sha256_hex(plaintext)
    token = db.scalar(select(ApiToken).where(ApiToken.token_hash == wanted))
    if token is None or not hmac.compare_digest(token.token_hash, wanted):
        return None
    now = utcnow()
    if token.revoked_at is not None or access.as_utc(token.expires_at) <= now \
            or standing_problem(token.user):
        return None
    address = (address or "")[:64] or None
    if (token.last_used_at is None or address != token.last_used_ip
            or now - access.as_utc(token.last_used_at) > timedelta(minutes=5)):
        token.last_used_at = now
        token.last_used_ip = address
        db.commit()
    access.assume_proof(token.user, token.proof, token=True)
    return TokenUse(token, token.user)


def user_for_token(plaintext: str, address: str | None = None) -> User | None:
    """The user a bearer token authenticates, if it is live and the user in good standing."""
    use = token_for(plaintext, address)
    return use.user if use else None
