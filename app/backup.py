"""Backups that restore: ``enclave backup DIR``, ``backup verify DIR``, ``restore DIR``.

A backup directory holds::

    manifest.json   what is in it: engine, migration, counts, every file's SHA-256 and size,
                    the wrapped data key of the dump
    manifest.sig    Ed25519 signature of manifest.json (the keyring's signing key; the
                    public key is in the manifest and checked against the keyring)
    database.enc    the database dump, encrypted (streaming AEAD, app.crypto.stream) under
                    a random data key wrapped by the keyring's backup key
    blobs/...       the attachments' blobs, copied as stored (already encrypted)

Consistency while the site runs: PostgreSQL's dump is one snapshot (``pg_dump``); SQLite's
is the online backup API. Blobs are immutable once written; they are copied after the
dump, so every blob the dump refers to is there, unless its attachment was deleted (and
its key shredded) in between: those are listed in the manifest and shredded again when
restoring. The keyring is not in the backup: keep it (sealed) apart; without it the
backup gives what a database thief gets (docs/encryption.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Engine, inspect, select

from app.crypto.stream import IntegrityError, decrypt_stream, encrypt_stream, new_data_key
from app.crypto.wrap import unwrap_key, wrap_key
from app.errors import ServiceError

FORMAT = "enclave-backup"
VERSION = 1
CHUNK = 1 << 20
Progress = Callable[[str], None]


class BackupError(ServiceError):
    code = "backup_error"


@dataclass
class BackupReport:
    directory: Path
    database_bytes: int = 0
    blobs: int = 0
    shredded_meanwhile: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _backup_key(keyring: Any) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"enclave/backup/v1").derive(keyring.app_key())


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _pg_env_and_url(engine: Engine) -> tuple[dict[str, str], str]:
    url = engine.url
    env = {**os.environ}
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return env, plain.render_as_string(hide_password=False)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} is not installed (PostgreSQL's client tools)")
    return path


def _sqlite_path(engine: Engine) -> Path:
    return Path(str(engine.url.database))


COUNTED = ("findings", "replies", "attachments", "audit_log")


def _dump_chunks(engine: Engine, counts: dict[str, int]) -> Iterator[bytes]:
    """The database as a stream of bytes (``pg_dump -Fc`` or an SQLite image), and the
    row counts of the same snapshot in ``counts`` (for the manifest)."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy import text

        env, url = _pg_env_and_url(engine)
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
            snapshot = conn.scalar(text("SELECT pg_export_snapshot()"))
            for table in COUNTED:
                counts[table] = int(conn.scalar(text(f"SELECT count(*) FROM {table}")))  # noqa: S608
            proc = subprocess.Popen(  # noqa: S603 - PostgreSQL's own client, found on PATH
                [_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
                 f"--snapshot={snapshot}", "--dbname", url],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            assert proc.stdout is not None
            while chunk := proc.stdout.read(CHUNK):
                yield chunk
            _, err = proc.communicate()
            conn.rollback()
        if proc.returncode != 0:
            raise BackupError(f"pg_dump failed: {err.decode(errors='replace').strip()[:300]}")
        return
    source = sqlite3.connect(_sqlite_path(engine), timeout=30)
    memory = sqlite3.connect(":memory:")
    try:
        source.backup(memory)  # one consistent snapshot, while others write
        for table in COUNTED:
            counts[table] = memory.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
        image = bytearray(memory.serialize())
        image[18:20] = b"\x01\x01"  # a rollback-journal image (the live file is in WAL mode)
    finally:
        source.close()
        memory.close()
    for start in range(0, len(image), CHUNK):
        yield bytes(image[start:start + CHUNK])


def create(directory: Path, *, progress: Progress | None = None) -> BackupReport:
    """Write a backup of the running instance into ``directory`` (new or empty)."""
    from app import state
    from app.attachments.models import Attachment
    from app.db import db
    from app.migrate import current_revision

    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise BackupError(f"{directory} is not empty; back up into a new directory.")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    keyring = state.keyring()
    engine = db.get_bind()
    report = BackupReport(directory)
    backup_id = base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("=")
    data_key = new_data_key()
    context = f"enclave-backup:{backup_id}:database"
    say = progress or (lambda _msg: None)

    say("dumping the database")
    dump = directory / "database.enc"
    fd = os.open(dump, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        for piece in encrypt_stream(data_key, context, _dump_chunks(engine, report.counts)):
            out.write(piece)
        out.flush()
        os.fsync(out.fileno())
    dump_hash, dump_size = _sha256_file(dump)
    report.database_bytes = dump_size

    say("copying the attachments' blobs")
    store = state.blobs()
    copied: list[dict[str, Any]] = []
    for blob_id in store.iter_blob_ids():
        target = directory / "blobs" / blob_id[:2] / blob_id[2:4] / blob_id
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        digest = hashlib.sha256()
        size = 0
        try:
            with store.open_reader(blob_id) as src, target.open("wb") as dst:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    dst.write(chunk)
        except FileNotFoundError:
            target.unlink(missing_ok=True)
            continue
        copied.append({"id": blob_id, "sha256": digest.hexdigest(), "size": size})
    report.blobs = len(copied)
    have = {b["id"] for b in copied}
    # attachments deleted (keys shredded) between the dump and the copy lost their blob
    report.shredded_meanwhile = [
        att_id for att_id, blob_id in db.execute(
            select(Attachment.id, Attachment.blob_id).where(Attachment.wrapped_key.is_(None)))
        if blob_id not in have]
    db.commit()

    manifest = {
        "format": FORMAT, "version": VERSION, "backup_id": backup_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "engine": engine.dialect.name, "revision": current_revision(engine),
        "database": {"file": "database.enc", "sha256": dump_hash, "size": dump_size,
                     "context": context,
                     "wrapped_key": base64.b64encode(wrap_key(
                         _backup_key(keyring), data_key, context.encode())).decode()},
        "blobs": copied, "shredded_meanwhile": report.shredded_meanwhile,
        "counts": report.counts,
        "public_key": keyring.signing_public_key_b64(),
    }
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (directory / "manifest.json").write_bytes(body)
    signature = keyring.signing_key().sign(body)
    (directory / "manifest.sig").write_text(base64.b64encode(signature).decode() + "\n")
    say(f"backup written: {dump_size} bytes of database, {len(copied)} blobs")
    return report


@dataclass
class VerifyReport:
    manifest: dict[str, Any]
    files: int


def verify(directory: Path, *, decrypt: bool = True) -> VerifyReport:
    """Check the signature, every file's hash and size, and (``decrypt``) that the dump
    opens under this keyring. Raises BackupError naming the first problem."""
    from app import state

    directory = Path(directory)
    try:
        body = (directory / "manifest.json").read_bytes()
        signature = base64.b64decode((directory / "manifest.sig").read_text().strip(),
                                     validate=True)
    except (OSError, ValueError) as exc:
        raise BackupError(f"{directory}: no readable manifest ({exc})") from None
    keyring = state.keyring()
    public = Ed25519PublicKey.from_public_bytes(
        base64.b64decode(keyring.signing_public_key_b64()))
    try:
        public.verify(signature, body)
    except InvalidSignature:
        raise BackupError("the manifest's signature does not verify with this keyring's "
                          "signing key") from None
    manifest = json.loads(body)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise BackupError("not an Enclave backup of a known version")
    files = 0
    db_meta = manifest["database"]
    digest, size = _sha256_file(directory / db_meta["file"])
    if (digest, size) != (db_meta["sha256"], db_meta["size"]):
        raise BackupError(f"{db_meta['file']} does not match the manifest")
    files += 1
    for blob in manifest["blobs"]:
        path = directory / "blobs" / blob["id"][:2] / blob["id"][2:4] / blob["id"]
        if not path.is_file() or _sha256_file(path) != (blob["sha256"], blob["size"]):
            raise BackupError(f"blob {blob['id']} is missing or does not match the manifest")
        files += 1
    if decrypt:
        for _ in _decrypted_dump(directory, manifest):
            pass
    return VerifyReport(manifest, files)


def _decrypted_dump(directory: Path, manifest: dict[str, Any]) -> Iterator[bytes]:
    from app import state

    meta = manifest["database"]
    try:
        data_key = unwrap_key(_backup_key(state.keyring()),
                              base64.b64decode(meta["wrapped_key"]), meta["context"].encode())
    except IntegrityError:
        raise BackupError("the dump's key does not open with this keyring") from None

    def chunks() -> Iterator[bytes]:
        with (directory / meta["file"]).open("rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    try:
        yield from decrypt_stream(data_key, meta["context"], chunks())
    except IntegrityError:
        raise BackupError("the database dump failed authentication") from None


def restore(directory: Path, *, progress: Progress | None = None) -> dict[str, Any]:
    """Restore a verified backup into this (empty) instance: database and blobs."""
    from app import state
    from app.db import db

    say = progress or (lambda _msg: None)
    checked = verify(directory)
    manifest = checked.manifest
    engine = db.get_bind()
    db.close()
    if manifest["engine"] != engine.dialect.name:
        raise BackupError(f"this backup is of {manifest['engine']}; the instance runs "
                          f"{engine.dialect.name}")
    tables = set(inspect(engine).get_table_names())
    if tables:
        raise BackupError("the instance's database is not empty; restore into an empty one")
    store = state.blobs()
    if next(iter(store.iter_blob_ids()), None) is not None:
        raise BackupError("the instance's blob store is not empty")
    say("restoring the database")
    if engine.dialect.name == "postgresql":
        env, url = _pg_env_and_url(engine)
        proc = subprocess.Popen(  # noqa: S603 - PostgreSQL's own client, found on PATH
            [_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
             "--dbname", url], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, env=env)
        assert proc.stdin is not None
        try:
            for piece in _decrypted_dump(Path(directory), manifest):
                proc.stdin.write(piece)
        finally:
            proc.stdin.close()
            err = proc.stderr.read() if proc.stderr else b""
            proc.wait()
        if proc.returncode != 0:
            raise BackupError(f"pg_restore failed: {err.decode(errors='replace')[:300]}")
    else:
        image = b"".join(_decrypted_dump(Path(directory), manifest))
        engine.dispose()
        memory = sqlite3.connect(":memory:")
        target = sqlite3.connect(_sqlite_path(engine))
        try:
            memory.deserialize(image)
            memory.backup(target)
        finally:
            memory.close()
            target.close()
        engine.dispose()
    say("restoring the blobs")
    for blob in manifest["blobs"]:
        source = Path(directory) / "blobs" / blob["id"][:2] / blob["id"][2:4] / blob["id"]
        with source.open("rb") as src, store.open_writer(blob["id"]) as writer:
            while chunk := src.read(CHUNK):
                writer.write(chunk)
            writer.commit()
    if manifest["shredded_meanwhile"]:
        from sqlalchemy import update

        from app.attachments.models import Attachment

        db.execute(update(Attachment)
                   .where(Attachment.id.in_(manifest["shredded_meanwhile"]))
                   .values(wrapped_key=None))
        db.commit()
    say("restored")
    return manifest
