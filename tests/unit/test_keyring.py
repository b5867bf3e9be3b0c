"""Keyring file handling (app.crypto.keyring) and key wrapping (app.crypto.wrap)."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import stat
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.crypto import keyring as keyring_mod
from app.crypto.keyring import Keyring, KeyringError, ensure_levels_in_file, load_or_create
from app.crypto.stream import IntegrityError, new_data_key
from app.crypto.wrap import (
    WRAPPED_KEY_SIZE,
    key_wrap_aad,
    seal,
    unseal,
    unwrap_key,
    wrap_key,
)

LEVELS = ["internal", "restricted", "secret"]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def kr() -> Keyring:
    return Keyring.generate(LEVELS)


@pytest.fixture
def saved(tmp_path: Path, kr: Keyring) -> Path:
    path = tmp_path / "keyring.json"
    kr.save(path)
    return path


def valid_doc() -> dict[str, Any]:
    return {
        "version": 1,
        "kek": {
            "internal": {"1": b64(b"\x01" * 32)},
            "restricted": {"1": b64(b"\x02" * 32), "2": b64(b"\x03" * 32)},
        },
        "active": {"internal": 1, "restricted": 2},
        "signing": {"ed25519": b64(b"\x04" * 32)},
        "app": b64(b"\x05" * 32),
    }


def write_doc(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "keyring.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


# -- generate / save / load -------------------------------------------------------


def test_generate_has_v1_for_every_level(kr: Keyring) -> None:
    assert kr.levels == sorted(LEVELS)
    for level in LEVELS:
        version, key = kr.kek(level)
        assert version == 1 == kr.active_version(level)
        assert len(key) == 32
    assert len(kr.app_key()) == 32
    keks = [kr.kek(level)[1] for level in LEVELS]
    assert len(set(keks + [kr.app_key()])) == len(LEVELS) + 1


def test_save_load_round_trip(saved: Path, kr: Keyring) -> None:
    loaded = Keyring.load(saved)
    assert loaded.levels == kr.levels
    for level in LEVELS:
        assert loaded.kek(level) == kr.kek(level)
    assert loaded.app_key() == kr.app_key()
    assert loaded.signing_public_key_b64() == kr.signing_public_key_b64()


def test_saved_file_format(saved: Path, kr: Keyring) -> None:
    doc = json.loads(saved.read_text())
    assert set(doc) == {"version", "kek", "active", "signing", "app"}
    assert doc["version"] == 1
    assert doc["active"] == {level: 1 for level in LEVELS}
    assert set(doc["kek"]["restricted"]) == {"1"}
    assert base64.b64decode(doc["kek"]["restricted"]["1"]) == kr.kek("restricted")[1]
    assert len(base64.b64decode(doc["signing"]["ed25519"])) == 32
    assert base64.b64decode(doc["app"]) == kr.app_key()


def test_saved_file_is_0600_and_no_temp_left(saved: Path) -> None:
    assert mode(saved) == 0o600
    assert sorted(p.name for p in saved.parent.iterdir()) == ["keyring.json"]


def test_save_replaces_loose_file_with_0600(tmp_path: Path, kr: Keyring) -> None:
    path = tmp_path / "keyring.json"
    path.write_text("old")
    path.chmod(0o644)
    kr.save(path)
    assert mode(path) == 0o600
    assert Keyring.load(path).app_key() == kr.app_key()


def test_save_creates_parent_dir(tmp_path: Path, kr: Keyring) -> None:
    path = tmp_path / "instance" / "keys" / "keyring.json"
    kr.save(path)
    assert Keyring.load(path).app_key() == kr.app_key()


def test_failed_save_leaves_old_file_and_no_temp(
    tmp_path: Path, kr: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keyring.json"
    kr.save(path)
    before = path.read_bytes()

    def boom(*args: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(keyring_mod.os, "replace", boom)
    kr.rotate(["secret"])
    with pytest.raises(OSError):
        kr.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keyring.json"]


def test_secrets_not_in_repr(kr: Keyring) -> None:
    text = repr(kr) + str(kr)
    secrets_ = [kr.app_key()] + [kr.kek(level)[1] for level in LEVELS]
    for secret in secrets_:
        assert b64(secret) not in text
        assert secret.hex() not in text
        assert repr(secret) not in text
    assert "restricted" in text


def test_fingerprint(kr: Keyring, saved: Path) -> None:
    fp = kr.fingerprint("restricted", 1)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fp not in kr.kek("restricted")[1].hex()
    assert fp != kr.fingerprint("secret", 1)
    assert Keyring.load(saved).fingerprint("restricted", 1) == fp
    with pytest.raises(KeyringError, match="kek restricted v9"):
        kr.fingerprint("restricted", 9)


def test_signing_key(kr: Keyring) -> None:
    sig = kr.signing_key().sign(b"export manifest")
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(kr.signing_public_key_b64()))
    public.verify(sig, b"export manifest")  # raises on failure


# -- rotation and levels ----------------------------------------------------------


def test_rotate(kr: Keyring, tmp_path: Path) -> None:
    old = kr.kek("restricted")
    assert kr.rotate(["restricted"]) == {"restricted": 2}
    assert kr.active_version("restricted") == 2
    assert kr.active_version("secret") == 1
    version, key = kr.kek("restricted")
    assert version == 2 and key != old[1]
    assert kr.kek("restricted", 1) == old  # old version kept for unwrapping
    assert kr.versions("restricted") == [1, 2]
    assert kr.rotate(["restricted", "secret"]) == {"restricted": 3, "secret": 2}

    path = tmp_path / "k.json"
    kr.save(path)
    loaded = Keyring.load(path)
    assert loaded.active_version("restricted") == 3
    assert loaded.kek("restricted", 1) == old


def test_rotate_unknown_level(kr: Keyring) -> None:
    with pytest.raises(KeyringError, match="topsecret"):
        kr.rotate(["topsecret"])
    assert kr.active_version("restricted") == 1  # nothing partially rotated


def test_ensure_levels(kr: Keyring) -> None:
    assert kr.ensure_levels(LEVELS) is False
    assert kr.ensure_levels(["restricted", "topsecret"]) is True
    assert kr.active_version("topsecret") == 1
    assert kr.ensure_levels(["topsecret"]) is False


@pytest.mark.parametrize("bad", ["", "has space", "../x", "a/b", "x" * 65])
def test_bad_level_names(kr: Keyring, bad: str) -> None:
    with pytest.raises(KeyringError):
        kr.ensure_levels([bad])
    with pytest.raises(KeyringError):
        Keyring.generate([bad])


def test_missing_key_messages(kr: Keyring) -> None:
    with pytest.raises(KeyringError, match=r"^missing key: kek restricted v2$"):
        kr.kek("restricted", 2)
    with pytest.raises(KeyringError, match="kek topsecret"):
        kr.kek("topsecret")
    with pytest.raises(KeyringError, match="kek topsecret"):
        kr.active_version("topsecret")


# -- malformed files ------------------------------------------------------------------


def test_valid_doc_loads(tmp_path: Path) -> None:
    kr = Keyring.load(write_doc(tmp_path, valid_doc()))
    assert kr.kek("restricted") == (2, b"\x03" * 32)
    assert kr.kek("restricted", 1) == (1, b"\x02" * 32)


def _mutate(path: str, value: Any) -> dict[str, Any]:
    doc = valid_doc()
    *parents, last = path.split(".")
    target = doc
    for p in parents:
        target = target[p]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return doc


_DELETE = object()

MALFORMED = [
    # (mutation path, new value, expected message fragment)
    ("version", _DELETE, "missing field 'version'"),
    ("kek", _DELETE, "missing field 'kek'"),
    ("active", _DELETE, "missing field 'active'"),
    ("signing", _DELETE, "missing field 'signing'"),
    ("app", _DELETE, "missing field 'app'"),
    ("signing.ed25519", _DELETE, "signing.ed25519"),
    ("version", 2, "unsupported keyring version 2"),
    ("version", "1", "unsupported keyring version"),
    ("version", True, "unsupported keyring version"),
    ("kek", [], "'kek' must be an object"),
    ("active", "x", "'active' must be an object"),
    ("kek.restricted", {}, "kek restricted"),
    ("kek.restricted.2", "not base64!!", "kek restricted v2: invalid base64"),
    ("kek.restricted.2", b64(b"\x03" * 16), "kek restricted v2: expected 32 bytes, got 16"),
    ("kek.restricted.2", 12345, "kek restricted v2: expected a base64 string"),
    ("kek.restricted.2", "A" * 43, "kek restricted v2: invalid base64"),
    ("kek.restricted.02", b64(b"\x09" * 32), "kek restricted: invalid version '02'"),
    ("kek.restricted.x", b64(b"\x09" * 32), "kek restricted: invalid version 'x'"),
    ("kek.bad level", {"1": b64(b"\x09" * 32)}, "invalid level name"),
    ("active.restricted", 3, "active kek restricted v3 is missing"),
    ("active.restricted", True, "active restricted"),
    ("active.restricted", "2", "active restricted"),
    ("active.internal", _DELETE, "kek internal: no active version"),
    ("active.ghost", 1, "active kek ghost v1 is missing"),
    ("signing.ed25519", b64(b"\x04" * 31), "signing ed25519: expected 32 bytes, got 31"),
    ("app", "%%%", "app: invalid base64"),
    ("app", b64(b"\x05" * 64), "app: expected 32 bytes, got 64"),
    ("kek.restricted.1", b64(b"\x01" * 32), "kek internal v1 and kek restricted v1"),
    ("app", b64(b"\x02" * 32), "app and kek restricted v1 are the same key"),
]


@pytest.mark.parametrize(("where", "value", "message"), MALFORMED)
def test_malformed_documents(tmp_path: Path, where: str, value: Any, message: str) -> None:
    path = write_doc(tmp_path, _mutate(where, value))
    with pytest.raises(KeyringError) as info:
        Keyring.load(path)
    text = str(info.value)
    assert message in text
    assert text.startswith(f"keyring {path}: ")
    assert "\n" not in text
    for secret in (b"\x02" * 32, b"\x03" * 32, b"\x05" * 32):
        assert b64(secret) not in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "invalid JSON"),
        ("{not json", "invalid JSON"),
        ('{"app": "c2VjcmV0"', "invalid JSON"),
        ("[]", "top level must be a JSON object"),
        ("null", "top level must be a JSON object"),
    ],
)
def test_unparseable_files(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message) as info:
        Keyring.load(write_doc(tmp_path, content))
    assert "c2VjcmV0" not in str(info.value)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(KeyringError, match="not UTF-8"):
        Keyring.load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="keyring file not found"):
        Keyring.load(tmp_path / "nope.json")


# -- load_or_create -----------------------------------------------------------------------


def test_load_or_create_creates_once(tmp_path: Path) -> None:
    path = tmp_path / "instance" / "keyring.json"
    kr, created = load_or_create(path, LEVELS, allow_create=True)
    assert created is True
    assert mode(path) == 0o600
    again, created_again = load_or_create(path, LEVELS, allow_create=True)
    assert created_again is False
    assert again.app_key() == kr.app_key()
    assert again.kek("secret") == kr.kek("secret")
    same, _ = Keyring.load_or_create(path, LEVELS, allow_create=False)
    assert same.app_key() == kr.app_key()


def test_load_or_create_refuses_when_not_allowed(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    with pytest.raises(KeyringError, match=r"^keyring file not found: "):
        load_or_create(path, LEVELS, allow_create=False)
    assert not path.exists()


def test_load_or_create_does_not_add_levels_to_existing(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    load_or_create(path, ["internal"], allow_create=True)
    kr, created = load_or_create(path, LEVELS, allow_create=True)
    assert created is False and kr.levels == ["internal"]


def test_load_or_create_never_overwrites_a_concurrent_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process creates the file between our existence check and our write:
    we must load theirs, not replace it (that would orphan their encrypted data)."""
    path = tmp_path / "keyring.json"
    theirs = Keyring.generate(LEVELS)
    real_generate = Keyring.generate

    def racing_generate(levels: Any) -> Keyring:
        theirs.save(path)
        return real_generate(levels)

    monkeypatch.setattr(Keyring, "generate", staticmethod(racing_generate))
    kr, created = load_or_create(path, LEVELS, allow_create=True)
    assert created is False
    assert kr.app_key() == theirs.app_key()
    assert Keyring.load(path).app_key() == theirs.app_key()
    assert [p.name for p in tmp_path.iterdir()] == ["keyring.json"]


def _add_level_in_child(path: str) -> bytes:
    kr, _ = ensure_levels_in_file(Path(path), [*LEVELS, "topsecret"])
    return kr.kek("topsecret")[1]


def test_ensure_levels_in_file(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    original = Keyring.generate(LEVELS)
    original.save(path)
    kr, changed = ensure_levels_in_file(path, LEVELS)
    assert changed is False and kr.app_key() == original.app_key()
    kr, changed = ensure_levels_in_file(path, [*LEVELS, "topsecret"])
    assert changed is True
    assert Keyring.load(path).kek("topsecret") == kr.kek("topsecret")
    assert mode(path) == 0o600


def test_ensure_levels_in_file_concurrent_processes_agree(tmp_path: Path) -> None:
    """Workers starting together must all end up with the same new KEK."""
    path = tmp_path / "keyring.json"
    Keyring.generate(LEVELS).save(path)
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=6, mp_context=ctx) as pool:
        keys = list(pool.map(_add_level_in_child, [str(path)] * 12))
    assert len(set(keys)) == 1
    assert Keyring.load(path).kek("topsecret")[1] == keys[0]


# -- key wrapping -------------------------------------------------------------------------


@pytest.fixture
def kek() -> bytes:
    return os.urandom(32)


def test_wrap_round_trip(kek: bytes) -> None:
    dk = new_data_key()
    aad = key_wrap_aad("1001", "restricted", 1)
    wrapped = wrap_key(kek, dk, aad)
    assert len(wrapped) == WRAPPED_KEY_SIZE == 61
    assert dk not in wrapped
    assert unwrap_key(kek, wrapped, aad) == dk
    assert wrap_key(kek, dk, aad) != wrapped  # random nonce


@pytest.mark.parametrize(
    "other_aad",
    [
        key_wrap_aad("1002", "restricted", 1),  # moved to another attachment
        key_wrap_aad("1001", "internal", 1),  # moved to another level
        key_wrap_aad("1001", "restricted", 2),  # claimed under another KEK version
        b"",
    ],
)
def test_unwrap_with_wrong_aad_fails(kek: bytes, other_aad: bytes) -> None:
    wrapped = wrap_key(kek, new_data_key(), key_wrap_aad("1001", "restricted", 1))
    with pytest.raises(IntegrityError):
        unwrap_key(kek, wrapped, other_aad)


def test_unwrap_with_wrong_kek_fails(kek: bytes) -> None:
    aad = key_wrap_aad(1, "restricted", 1)
    wrapped = wrap_key(kek, new_data_key(), aad)
    with pytest.raises(IntegrityError):
        unwrap_key(os.urandom(32), wrapped, aad)


def test_unwrap_tampered_or_truncated_fails(kek: bytes) -> None:
    aad = key_wrap_aad(1, "restricted", 1)
    wrapped = wrap_key(kek, new_data_key(), aad)
    for i in range(len(wrapped)):
        bad = bytearray(wrapped)
        bad[i] ^= 0x01
        with pytest.raises(IntegrityError):
            unwrap_key(kek, bytes(bad), aad)
    for cut in (0, 1, 12, 28, len(wrapped) - 1):
        with pytest.raises(IntegrityError):
            unwrap_key(kek, wrapped[:cut], aad)
    with pytest.raises(IntegrityError):
        unwrap_key(kek, wrapped + b"\x00", aad)


def test_wrapped_key_is_not_a_sealed_secret(kek: bytes) -> None:
    """Purpose labels keep the two uses apart even under the same key and AAD."""
    wrapped = wrap_key(kek, new_data_key(), b"aad")
    with pytest.raises(IntegrityError):
        unseal(kek, wrapped, b"aad")
    sealed = seal(kek, os.urandom(32), b"aad")
    with pytest.raises(IntegrityError):
        unwrap_key(kek, sealed, b"aad")


def test_seal_round_trip(kr: Keyring) -> None:
    totp = b"JBSWY3DPEHPK3PXP"
    sealed = seal(kr.app_key(), totp, b"totp:user:7")
    assert unseal(kr.app_key(), sealed, b"totp:user:7") == totp
    with pytest.raises(IntegrityError):
        unseal(kr.app_key(), sealed, b"totp:user:8")


def test_key_wrap_aad_is_unambiguous() -> None:
    assert key_wrap_aad("1", "ab", 1) != key_wrap_aad("1a", "b", 1)
    assert key_wrap_aad("1", "a", 11) != key_wrap_aad("1", "a1", 1)
    assert key_wrap_aad(5, "x", 1) == key_wrap_aad("5", "x", 1)


@pytest.mark.parametrize("bad", [b"", b"k" * 16, b"k" * 33])
def test_wrap_rejects_bad_key_lengths(kek: bytes, bad: bytes) -> None:
    with pytest.raises(ValueError):
        wrap_key(bad, new_data_key(), b"")
    with pytest.raises(ValueError):
        wrap_key(kek, bad, b"")
    with pytest.raises(ValueError):
        unwrap_key(bad, b"\x01" * 61, b"")
