"""Encrypted attachments: upload, download, delete, key rewrapping, rotation, gc.

Every file gets a random 256-bit data key and is encrypted with Cobblestone-256
(``app.crypto.stream``) under the context ``attachment:<id>``, so a blob only decrypts
as the attachment it was written for. The data key is wrapped under the KEK of the
finding's level (``app.crypto.wrap``, AAD = attachment id, level, KEK version).

* Upload streams the request body through the encryptor into a blob writer: no
  plaintext on disk, bounded memory, limits enforced before the first byte and while
  streaming. The row (and its audit entry) is written only after the blob is committed,
  so an interrupted upload leaves no row, only a temp file or an unreferenced blob that
  ``enclave storage gc`` sweeps.
* Download checks the access rule, the wrapped key, the blob size and the first MiB
  before answering, so most faults give a clean error; a fault found later raises
  ``IntegrityError`` out of the response iterator, which makes the server drop the
  connection (the client sees a truncated transfer, never a clean end).
* Delete crypto-shreds: the wrapped key is set to NULL and committed, then the blob is
  removed.

See docs/attachments.md for the decisions behind this.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from flask import current_app
from sqlalchemy import Engine, and_, bindparam, case, func, inspect, or_, select, update
from sqlalchemy.exc import DBAPIError

from app import access, audit, state, visibility
from app.attachments.models import Attachment
from app.attachments.pipeline import (
    BodyReadError,
    DecryptAhead,
    SealPipeline,
    UploadTooLarge,
    Writeback,
    body_reader,
)
from app.attachments.slots import upload_slot
from app.auth.models import User
from app.context import client_ip
from app.crypto.keyring import Keyring, KeyringError, keyring_lock
from app.crypto.stream import (
    PREAMBLE_SIZE,
    IntegrityError,
    StreamDecryptor,
    StreamEncryptor,
    WrongKeyError,
    blob_format_version,
    ciphertext_size,
    new_data_key,
)
from app.crypto.wrap import DEK_LEGACY, seal, unseal, unwrap_data_key, wrap_data_key, wraps_finding
from app.db import db, utcnow
from app.errors import Conflict, Forbidden, NotFound, ServiceError
from app.findings.models import Finding
from app.storage import BlobNotFoundError, BlobStore, GcReport

log = logging.getLogger("enclave.attachments")

MiB = 1024 * 1024
#: How much of the request body is read (then hashed, encrypted, written) per step;
#: the upload pipeline holds four such buffers.
UPLOAD_READ_SIZE = 1 * MiB
#: How much ciphertext is read per step when downloading.
DOWNLOAD_READ_SIZE = 1 * MiB
#: Ciphertext checked before the response starts: faults in it give a clean error,
#: and files up to this size are verified completely before the first byte is sent.
PREFETCH_BYTES = 1 * MiB
FILENAME_MAX = 200
ROTATE_BATCH = 1000

_ID_RE = re.compile(r"[0-9a-f]{32}")
_MIME_RE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")
_DROP_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_REPLACE_CHARS = str.maketrans({c: "_" for c in '"<>:*?|'})
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                     *(f"lpt{i}" for i in range(1, 10))}


class TooLarge(ServiceError):
    status = 413
    code = "too_large"


class IntegrityFailure(ServiceError):
    """The stored file or its key failed authentication; nothing was sent."""

    status = 500
    code = "integrity_error"


# ------------------------------------------------------------------ small helpers


def human_size(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}".replace(
                ".0 ", " ")
        size /= 1024
    return f"{n} B"  # pragma: no cover


def blob_context(attachment_id: str) -> str:
    """The Cobblestone context of an attachment's blob (binds the blob to this id)."""
    return f"attachment:{attachment_id}"


def _sha_aad(attachment_id: str) -> bytes:
    return f"attachment-sha256:{attachment_id}".encode()


def new_attachment_id() -> str:
    """Random 128-bit public id, chosen before encryption (it is in the context)."""
    return secrets.token_hex(16)


def clean_filename(raw: str | None) -> str:
    """A safe display/download name: last path component, no control or format
    characters (e.g. right-to-left overrides), no characters Windows forbids, at most
    ``FILENAME_MAX`` characters keeping the extension. Empty results are refused."""
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _DROP_CATEGORIES)
    name = re.sub(r"\s+", " ", name.translate(_REPLACE_CHARS)).strip(" .")
    if not name:
        raise ServiceError("Give the file a name (letters or digits, not only dots or "
                           "separators).", code="bad_filename", field="filename")
    if name.split(".")[0].lower() in _WINDOWS_RESERVED:
        name = "_" + name
    if len(name) > FILENAME_MAX:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and len(ext) <= 16:
            name = stem[: FILENAME_MAX - len(ext) - 1].rstrip(" .") + "." + ext
        else:
            name = name[:FILENAME_MAX].rstrip(" .")
    return name


def clean_content_type(raw: str | None) -> str:
    """The declared type if it looks like ``type/subtype``, else octet-stream. It is only
    recorded and shown: downloads are always served as application/octet-stream."""
    value = (raw or "").split(";")[0].strip().lower()
    return value if _MIME_RE.fullmatch(value) else "application/octet-stream"


def current_keyring() -> Keyring:
    """The app's keyring, reloaded when the keyring file changed since it was read
    (``enclave keys rotate`` in another process adds versions that running workers
    must use and be able to unwrap)."""
    ext = current_app.extensions
    path = state.settings().keyring_path
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return ext["enclave.keyring"]
    if ext.get("enclave.keyring_mtime") != mtime:
        try:
            ext["enclave.keyring"] = Keyring.load(path)
        except KeyringError as exc:  # keep serving with the keys we have
            log.error("keyring changed but cannot be reloaded: %s", exc)
        ext["enclave.keyring_mtime"] = mtime
    return ext["enclave.keyring"]


def _install_keyring(ring: Keyring) -> None:
    current_app.extensions["enclave.keyring"] = ring
    with contextlib.suppress(OSError):
        current_app.extensions["enclave.keyring_mtime"] = (
            state.settings().keyring_path.stat().st_mtime_ns)


# ------------------------------------------------------------------ access


def _check_read(user: Any, finding: Finding) -> None:
    """The access rule for a finding; unreadable is 404, never 403."""
    access.require_readable(user, finding, what="open its files")


def readable_finding(user: Any, finding_id: int) -> Finding:
    return visibility.finding_or_404(user, finding_id, what="open its files")


def get_attachment(user: Any, attachment_id: str) -> Attachment:
    """A live attachment of a finding ``user`` may read; otherwise NotFound/NDA/MFA."""
    return visibility.attachment_or_404(user, attachment_id)


def list_for_finding(user: Any, finding: Finding) -> list[Attachment]:
    """Live attachments of ``finding``, oldest first (access checked)."""
    _check_read(user, finding)
    return list(db.scalars(
        select(Attachment)
        .where(Attachment.finding_id == finding.id, Attachment.wrapped_key.is_not(None))
        .order_by(Attachment.created_at, Attachment.id)
    ))


def can_delete(user: Any, att: Attachment) -> bool:
    """Uploader, the finding's author, or an admin (locked findings: admins only)."""
    if not access.in_good_standing(user):
        return False
    if user.is_admin:
        return True
    if att.finding.locked:
        return False
    return user.id in (att.uploader_id, att.finding.author_id)


def sha256_of(att: Attachment) -> str:
    """The plaintext SHA-256 (hex), unsealed; '' if the app key cannot open it."""
    try:
        return unseal(current_keyring().app_key(), att.sha256_sealed, _sha_aad(att.id)).hex()
    except IntegrityError:
        log.error("attachment %s: sealed SHA-256 does not open", att.id)
        return ""


# ------------------------------------------------------------------ limits


@dataclass(frozen=True)
class UploadLimit:
    """The largest file ``user`` may attach to a finding now, and what sets it."""

    max_bytes: int
    reason: str
    code: str

    def refusal(self) -> TooLarge:
        return TooLarge(f"The file is larger than {self.reason}.", code=self.code)


def quota_used(user_id: int) -> int:
    """Bytes of live attachments uploaded by the user."""
    return int(db.scalar(
        select(func.coalesce(func.sum(Attachment.size), 0))
        .where(Attachment.uploader_id == user_id, Attachment.wrapped_key.is_not(None))
    ) or 0)


def upload_limit(user: User, finding: Finding) -> UploadLimit:
    """Policy limits: the level may forbid files (Forbidden) or cap them; a global cap;
    the user's remaining quota. The smallest wins."""
    policy = state.policy()
    level = policy.level(finding.level)
    if not level.attachments:
        raise Forbidden(f"Files cannot be attached to {level.label} findings.",
                        code="attachments_disabled")
    quota = policy.user_quota_mb * MiB
    left = max(0, quota - quota_used(user.id))
    limits = [
        UploadLimit(level.max_attachment_mb * MiB,
                    f"the {human_size(level.max_attachment_mb * MiB)} limit for "
                    f"{level.label} files", "too_large"),
        UploadLimit(policy.max_attachment_mb * MiB,
                    f"the {human_size(policy.max_attachment_mb * MiB)} limit for any file",
                    "too_large"),
        UploadLimit(left, f"your storage quota ({human_size(left)} left of "
                          f"{human_size(quota)})", "quota_exceeded"),
    ]
    return min(limits, key=lambda lim: lim.max_bytes)


def upload_refusal(user: User, finding: Finding) -> str | None:
    """Why ``user`` cannot attach files to ``finding`` at all (for the page), or None."""
    if getattr(finding, "locked", False):
        return "This finding is locked; files cannot be added."
    try:
        limit = upload_limit(user, finding)
    except ServiceError as exc:
        return exc.message
    if limit.max_bytes <= 0:
        quota = human_size(state.policy().user_quota_mb * MiB)
        return f"Your storage quota ({quota}) is used up; delete files to add more."
    return None


# ------------------------------------------------------------------ upload


def upload(user: User, finding_id: int, *, filename: str | None, stream: BinaryIO,
           content_length: int | None, content_type: str | None = None) -> Attachment:
    """Encrypt ``stream`` into a new attachment of the finding.

    Every check that can be made before reading is made first (access, lock, name,
    policy limits against ``content_length``); the size limit is enforced again while
    streaming, so a body without Content-Length (chunked) stops at the limit too.
    """
    finding = readable_finding(user, finding_id)
    if finding.locked:
        raise Conflict("This finding is locked; files cannot be added.", code="locked")
    name = clean_filename(filename)
    limit = upload_limit(user, finding)
    if content_length is not None:
        if content_length <= 0:
            raise ServiceError("The file is empty.", code="empty_file")
        if content_length > limit.max_bytes:
            raise limit.refusal()

    # One of the uploader's slots (ENCLAVE_UPLOADS_PER_USER) is held while the body
    # streams: the nginx front passes upload bodies through unbuffered.
    with upload_slot(user.id):
        # End the read transaction: an upload can stream for minutes and must not hold a
        # database connection (or, on SQLite, a WAL snapshot) meanwhile.
        db.commit()
        ring = current_keyring()
        att_id = new_attachment_id()
        blob_id = secrets.token_hex(16)
        level = finding.level
        version, kek = ring.kek(level)
        data_key = new_data_key()
        wrapped = wrap_data_key(kek, data_key, attachment_id=att_id, finding_id=finding.id,
                                level=level, kek_version=version)
        enc = StreamEncryptor(data_key, blob_context(att_id), hashing=False)
        del data_key
        store = state.blobs()
        interrupted = ServiceError("The upload was interrupted before the file was complete; "
                                   "nothing was stored.", code="upload_interrupted")

        # This thread reads the body into reusable buffers; one helper hashes, another
        # encrypts and writes, starting writeback as it goes (see pipeline.py). Leaving the
        # block early stops the helpers and discards the upload (the temp file is removed).
        with (store.open_writer(blob_id) as writer,
              Writeback(getattr(writer, "temp_path", None)) as writeback):
            writeback.written(writer.write(enc.header()))
            with SealPipeline(enc, lambda view: writeback.written(writer.write(view)),
                              buffer_size=UPLOAD_READ_SIZE) as pipe:
                try:
                    size = pipe.run(body_reader(stream), limit.max_bytes)
                except UploadTooLarge:
                    raise limit.refusal() from None
                except BodyReadError as exc:
                    raise interrupted from exc
                if size == 0:
                    raise ServiceError("The file is empty.", code="empty_file")
                if content_length is not None and size != content_length:
                    # Some servers end the body early, without an error, when the client
                    # leaves.
                    raise interrupted
                tail = pipe.finish()
            writeback.written(writer.write(tail))
            writer.commit()
        sha256_hex = pipe.sha256_hex
        try:
            # The finding may have changed while the file streamed in: the uploader must
            # still be able to read it, and a raised level gets the key under its KEK.
            finding = db.get(Finding, finding.id, populate_existing=True)  # type: ignore[assignment]
            if finding is None:
                raise NotFound()
            _check_read(user, finding)
            if finding.level != level:
                moved = _rewrapped(ring, att_id, finding.id, wrapped, level, version,
                                   finding.level)
                wrapped, level, version = moved["n_key"], moved["n_level"], moved["n_version"]
            # A concurrent upload by the same user may have used the quota meanwhile.
            quota = state.policy().user_quota_mb * MiB
            if quota_used(user.id) + size > quota:
                raise TooLarge(f"The file is larger than your storage quota "
                               f"({human_size(max(0, quota - quota_used(user.id)))} left).",
                               code="quota_exceeded")
            att = Attachment(
                id=att_id, finding_id=finding.id, uploader_id=user.id, filename=name,
                content_type=clean_content_type(content_type), size=size,
                sha256_sealed=seal(ring.app_key(), bytes.fromhex(sha256_hex),
                                   _sha_aad(att_id)),
                blob_id=blob_id, wrapped_key=wrapped, kek_level=level, kek_version=version,
                created_at=utcnow(),
            )
            db.add(att)
            audit.record("attachment_uploaded", actor=user, target_type="attachment",
                         target_id=att_id, finding_id=finding.id, filename=name, size=size,
                         level=level)
            db.commit()
        except BaseException:
            db.rollback()
            with contextlib.suppress(OSError):
                store.delete(blob_id)
            raise
        return att


# ------------------------------------------------------------------ download


@dataclass
class Download:
    """An opened, access-checked attachment: ``chunks`` yields bytes ``start``..``stop``
    (exclusive) of the plaintext and raises ``IntegrityError`` if the blob turns out to
    be corrupt after the response started."""

    attachment: Attachment
    sha256: str
    start: int
    stop: int
    chunks: Iterator[bytes]

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def partial(self) -> bool:
        return (self.start, self.stop) != (0, self.attachment.size)

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()


def _integrity_failure(att: Attachment, actor: Any, reason: str, ip: str) -> None:
    """Audit an integrity failure in its own transaction (the download has nothing to
    roll back); safe to call from a response iterator after the request ended."""
    try:
        db.rollback()
        audit.record("attachment_integrity_failure", actor=actor, target_type="attachment",
                     target_id=att.id, ip=ip, finding_id=att.finding_id, reason=reason,
                     blob_id=att.blob_id, kek=f"{att.kek_level} v{att.kek_version}")
        db.commit()
    except Exception:  # the failure itself must still reach the client
        log.exception("could not audit the integrity failure of attachment %s", att.id)
        db.rollback()
    log.error("attachment %s failed integrity checks: %s", att.id, reason)


def open_plaintext(att: Attachment, *, actor: Any = None) -> Iterator[bytes]:
    """Authenticated plaintext of a live attachment, as an iterator.

    Checks before returning (each failure is audited and raised as IntegrityFailure):
    the KEK exists and opens the wrapped key, the blob exists and has exactly the size
    the format implies for ``att.size``, and the first ``PREFETCH_BYTES`` of ciphertext
    authenticate (the whole file when it is that small). Later failures are audited and
    raise ``IntegrityError`` from the iterator.
    """
    ip = client_ip.get()

    def fail(reason: str) -> IntegrityFailure:
        _integrity_failure(att, actor, reason, ip)
        return IntegrityFailure("This file failed its integrity check and cannot be "
                                "downloaded. The incident was logged.")

    if att.wrapped_key is None:
        raise NotFound()
    ring = current_keyring()
    try:
        _, kek = ring.kek(att.kek_level, att.kek_version)
    except KeyringError as exc:
        raise fail(str(exc)) from None
    try:
        data_key = unwrap_data_key(kek, att.wrapped_key, attachment_id=att.id,
                                   finding_id=att.finding_id, level=att.kek_level,
                                   kek_version=att.kek_version)
    except IntegrityError:
        raise fail("the wrapped data key does not open with its KEK") from None

    store: BlobStore = state.blobs()
    try:
        actual = store.size(att.blob_id)
        reader = store.open_reader(att.blob_id)
    except BlobNotFoundError:
        raise fail("the blob is missing") from None
    try:
        # The header names the format version, which fixes the exact size (v1 blobs,
        # written before key ids, are 16 bytes shorter than v2 ones).
        preamble = reader.read(PREAMBLE_SIZE)
        try:
            expected = ciphertext_size(att.size, blob_format_version(preamble))
        except IntegrityError:
            raise fail("the blob does not start with a known format header") from None
        if actual != expected:
            raise fail(f"the blob is {actual} bytes, the format implies {expected}")
    except BaseException:
        reader.close()
        raise

    dec = StreamDecryptor(data_key, blob_context(att.id))
    del data_key
    first: list[bytes] = []
    consumed = len(preamble)
    try:
        dec.update(preamble)
        while consumed < min(expected, PREFETCH_BYTES):
            piece = reader.read(DOWNLOAD_READ_SIZE)
            if not piece:
                break
            consumed += len(piece)
            if out := dec.update(piece):
                first.append(out)
        # The size was checked above, so having read ``expected`` bytes means the end.
        finished = consumed >= expected
        if finished:
            first.append(dec.finalize())
    except WrongKeyError as exc:
        reader.close()
        raise fail(f"{exc} (a blob swapped in from another attachment, or the wrong "
                   f"data key)") from None
    except IntegrityError:
        reader.close()
        raise fail("authentication failed in the first MiB") from None
    except BaseException:
        reader.close()
        raise

    def stream() -> Iterator[bytes]:
        ahead: DecryptAhead | None = None
        try:
            if not finished:
                # A helper reads and decrypts the rest (one reused read buffer) while
                # this thread sends what is ready (see pipeline.py).
                ahead = DecryptAhead(reader, dec.update, dec.finalize,
                                     read_size=DOWNLOAD_READ_SIZE)
            while first:  # drop each prefetched piece once it is sent
                if part := first.pop(0):
                    yield part
            if ahead is not None:
                yield from ahead
        except IntegrityError:
            _integrity_failure(att, actor, "authentication failed while streaming", ip)
            raise
        finally:
            if ahead is not None:
                ahead.close()
            reader.close()

    return stream()


def _slice(chunks: Iterator[bytes], start: int, stop: int) -> Iterator[bytes]:
    """Bytes ``start``..``stop`` of ``chunks`` (everything before is still decrypted and
    authenticated, then dropped: Cobblestone cannot seek)."""
    pos = 0
    try:
        for chunk in chunks:
            end = pos + len(chunk)
            if end > start and pos < stop:
                yield chunk[max(0, start - pos): min(len(chunk), stop - pos)]
            pos = end
            if pos >= stop:
                return
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def open_download(user: Any, attachment_id: str, *,
                  byte_range: tuple[int, int] | None = None) -> Download:
    """Access-checked, integrity-checked, audited download (``byte_range`` = start, stop
    exclusive, already validated against the size)."""
    att = get_attachment(user, attachment_id)
    start, stop = byte_range or (0, att.size)
    chunks = open_plaintext(att, actor=user)
    details: dict[str, Any] = {"finding_id": att.finding_id, "filename": att.filename,
                               "size": att.size}
    if (start, stop) != (0, att.size):
        details["range"] = f"{start}-{stop - 1}"
    try:
        audit.record("attachment_downloaded", actor=user, target_type="attachment",
                     target_id=att.id, **details)
        db.commit()
    except BaseException:
        chunks.close()  # type: ignore[attr-defined]
        db.rollback()
        raise
    if (start, stop) != (0, att.size):
        chunks = _slice(chunks, start, stop)
    return Download(attachment=att, sha256=sha256_of(att), start=start, stop=stop,
                    chunks=chunks)


# ------------------------------------------------------------------ delete


def delete(user: Any, attachment_id: str) -> Attachment:
    """Crypto-shred: destroy the wrapped key (committed first), then the blob."""
    att = get_attachment(user, attachment_id)
    if not can_delete(user, att):
        if att.finding.locked:
            raise Conflict("This finding is locked; only an admin can delete its files.",
                           code="locked")
        raise Forbidden("Only the uploader, the finding's author or an admin can delete "
                        "this file.")
    result = db.execute(
        update(Attachment)
        .where(Attachment.id == att.id, Attachment.wrapped_key.is_not(None))
        .values(wrapped_key=None, deleted_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        db.rollback()
        raise NotFound()
    audit.record("attachment_deleted", actor=user, target_type="attachment",
                 target_id=att.id, finding_id=att.finding_id, filename=att.filename,
                 size=att.size)
    db.commit()
    try:
        state.blobs().delete(att.blob_id)
    except OSError as exc:  # the key is gone already; gc removes the blob later
        log.warning("attachment %s shredded but blob %s not removed: %s",
                    att.id, att.blob_id, exc)
    return att


# ------------------------------------------------------------------ key management


def _conditional_rewrap() -> Any:
    """UPDATE that only applies if the row still has the key we unwrapped: it never
    resurrects a key shredded meanwhile, nor undoes a concurrent rewrap."""
    t = Attachment.__table__
    return (
        update(t)
        .where(t.c.id == bindparam("b_id"), t.c.kek_level == bindparam("b_level"),
               t.c.kek_version == bindparam("b_version"), t.c.wrapped_key.is_not(None))
        .values(wrapped_key=bindparam("n_key"), kek_level=bindparam("n_level"),
                kek_version=bindparam("n_version"))
    )


def _apply(params: list[dict[str, Any]]) -> int:
    if not params:
        return 0
    result = db.execute(_conditional_rewrap(), params)
    if db.get_bind().dialect.supports_sane_multi_rowcount:
        return int(result.rowcount)  # type: ignore[attr-defined]
    return len(params)


def _rewrapped(ring: Keyring, att_id: str, finding_id: int, wrapped: bytes, old_level: str,
               old_version: int, new_level: str) -> dict[str, Any]:
    """The row's data key rewrapped under ``new_level``'s active KEK, always in the
    format that binds the finding (a legacy key is upgraded on the way)."""
    _, old_kek = ring.kek(old_level, old_version)
    data_key = unwrap_data_key(old_kek, wrapped, attachment_id=att_id, finding_id=finding_id,
                               level=old_level, kek_version=old_version)
    new_version, new_kek = ring.kek(new_level)
    return {"b_id": att_id, "b_level": old_level, "b_version": old_version,
            "n_key": wrap_data_key(new_kek, data_key, attachment_id=att_id,
                                   finding_id=finding_id, level=new_level,
                                   kek_version=new_version),
            "n_level": new_level, "n_version": new_version}


def rewrap_for_level(finding: Finding, new_level: str, *, actor: Any = None) -> int:
    """Rewrap the data keys of the finding's live attachments under ``new_level``'s
    active KEK. Call it in the transaction that changes the level (it does not commit).
    A key that does not open is audited and left alone (that file is unreadable
    anyway); returns the number rewrapped."""
    ring = current_keyring()
    active = ring.active_version(new_level)
    rows = db.execute(
        select(Attachment.id, Attachment.wrapped_key, Attachment.kek_level,
               Attachment.kek_version)
        .where(Attachment.finding_id == finding.id, Attachment.wrapped_key.is_not(None))
    ).all()
    params = []
    for row in rows:
        if (row.kek_level, row.kek_version) == (new_level, active) and wraps_finding(
                row.wrapped_key):
            continue
        try:
            params.append(_rewrapped(ring, row.id, finding.id, row.wrapped_key,
                                     row.kek_level, row.kek_version, new_level))
        except (IntegrityError, KeyringError) as exc:
            audit.record("attachment_integrity_failure", actor=actor,
                         target_type="attachment", target_id=row.id, finding_id=finding.id,
                         reason=f"rewrap to {new_level}: {exc}")
    count = _apply(params)
    if count:
        audit.record("attachment_keys_rewrapped", actor=actor, target_type="finding",
                     target_id=finding.id, level=new_level, kek_version=active, count=count)
    return count


@dataclass
class RotationReport:
    new_versions: dict[str, int] = field(default_factory=dict)
    live: int = 0
    already_current: int = 0
    rewrapped: int = 0
    changed_meanwhile: int = 0
    failed: list[str] = field(default_factory=list)
    batches: int = 0
    remaining: int = 0


def _pending_filter(ring: Keyring) -> Any:
    """Live rows not wrapped under the active KEK of their finding's current level, or
    wrapped in the legacy format that does not bind the finding."""
    active = {level: ring.active_version(level) for level in ring.levels}
    target = case(active, value=Finding.level, else_=-1)
    legacy = func.substr(Attachment.wrapped_key, 1, 1) == bytes([DEK_LEGACY])
    return (Attachment.wrapped_key.is_not(None)) & or_(
        Attachment.kek_level != Finding.level, Attachment.kek_version != target, legacy)


def _count_pending(ring: Keyring) -> int:
    return int(db.scalar(
        select(func.count()).select_from(Attachment)
        .join(Finding, Finding.id == Attachment.finding_id).where(_pending_filter(ring))
    ) or 0)


def rotate_keys(*, add_versions: bool = True, batch_size: int = ROTATE_BATCH,
                max_batches: int | None = None,
                progress: Callable[[RotationReport], None] | None = None) -> RotationReport:
    """``enclave keys rotate``: add a KEK version per level (under the keyring file lock)
    and rewrap every live data key to the active KEK of its finding's level, committing
    per batch. Resumable: rows already at their target are skipped, so running it again
    (``add_versions=False`` to add no further versions) finishes an interrupted run.
    Blobs are never touched."""
    report = RotationReport()
    path = state.settings().keyring_path
    if add_versions:
        with keyring_lock(path):
            ring = Keyring.load(path)
            report.new_versions = ring.rotate(ring.levels)
            ring.save(path)
        _install_keyring(ring)
        audit.record("keys_rotated", actor="cli", target_type="keyring",
                     versions=report.new_versions)
        db.commit()
    ring = current_keyring()
    report.live = int(db.scalar(select(func.count()).select_from(Attachment)
                                .where(Attachment.wrapped_key.is_not(None))) or 0)
    report.already_current = report.live - _count_pending(ring)

    query = (
        select(Attachment.id, Attachment.finding_id, Attachment.wrapped_key,
               Attachment.kek_level, Attachment.kek_version, Finding.level)
        .join(Finding, Finding.id == Attachment.finding_id)
        .where(_pending_filter(ring))
        .order_by(Attachment.id).limit(batch_size)
    )
    last = ""
    while max_batches is None or report.batches < max_batches:
        rows = db.execute(query.where(Attachment.id > last)).all()
        if not rows:
            break
        params = []
        for row in rows:
            try:
                params.append(_rewrapped(ring, row.id, row.finding_id, row.wrapped_key,
                                         row.kek_level, row.kek_version, row.level))
            except IntegrityError:
                report.failed.append(row.id)
        done = _apply(params)
        report.rewrapped += done
        report.changed_meanwhile += len(params) - done
        db.commit()
        report.batches += 1
        last = rows[-1].id
        if progress is not None:
            progress(report)
    if report.failed:
        audit.record("attachment_integrity_failure", actor="cli", target_type="keyring",
                     reason="wrapped keys that do not open during rotation",
                     attachments=report.failed[:100], count=len(report.failed))
    if report.new_versions or report.rewrapped or report.failed:
        audit.record("attachment_keys_rewrapped", actor="cli", target_type="keyring",
                     rewrapped=report.rewrapped, already_current=report.already_current,
                     failed=len(report.failed))
    db.commit()
    report.remaining = _count_pending(ring) - len(report.failed)
    return report


def check_keys(engine: Engine, ring: Keyring) -> None:
    """Start-up check: every KEK version live attachments use is in the keyring and
    opens a data key wrapped under it. Raises KeyringError naming the key, e.g.
    ``missing key: kek restricted v2``. Skipped before the table exists (fresh install)
    or when the database is not reachable yet."""
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(Attachment.__tablename__):
                return
            t = Attachment.__table__
            used = conn.execute(
                select(t.c.kek_level, t.c.kek_version, func.count(), func.max(t.c.id))
                .where(t.c.wrapped_key.is_not(None))
                .group_by(t.c.kek_level, t.c.kek_version)
            ).all()
            for level, version, count, sample_id in used:
                try:
                    _, kek = ring.kek(level, version)
                except KeyringError:
                    raise KeyringError(
                        f"missing key: kek {level} v{version} (it wraps the data keys of "
                        f"{count} attachment(s)); restore it in the keyring") from None
                sample = conn.execute(select(t.c.wrapped_key, t.c.finding_id).where(
                    and_(t.c.id == sample_id, t.c.wrapped_key.is_not(None)))).first()
                if sample is None:
                    continue
                try:
                    unwrap_data_key(kek, sample.wrapped_key, attachment_id=sample_id,
                                    finding_id=sample.finding_id, level=level,
                                    kek_version=version)
                except IntegrityError:
                    raise KeyringError(
                        f"wrong key: kek {level} v{version} does not open the data key of "
                        f"attachment {sample_id}; the keyring does not match this "
                        f"database") from None
    except DBAPIError as exc:
        log.warning("attachment key check skipped: database not reachable (%s)",
                    exc.__class__.__name__)


def gc_blobs(*, min_age_seconds: float, dry_run: bool = False) -> GcReport:
    """Remove blobs no live attachment references (interrupted uploads, shredded
    attachments whose blob removal failed) and stale temp files."""
    referenced = set(db.scalars(select(Attachment.blob_id)
                                .where(Attachment.wrapped_key.is_not(None))))
    db.rollback()
    return state.blobs().gc(referenced, min_age_seconds=min_age_seconds, dry_run=dry_run)


def summary(att: Attachment, download_url: str) -> dict[str, Any]:
    """The attachment as plain data (API and upload answers)."""
    return {
        "id": att.id, "finding_id": att.finding_id, "filename": att.filename,
        "content_type": att.content_type, "size": att.size, "sha256": sha256_of(att),
        "uploader": {"id": att.uploader_id, "username": att.uploader.username,
                     "display_name": att.uploader.display_name},
        "created_at": att.created_at.isoformat(), "download_url": download_url,
    }
