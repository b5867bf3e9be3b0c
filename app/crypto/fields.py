"""Encrypted text fields and keyed search terms: the one mechanism for stored content.

Every stored text of non-public content goes through :class:`ContentKeys`:

* :meth:`ContentKeys.seal` turns a text into an *envelope* (bytes) under the key of its
  level, with associated data binding ``(table, row id, column, level, key version)``;
* :meth:`ContentKeys.open` turns it back, and raises :class:`FieldIntegrityError` when
  anything does not match (another row, column or level, a tampered byte, a missing key).

The ORM side (``app.sealing``) wraps this for models: declare a column with
``sealed_text`` and read/write the attribute as a ``str``. Use this module directly only
for bulk work (row queries, migrations, rotation, backups).

Envelope formats (first byte):

* ``0x01`` AES-256-GCM (``cryptography``'s AEAD): ``01 | key version (4, big-endian) |
  nonce (12) | ciphertext | tag (16)``; 33 bytes of overhead.
* ``0x00`` public plaintext: ``00 | UTF-8``. Only accepted where the caller says the level
  is public (released content stays readable); anywhere else it is an integrity error, so
  a database writer cannot plant readable text in a restricted row.
* ``0x02`` legacy plaintext written by migration 0007 before ``enclave content encrypt``
  ran; opened only when the caller allows legacy values (a migration in progress).

Keys: per level and key version, derived with HKDF-SHA256 from that level's key-encryption
key in the keyring (``kek[level][version]``), one derivation for field encryption and one
for search terms. Rotating the keyring (``enclave keys rotate``) therefore rotates both;
the version used is recorded in every envelope. Random 96-bit nonces: each key version
must stay well below 2**32 encryptions (rotate long before; see docs/encryption.md).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.crypto.keyring import Keyring, KeyringError
from app.crypto.stream import IntegrityError

__all__ = [
    "ContentKeys",
    "FieldIntegrityError",
    "LEGACY",
    "PLAIN",
    "SEALED",
    "content_keys",
    "envelope_kind",
    "envelope_version",
    "field_aad",
]

PLAIN = 0x00
SEALED = 0x01
LEGACY = 0x02
_NONCE = 12
_TAG = 16
_HEADER = 1 + 4 + _NONCE
_INFO_FIELDS = b"enclave/fields/aes-256-gcm/v1"
_INFO_SEARCH = b"enclave/search/hmac-sha256/v1"


class FieldIntegrityError(IntegrityError):
    """A stored text does not open under the context it was read in (moved, altered,
    or its key is gone). Never answered with other content."""


def field_aad(table: str, row_id: object, column: str, level: str, version: int) -> bytes:
    """Associated data of one value: length-prefixed, so no two contexts encode alike."""
    parts = [b"enclave-field:v1", table.encode(), str(row_id).encode(), column.encode(),
             level.encode(), str(int(version)).encode()]
    return b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def envelope_kind(value: bytes | str | None) -> int | None:
    """PLAIN, SEALED or LEGACY (a ``str`` is a legacy SQLite value); None for empty."""
    if value is None:
        return None
    if isinstance(value, str):
        return LEGACY
    if not value:
        return None
    return value[0]


def envelope_version(value: bytes) -> int | None:
    """The key version a sealed value was written with (None for other kinds)."""
    if isinstance(value, bytes | bytearray | memoryview) and len(value) >= _HEADER \
            and value[0] == SEALED:
        return int.from_bytes(bytes(value[1:5]), "big")
    return None


class ContentKeys:
    """The field and search keys of one keyring, derived on first use and cached."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._aead: dict[tuple[str, int], AESGCM] = {}
        self._search: dict[tuple[str, int], bytes] = {}

    # -- keys -------------------------------------------------------------------

    def _derive(self, level: str, version: int, info: bytes) -> bytes:
        _, kek = self.keyring.kek(level, version)
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=info + b"\x00" + level.encode()).derive(kek)

    def _cipher(self, level: str, version: int) -> AESGCM:
        key = (level, version)
        cipher = self._aead.get(key)
        if cipher is None:
            cipher = self._aead[key] = AESGCM(self._derive(level, version, _INFO_FIELDS))
        return cipher

    def search_key(self, level: str, version: int | None = None) -> bytes:
        version = self.keyring.active_version(level) if version is None else version
        key = self._search.get((level, version))
        if key is None:
            key = self._search[(level, version)] = self._derive(level, version, _INFO_SEARCH)
        return key

    def search_keys(self, levels: Iterable[str]) -> list[bytes]:
        """Every search key (all versions still in the keyring) of ``levels``: a query is
        hashed under each, so rows not yet re-indexed after a rotation are still found."""
        keys = []
        for level in levels:
            try:
                versions = self.keyring.versions(level)
            except KeyringError:
                continue
            keys.extend(self.search_key(level, v) for v in versions)
        return keys

    # -- fields -------------------------------------------------------------------

    def seal(self, table: str, row_id: object, column: str, level: str, text: str, *,
             public: bool = False) -> bytes:
        """The envelope of ``text``; ``public`` content is stored as readable plaintext."""
        data = text.encode("utf-8")
        if public:
            return bytes([PLAIN]) + data
        version = self.keyring.active_version(level)
        nonce = os.urandom(_NONCE)
        sealed = self._cipher(level, version).encrypt(
            nonce, data, field_aad(table, row_id, column, level, version))
        return bytes([SEALED]) + version.to_bytes(4, "big") + nonce + sealed

    def open(self, table: str, row_id: object, column: str, level: str,
             value: bytes | str | None, *, public: bool = False,
             allow_legacy: bool = False) -> str:
        """The text in ``value``, read as column ``column`` of row ``row_id`` at ``level``.

        ``public``: the caller's row is public content, so a plaintext envelope is
        accepted. ``allow_legacy``: values not yet encrypted by the content migration
        are accepted. Anything else that does not open raises FieldIntegrityError."""
        kind = envelope_kind(value)
        if kind is None:
            return ""
        if kind == LEGACY and allow_legacy:
            return value if isinstance(value, str) else bytes(value[1:]).decode("utf-8")
        assert not isinstance(value, str)
        raw = bytes(value)
        if kind == PLAIN and public:
            return raw[1:].decode("utf-8")
        where = f"{table}.{column} #{row_id}"
        if kind != SEALED or len(raw) < _HEADER + _TAG:
            raise FieldIntegrityError(f"{where}: stored value is not sealed for {level}")
        version = int.from_bytes(raw[1:5], "big")
        try:
            cipher = self._cipher(level, version)
        except KeyringError:
            raise FieldIntegrityError(f"{where}: key {level} v{version} is not in the "
                                      "keyring") from None
        try:
            data = cipher.decrypt(raw[5:_HEADER], raw[_HEADER:],
                                  field_aad(table, row_id, column, level, version))
        except InvalidTag:
            raise FieldIntegrityError(f"{where}: does not open at {level} (moved, altered "
                                      "or another level's)") from None
        return data.decode("utf-8")

    # -- search terms ---------------------------------------------------------------

    @staticmethod
    def term_hash(key: bytes, term: str) -> int:
        """A signed 64-bit keyed hash of one normalised term (HMAC-SHA256, truncated):
        equal terms under one key hash alike; nothing else about the term is kept."""
        digest = hmac.digest(key, term.encode("utf-8"), hashlib.sha256)
        return int.from_bytes(digest[:8], "big", signed=True)


def content_keys(keyring: Keyring) -> ContentKeys:
    """The :class:`ContentKeys` of ``keyring`` (one per keyring object, cached on it)."""
    keys = getattr(keyring, "_content_keys", None)
    if keys is None or keys.keyring is not keyring:
        keys = ContentKeys(keyring)
        keyring._content_keys = keys  # type: ignore[attr-defined]
    return keys
