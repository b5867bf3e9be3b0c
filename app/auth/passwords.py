"""Password hashing (Argon2id via argon2-cffi) and strength rules (zxcvbn)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn

from app.errors import ServiceError

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Recovery codes carry 80 random bits, so the hash need not make up for a weak secret:
# Argon2id at OWASP's minimum (19 MiB, 2 passes, 1 lane) still gives each its own salt
# and a slow guess, at a tenth of the password cost (ten are made at once, and a wrong
# code is tried against every unused one).
_secret_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# A real hash to verify against when the account does not exist, so that a login
# for an unknown e-mail costs the same time as one for a known e-mail.
_DUMMY_HASH = _hasher.hash("enclave-timing-equaliser")

MAX_PASSWORD_LENGTH = 1024


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def hash_secret(secret: str) -> str:
    """An Argon2id hash of a high-entropy secret (recovery codes)."""
    return _secret_hasher.hash(secret)


def matches_hash(stored_hash: str, secret: str) -> bool:
    """``secret`` against one Argon2 hash (recovery codes; the parameters are read from the
    hash, so older hashes still verify); False for any other format."""
    try:
        return _secret_hasher.verify(stored_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def _contains_personal_data(password: str, user_inputs: list[str]) -> bool:
    """True when the password contains the e-mail (or its local part), the username or
    the name. zxcvbn alone lets them through when enough random text surrounds them."""
    tokens: set[str] = set()
    for value in user_inputs:
        value = (value or "").strip().casefold()
        tokens.add(value)
        if "@" in value:
            tokens.add(value.split("@", 1)[0])
    lowered = password.casefold()
    return any(len(t) >= 4 and t in lowered for t in tokens)


def check_password_strength(password: str, *, min_length: int, user_inputs: list[str]) -> None:
    """Refuse short, over-long, common or guessable passwords with a clear reason."""
    if len(password) < min_length:
        raise ServiceError(f"Use at least {min_length} characters.", field="password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ServiceError(f"Use at most {MAX_PASSWORD_LENGTH} characters.", field="password")
    if _contains_personal_data(password, user_inputs):
        raise ServiceError(
            "Do not put your e-mail address, username or name in your password.",
            field="password",
        )
    result = zxcvbn(password[:100], user_inputs=[u for u in user_inputs if u])
    if result["score"] < 3:
        warning = result["feedback"].get("warning") or "This password is too easy to guess."
        raise ServiceError(
            f"{warning.rstrip('.')}. Choose a longer passphrase of uncommon words.",
            field="password",
        )
