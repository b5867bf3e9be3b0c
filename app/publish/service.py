"""What the public sees: released publication requests only, as their approved public
version (title, body, approved files), never anything of the internal finding.

Public items have their own numbers (``public_id``, given at release in order), never the
request's id, which would let anyone count requests, released or not. Nothing here reads
the finding's title, body, level, author or organization: the only name shown is the
credit line the request chose, fixed at release. The public JSON, pages, feed and the
static export are all built from :func:`public_record`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select

from app import visibility
from app.attachments import service as attachments
from app.attachments.models import Attachment
from app.db import db
from app.errors import NotFound
from app.pagination import Page, paginate
from app.review.models import RequestAttachment, ReviewRequest
from app.review.rules import RELEASED

ATOM_NS = "http://www.w3.org/2005/Atom"
FEED_TITLE = "Enclave: released findings"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def released() -> Select[tuple[ReviewRequest]]:
    """Released publication requests, newest release first."""
    return (select(ReviewRequest)
            .where(ReviewRequest.kind == "publication", ReviewRequest.state == RELEASED)
            .order_by(ReviewRequest.released_at.desc(), ReviewRequest.id.desc()))


def public_page(args: Mapping[str, str] | None = None) -> Page:
    return paginate(released(), args or {}, default_per_page=20)


def all_released() -> list[ReviewRequest]:
    return list(db.scalars(released()).unique())


def latest(limit: int) -> list[ReviewRequest]:
    return list(db.scalars(released().limit(limit)).unique())


def get_public(item_id: int) -> ReviewRequest:
    """The released item numbered ``item_id`` (its public number, not a request id)."""
    return visibility.released_or_404(item_id)


def public_file(item_id: int, file_id: int) -> tuple[RequestAttachment, Attachment]:
    """An approved file of a released item (404 for anything else)."""
    req = get_public(item_id)
    row = next((a for a in req.attachments if a.id == file_id), None)
    if row is None or row.attachment_id is None:
        raise NotFound()
    att = db.get(Attachment, row.attachment_id)
    if att is None or not att.live or att.finding_id != req.finding_id:
        raise NotFound()
    return row, att


def open_public_file(att: Attachment) -> Iterator[bytes]:
    """The decrypted bytes (authenticated chunk by chunk by the attachments service)."""
    return attachments.open_plaintext(att, actor=None)


@dataclass(frozen=True)
class PublicFile:
    id: int
    filename: str
    size: int
    sha256: str
    content_type: str


@dataclass(frozen=True)
class PublicRecord:
    """Exactly what is public about a released item."""

    id: int
    title: str
    body: str
    body_html: str
    released_at: datetime
    content_sha256: str
    files: tuple[PublicFile, ...]
    credit: str = ""  # "" when anonymous


def public_record(req: ReviewRequest) -> PublicRecord:
    assert req.state == RELEASED and req.released_at is not None and req.public_id
    return PublicRecord(
        id=req.public_id, title=req.public_title, body=req.public_body,
        body_html=req.public_body_html, released_at=req.released_at,
        content_sha256=req.content_sha256,
        files=tuple(PublicFile(a.id, a.filename, a.size, a.sha256, a.content_type)
                    for a in req.attachments if a.attachment_id is not None),
        credit=req.public_credit)


def iso(when: datetime) -> str:
    return when.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_json(rec: PublicRecord, *, page_url: str,
                file_url: Callable[[PublicFile], str]) -> dict[str, Any]:
    return {
        "id": rec.id, "title": rec.title, "body": rec.body, "body_html": rec.body_html,
        "released_at": iso(rec.released_at), "content_sha256": rec.content_sha256,
        "credit": rec.credit or None, "url": page_url,
        "attachments": [{"id": f.id, "filename": f.filename, "size": f.size,
                         "sha256": f.sha256, "url": file_url(f)} for f in rec.files],
    }


def atom_feed(records: Sequence[PublicRecord], *, feed_id: str, self_url: str,
              site_url: str, entry_url: Callable[[PublicRecord], str]) -> bytes:
    """An Atom 1.0 document; deterministic (times come from the releases)."""
    ET.register_namespace("", ATOM_NS)

    def sub(parent: ET.Element, tag: str, text: str | None = None,
            **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{ATOM_NS}}}{tag}", attrs)
        if text is not None:
            el.text = text
        return el

    root = ET.Element(f"{{{ATOM_NS}}}feed")
    sub(root, "id", feed_id)
    sub(root, "title", FEED_TITLE)
    updated = max((r.released_at for r in records), default=EPOCH)
    sub(root, "updated", iso(updated))
    sub(root, "link", rel="self", href=self_url)
    sub(root, "link", rel="alternate", href=site_url)
    author = sub(root, "author")
    sub(author, "name", "Enclave")
    for rec in records:
        entry = sub(root, "entry")
        url = entry_url(rec)
        sub(entry, "id", url)
        sub(entry, "title", rec.title)
        sub(entry, "updated", iso(rec.released_at))
        sub(entry, "published", iso(rec.released_at))
        sub(entry, "link", rel="alternate", href=url)
        sub(entry, "content", rec.body_html, type="html")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
