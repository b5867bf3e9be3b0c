"""Passkeys (WebAuthn) with py_webauthn: registration, sign-in and step-up proofs.

A passkey proof is phishing-resistant: the browser binds the assertion to the origin it
was made on and the authenticator to this site's RP ID, so a look-alike site relaying a
sign-in gets nothing it can use here (unlike a password or an authenticator code).
Every ceremony asks for user verification (PIN or biometric), so a passkey alone is two
factors (possession and knowledge or inherence).

The ceremony's challenge lives in the caller's session (``CeremonyState``), is single
use (the view pops it) and expires after ``CEREMONY_SECONDS``. The RP ID and the origin
come from ``ENCLAVE_BASE_URL`` (never from the request's Host header); a loopback IP is
served as ``localhost``, because browsers refuse WebAuthn on IP addresses.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from webauthn import (
    base64url_to_bytes,
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import bytes_to_base64url
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from app import access, audit, state
from app.auth.models import Passkey, User
from app.db import db, utcnow
from app.errors import NotFound, ServiceError

CEREMONY_SECONDS = 180
MAX_PASSKEYS = 20
NAME_MAX = 80
RP_NAME = "Enclave"
_LOOPBACK = {"127.0.0.1", "::1", "[::1]"}


class PasskeyRefused(ServiceError):
    status = 401
    code = "passkey_refused"


def relying_party() -> tuple[str, str]:
    """(RP ID, expected origin) from ENCLAVE_BASE_URL."""
    parts = urlsplit(state.settings().base_url)
    host = (parts.hostname or "localhost").lower()
    if host in _LOOPBACK:
        host = "localhost"
    port = f":{parts.port}" if parts.port else ""
    return host, f"{parts.scheme or 'http'}://{host}{port}"


@dataclass
class Ceremony:
    """The options to hand to the browser (JSON) and the state to keep for the answer."""

    options_json: str
    state: dict[str, Any]


def _state(purpose: str, challenge: bytes, user_id: int | None, **extra: Any) -> dict[str, Any]:
    return {"purpose": purpose, "challenge": bytes_to_base64url(challenge),
            "user": user_id, "at": int(time.time()), **extra}


def _check_state(ceremony: dict[str, Any] | None, purpose: str) -> dict[str, Any]:
    if (not isinstance(ceremony, dict) or ceremony.get("purpose") != purpose
            or time.time() - ceremony.get("at", 0) > CEREMONY_SECONDS):
        raise PasskeyRefused("The passkey request expired. Try again.", code="passkey_expired")
    return ceremony


def _descriptor(passkey: Passkey) -> PublicKeyCredentialDescriptor:
    transports = []
    for name in passkey.transports.split():
        try:
            transports.append(AuthenticatorTransport(name))
        except ValueError:
            continue
    return PublicKeyCredentialDescriptor(id=base64url_to_bytes(passkey.credential_id),
                                         transports=transports or None)


def user_handle(user: User) -> bytes:
    """The WebAuthn user handle: random, shared by all of one user's passkeys."""
    if user.passkeys:
        return base64url_to_bytes(user.passkeys[0].user_handle)
    return secrets.token_bytes(32)


# ---------------------------------------------------------------- registration

def registration_options(user: User) -> Ceremony:
    if len(user.passkeys) >= MAX_PASSKEYS:
        raise ServiceError(f"You have {MAX_PASSKEYS} passkeys, the most an account may have. "
                           "Remove one first.")
    rp_id, _ = relying_party()
    handle = user_handle(user)
    options = generate_registration_options(
        rp_id=rp_id, rp_name=RP_NAME, user_name=user.email, user_id=handle,
        user_display_name=user.display_name,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.REQUIRED),
        exclude_credentials=[_descriptor(p) for p in user.passkeys],
        timeout=CEREMONY_SECONDS * 1000,
    )
    return Ceremony(options_to_json(options),
                    _state("register", options.challenge, user.id,
                           handle=bytes_to_base64url(handle)))


def clean_name(raw: str | None) -> str:
    name = " ".join((raw or "").split())
    if not name:
        raise ServiceError("Give the passkey a name (e.g. 'Work laptop').", field="name")
    if len(name) > NAME_MAX:
        raise ServiceError(f"A passkey name has at most {NAME_MAX} characters.", field="name")
    return name


def finish_registration(user: User, ceremony: dict[str, Any] | None, credential: Any,
                        name: str | None) -> Passkey:
    """Verify the browser's answer to ``registration_options`` and keep the passkey."""
    ceremony = _check_state(ceremony, "register")
    if ceremony.get("user") != user.id:
        raise PasskeyRefused("The passkey request expired. Try again.", code="passkey_expired")
    label = clean_name(name)
    rp_id, origin = relying_party()
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=base64url_to_bytes(ceremony["challenge"]),
            expected_rp_id=rp_id, expected_origin=origin, require_user_verification=True)
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        audit.record("passkey_add_failed", actor=user, target_type="user", target_id=user.id,
                     reason=str(exc)[:200])
        db.commit()
        raise PasskeyRefused(f"The passkey could not be verified: {exc}") from None
    credential_id = bytes_to_base64url(verified.credential_id)
    if db.scalar(select(Passkey.id).where(Passkey.credential_id == credential_id)):
        raise ServiceError("This passkey is already registered.", code="passkey_exists")
    transports = credential.get("response", {}).get("transports", []) \
        if isinstance(credential, dict) else []
    passkey = Passkey(
        user_id=user.id, name=label, credential_id=credential_id,
        user_handle=ceremony["handle"], public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=" ".join(t for t in transports if isinstance(t, str))[:200],
        aaguid=verified.aaguid[:36], backed_up=verified.credential_backed_up,
    )
    user.passkeys.append(passkey)
    db.flush()
    audit.record("passkey_added", actor=user, target_type="passkey", target_id=passkey.id,
                 name=label, aaguid=passkey.aaguid, backed_up=passkey.backed_up,
                 passkeys=len(user.passkeys))
    access.forget(user)
    db.commit()
    return passkey


def added_notice(user: User, passkey: Passkey) -> EmailMessage:
    """The e-mail telling the owner a passkey was added (someone who phished a password
    and a code could add their own: the owner hears of it at once)."""
    from app.notifications.mail import sender_address

    msg = EmailMessage()
    msg["From"] = sender_address()
    msg["To"] = formataddr((user.display_name, user.email))
    msg["Subject"] = "[Enclave] A passkey was added to your account"
    msg["Message-ID"] = make_msgid(domain="enclave.invalid")
    base = state.settings().base_url.rstrip("/")
    msg.set_content("\n".join([
        f"A passkey named \"{passkey.name}\" was added to your Enclave account at "
        f"{passkey.created_at:%Y-%m-%d %H:%M} UTC.",
        "",
        "If this was not you, someone has your password and second factor: tell your "
        "organization's administrator now, and review your passkeys here:",
        f"{base}/account/passkeys",
    ]))
    return msg


# ---------------------------------------------------------------- assertions

def assertion_options(purpose: str, user: User | None = None) -> Ceremony:
    """Options for ``navigator.credentials.get``: for ``user``'s passkeys (second factor,
    a confirmation), or any discoverable passkey of this site (``user`` None)."""
    rp_id, _ = relying_party()
    allow = [_descriptor(p) for p in user.passkeys] if user is not None else []
    if user is not None and not allow:
        raise ServiceError("This account has no passkey.", code="no_passkey")
    options = generate_authentication_options(
        rp_id=rp_id, allow_credentials=allow,
        user_verification=UserVerificationRequirement.REQUIRED,
        timeout=CEREMONY_SECONDS * 1000)
    return Ceremony(options_to_json(options),
                    _state(purpose, options.challenge, user.id if user else None))


def _credential_id(credential: Any) -> str:
    raw = credential.get("rawId") or credential.get("id") if isinstance(credential, dict) else None
    if not isinstance(raw, str) or not 0 < len(raw) <= 1400:
        raise PasskeyRefused("That is not a passkey answer.", code="bad_credential")
    return raw


def verify_assertion(ceremony: dict[str, Any] | None, credential: Any, purpose: str) -> Passkey:
    """Check an assertion against the ceremony; returns the passkey used (its user may
    still be refused for standing: the caller decides). Every refusal is audited."""
    ceremony = _check_state(ceremony, purpose)
    raw_id = _credential_id(credential)
    passkey = db.scalar(select(Passkey).where(Passkey.credential_id == raw_id))
    expected_user = ceremony.get("user")
    if passkey is None or (expected_user is not None and passkey.user_id != expected_user):
        audit.record("login_failed", actor=f"passkey:{raw_id[:16]}", target_type="user",
                     target_id=expected_user or "", stage="passkey", reason="unknown passkey")
        db.commit()
        raise PasskeyRefused("This passkey is not registered with Enclave.")
    handle = (credential.get("response") or {}).get("userHandle")
    if handle and not secrets.compare_digest(str(handle), passkey.user_handle):
        _refuse(passkey, "user handle does not match")
    rp_id, origin = relying_party()
    try:
        verified = verify_authentication_response(
            credential=credential, expected_challenge=base64url_to_bytes(ceremony["challenge"]),
            expected_rp_id=rp_id, expected_origin=origin,
            credential_public_key=passkey.public_key,
            credential_current_sign_count=passkey.sign_count, require_user_verification=True)
    except InvalidAuthenticationResponse as exc:
        if "sign count" in str(exc).lower():
            audit.record("passkey_clone_suspected", actor=passkey.user, target_type="passkey",
                         target_id=passkey.id, stored_count=passkey.sign_count)
            db.commit()
            raise PasskeyRefused(
                "This passkey's signature counter went backwards, which happens when an "
                "authenticator was copied. It was refused; tell your administrator.",
                code="passkey_cloned") from None
        _refuse(passkey, str(exc))
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        _refuse(passkey, str(exc))
    passkey.sign_count = verified.new_sign_count
    passkey.backed_up = verified.credential_backed_up
    passkey.last_used_at = utcnow()
    return passkey


def _refuse(passkey: Passkey, reason: str) -> None:
    audit.record("login_failed", actor=passkey.user, target_type="user",
                 target_id=passkey.user_id, stage="passkey", reason=reason[:200])
    db.commit()
    raise PasskeyRefused("The passkey answer was not valid for this site.")


def parse_credential(raw: Any) -> dict[str, Any]:
    """The credential JSON (``PublicKeyCredential.toJSON()``) sent by the page."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    if not isinstance(raw, dict):
        raise PasskeyRefused("That is not a passkey answer.", code="bad_credential")
    return raw


# ---------------------------------------------------------------- removal

def remove_passkey(actor: User, passkey_id: int) -> Passkey:
    """The owner removes one of their passkeys (the view checks the fresh proof)."""
    passkey = next((p for p in actor.passkeys if p.id == passkey_id), None)
    if passkey is None:
        raise NotFound("No such passkey.")
    actor.passkeys.remove(passkey)  # delete-orphan: the row goes
    from app.auth.tokens import revoke_all_tokens

    # tokens made with a passkey proof may have been made with this one
    revoke_all_tokens(actor, "passkey_removed", proofs=frozenset({"passkey"}))
    audit.record("passkey_removed", actor=actor, target_type="passkey", target_id=passkey_id,
                 name=passkey.name, passkeys=len(actor.passkeys))
    access.forget(actor)
    db.commit()
    return passkey


def remove_all_passkeys(actor: User | None, user: User) -> int:
    """An administrator (or the org admin) removes a member's passkeys, e.g. all were lost.
    Every session of the member ends: sessions that proved a removed passkey must not
    keep its reach."""
    from app.auth.service import can_manage_org, end_all_sessions
    from app.errors import Forbidden

    if actor is not None and (not can_manage_org(actor, user.org)
                              or (user.is_admin and not actor.is_admin)):
        raise Forbidden("You cannot manage this account.")
    count = len(user.passkeys)
    for passkey in list(user.passkeys):
        db.delete(passkey)
    user.passkeys.clear()
    end_all_sessions(user)
    from app.auth.tokens import revoke_all_tokens

    revoke_all_tokens(user, "passkey_removed", proofs=frozenset({"passkey"}),
                      actor=actor or "cli")
    audit.record("passkeys_reset", actor=actor or "cli", target_type="user",
                 target_id=user.id, email=user.email, removed=count)
    access.forget(user)
    db.commit()
    return count
