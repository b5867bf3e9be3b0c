"""TOTP two-factor authentication with replay protection and recovery codes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import pyotp
import segno
from sqlalchemy import or_, select, update

from app import state
from app.auth.models import RecoveryCode, User
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


def _hash_code(code: str) -> str:
    return hashlib.sha256(code.replace("-", "").lower().encode()).hexdigest()


def delete_recovery_codes(user: User) -> None:
    for old in db.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user.id)):
        db.delete(old)


def new_recovery_codes(user: User) -> list[str]:
    """Replace the user's recovery codes; returns the plaintext codes, shown once."""
    delete_recovery_codes(user)
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = secrets.token_hex(6)
        code = f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"
        codes.append(code)
        db.add(RecoveryCode(user_id=user.id, code_hash=_hash_code(code)))
    return codes


def use_recovery_code(user: User, code: str) -> bool:
    wanted = _hash_code(code.strip())
    for row in db.scalars(
        select(RecoveryCode).where(RecoveryCode.user_id == user.id,
                                   RecoveryCode.used_at.is_(None))
    ):
        if hmac.compare_digest(row.code_hash, wanted):
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


def remaining_recovery_codes(user: User) -> int:
    return len(db.scalars(
        select(RecoveryCode.id).where(RecoveryCode.user_id == user.id,
                                      RecoveryCode.used_at.is_(None))
    ).all())
