"""Sign-in, invitations, API tokens and user management rules."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select, update
from sqlalchemy.orm import defaultload

from app import access, audit, state
from app.auth import mfa
from app.auth.models import Invitation, PasswordReset, Role, User
from app.auth.passwords import (
    check_password_strength,
    hash_password,
    needs_rehash,
    verify_password,
)
from app.db import db, utcnow
from app.errors import Forbidden, NotFound, ServiceError
from app.links import external_url
from app.orgs.models import Organization, OrgStatus

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,38}[a-z0-9]$")


class LoginRefused(ServiceError):
    status = 401
    code = "login_refused"


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalize_email(raw: str) -> str:
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ServiceError(f"Not a valid e-mail address: {exc}", field="email") from None


def email_domain(email: str) -> str:
    return email.rsplit("@", 1)[1].lower()


def get_user_by_email(email: str) -> User | None:
    return db.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))


def _standing_problem(user: User) -> str | None:
    if not user.is_active:
        return "This account is disabled."
    if user.org.status == OrgStatus.SUSPENDED.value:
        return "Your organization's access to Enclave is suspended."
    if user.org.status != OrgStatus.TRUSTED.value:
        return "Your organization is not yet trusted on Enclave."
    return None


SSO_ONLY = ("Your organization signs in through its own identity provider: use "
            "“Sign in with your organization”.")


def sso_only_problem(user: User) -> str | None:
    """Why ``user`` may not sign in without their organization's provider (a password or
    a passkey alone), if their organization turned passwords off."""
    from app.sso.service import passwords_allowed

    return None if passwords_allowed(user) else SSO_ONLY


def standing_problem(user: User) -> str | None:
    """Why ``user`` may not sign in now (disabled, organization not trusted), or None."""
    return _standing_problem(user)


# ---------------------------------------------------------------- sign-in

def authenticate(email: str, password: str) -> User:
    """Check a password; return the user or raise LoginRefused (one message for all)."""
    user = get_user_by_email(email) if email else None
    ok = verify_password(user.password_hash if user else None, password)
    if not user or not ok:
        audit.record("login_failed", actor=email[:254] if email else "", target_type="user",
                     target_id=user.id if user else "")
        db.commit()
        raise LoginRefused("Wrong e-mail or password.")
    problem = _standing_problem(user) or sso_only_problem(user)
    if problem:
        audit.record("login_refused", actor=user, target_type="user", target_id=user.id,
                     reason=problem)
        db.commit()
        raise LoginRefused(problem)
    if user.password_hash and needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def complete_login(user: User, *, method: str) -> None:
    user.last_login_at = utcnow()
    audit.record("login", actor=user, target_type="user", target_id=user.id, method=method)
    db.commit()


def second_factor(user: User, code: str) -> str:
    """Verify a TOTP or recovery code; returns the method used or raises LoginRefused."""
    code = (code or "").strip()
    if mfa.verify_totp(user, code):
        return "totp"
    if mfa.looks_like_recovery_code(code) and mfa.use_recovery_code(user, code):
        audit.record("recovery_code_used", actor=user, target_type="user", target_id=user.id,
                     remaining=mfa.remaining_recovery_codes(user))
        return "recovery_code"
    audit.record("login_failed", actor=user, target_type="user", target_id=user.id,
                 stage="second_factor")
    db.commit()
    raise LoginRefused("That code is wrong or was already used.", field="code")


def load_session_user(session_token: str) -> User | None:
    """Resolve a Flask-Login id ``"<id>:<session_version>"``; None ends the session."""
    try:
        raw_id, raw_version = session_token.split(":", 1)
        # every request loads its user: the organization's domains (eager elsewhere)
        # are loaded only if a page reads them
        user = db.get(User, int(raw_id),
                      options=[defaultload(User.org).lazyload(Organization.domains)])
        version = int(raw_version)
    except (ValueError, TypeError):
        return None
    if user is None or user.session_version != version or _standing_problem(user):
        return None
    return user


def end_all_sessions(user: User) -> None:
    user.session_version += 1


def logout(user: User) -> None:
    end_all_sessions(user)
    audit.record("logout", actor=user, target_type="user", target_id=user.id)
    db.commit()


def change_password(user: User, current: str, new: str) -> None:
    if not verify_password(user.password_hash, current):
        raise ServiceError("The current password is wrong.", field="current_password")
    check_password_strength(new, min_length=state.settings().min_password_length,
                            user_inputs=[user.email, user.username, user.display_name])
    user.password_hash = hash_password(new)
    user.password_changed_at = utcnow()
    end_all_sessions(user)
    from app.auth import tokens  # (tokens imports this module)

    tokens.revoke_all_tokens(user, "password_changed")
    audit.record("password_changed", actor=user, target_type="user", target_id=user.id)
    db.commit()


# ---------------------------------------------------------------- password reset

RESET_INVALID = "This password reset link is invalid or has expired. Ask for a new one."


def request_password_reset(email: str) -> EmailMessage | None:
    """Start a reset for ``email``: the e-mail to send, or None when the address has no
    active account in a trusted organization. The caller answers the same either way,
    and both paths do the same database work (a lookup, an audit entry, a commit).

    A new request supersedes the user's earlier links."""
    raw = " ".join((email or "").split())[:254]
    user = get_user_by_email(raw) if raw else None
    problem = _standing_problem(user) if user is not None else "no such account"
    if user is None or problem:
        audit.record("password_reset_requested", actor=user or raw, target_type="user",
                     target_id=user.id if user else "", sent=False, reason=problem)
        db.commit()
        return None
    now = utcnow()
    db.execute(update(PasswordReset)
               .where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None),
                      PasswordReset.revoked_at.is_(None))
               .values(revoked_at=now))
    token = secrets.token_urlsafe(32)
    minutes = state.settings().password_reset_minutes
    reset = PasswordReset(user_id=user.id, token_hash=sha256_hex(token), created_at=now,
                          expires_at=now + timedelta(minutes=minutes))
    db.add(reset)
    db.flush()
    audit.record("password_reset_requested", actor=user, target_type="user",
                 target_id=user.id, sent=True, reset=reset.id)
    db.commit()
    return _reset_message(user, token, minutes)


def _reset_message(user: User, token: str, minutes: int) -> EmailMessage:
    from app.notifications.mail import sender_address

    link = external_url("auth.reset_password", token=token)
    msg = EmailMessage()
    msg["From"] = sender_address()
    msg["To"] = formataddr((user.display_name, user.email))
    msg["Subject"] = "[Enclave] Reset your password"
    msg["Message-ID"] = make_msgid(domain="enclave.invalid")
    msg.set_content("\n".join([
        "Someone (we hope you) asked to reset the password of your Enclave account.",
        "",
        f"Choose a new password here (the link works once, for {minutes} minutes):",
        link,
        "",
        "Resetting signs out all your sessions. Two-factor authentication stays on: "
        "you still need your authenticator app to sign in.",
        "",
        "If you did not ask for this, ignore this e-mail; your password is unchanged.",
    ]))
    return msg


def find_password_reset(token: str) -> PasswordReset:
    """The live reset for ``token``, or NotFound with one message for every reason
    (unknown, used, superseded, expired, account no longer in good standing)."""
    wanted = sha256_hex(token or "")
    reset = db.scalar(select(PasswordReset).where(PasswordReset.token_hash == wanted))
    if (reset is None or not hmac.compare_digest(reset.token_hash, wanted)
            or reset.used_at is not None or reset.revoked_at is not None
            or reset.expires_at <= utcnow()):
        raise NotFound(RESET_INVALID)
    user = db.get(User, reset.user_id)
    if user is None or _standing_problem(user):
        raise NotFound(RESET_INVALID)
    return reset


def complete_password_reset(token: str, password: str) -> User:
    """Set a new password through a reset link: the link is used up, every session of
    the user ends, other open links are voided. Two-factor authentication stays on."""
    reset = find_password_reset(token)
    user = db.get(User, reset.user_id)
    assert user is not None  # find_password_reset checked it
    check_password_strength(password, min_length=state.settings().min_password_length,
                            user_inputs=[user.email, user.username, user.display_name])
    now = utcnow()
    # Claim the link atomically: of two concurrent uses, only the first gets the row.
    claimed = db.execute(
        update(PasswordReset)
        .where(PasswordReset.id == reset.id, PasswordReset.used_at.is_(None),
               PasswordReset.revoked_at.is_(None), PasswordReset.expires_at > now)
        .values(used_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        db.rollback()
        raise NotFound(RESET_INVALID)
    db.execute(update(PasswordReset)
               .where(PasswordReset.user_id == user.id, PasswordReset.id != reset.id,
                      PasswordReset.used_at.is_(None), PasswordReset.revoked_at.is_(None))
               .values(revoked_at=now))
    user.password_hash = hash_password(password)
    user.password_changed_at = now
    end_all_sessions(user)
    from app.auth import tokens

    tokens.revoke_all_tokens(user, "password_reset")
    audit.record("password_reset_completed", actor=user, target_type="user",
                 target_id=user.id, reset=reset.id)
    db.commit()
    return user


# ---------------------------------------------------------------- 2FA enrolment

def start_mfa_enrolment(user: User) -> str:
    """Keep a new secret (sealed) until the user proves their device has it."""
    if user.totp_enabled:
        raise ServiceError("Two-factor authentication is already on.")
    secret = mfa.open_secret(user)
    if secret is None:
        secret = mfa.new_secret()
        user.totp_secret_enc = mfa.seal_secret(user, secret)
        db.commit()
    return secret


def enable_mfa(user: User, code: str) -> list[str]:
    if user.totp_enabled:
        raise ServiceError("Two-factor authentication is already on.")
    secret = mfa.open_secret(user)
    if secret is None:
        raise ServiceError("Start the enrolment again.")
    if not mfa.verify_totp(user, code, secret=secret):
        raise ServiceError("That code does not match. Check the time on your device.",
                           field="code")
    user.totp_enabled_at = utcnow()
    # a passkey user already holds recovery codes; they stay valid
    codes = [] if user.has_passkeys and mfa.remaining_recovery_codes(user) else \
        mfa.new_recovery_codes(user)
    end_all_sessions(user)
    audit.record("mfa_enabled", actor=user, target_type="user", target_id=user.id)
    access.forget(user)
    db.commit()
    return codes


def disable_mfa(user: User, password: str, code: str) -> None:
    """Turn the authenticator app off: the password and a current code or an unused
    recovery code (a stolen password, or a session left open, is not enough)."""
    if not verify_password(user.password_hash, password):
        audit.record("mfa_disable_refused", actor=user, target_type="user",
                     target_id=user.id, reason="password")
        db.commit()
        raise ServiceError("The password is wrong.", field="password")
    code = (code or "").strip()
    if not (mfa.verify_totp(user, code)
            or (mfa.looks_like_recovery_code(code) and mfa.use_recovery_code(user, code))):
        audit.record("mfa_disable_refused", actor=user, target_type="user",
                     target_id=user.id, reason="code")
        db.commit()
        raise ServiceError("Give a current code from your authenticator app, or an unused "
                           "recovery code.", field="code")
    user.totp_secret_enc = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    if not user.has_passkeys:  # with a passkey left, 2FA stays on and so do the codes
        mfa.delete_recovery_codes(user)
    end_all_sessions(user)
    from app.auth import tokens

    tokens.revoke_all_tokens(user, "mfa_removed")
    audit.record("mfa_disabled", actor=user, target_type="user", target_id=user.id)
    access.forget(user)
    db.commit()


def reauthenticate(user: User, password: str, code: str) -> str:
    """A fresh proof in a signed-in session (before passkey changes): the password and,
    with an authenticator app on, a current code. Returns the proof ("totp" or
    "password"); raises ServiceError. A passkey confirmation is the other way."""
    if not verify_password(user.password_hash, password):
        audit.record("reauth_failed", actor=user, target_type="user", target_id=user.id)
        db.commit()
        raise ServiceError("The password is wrong.", field="password")
    if not user.totp_enabled:
        return "password"
    if not mfa.verify_totp(user, code or ""):
        audit.record("reauth_failed", actor=user, target_type="user", target_id=user.id)
        db.commit()
        raise ServiceError("That code is wrong or was already used.", field="code")
    db.commit()
    return "totp"


def regenerate_recovery_codes(user: User, code: str) -> list[str]:
    if not user.totp_enabled or not mfa.verify_totp(user, code):
        raise ServiceError("That code is wrong or was already used.", field="code")
    codes = mfa.new_recovery_codes(user)
    audit.record("recovery_codes_regenerated", actor=user, target_type="user",
                 target_id=user.id)
    db.commit()
    return codes


# ---------------------------------------------------------------- invitations

def _check_level(level: str, field: str = "clearance") -> None:
    if not state.policy().is_level(level):
        raise ServiceError(f"Unknown level {level!r}.", field=field)


def can_manage_org(actor: User, org: Organization) -> bool:
    if actor.is_admin:
        return True
    return (
        actor.role == Role.ORG_ADMIN.value
        and actor.org_id == org.id
        and access.in_good_standing(actor)
    )


def grantable_clearance(actor: User | None, org: Organization) -> str:
    """The highest clearance ``actor`` may grant in ``org``: never above its ceiling,
    and for an org admin never above their own effective clearance."""
    policy = state.policy()
    limit = org.ceiling
    if actor is not None and not actor.is_admin:
        own = access.effective_clearance(actor) or policy.level_keys()[0]
        limit = min(limit, own, key=policy.rank)
    return limit


def grantable_roles(actor: User | None) -> list[str]:
    if actor is None or actor.is_admin:
        return [r.value for r in Role]
    return [Role.MEMBER.value, Role.REVIEWER.value, Role.ORG_ADMIN.value]


def _check_grant(actor: User | None, org: Organization, clearance: str, role: str) -> None:
    _check_level(clearance)
    if role not in {r.value for r in Role}:
        raise ServiceError(f"Unknown role {role!r}.", field="role")
    if actor is not None and not can_manage_org(actor, org):
        raise Forbidden("You cannot manage members of this organization.")
    policy = state.policy()
    limit = grantable_clearance(actor, org)
    if policy.rank(clearance) > policy.rank(limit):
        raise ServiceError(
            f"Clearance {clearance!r} is above what you may grant in {org.slug} ({limit!r}).",
            field="clearance",
        )
    if role not in grantable_roles(actor):
        raise Forbidden(f"You cannot grant the role {role!r}.")


@dataclass
class NewInvitation:
    invitation: Invitation
    token: str


def invite(actor: User | None, org: Organization, email: str, clearance: str,
           role: str = Role.MEMBER.value, *, submission: str | None = None) -> NewInvitation:
    """Invite ``email`` into ``org``; ``actor`` None means the command line (an operator).
    ``submission``: the form's one-time token (a double submission makes one invitation;
    its link was shown once, after the first)."""
    from app.submissions import service as submissions

    once = submissions.claim(actor, submission, "invitation") if actor is not None else None
    email = normalize_email(email)
    if email_domain(email) not in org.domain_names:
        raise ServiceError(
            f"{email} is not in a domain of {org.name} ({', '.join(org.domain_names) or 'none'}).",
            field="email",
        )
    _check_grant(actor, org, clearance, role)
    if get_user_by_email(email):
        raise ServiceError(f"{email} already has an account.", field="email")
    token = secrets.token_urlsafe(32)
    invitation = Invitation(
        token_hash=sha256_hex(token), email=email, org_id=org.id, clearance=clearance,
        role=role, invited_by_id=actor.id if actor else None,
        expires_at=utcnow() + timedelta(hours=state.settings().invitation_hours),
    )
    db.add(invitation)
    db.flush()
    submissions.settle(once, "invitation", invitation.id)
    audit.record("invitation_created", actor=actor or "cli", target_type="invitation",
                 target_id=invitation.id, email=email, org=org.slug, clearance=clearance,
                 role=role)
    db.commit()
    return NewInvitation(invitation, token)


def find_invitation(token: str) -> Invitation:
    """The open invitation for ``token``; NotFound with a reason otherwise."""
    invitation = db.scalar(select(Invitation).where(Invitation.token_hash == sha256_hex(token)))
    return _open_invitation(invitation)


def find_invitation_by_id(invitation_id: int) -> Invitation:
    """The open invitation ``invitation_id`` (single sign-on admits its addressee)."""
    return _open_invitation(db.get(Invitation, invitation_id))


def _open_invitation(invitation: Invitation | None) -> Invitation:
    if invitation is None or invitation.revoked_at is not None:
        raise NotFound("This invitation link is not valid.")
    if invitation.used_at is not None:
        raise NotFound("This invitation link was already used. Sign in instead.")
    if invitation.expires_at <= utcnow():
        raise NotFound("This invitation link has expired. Ask for a new one.")
    # The grant stands only while whoever made it still could: a disabled inviter's or
    # an untrusted organization's invitations are refused.
    if invitation.org.status != OrgStatus.TRUSTED.value:
        raise NotFound(f"This invitation can no longer be used: {invitation.org.name} is not "
                       "currently trusted on Enclave.")
    if invitation.invited_by_id is not None:
        inviter = db.get(User, invitation.invited_by_id)
        if inviter is None or not inviter.is_active:
            raise NotFound("This invitation can no longer be used: the account that sent it "
                           "has been disabled. Ask your organization for a new invitation.")
    return invitation


def accept_invitation(token: str, *, username: str, display_name: str, password: str) -> User:
    invitation = find_invitation(token)
    username = username.strip().lower()
    display_name = " ".join(display_name.split())
    if not USERNAME_RE.match(username):
        raise ServiceError("A username is 3-40 letters, digits, '.', '_' or '-'.",
                           field="username")
    if db.scalar(select(User.id).where(User.username == username)):
        raise ServiceError("That username is taken.", field="username")
    if not 2 <= len(display_name) <= 120:
        raise ServiceError("Give your full name (2-120 characters).", field="display_name")
    if get_user_by_email(invitation.email):
        raise ServiceError("This e-mail already has an account.")
    check_password_strength(password, min_length=state.settings().min_password_length,
                            user_inputs=[invitation.email, username, display_name])
    # Re-check the grant now: the org's ceiling may have been lowered since.
    policy = state.policy()
    clearance = min(invitation.clearance, invitation.org.ceiling, key=policy.rank)
    user = User(
        email=invitation.email, username=username, display_name=display_name,
        org_id=invitation.org_id, clearance=clearance, role=invitation.role,
        password_hash=hash_password(password), password_changed_at=utcnow(),
    )
    # Claim the invitation atomically: of two concurrent uses of one link, only the
    # first gets a row back; the other is refused before it creates anything.
    claimed = db.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, Invitation.used_at.is_(None))
        .values(used_at=utcnow())
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        db.rollback()
        raise NotFound("This invitation link was already used. Sign in instead.")
    db.add(user)
    db.flush()
    audit.record("invitation_accepted", actor=user, target_type="user", target_id=user.id,
                 invitation=invitation.id)
    db.commit()
    return user


def free_username(base: str) -> str:
    """A valid username not yet taken, made from ``base`` (an e-mail's local part)."""
    stem = re.sub(r"[^a-z0-9_.-]", "", base.lower()).strip("._-")[:34] or "member"
    if len(stem) < 3:
        stem = (stem + "member")[:8]
    candidate, n = stem, 1
    while (not USERNAME_RE.match(candidate)
           or db.scalar(select(User.id).where(User.username == candidate))):
        n += 1
        candidate = f"{stem}{n}"
    return candidate


def create_user(*, email: str, org: Organization, clearance: str, role: str,
                password: str, username: str | None = None,
                display_name: str | None = None, actor: User | None = None) -> User:
    """Create an account directly (command line and seeds)."""
    email = normalize_email(email)
    if email_domain(email) not in org.domain_names:
        raise ServiceError(f"{email} is not in a domain of {org.slug}.", field="email")
    _check_grant(actor, org, clearance, role)
    if get_user_by_email(email):
        raise ServiceError(f"{email} already has an account.", field="email")
    username = (username or email.split("@", 1)[0]).lower()
    if not USERNAME_RE.match(username):
        raise ServiceError(f"Username {username!r} is not valid.", field="username")
    if db.scalar(select(User.id).where(User.username == username)):
        raise ServiceError(f"Username {username!r} is taken.", field="username")
    check_password_strength(password, min_length=state.settings().min_password_length,
                            user_inputs=[email, username])
    user = User(email=email, username=username,
                display_name=display_name or username.replace(".", " ").title(),
                org_id=org.id, clearance=clearance, role=role,
                password_hash=hash_password(password), password_changed_at=utcnow())
    db.add(user)
    db.flush()
    audit.record("user_created", actor=actor or "cli", target_type="user", target_id=user.id,
                 email=email, org=org.slug, clearance=clearance, role=role)
    db.commit()
    return user


def _check_clearance_change(actor: User | None, user: User, clearance: str) -> None:
    _check_level(clearance)
    if actor is not None and not actor.is_admin:
        if actor.id == user.id:
            raise Forbidden("You cannot change your own clearance.")
        if user.is_admin:
            raise Forbidden("Only an admin can change an admin's clearance.")
    _check_grant(actor, user.org, clearance, user.role if actor is None or actor.is_admin
                 else Role.MEMBER.value)


def _check_role_change(actor: User | None, user: User, role: str, clearance: str) -> None:
    if actor is not None and actor.id == user.id:
        raise Forbidden("You cannot change your own role.")
    if user.role == Role.ADMIN.value and actor is not None and not actor.is_admin:
        raise Forbidden("Only an admin can change an admin's role.")
    _check_grant(actor, user.org, clearance, role)


#: ``update_user(until=KEEP)``: leave the clearance grant's end date as it is
KEEP = object()


def grant_end(until: date) -> datetime:
    """A grant "until 2027-01-31" holds through that whole day (UTC): it lapses at the
    first instant of the next day."""
    return datetime(until.year, until.month, until.day, tzinfo=UTC) + timedelta(days=1)


def grant_until(expires_at: datetime | None) -> date | None:
    """The last day a grant ending at ``expires_at`` holds (the inverse of grant_end)."""
    return None if expires_at is None else (expires_at - timedelta(days=1)).date()


def parse_until(raw: str | None, field: str = "clearance_until") -> date | None:
    """``YYYY-MM-DD`` (blank: no end date); today or later."""
    text = (raw or "").strip()
    if not text:
        return None
    try:
        until = date.fromisoformat(text)
    except ValueError:
        raise ServiceError(f"An end date is written YYYY-MM-DD (got {text[:40]!r}).",
                           field=field, code="bad_date") from None
    return until


def _check_until(until: date | None) -> None:
    if until is not None and grant_end(until) <= utcnow():
        raise ServiceError(f"The grant cannot end in the past ({until.isoformat()}); give "
                           "today or a later day.", field="clearance_until", code="bad_date")


def update_user(actor: User | None, user: User, *, clearance: str | None = None,
                role: str | None = None, until: date | None | object = KEEP) -> None:
    """Change clearance (and its end date: ``until`` is the last day the grant holds,
    None for no end) and/or role: everything is checked before anything is written."""
    new_clearance = clearance if clearance is not None and clearance != user.clearance else None
    new_role = role if role is not None and role != user.role else None
    new_expiry = user.clearance_expires_at
    if until is not KEEP:
        assert until is None or isinstance(until, date)
        new_expiry = grant_end(until) if until is not None else None
        if new_expiry != user.clearance_expires_at:
            _check_until(until)
            _check_clearance_change(actor, user, new_clearance or user.clearance)
    if new_clearance is not None:
        _check_clearance_change(actor, user, new_clearance)
    if new_role is not None:
        _check_role_change(actor, user, new_role, new_clearance or user.clearance)
    if new_clearance is not None or new_expiry != user.clearance_expires_at:
        old, old_until = user.clearance, grant_until(user.clearance_expires_at)
        user.clearance = new_clearance or user.clearance
        user.clearance_expires_at = new_expiry
        access.forget(user)
        until_text = grant_until(new_expiry)
        dates = {} if old_until is None and until_text is None else {
            "old_until": old_until.isoformat() if old_until else None,
            "until": until_text.isoformat() if until_text else None}
        audit.record("clearance_changed", actor=actor or "cli", target_type="user",
                     target_id=user.id, email=user.email, old=old, new=user.clearance,
                     **dates)
    if new_role is not None:
        old = user.role
        user.role = new_role
        audit.record("role_changed", actor=actor or "cli", target_type="user",
                     target_id=user.id, email=user.email, old=old, new=new_role)
    db.commit()


def set_clearance(actor: User | None, user: User, clearance: str,
                  until: date | None = None) -> None:
    """A new grant replaces the old one: without ``until`` it has no end date."""
    _check_clearance_change(actor, user, clearance)
    update_user(actor, user, clearance=clearance, until=until)


def set_role(actor: User | None, user: User, role: str) -> None:
    _check_role_change(actor, user, role, user.clearance)
    update_user(actor, user, role=role)


def set_active(actor: User | None, user: User, active: bool, *, by: str | None = None) -> None:
    """Enable or disable ``user``; disabling ends every session and API token at once.
    ``by`` names a non-person actor (``scim:<org>``); ``actor`` None with no ``by`` is the
    command line. An administrator's enabling also hands the account back from SCIM."""
    if actor is not None:
        if actor.id == user.id:
            raise Forbidden("You cannot disable your own account.")
        if not can_manage_org(actor, user.org) or (user.is_admin and not actor.is_admin):
            raise Forbidden("You cannot manage this account.")
    user.is_active = active
    if not active:
        from app.auth import tokens

        end_all_sessions(user)
        tokens.revoke_all_tokens(user, "user_disabled", actor=actor or by or "cli")
    elif by is None:
        user.scim_deactivated_at = None
        user.scim_deleted_at = None
    audit.record("user_enabled" if active else "user_disabled", actor=actor or by or "cli",
                 target_type="user", target_id=user.id, email=user.email)
    db.commit()
