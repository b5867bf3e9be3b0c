"""TOTP two-factor authentication with replay protection and recovery codes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

import pyotp
import segno
from sqlalchemy import or_, select, update

from app import state
from app.auth.models import RecoveryCode, User
from app.auth.passwords import hash_secret, matches_hash
from app.crypto.wrap import IntegrityError, seal, unseal
from app.db import db, utcnow

ISSUER = "Enclave"
RECOVERY_CODE_COUNT = 10
_STEP = 30


def _aad(user: User) -> bytes:
    return f"enclave-totp:{user.id}".encode()


def new_secret() -> str:
    return pyotp.random_base32()


def seal_secret(user: User, secret: str) -> str:
    sealed = seal(state.keyring().app_key(), secret.encode(), _aad(user))
    return sealed.hex()


def open_secret(user: User) -> str | None:
    if not user.totp_secret_enc:
        return None
    try:
        return unseal(state.keyring().app_key(), bytes.fromhex(user.totp_secret_enc),
                          _aad(user)).decode()
    except (IntegrityError, ValueError):
        return None


def provisioning_uri(user: User, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """An inline SVG QR code (no script, no external request)."""
    return segno.make(uri, error="m").svg_inline(scale=5, dark="#111", light="#fff")


def matching_step(secret: str, code: str, *, at: float | None = None) -> int | None:
    """The time step whose code equals ``code`` (+/- one step of clock drift), or None."""
    code = "".join(code.split())
    if not (code.isascii() and code.isdigit() and len(code) == 6):  # not e.g. "١٢٣٤٥٦"
        return None
    now = time.time() if at is None else at
    totp = pyotp.TOTP(secret)
    current = int(now // _STEP)
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def verify_totp(user: User, code: str, *, secret: str | None = None) -> bool:
    """Accept a code once: a step at or before the last accepted one is a replay."""
    secret = secret or open_secret(user)
    if not secret:
        return False
    step = matching_step(secret, code)
    if step is None or (user.totp_last_step is not None and step <= user.totp_last_step):
        return False
    # Record the step with a conditional UPDATE: of two requests racing with the same
    # code, the second finds the row already moved on (or waits for its lock) and fails.
    claimed = db.execute(
        update(User)
        .where(User.id == user.id,
               or_(User.totp_last_step.is_(None), User.totp_last_step < step))
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    user.totp_last_step = step
    return True


#: random bytes in a recovery code: 80 bits, written as 16 base32 letters and digits
RECOVERY_CODE_BYTES = 10


def _normal_code(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def _legacy_hash(code: str) -> str:
    """How codes made before 80-bit codes were hashed (unsalted SHA-256); such rows still
    work once each until the owner makes new codes (the account page says so)."""
    return hashlib.sha256(_normal_code(code).encode()).hexdigest()


def _is_legacy(code_hash: str) -> bool:
    return len(code_hash) == 64 and not code_hash.startswith("$")


def looks_like_recovery_code(code: str) -> bool:
    """16 base32 characters (or 12 hex digits for older codes), dashes and spaces
    optional: not a 6-digit authenticator code."""
    plain = _normal_code(code or "")
    return len(plain) in (12, 16) and plain.isascii() and plain.isalnum()


def new_code() -> str:
    """One recovery code: 80 random bits as ``xxxx-xxxx-xxxx-xxxx`` (base32, lower case)."""
    raw = base64.b32encode(secrets.token_bytes(RECOVERY_CODE_BYTES)).decode().lower()
    return "-".join(raw[i:i + 4] for i in range(0, len(raw), 4))


def delete_recovery_codes(user: User) -> None:
    for old in db.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user.id)):
        db.delete(old)


def new_recovery_codes(user: User) -> list[str]:
    """Replace the user's recovery codes; returns the plaintext codes, shown once."""
    delete_recovery_codes(user)
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        code = new_code()
        codes.append(code)
        # Argon2id like a password: a copy of the database does not give the codes
        db.add(RecoveryCode(user_id=user.id, code_hash=hash_secret(_normal_code(code))))
    return codes


def _code_matches(code_hash: str, code: str) -> bool:
    if _is_legacy(code_hash):
        return hmac.compare_digest(code_hash, _legacy_hash(code))
    return matches_hash(code_hash, _normal_code(code))


def use_recovery_code(user: User, code: str) -> bool:
    """Use one unused recovery code of ``user``. Each unused row is tried (at most ten
    Argon2 verifications: the codes carry no selector that would shorten them)."""
    code = code.strip()
    if not code or len(code) > 40:
        return False
    for row in db.scalars(
        select(RecoveryCode).where(RecoveryCode.user_id == user.id,
                                   RecoveryCode.used_at.is_(None))
    ):
        if _code_matches(row.code_hash, code):
            # Conditional UPDATE, so a code raced from two requests is used only once.
            claimed = db.execute(
                update(RecoveryCode)
                .where(RecoveryCode.id == row.id, RecoveryCode.used_at.is_(None))
                .values(used_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return False
            db.refresh(row)
            return True
    return False


def has_legacy_recovery_codes(user: User) -> bool:
    """Unused codes made before 80-bit codes (the owner should make new ones)."""
    return any(_is_legacy(h) for h in db.scalars(
        select(RecoveryCode.code_hash).where(RecoveryCode.user_id == user.id,
                                             RecoveryCode.used_at.is_(None))))


def remaining_recovery_codes(user: User) -> int:
    return len(db.scalars(
        select(RecoveryCode.id).where(RecoveryCode.user_id == user.id,
                                      RecoveryCode.used_at.is_(None))
    ).all())
