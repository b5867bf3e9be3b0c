"""Per-reader copies of attachments and tracing a leaked file back to its copy.

A level's ``downloads`` (policies/levels.toml) decides what a reader takes away:
``original`` (the file as uploaded), ``stamped`` (a per-reader copy made here, recorded
in ``attachment_copies`` and the audit log before its first byte is sent) or
``view-only`` (nothing: see ``viewing.py``). The stored blob is never changed: every copy
is made from the decrypted stream as it is sent.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app import audit, clock, state
from app.attachments import service as attachments
from app.attachments.models import Attachment
from app.auth.models import User
from app.context import client_ip
from app.db import db
from app.errors import Forbidden
from app.policy import Level
from app.traceability import image as images
from app.traceability import pdf as pdfs
from app.traceability import text as texts
from app.traceability.marks import COPY_ID_RE, Mark, codes_in, new_code, new_copy_id
from app.traceability.models import AttachmentCopy

log = logging.getLogger("enclave.traceability")
MiB = 1024 * 1024
SNIFF_BYTES = 1024


class NotServed(Forbidden):
    """The level's policy does not hand this file out (view-only, or a stamped level
    and a file that cannot carry a mark)."""

    code = "not_served"


def level_of(att: Attachment) -> Level:
    return state.policy().level(att.finding.level)


def _head(att: Attachment, user: Any) -> bytes:
    chunks = attachments.open_plaintext(att, actor=user)
    try:
        return next(chunks, b"")[:SNIFF_BYTES]
    finally:
        chunks.close()  # type: ignore[attr-defined]


def sniff_kind(filename: str, head: bytes) -> str | None:
    """pdf | image | notebook | text, or None when the file cannot carry a mark."""
    if head.lstrip()[:5] == b"%PDF-" or b"%PDF-" in head[:1024]:
        return "pdf"
    if images.sniff(head[:16]) is not None:
        return "image"
    return texts.text_kind(filename)


def stamp_kind(att: Attachment, user: Any = None) -> str | None:
    """What kind of stamped copy ``att`` gets (reads its first bytes)."""
    return sniff_kind(att.filename, _head(att, user))


def _refuse(att: Attachment, why: str) -> NotServed:
    label = level_of(att).label
    return NotServed(f"{label} files are handed out only as copies stamped for their "
                     f"reader, and this one cannot be stamped: {why}. Ask the author for a "
                     f"PDF, an image or a text version.")


@dataclass
class Copy:
    """A stamped copy ready to stream: ``chunks`` yields exactly ``length`` bytes."""

    attachment: Attachment
    record: AttachmentCopy
    kind: str
    length: int
    chunks: Iterator[bytes]
    passes: int = 1
    notes: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()


def _mark(user: User, att: Attachment) -> Mark:
    return Mark(copy_id=new_copy_id(), code=new_code(), reader=user.display_name,
                org=user.org.name, at=clock.now(), level_label=level_of(att).label)


def _record(user: User, att: Attachment, mark: Mark, kind: str, **details: Any
            ) -> AttachmentCopy:
    """The copy's row and audit entry, committed before its first byte goes out."""
    row = AttachmentCopy(id=mark.copy_id, code=mark.code, attachment_id=att.id,
                         finding_id=att.finding_id, user_id=user.id, kind=kind,
                         level=att.finding.level, ip=client_ip.get() or None,
                         created_at=mark.at)
    db.add(row)
    audit.record("attachment_copy_made", actor=user, target_type="attachment",
                 target_id=att.id, copy_id=mark.copy_id, code=mark.code, kind=kind,
                 finding_id=att.finding_id, filename=att.filename, level=att.finding.level,
                 **details)
    db.commit()
    return row


def _whole(att: Attachment, user: Any, limit: int, what: str) -> bytes:
    if att.size > limit:
        raise _refuse(att, f"{what} are stamped up to {limit // MiB} MiB and this one is "
                           f"{attachments.human_size(att.size)}")
    out = bytearray()
    chunks = attachments.open_plaintext(att, actor=user)
    try:
        for chunk in chunks:
            out += chunk
    finally:
        chunks.close()  # type: ignore[attr-defined]
    return bytes(out)


def make_copy(user: User, att: Attachment) -> Copy:
    """A stamped copy of ``att`` for ``user`` (access already checked), recorded."""
    kind = stamp_kind(att, user)
    if kind is None:
        raise _refuse(att, "its type carries no mark (only PDFs, PNG/JPEG/WebP/GIF "
                           "images, notebooks, Markdown, code, CSV and text files do)")
    mark = _mark(user, att)
    try:
        if kind == "pdf":
            source = pdfs.ReplayReader(lambda: attachments.open_plaintext(att, actor=user),
                                       att.size)
            try:
                update = pdfs.build_update(source, mark)
            except BaseException:
                source.close()
                raise
            if source.whole_file_cached:
                body: Iterator[bytes] = source.cached_bytes()
                passes = source.passes
            else:
                source.close()
                body = attachments.open_plaintext(att, actor=user)
                passes = source.passes + 1
            record = _record(user, att, mark, kind, passes=passes)
            return Copy(att, record, kind, att.size + len(update), _then(body, update),
                        passes=passes)
        if kind == "image":
            data, fmt = images.stamp_image(_whole(att, user, images.MAX_IMAGE_BYTES,
                                                  "images"), mark)
            record = _record(user, att, mark, kind, format=fmt)
            return Copy(att, record, kind, len(data), iter([data]))
        if kind == "notebook":
            data = texts.stamp_notebook(_whole(att, user, texts.MAX_NOTEBOOK_BYTES,
                                               "notebooks"), mark)
            record = _record(user, att, mark, kind)
            return Copy(att, record, kind, len(data), iter([data]))
        chunks = attachments.open_plaintext(att, actor=user)
        try:
            first, rest, added = texts.stamp_text(chunks, att.filename, mark)
        except BaseException:
            chunks.close()  # type: ignore[attr-defined]
            raise
        record = _record(user, att, mark, kind)
        return Copy(att, record, kind, att.size + added, _then(iter([first]), b"", rest))
    except pdfs.NotStampable as exc:
        db.rollback()
        raise _refuse(att, str(exc)) from None


def _then(body: Iterator[bytes], tail: bytes, more: Iterator[bytes] | None = None
          ) -> Iterator[bytes]:
    try:
        yield from body
        if more is not None:
            yield from more
        if tail:
            yield tail
    finally:
        for it in (body, more):
            close = getattr(it, "close", None)
            if close is not None:
                close()


def copies_of(attachment_id: str, limit: int = 200) -> list[AttachmentCopy]:
    return list(db.scalars(select(AttachmentCopy)
                           .where(AttachmentCopy.attachment_id == attachment_id)
                           .order_by(AttachmentCopy.created_at.desc()).limit(limit)))


# --------------------------------------------------------------------------- tracing


@dataclass
class Found:
    """One mark read from a file: how, what it says, and the recorded copy it names."""

    how: str
    value: str
    copy: AttachmentCopy | None = None


@dataclass
class TraceResult:
    kind: str
    found: list[Found] = field(default_factory=list)
    originals: list[Attachment] = field(default_factory=list)

    @property
    def copies(self) -> list[AttachmentCopy]:
        seen: dict[str, AttachmentCopy] = {}
        for f in self.found:
            if f.copy is not None:
                seen.setdefault(f.copy.id, f.copy)
        return list(seen.values())

    @property
    def identified(self) -> AttachmentCopy | None:
        """The one recorded copy every readable mark agrees on, else None."""
        copies = self.copies
        return copies[0] if len(copies) == 1 else None

    def verdict(self) -> str:
        copies = self.copies
        if len(copies) == 1:
            return (f"This file is copy {copies[0].code} (copy id {copies[0].id}), made "
                    f"for {describe_reader(copies[0].user)} on "
                    f"{copies[0].created_at:%Y-%m-%d %H:%M:%S} UTC.")
        if len(copies) > 1:
            return ("Cannot tell which copy: the file carries the marks of "
                    f"{len(copies)} different recorded copies "
                    f"({', '.join(c.code for c in copies)}), e.g. pieces of several "
                    "copies put together.")
        if self.found:
            return ("Cannot tell: the file carries copy marks ("
                    + ", ".join(f.value for f in self.found)
                    + ") that match no copy recorded here (made up, altered, or from "
                    "another Enclave).")
        if self.originals:
            names = ", ".join(f"{a.id} (finding #{a.finding_id})" for a in self.originals)
            return ("Cannot tell which reader: the file carries no copy mark, and it is "
                    f"byte for byte the unstamped original of attachment {names}. "
                    "Everyone who downloaded that original is in the audit log "
                    "(attachment_downloaded).")
        return ("Cannot tell: no Enclave copy id or copy code could be read from this "
                "file (it may be an unstamped file, a file from a level that does not "
                "stamp, or its marks were removed or are unreadable).")


def describe_reader(user: User) -> str:
    return f"{user.display_name} <{user.email}> of {user.org.name}"


def _pdf_marks(source: Any) -> list[tuple[str, str]]:
    from pypdf import PdfReader

    found: list[tuple[str, str]] = []
    try:
        reader = PdfReader(source, strict=False)
        if reader.is_encrypted:
            return found
        info = reader.metadata or {}
        for key in ("/EnclaveCopy",):
            value = str(info.get(key, "") or "")
            if COPY_ID_RE.fullmatch(value):
                found.append(("copy id in the document information", value))
        ids = reader.trailer.get("/ID")
        if ids and len(ids) > 1:
            second = bytes(ids[1].original_bytes).hex()
            if len(second) == 32:
                found.append(("copy id in the file identifier", second))
        text_codes: list[str] = []
        for page in list(reader.pages)[:200]:
            try:
                text_codes += codes_in(page.extract_text() or "")
            except Exception as exc:  # noqa: BLE001 - a page pypdf cannot read has no text
                log.info("trace: a page without readable text (%s)", exc.__class__.__name__)
        found += [("copy code printed on the pages", c) for c in dict.fromkeys(text_codes)]
    except Exception as exc:  # noqa: BLE001 - a damaged PDF may still show its code
        log.info("trace: pypdf could not read the file (%s)", exc.__class__.__name__)
    if not any(how.startswith("copy code") for how, _ in found):
        found += [("QR code on a rendered page", c) for c in _pdf_qr_codes(source)]
    return found


def _pdf_qr_codes(source: Any) -> list[str]:
    """Render the first pages (pypdfium2) and read QR codes: a copy whose text layer is
    gone (printed, scanned, flattened) still shows its stamp."""
    import pypdfium2 as pdfium
    import zxingcpp

    codes: list[str] = []
    try:
        source.seek(0)
        document = pdfium.PdfDocument(source)
    except Exception:  # noqa: BLE001
        return codes
    try:
        for index in range(min(3, len(document))):
            bitmap = document[index].render(scale=2.5)
            for result in zxingcpp.read_barcodes(bitmap.to_pil()):
                codes += codes_in(result.text)
    finally:
        document.close()
    return list(dict.fromkeys(codes))


def _image_marks(data: bytes) -> list[tuple[str, str]]:
    import zxingcpp
    from PIL import Image

    found: list[tuple[str, str]] = []
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception:  # noqa: BLE001
        return found
    found += [("copy id in the image metadata", v) for v in images.embedded_ids(img)]
    for result in zxingcpp.read_barcodes(img.convert("RGB")):
        found += [("QR code in the picture", c) for c in codes_in(result.text)]
    return found


def _notebook_marks(data: bytes) -> list[tuple[str, str]]:
    import json

    found: list[tuple[str, str]] = []
    try:
        notebook = json.loads(data)
    except ValueError:
        return found
    meta = notebook.get("metadata", {}) if isinstance(notebook, dict) else {}
    copy = meta.get("enclave_copy") if isinstance(meta, dict) else None
    if isinstance(copy, dict) and COPY_ID_RE.fullmatch(str(copy.get("id", ""))):
        found.append(("copy id in the notebook metadata", str(copy["id"])))
    text = json.dumps(notebook.get("cells", []) if isinstance(notebook, dict) else [])
    found += [("copy code in a cell", c) for c in codes_in(text)]
    return found


def trace_file(path: Path | str) -> TraceResult:
    """``enclave trace FILE``: read the file's marks and look them up."""
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
        kind = sniff_kind(str(path), head)
        if kind == "pdf":
            found = _pdf_marks(fh)
            return _lookup("pdf", found, _digest_file(fh))
        fh.seek(0)
        size = Path(path).stat().st_size
        data = fh.read(min(size, 256 * MiB))
    return trace_bytes(data, filename=str(path))


def trace_bytes(data: bytes, filename: str = "") -> TraceResult:
    kind = sniff_kind(filename, data[:SNIFF_BYTES])
    if kind == "pdf":
        found = _pdf_marks(io.BytesIO(data))
    elif kind == "image":
        found = _image_marks(data)
    elif kind == "notebook" or (data[:1] == b"{" and b'"cells"' in data[:4096]):
        kind = "notebook"
        found = _notebook_marks(data)
    else:
        kind = kind or "other"
        text = data[: 8 * MiB].decode("utf-8", "replace")
        found = [("copy code in the text", c) for c in codes_in(text)]
    import hashlib

    return _lookup(kind, found, hashlib.sha256(data).hexdigest())


def _digest_file(fh: Any) -> str:
    import hashlib

    fh.seek(0)
    digest = hashlib.sha256()
    while block := fh.read(MiB):
        digest.update(block)
    return digest.hexdigest()


def _lookup(kind: str, found: list[tuple[str, str]], sha256: str) -> TraceResult:
    result = TraceResult(kind=kind)
    for how, value in found:
        if COPY_ID_RE.fullmatch(value):
            copy = db.get(AttachmentCopy, value)
        else:
            copy = db.scalar(select(AttachmentCopy).where(AttachmentCopy.code == value))
        result.found.append(Found(how, value, copy))
    if not result.copies:
        result.originals = _originals_with(sha256)
    return result


def _originals_with(sha256: str) -> list[Attachment]:
    """Attachments whose (sealed) plaintext SHA-256 is ``sha256``: an unstamped leak."""
    out: list[Attachment] = []
    if len(sha256) != 64:
        return out
    for att in db.scalars(select(Attachment).where(Attachment.wrapped_key.is_not(None))):
        if attachments.sha256_of(att) == sha256:
            out.append(att)
    return out


def trace_code(code: str) -> TraceResult:
    """A code or copy id read off a file by a person (e.g. from a photo of a screen)."""
    value = code.strip()
    if COPY_ID_RE.fullmatch(value.lower()):
        return _lookup("typed", [("copy id typed in", value.lower())], "")
    codes = codes_in(value.upper())
    return _lookup("typed", [("copy code typed in", c) for c in codes], "-")


def audit_trace(actor: Any, result: TraceResult, source: str) -> None:
    copy = result.identified
    audit.record("copy_traced", actor=actor or "cli", target_type="attachment_copy",
                 target_id=copy.id if copy else "", source=source, kind=result.kind,
                 marks=[f.value for f in result.found][:20],
                 identified=copy.code if copy else None)
    db.commit()
