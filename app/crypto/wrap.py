"""Wrapping data keys under a key-encryption key (KEK), and sealing small secrets.

AES-256-GCM with a random 96-bit nonce. Output: ``version (1) || nonce (12) ||
ciphertext || tag (16)``. The associated data is prefixed with a purpose label
and the version, so a wrapped data key can never be opened as a sealed secret
(or the other way round), and the caller's AAD (see :func:`key_wrap_aad`) binds
the wrapped key to one attachment, level and KEK version.

Attachment data keys have two format versions, told apart by that first byte (which the
tag covers, so it cannot be changed to the other): version 2, written since issue 12,
also binds the **finding** the attachment belongs to, so a row moved to another finding
in the database no longer opens; version 1 (older rows) does not, and opens as before
until ``enclave keys rotate`` rewraps it as version 2 (:func:`wrap_data_key`,
:func:`unwrap_data_key`).

Random nonces are safe here because each KEK wraps one key per attachment,
far below the 2**32 messages-per-key limit of random-nonce GCM.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.crypto.stream import IntegrityError

__all__ = [
    "WRAPPED_KEY_SIZE",
    "IntegrityError",
    "key_wrap_aad",
    "seal",
    "unseal",
    "unwrap_data_key",
    "unwrap_key",
    "wrap_data_key",
    "wrap_key",
    "wraps_finding",
]

_VERSION = 1
#: Attachment data keys: 1 = bound to attachment, level, KEK version (legacy);
#: 2 = bound to the finding as well.
DEK_LEGACY = 1
DEK_BOUND = 2
_NONCE_SIZE = 12
_TAG_SIZE = 16
_KEY_SIZE = 32
_LABEL_WRAP = b"enclave/dek-wrap"
_LABEL_SEAL = b"enclave/seal"

WRAPPED_KEY_SIZE = 1 + _NONCE_SIZE + _KEY_SIZE + _TAG_SIZE


def _check_key(key: bytes, what: str) -> bytes:
    if not isinstance(key, bytes | bytearray | memoryview) or len(key) != _KEY_SIZE:
        raise ValueError(f"{what} must be {_KEY_SIZE} bytes")
    return bytes(key)


def _full_aad(label: bytes, aad: bytes, version: int = _VERSION) -> bytes:
    return label + b"\x00" + bytes([version]) + b"\x00" + bytes(aad)


def _seal(label: bytes, key: bytes, plaintext: bytes, aad: bytes,
          version: int = _VERSION) -> bytes:
    nonce = os.urandom(_NONCE_SIZE)
    ct = AESGCM(key).encrypt(nonce, bytes(plaintext), _full_aad(label, aad, version))
    return bytes([version]) + nonce + ct


def _unseal(label: bytes, key: bytes, sealed: bytes, aad: bytes,
            version: int = _VERSION) -> bytes:
    sealed = bytes(sealed)
    if len(sealed) < 1 + _NONCE_SIZE + _TAG_SIZE or sealed[0] != version:
        raise IntegrityError("sealed value is malformed")
    nonce = sealed[1 : 1 + _NONCE_SIZE]
    try:
        return AESGCM(key).decrypt(nonce, sealed[1 + _NONCE_SIZE :],
                                   _full_aad(label, aad, version))
    except InvalidTag:
        raise IntegrityError("sealed value failed authentication") from None


def key_wrap_aad(attachment_id: str | int, level: str, kek_version: int,
                 finding_id: int | None = None) -> bytes:
    """Canonical AAD for a wrapped attachment data key: attachment, level and KEK
    version, and (format version 2) the finding.

    Fields are length-prefixed so no two different tuples encode the same bytes.
    """
    if finding_id is None:
        fields = [b"enclave-dek:v1", str(attachment_id).encode("utf-8")]
    else:
        fields = [b"enclave-dek:v2", str(attachment_id).encode("utf-8"),
                  str(int(finding_id)).encode("ascii")]
    fields += [level.encode("utf-8"), str(int(kek_version)).encode("ascii")]
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def wraps_finding(wrapped: bytes) -> bool:
    """Whether a wrapped attachment data key binds its finding (format version 2)."""
    return bytes(wrapped[:1]) == bytes([DEK_BOUND])


def wrap_data_key(kek: bytes, data_key: bytes, *, attachment_id: str, finding_id: int,
                  level: str, kek_version: int) -> bytes:
    """Wrap an attachment's data key, bound to the attachment, its finding, the level and
    the KEK version (format version 2)."""
    aad = key_wrap_aad(attachment_id, level, kek_version, finding_id)
    return _seal(_LABEL_WRAP, _check_key(kek, "KEK"), _check_key(data_key, "data key"), aad,
                 DEK_BOUND)


def unwrap_data_key(kek: bytes, wrapped: bytes, *, attachment_id: str, finding_id: int,
                    level: str, kek_version: int) -> bytes:
    """Open an attachment's wrapped data key where its row says it belongs.
    ``IntegrityError`` on a wrong KEK, any other attachment, level, KEK version or (for
    format version 2) finding, or tampering. A legacy (version 1) key does not bind the
    finding; ``enclave keys rotate`` rewraps it as version 2."""
    if wraps_finding(wrapped):
        aad = key_wrap_aad(attachment_id, level, kek_version, finding_id)
        key = _unseal(_LABEL_WRAP, _check_key(kek, "KEK"), wrapped, aad, DEK_BOUND)
    else:
        key = _unseal(_LABEL_WRAP, _check_key(kek, "KEK"), wrapped,
                      key_wrap_aad(attachment_id, level, kek_version), DEK_LEGACY)
    if len(key) != _KEY_SIZE:
        raise IntegrityError("unwrapped key has the wrong length")
    return key


def wrap_key(kek: bytes, data_key: bytes, aad: bytes) -> bytes:
    """Encrypt a 32-byte data key under ``kek``, bound to ``aad``."""
    return _seal(_LABEL_WRAP, _check_key(kek, "KEK"), _check_key(data_key, "data key"), aad)


def unwrap_key(kek: bytes, wrapped: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`wrap_key`; ``IntegrityError`` on wrong KEK, AAD or tampering."""
    key = _unseal(_LABEL_WRAP, _check_key(kek, "KEK"), wrapped, aad)
    if len(key) != _KEY_SIZE:
        raise IntegrityError("unwrapped key has the wrong length")
    return key


def seal(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """Encrypt a small secret (e.g. a TOTP seed) under the app key, bound to ``aad``
    (pass something like ``b"totp:" + user_id`` so values cannot be swapped between rows)."""
    return _seal(_LABEL_SEAL, _check_key(key, "key"), plaintext, aad)


def unseal(key: bytes, sealed: bytes, aad: bytes = b"") -> bytes:
    """Inverse of :func:`seal`; ``IntegrityError`` on any failure."""
    return _unseal(_LABEL_SEAL, _check_key(key, "key"), sealed, aad)
