"""Wrapping data keys under a key-encryption key (KEK), and sealing small secrets.

AES-256-GCM with a random 96-bit nonce. Output: ``version (1) || nonce (12) ||
ciphertext || tag (16)``. The associated data is prefixed with a purpose label
and the version, so a wrapped data key can never be opened as a sealed secret
(or the other way round), and the caller's AAD (see :func:`key_wrap_aad`) binds
the wrapped key to one attachment, level and KEK version.

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
    "unwrap_key",
    "wrap_key",
]

_VERSION = 1
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


def _full_aad(label: bytes, aad: bytes) -> bytes:
    return label + b"\x00" + bytes([_VERSION]) + b"\x00" + bytes(aad)


def _seal(label: bytes, key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE_SIZE)
    ct = AESGCM(key).encrypt(nonce, bytes(plaintext), _full_aad(label, aad))
    return bytes([_VERSION]) + nonce + ct


def _unseal(label: bytes, key: bytes, sealed: bytes, aad: bytes) -> bytes:
    sealed = bytes(sealed)
    if len(sealed) < 1 + _NONCE_SIZE + _TAG_SIZE or sealed[0] != _VERSION:
        raise IntegrityError("sealed value is malformed")
    nonce = sealed[1 : 1 + _NONCE_SIZE]
    try:
        return AESGCM(key).decrypt(nonce, sealed[1 + _NONCE_SIZE :], _full_aad(label, aad))
    except InvalidTag:
        raise IntegrityError("sealed value failed authentication") from None


def key_wrap_aad(attachment_id: str | int, level: str, kek_version: int) -> bytes:
    """Canonical AAD for a wrapped attachment data key.

    Fields are length-prefixed so no two different triples encode the same bytes.
    """
    fields = [
        b"enclave-dek:v1",
        str(attachment_id).encode("utf-8"),
        level.encode("utf-8"),
        str(int(kek_version)).encode("ascii"),
    ]
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


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
