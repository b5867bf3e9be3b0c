"""The application's secret keys, kept in one JSON file outside the database.

Format (all secrets standard base64 of raw bytes)::

    {
      "version": 1,
      "kek": {"<level>": {"<int version>": "<32 bytes>", ...}, ...},
      "active": {"<level>": <int version>, ...},
      "signing": {"ed25519": "<32-byte raw private key>"},
      "app": "<32 bytes>"
    }

KEKs wrap per-attachment data keys (see ``app.crypto.wrap``); one KEK series
per clearance level, rotated by adding a version and making it active while
old versions stay for unwrapping. ``app`` is a general-purpose secret (e.g.
for sealing TOTP seeds). Secret bytes never appear in ``repr``, errors or logs;
use :meth:`Keyring.fingerprint` to refer to a key.

A keyring file can be *sealed* (``enclave keys seal``)::

    {"sealed": "enclave-keyring", "version": 1,
     "kdf": {"name": "argon2id", "salt": "...", "time_cost": 3, "memory_cost": 65536,
             "parallelism": 1},
     "nonce": "...", "ciphertext": "..."}

The JSON above is encrypted with AES-256-GCM under a key derived from a passphrase with
Argon2id (argon2-cffi's low-level API; memory-hard), the header as associated data. The
passphrase comes from the process (``configure_unsealer``: an environment variable, a
file, or an operator command such as a secrets manager or a TPM). A sealed keyring stays
sealed when it is saved again (rotation).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "FILE_VERSION",
    "SEALED_FORMAT",
    "configure_unsealer",
    "is_sealed_file",
    "KEY_SIZE",
    "Keyring",
    "KeyringError",
    "ensure_levels_in_file",
    "keyring_lock",
    "load_or_create",
]

FILE_VERSION = 1
KEY_SIZE = 32
_LEVEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VERSION_RE = re.compile(r"[1-9][0-9]{0,8}")


class KeyringError(Exception):
    """The keyring file is missing, unreadable or invalid, or a key is absent."""


SEALED_FORMAT = "enclave-keyring"
KDF_PARAMS = {"time_cost": 3, "memory_cost": 64 * 1024, "parallelism": 1}
_unsealer: Callable[[], bytes] | None = None
_derived: dict[tuple[bytes, bytes, int, int, int], bytes] = {}


def configure_unsealer(source: Callable[[], bytes] | None) -> None:
    """Where this process gets the passphrase of a sealed keyring (called at most once
    per file change); None: sealed keyrings cannot be opened."""
    global _unsealer
    _unsealer = source


def is_sealed_file(path: Path) -> bool:
    try:
        doc = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("sealed") == SEALED_FORMAT


def _derive(passphrase: bytes, salt: bytes, time_cost: int, memory_cost: int,
            parallelism: int) -> bytes:
    from argon2.low_level import Type, hash_secret_raw

    cache_key = (hashlib.sha256(passphrase).digest(), salt, time_cost, memory_cost,
                 parallelism)
    key = _derived.get(cache_key)
    if key is None:
        key = _derived[cache_key] = hash_secret_raw(
            passphrase, salt, time_cost=time_cost, memory_cost=memory_cost,
            parallelism=parallelism, hash_len=KEY_SIZE, type=Type.ID)
    return key


class _Sealing:
    """How a keyring file was sealed: the KDF header and the derived key (kept to seal
    it again on save, never written anywhere)."""

    def __init__(self, kdf: dict[str, object], key: bytes) -> None:
        self.kdf = kdf
        self.key = key

    @classmethod
    def new(cls, passphrase: bytes) -> _Sealing:
        salt = secrets.token_bytes(16)
        kdf = {"name": "argon2id", "salt": _b64(salt), **KDF_PARAMS}
        return cls(kdf, _derive(passphrase, salt, KDF_PARAMS["time_cost"],
                                KDF_PARAMS["memory_cost"], KDF_PARAMS["parallelism"]))

    def header(self) -> dict[str, object]:
        return {"sealed": SEALED_FORMAT, "version": 1, "kdf": self.kdf}

    def seal(self, plain: bytes) -> bytes:
        header = self.header()
        aad = json.dumps(header, sort_keys=True).encode()
        nonce = secrets.token_bytes(12)
        doc = {**header, "nonce": _b64(nonce),
               "ciphertext": _b64(AESGCM(self.key).encrypt(nonce, plain, aad))}
        return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def _unseal(doc: dict[str, object]) -> tuple[bytes, _Sealing]:
    kdf = doc.get("kdf")
    if doc.get("version") != 1 or not isinstance(kdf, dict) or kdf.get("name") != "argon2id":
        raise KeyringError("unsupported sealed keyring format")
    if _unsealer is None:
        raise KeyringError("the keyring is sealed: set ENCLAVE_KEYRING_PASSPHRASE_FILE, "
                           "ENCLAVE_KEYRING_COMMAND or ENCLAVE_KEYRING_PASSPHRASE")
    try:
        salt = base64.b64decode(str(kdf["salt"]), validate=True)
        params = [int(kdf[k]) for k in ("time_cost", "memory_cost", "parallelism")]  # type: ignore[call-overload]
        nonce = base64.b64decode(str(doc["nonce"]), validate=True)
        ciphertext = base64.b64decode(str(doc["ciphertext"]), validate=True)
    except (KeyError, ValueError, binascii.Error):
        raise KeyringError("sealed keyring: malformed header") from None
    key = _derive(_unsealer(), salt, *params)
    sealing = _Sealing(dict(kdf), key)
    aad = json.dumps(sealing.header(), sort_keys=True).encode()
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad), sealing
    except InvalidTag:
        raise KeyringError("the keyring does not open with this passphrase") from None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(value: object, key_id: str, size: int) -> bytes:
    if not isinstance(value, str):
        raise KeyringError(f"{key_id}: expected a base64 string")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise KeyringError(f"{key_id}: invalid base64") from None
    if len(raw) != size:
        raise KeyringError(f"{key_id}: expected {size} bytes, got {len(raw)}")
    return raw


def _check_level(level: object) -> str:
    if not isinstance(level, str) or not _LEVEL_RE.fullmatch(level):
        raise KeyringError(f"invalid level name {level!r}")
    return level


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically.

    With ``overwrite=False`` the file is published with ``os.link``, which fails
    with ``FileExistsError`` instead of replacing a keyring another process
    created meanwhile (replacing it would orphan everything encrypted with it).
    """
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            tmp.unlink()
        _fsync_dir(directory)
    finally:
        tmp.unlink(missing_ok=True)


class Keyring:
    """In-memory keyring. Construct with :meth:`load`, :meth:`generate` or
    :func:`load_or_create`; persist with :meth:`save`."""

    def __init__(
        self,
        keks: dict[str, dict[int, bytes]],
        active: dict[str, int],
        signing_seed: bytes,
        app_secret: bytes,
    ) -> None:
        self._keks = {level: dict(versions) for level, versions in keks.items()}
        self._active = dict(active)
        self._signing_seed = bytes(signing_seed)
        self._app = bytes(app_secret)
        self._sealing: _Sealing | None = None
        self._validate()

    # -- construction -------------------------------------------------------

    @classmethod
    def generate(cls, levels: Iterable[str]) -> Keyring:
        """A fresh keyring with a v1 KEK per level, a signing key and an app secret."""
        levels = [_check_level(level) for level in levels]
        signing = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return cls(
            keks={level: {1: secrets.token_bytes(KEY_SIZE)} for level in levels},
            active={level: 1 for level in levels},
            signing_seed=signing,
            app_secret=secrets.token_bytes(KEY_SIZE),
        )

    @classmethod
    def load(cls, path: Path) -> Keyring:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise KeyringError(f"keyring file not found: {path}") from None
        except OSError as exc:
            raise KeyringError(f"cannot read keyring file {path}: {exc.strerror}") from None
        try:
            sealing = None
            if raw.lstrip().startswith(b"{") and b'"sealed"' in raw:
                doc = json.loads(raw.decode("utf-8"))
                if isinstance(doc, dict) and doc.get("sealed") == SEALED_FORMAT:
                    raw, sealing = _unseal(doc)
            keyring = cls._from_json(raw)
            keyring._sealing = sealing
            return keyring
        except (KeyringError, ValueError) as exc:
            raise KeyringError(f"keyring {path}: {exc}") from None

    @property
    def sealed(self) -> bool:
        return self._sealing is not None

    def seal_with(self, passphrase: bytes | None) -> None:
        """Seal (or with None, unseal) this keyring the next time it is saved."""
        self._sealing = _Sealing.new(passphrase) if passphrase is not None else None

    @classmethod
    def load_or_create(
        cls, path: Path, levels: Iterable[str], *, allow_create: bool
    ) -> tuple[Keyring, bool]:
        return load_or_create(path, levels, allow_create=allow_create)

    @classmethod
    def _from_json(cls, raw: bytes) -> Keyring:
        try:
            doc = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise KeyringError("not UTF-8") from None
        except json.JSONDecodeError as exc:
            # exc.msg/lineno/colno only: the default str() may quote file content.
            raise KeyringError(
                f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            ) from None
        if not isinstance(doc, dict):
            raise KeyringError("top level must be a JSON object")
        for field in ("version", "kek", "active", "signing", "app"):
            if field not in doc:
                raise KeyringError(f"missing field {field!r}")
        file_version = doc["version"]
        if (
            isinstance(file_version, bool)
            or not isinstance(file_version, int)
            or (file_version != FILE_VERSION)
        ):
            raise KeyringError(f"unsupported keyring version {file_version!r}")

        kek_doc, active_doc, signing_doc = doc["kek"], doc["active"], doc["signing"]
        if not isinstance(kek_doc, dict):
            raise KeyringError("'kek' must be an object")
        if not isinstance(active_doc, dict):
            raise KeyringError("'active' must be an object")
        if not isinstance(signing_doc, dict):
            raise KeyringError("'signing' must be an object")

        keks: dict[str, dict[int, bytes]] = {}
        for level, versions in kek_doc.items():
            _check_level(level)
            if not isinstance(versions, dict) or not versions:
                raise KeyringError(f"kek {level}: must be a non-empty object of versions")
            keks[level] = {}
            for version, value in versions.items():
                if not _VERSION_RE.fullmatch(version):
                    raise KeyringError(f"kek {level}: invalid version {version!r}")
                key_id = f"kek {level} v{version}"
                keks[level][int(version)] = _unb64(value, key_id, KEY_SIZE)

        active: dict[str, int] = {}
        for level, version in active_doc.items():
            _check_level(level)
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise KeyringError(f"active {level}: must be a positive integer")
            active[level] = version

        if "ed25519" not in signing_doc:
            raise KeyringError("missing field 'signing.ed25519'")
        signing = _unb64(signing_doc["ed25519"], "signing ed25519", KEY_SIZE)
        app_secret = _unb64(doc["app"], "app", KEY_SIZE)
        return cls(keks=keks, active=active, signing_seed=signing, app_secret=app_secret)

    def _validate(self) -> None:
        for level, versions in self._keks.items():
            _check_level(level)
            if not versions:
                raise KeyringError(f"kek {level}: no versions")
            for version, key in versions.items():
                if len(key) != KEY_SIZE:
                    raise KeyringError(f"kek {level} v{version}: expected {KEY_SIZE} bytes")
            if level not in self._active:
                raise KeyringError(f"kek {level}: no active version")
        for level, version in self._active.items():
            if version not in self._keks.get(level, {}):
                raise KeyringError(f"active kek {level} v{version} is missing")
        if len(self._app) != KEY_SIZE:
            raise KeyringError(f"app: expected {KEY_SIZE} bytes")
        if len(self._signing_seed) != KEY_SIZE:
            raise KeyringError(f"signing ed25519: expected {KEY_SIZE} bytes")
        # A KEK pasted into two levels (or reused as the app secret) would
        # silently remove the isolation between levels.
        named = [("app", self._app)] + [
            (f"kek {level} v{version}", key)
            for level, versions in sorted(self._keks.items())
            for version, key in sorted(versions.items())
        ]
        for i, (name_a, key_a) in enumerate(named):
            for name_b, key_b in named[i + 1 :]:
                if hmac.compare_digest(key_a, key_b):
                    raise KeyringError(f"{name_a} and {name_b} are the same key")

    # -- persistence ----------------------------------------------------------

    def _to_json(self) -> bytes:
        doc = {
            "version": FILE_VERSION,
            "kek": {
                level: {str(v): _b64(k) for v, k in sorted(versions.items())}
                for level, versions in sorted(self._keks.items())
            },
            "active": dict(sorted(self._active.items())),
            "signing": {"ed25519": _b64(self._signing_seed)},
            "app": _b64(self._app),
        }
        return (json.dumps(doc, indent=2) + "\n").encode("utf-8")

    def save(self, path: Path) -> None:
        """Atomically replace ``path`` (temp file in the same dir, fsync, rename; mode 0600);
        a sealed keyring is written sealed."""
        data = self._to_json()
        if self._sealing is not None:
            data = self._sealing.seal(data)
        _atomic_write(Path(path), data, overwrite=True)

    # -- key management -----------------------------------------------------------

    @property
    def levels(self) -> list[str]:
        return sorted(self._keks)

    def versions(self, level: str) -> list[int]:
        if level not in self._keks:
            raise KeyringError(f"missing key: kek {level} (unknown level)")
        return sorted(self._keks[level])

    def ensure_levels(self, levels: Iterable[str]) -> bool:
        """Add a v1 KEK for every level not yet present; True if anything changed."""
        changed = False
        for level in levels:
            _check_level(level)
            if level not in self._keks:
                self._keks[level] = {1: secrets.token_bytes(KEY_SIZE)}
                self._active[level] = 1
                changed = True
        return changed

    def rotate(self, levels: Iterable[str]) -> dict[str, int]:
        """Add version n+1 for each level and make it active. Old versions stay
        so existing wrapped keys can still be unwrapped (and re-wrapped)."""
        levels = list(levels)
        for level in levels:
            if level not in self._keks:
                raise KeyringError(f"missing key: kek {level} (unknown level)")
        new: dict[str, int] = {}
        for level in levels:
            version = max(self._keks[level]) + 1
            self._keks[level][version] = secrets.token_bytes(KEY_SIZE)
            self._active[level] = version
            new[level] = version
        return new

    def retire(self, level: str, version: int) -> None:
        """Remove an old key version (after nothing is encrypted under it any more)."""
        if level not in self._keks or version not in self._keks[level]:
            raise KeyringError(f"missing key: kek {level} v{version}")
        if self._active[level] == version:
            raise KeyringError(f"kek {level} v{version} is the active version")
        del self._keks[level][version]

    def active_version(self, level: str) -> int:
        if level not in self._active:
            raise KeyringError(f"missing key: kek {level} (unknown level)")
        return self._active[level]

    def kek(self, level: str, version: int | None = None) -> tuple[int, bytes]:
        """``(version, key)``; the active version when ``version`` is None."""
        if version is None:
            version = self.active_version(level)
        try:
            return version, self._keks[level][version]
        except KeyError:
            raise KeyringError(f"missing key: kek {level} v{version}") from None

    def signing_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self._signing_seed)

    def signing_public_key_b64(self) -> str:
        public = self.signing_key().public_key()
        return _b64(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    def app_key(self) -> bytes:
        return self._app

    def fingerprint(self, level: str, version: int) -> str:
        """Short non-secret identifier of a KEK for logs (domain-separated SHA-256)."""
        _, key = self.kek(level, version)
        return hashlib.sha256(b"enclave-kek-fingerprint\x00" + key).hexdigest()[:16]

    def __repr__(self) -> str:
        levels = ", ".join(
            f"{level}: v{self._active[level]}/{len(self._keks[level])}" for level in self.levels
        )
        return f"<Keyring {levels}>"

    __str__ = __repr__


def load_or_create(
    path: Path, levels: Iterable[str], *, allow_create: bool
) -> tuple[Keyring, bool]:
    """Load the keyring at ``path``; if it is missing, create it (when allowed).

    Returns ``(keyring, created)``. An existing file is returned as is: levels it
    lacks are not added (call ``ensure_levels`` + ``save`` for that). Creation
    never overwrites: if another process creates the file first, theirs is loaded.
    """
    path = Path(path)
    if path.exists():
        return Keyring.load(path), False
    if not allow_create:
        raise KeyringError(f"keyring file not found: {path}")
    keyring = Keyring.generate(levels)
    try:
        _atomic_write(path, keyring._to_json(), overwrite=False)
    except FileExistsError:
        return Keyring.load(path), False
    return keyring, True


@contextlib.contextmanager
def keyring_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock (``flock`` on ``<path>.lock``) for read-modify-write
    of the keyring file, so processes changing it at once cannot lose each other's keys."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def ensure_levels_in_file(path: Path, levels: Iterable[str]) -> tuple[Keyring, bool]:
    """Add missing level KEKs to the keyring *file*, under :func:`keyring_lock`.

    Use this instead of ``ensure_levels`` + ``save`` when several processes may
    start at once (e.g. gunicorn workers): each would otherwise generate its own
    v1 KEK for a new level, and every worker but the last to save would wrap
    keys under a KEK that is then lost. Returns ``(fresh keyring, changed)``.
    """
    path = Path(path)
    levels = list(levels)
    with keyring_lock(path):
        keyring = Keyring.load(path)
        changed = keyring.ensure_levels(levels)
        if changed:
            keyring.save(path)
    return keyring, changed
