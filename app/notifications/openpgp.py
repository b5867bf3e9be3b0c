"""Members' OpenPGP public keys, and encrypting notification text to them (python-gnupg
driving the system's GnuPG, ``gpg``).

Each operation imports the one key into a fresh, private GnuPG home that is deleted
afterwards: no keyring is kept on the server, so no trust database decides anything;
the key the member gave is the one used (``always_trust``). A key must be a single
public key that can encrypt, is neither expired nor revoked; its fingerprint is shown
on the profile and expiry is warned about ``EXPIRY_WARNING_DAYS`` ahead. An expired key
is not used: such members get notifications without finding text, like members without
a key.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import gnupg

from app import audit
from app.auth.models import User
from app.db import db, utcnow
from app.errors import ServiceError

EXPIRY_WARNING_DAYS = 30
MAX_KEY_CHARS = 100_000


@dataclass(frozen=True)
class KeyInfo:
    fingerprint: str
    expires_at: datetime | None
    uids: tuple[str, ...]


@contextmanager
def _home() -> Iterator[gnupg.GPG]:
    home = tempfile.mkdtemp(prefix="enclave-gpg-")
    try:
        yield gnupg.GPG(gnupghome=home, options=["--no-autostart"])
    except OSError as exc:  # no gpg binary
        raise ServiceError(f"OpenPGP is unavailable on this server ({exc}).",
                           code="openpgp_unavailable") from None
    finally:
        shutil.rmtree(home, ignore_errors=True)


def inspect(armored: str) -> KeyInfo:
    """Check a pasted or uploaded public key; ServiceError says what is wrong."""
    armored = (armored or "").strip()
    if not armored:
        raise ServiceError("Paste an OpenPGP public key (ASCII-armored).", field="key")
    if len(armored) > MAX_KEY_CHARS:
        raise ServiceError("That key is too large.", field="key")
    if not armored.isascii():
        raise ServiceError("An ASCII-armored key has only ASCII characters "
                           "(gpg --armor --export).", field="key")
    if "PRIVATE KEY" in armored:
        raise ServiceError("That is a private key. Give only your public key (and treat the "
                           "private one as exposed if you pasted it elsewhere).", field="key")
    with _home() as gpg:
        result = gpg.import_keys(armored)
        keys = gpg.list_keys()
    if not result.fingerprints or len(keys) != 1:
        raise ServiceError("That is not exactly one OpenPGP public key.", field="key")
    key = keys[0]
    expires = (datetime.fromtimestamp(int(key["expires"]), UTC)
               if key.get("expires") else None)
    if key.get("trust") == "r":
        raise ServiceError("That key is revoked.", field="key")
    if expires is not None and expires <= utcnow():
        raise ServiceError(f"That key expired on {expires:%Y-%m-%d}.", field="key")
    if "E" not in key.get("cap", ""):
        raise ServiceError("That key cannot encrypt (no usable encryption subkey).",
                           field="key")
    return KeyInfo(fingerprint=key["fingerprint"], expires_at=expires,
                   uids=tuple(key.get("uids") or ()))


def set_key(actor: User | str, user: User, armored: str | None) -> KeyInfo | None:
    """Store (or, with an empty key, remove) ``user``'s public key."""
    if not (armored or "").strip():
        if user.openpgp_key:
            audit.record("openpgp_key_removed", actor=actor, target_type="user",
                         target_id=user.id, fingerprint=user.openpgp_fingerprint)
        user.openpgp_key = user.openpgp_fingerprint = user.openpgp_expires_at = None
        db.commit()
        return None
    info = inspect(armored or "")
    user.openpgp_key = (armored or "").strip()
    user.openpgp_fingerprint = info.fingerprint
    user.openpgp_expires_at = info.expires_at
    audit.record("openpgp_key_set", actor=actor, target_type="user", target_id=user.id,
                 fingerprint=info.fingerprint,
                 expires_at=info.expires_at.isoformat() if info.expires_at else None)
    db.commit()
    return info


def usable(user: User) -> bool:
    expires = user.openpgp_expires_at
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return bool(user.openpgp_key) and (expires is None or expires > utcnow())


def expiry_warning(user: User) -> str | None:
    """A warning for the profile when the key has expired or soon will."""
    if not user.openpgp_key or user.openpgp_expires_at is None:
        return None
    expires = user.openpgp_expires_at
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    if expires <= utcnow():
        return (f"Your OpenPGP key expired on {expires:%Y-%m-%d}: notifications carry no "
                "finding text until you give a current one.")
    if expires - utcnow() <= timedelta(days=EXPIRY_WARNING_DAYS):
        return (f"Your OpenPGP key expires on {expires:%Y-%m-%d}. Extend it and upload it "
                "again, or notifications will stop carrying finding text.")
    return None


def encrypt(user: User, text: str) -> str:
    """``text`` encrypted to ``user``'s key, ASCII-armored; ServiceError on failure."""
    with _home() as gpg:
        imported = gpg.import_keys(user.openpgp_key or "")
        if user.openpgp_fingerprint not in (imported.fingerprints or []):
            raise ServiceError("The stored OpenPGP key could not be read.")
        result = gpg.encrypt(text, user.openpgp_fingerprint, always_trust=True, armor=True)
    if not result.ok:
        raise ServiceError(f"OpenPGP encryption failed: {result.status}.")
    return str(result)
