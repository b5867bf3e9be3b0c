"""Seeing files and pages under a level's marking policy: what each file offers (the
original, a stamped copy, a view in the page, nothing), view-only rendering (images and
PDF pages turned into stamped PNGs on the server, notebooks into stamped HTML), figures
shown in the text (the same three paths), and the on-screen watermark tile.

One path decrypts and shows a file: ``attachments.open_plaintext`` (access checked by
the caller through ``attachments.get_attachment``), then the renderers here.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from markupsafe import Markup
from PIL import Image, ImageDraw

from app import audit, clock, state
from app.attachments import service as attachments
from app.attachments.models import Attachment
from app.auth.models import User
from app.context import client_ip
from app.db import db
from app.errors import NotFound
from app.traceability import image as images
from app.traceability import pdf as pdfs
from app.traceability import text as texts
from app.traceability.lettering import draw_text, text_width
from app.traceability.marks import Mark, new_code, new_copy_id
from app.traceability.models import AttachmentCopy
from app.traceability.service import NotServed, _head, _whole, level_of, make_copy

MiB = 1024 * 1024
#: a view's page images can be fetched for this long after the view page was shown
VIEW_HOURS = 12
MAX_VIEW_PAGES = 200
RENDER_SCALE = 1.6  # 115 dpi: readable on screen, heavy enough to discourage scraping
#: the watermark tile's size (the stylesheet repeats it at its natural size)
TILE = (460, 250)
_IMAGE_EXT = {"png", "jpg", "jpeg", "webp", "gif"}
_IMAGE_TYPES = {"image/png", "image/jpeg", "image/webp", "image/gif"}
#: originals larger than this are linked from the text, not shown in it
INLINE_MAX_BYTES = 16 * MiB
MIMETYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp",
             "GIF": "image/gif"}


def guess_kind(att: Attachment) -> str | None:
    """What a file is, from its name and declared type (the list does not decrypt it)."""
    ext = texts.extension(att.filename)
    if ext == "pdf" or att.content_type == "application/pdf":
        return "pdf"
    if ext in _IMAGE_EXT or att.content_type in _IMAGE_TYPES:
        return "image"
    return texts.text_kind(att.filename)


def serve_mode(att: Attachment) -> str:
    """original | stamped | view | unserved: what the reader of this level gets."""
    level = level_of(att)
    kind = guess_kind(att)
    if level.view_only:
        return "view" if kind in ("pdf", "image", "notebook") else "unserved"
    if level.stamped:
        return "stamped" if kind else "unserved"
    return "original"


# --------------------------------------------------------------------------- views


@dataclass
class View:
    attachment: Attachment
    #: the recorded copy this view's images carry (None: a notebook at a level that
    #: hands out originals, shown as it is)
    copy: AttachmentCopy | None
    kind: str
    pages: int = 1
    html: Markup | None = None


def _mark_for(copy: AttachmentCopy, att: Attachment) -> Mark:
    return Mark(copy_id=copy.id, code=copy.code, reader=copy.user.display_name,
                org=copy.user.org.name, at=copy.created_at,
                level_label=level_of(att).label)


def viewable(att: Attachment) -> bool:
    """Whether ``att`` has a view page: any file a view-only level shows, and notebooks
    at every level (read in the page instead of downloaded and opened in Jupyter)."""
    return level_of(att).view_only or guess_kind(att) == "notebook"


def open_view(user: User, att: Attachment) -> View:
    """A view of ``att`` in the page (access checked by the caller). At stamped and
    view-only levels: one recorded copy (kind ``view``) whose code every rendered image
    of this view carries. A notebook at a level that hands out originals is shown as it
    is, its reading audited."""
    kind = guess_kind(att)
    if kind not in ("pdf", "image", "notebook"):
        raise NotServed(f"{level_of(att).label} files of this type are listed but not "
                        f"shown or served.", code="not_viewable")
    level = level_of(att)
    marked = level.view_only or level.stamped
    if not marked and kind != "notebook":
        raise NotFound()
    copy = AttachmentCopy(id=new_copy_id(), code=new_code(), attachment_id=att.id,
                          finding_id=att.finding_id, user_id=user.id, kind="view",
                          level=att.finding.level, ip=client_ip.get() or None,
                          created_at=clock.now()) if marked else None
    view = View(att, copy, kind)
    try:
        if kind == "pdf":
            view.pages = min(MAX_VIEW_PAGES, _pdf_page_count(att, user))
        elif kind == "notebook":
            data = _whole(att, user, texts.MAX_NOTEBOOK_BYTES, "notebooks")
            view.html = notebook_html(data, _mark_for_new(copy, user, att) if copy else None)
    except pdfs.NotStampable as exc:
        raise NotServed(f"This file cannot be shown: {exc}.", code="not_viewable") from None
    if copy is not None:
        db.add(copy)
    audit.record("attachment_viewed", actor=user, target_type="attachment", target_id=att.id,
                 copy_id=copy.id if copy else None, code=copy.code if copy else None,
                 kind=kind, finding_id=att.finding_id, level=att.finding.level)
    db.commit()
    return view


def _mark_for_new(copy: AttachmentCopy, user: User, att: Attachment) -> Mark:
    return Mark(copy_id=copy.id, code=copy.code, reader=user.display_name, org=user.org.name,
                at=copy.created_at, level_label=level_of(att).label)


def view_copy(user: User, att: Attachment, copy_id: str) -> AttachmentCopy:
    """The reader's own recent view of ``att``; anything else answers like a missing id."""
    copy = db.get(AttachmentCopy, copy_id) if isinstance(copy_id, str) and \
        len(copy_id) == 32 else None
    if (copy is None or copy.kind != "view" or copy.user_id != user.id
            or copy.attachment_id != att.id
            or clock.now() - copy.created_at > timedelta(hours=VIEW_HOURS)):
        raise NotFound()
    return copy


def _pdf_source(att: Attachment, user: Any) -> pdfs.ReplayReader:
    return pdfs.ReplayReader(lambda: attachments.open_plaintext(att, actor=user), att.size,
                             cache_blocks=64, max_passes=12, max_read=64 * MiB)


def _pdf_page_count(att: Attachment, user: Any) -> int:
    import pypdfium2 as pdfium

    source = _pdf_source(att, user)
    try:
        document = pdfium.PdfDocument(source)
    except pdfium.PdfiumError:
        raise pdfs.NotStampable("PDFium cannot open it") from None
    except (pdfs._ReadTooLarge, pdfs._TooManyPasses):
        raise pdfs.NotStampable("it is too large to render in bounded memory") from None
    try:
        return len(document)
    finally:
        document.close()
        source.close()


def render_png(user: User, att: Attachment, copy: AttachmentCopy, page: int) -> bytes:
    """Page ``page`` of a PDF, or the image itself, stamped for the view's reader."""
    mark = _mark_for(copy, att)
    kind = guess_kind(att)
    try:
        if kind == "image":
            data = _whole(att, user, images.MAX_IMAGE_BYTES, "images")
            try:
                picture = Image.open(io.BytesIO(data))
                if picture.width * picture.height > images.MAX_PIXELS:
                    raise pdfs.NotStampable("too many pixels")
                picture.load()
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise pdfs.NotStampable(exc.__class__.__name__) from None
            if page != 0:
                raise NotFound()
        elif kind == "pdf":
            picture = _render_pdf_page(att, user, page)
        else:
            raise NotFound()
    except pdfs.NotStampable:
        raise NotFound() from None
    picture.thumbnail((2000, 2000))
    out = io.BytesIO()
    images.stamped_picture(picture, mark).save(out, "PNG")
    return out.getvalue()


def _render_pdf_page(att: Attachment, user: Any, page: int) -> Image.Image:
    import pypdfium2 as pdfium

    source = _pdf_source(att, user)
    try:
        document = pdfium.PdfDocument(source)
    except (pdfium.PdfiumError, pdfs._ReadTooLarge, pdfs._TooManyPasses):
        source.close()
        raise pdfs.NotStampable("PDFium cannot open it") from None
    try:
        if not 0 <= page < min(len(document), MAX_VIEW_PAGES):
            raise NotFound()
        return document[page].render(scale=RENDER_SCALE).to_pil().convert("RGB")
    finally:
        document.close()
        source.close()


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class FigurePlan:
    """How an attachment referred to as a figure appears in the text: shown (``mode``
    original | stamped | view) or not, with the reason and what the reader can open."""

    mode: str | None
    note: str = ""


def figure_plan(att: Attachment) -> FigurePlan:
    """Decided from the name, declared type and size (a page does not decrypt files);
    the figure endpoint checks the content before sending anything."""
    mode = serve_mode(att)
    if guess_kind(att) != "image":
        return FigurePlan(None, "not a PNG, JPEG, GIF or WebP image; see Files below")
    if mode == "unserved":
        return FigurePlan(None, f"{level_of(att).label} files of this type are not shown")
    if mode == "original" and att.size > INLINE_MAX_BYTES:
        return FigurePlan(None, f"larger than {INLINE_MAX_BYTES // MiB} MiB: open it from "
                                f"Files below")
    return FigurePlan(mode)


@dataclass(frozen=True)
class FigureTargets:
    """A finding's live files by id and by name (the newest of a name)."""

    by_id: dict[str, Attachment]
    by_name: dict[str, Attachment]


def figure_targets(user: User, finding: Any) -> FigureTargets:
    by_id: dict[str, Attachment] = {}
    by_name: dict[str, Attachment] = {}
    for att in attachments.list_for_finding(user, finding):  # oldest first
        by_id[att.id] = att
        by_name[att.filename] = att
    return FigureTargets(by_id, by_name)


def resolve_figures(html: str, targets: FigureTargets, url: Callable[[str], str]) -> str:
    """``html``'s figure placeholders made images (``url(attachment_id)``) or notes."""
    from app.rendering.figures import Figure, resolve

    def lookup(ref: str) -> Figure | None:
        att = targets.by_id.get(ref.lower()) or targets.by_name.get(ref)
        if att is None:
            return None
        plan = figure_plan(att)
        return Figure(url=url(att.id)) if plan.mode is not None else Figure(note=plan.note)

    return resolve(html, lookup)


@dataclass
class Picture:
    """An image ready to send: ``chunks`` yields ``length`` bytes of ``mimetype``."""

    chunks: Iterator[bytes]
    mimetype: str
    length: int
    code: str | None = None

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()


def open_figure(user: User, att: Attachment) -> Picture:
    """``att`` as an image for the text (access checked by the caller), through the
    level's policy: the original (audited as a download), a stamped copy (recorded and
    audited) or a view-only rendering (a recorded view). Anything that is not a PNG,
    JPEG, GIF or WebP by its content, or over the inline limit, is NotFound: an SVG or
    an HTML file renamed ``.png`` is never sent as an image."""
    plan = figure_plan(att)
    if plan.mode == "original":
        fmt = images.sniff(_head(att, user)[:16])
        if fmt is None:
            raise NotFound()
        dl = attachments.open_download(user, att.id)
        return Picture(dl.chunks, MIMETYPES[fmt], att.size)
    if plan.mode == "stamped":
        if images.sniff(_head(att, user)[:16]) is None:
            raise NotFound()
        copy = make_copy(user, att)
        first = next(copy.chunks, b"")
        fmt = images.sniff(first[:16])
        if fmt is None:  # pragma: no cover - make_copy stamps images as images
            copy.close()
            raise NotFound()
        return Picture(_prepend(first, copy.chunks), MIMETYPES[fmt], copy.length,
                       copy.record.code)
    if plan.mode == "view":
        view = open_view(user, att)
        png = render_png(user, att, view.copy, 0)
        return Picture(iter([png]), "image/png", len(png), view.copy.code)
    raise NotFound()


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()


# --------------------------------------------------------------------------- notebooks


def _stamped_picture(mark: Mark) -> Any:
    """The notebook renderer's picture hook: each output picture stamped for the reader
    (as PNG); an unreadable one is left out."""
    def stamp(_mime: str, b64: str) -> tuple[str, str] | None:
        try:
            picture = Image.open(io.BytesIO(base64.b64decode(b64, validate=False)))
            if picture.width * picture.height > images.MAX_PIXELS:
                return None
            picture.load()
        except Exception:  # noqa: BLE001 - an unreadable output is left out
            return None
        out = io.BytesIO()
        images.stamped_picture(picture, mark).save(out, "PNG")
        return "image/png", base64.b64encode(out.getvalue()).decode()

    return stamp


def notebook_html(data: bytes, mark: Mark | None) -> Markup:
    """A notebook for reading in the page (``app.rendering.notebook``: nbconvert, then the
    sanitizer), with its output pictures stamped for the reader when there is a ``mark``
    (stamped and view-only levels) and the mark's line above it."""
    from app.rendering.notebook import NotANotebook, render_notebook

    try:
        html = render_notebook(data, _stamped_picture(mark) if mark is not None else None)
    except NotANotebook as exc:
        raise pdfs.NotStampable(str(exc)) from None
    body = Markup(html)  # noqa: S704 - sanitized by the notebook renderer
    if mark is None:
        return body
    return Markup('<p class="file-mark">{}</p>\n').format(mark.one_line) + body


# --------------------------------------------------------------------------- watermark


def watermark_png(user: User, level_label: str) -> bytes:
    """A transparent tile with the reader's name, organization and the time, on a slant
    in a faint colour; pages repeat it over their content."""
    now = clock.now()
    lines = [f"{user.display_name} - {user.org.name}",
             f"{now:%Y-%m-%d %H:%M} UTC - {level_label}"]
    width = int(max(text_width(line, 16) for line in lines)) + 20
    layer = Image.new("RGBA", (width, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for i, line in enumerate(lines):
        draw_text(draw, (10, 6 + 28 * i), line, 16, fill=(120, 20, 20, 44))
    layer = layer.rotate(22, expand=True, resample=Image.Resampling.BICUBIC)
    tile = Image.new("RGBA", (max(TILE[0], layer.width + 24), TILE[1]), (0, 0, 0, 0))
    tile.alpha_composite(layer, ((tile.width - layer.width) // 2,
                                 max(0, (tile.height - layer.height) // 2)))
    out = io.BytesIO()
    tile.save(out, "PNG", optimize=True)
    return out.getvalue()


def watermark_level(user: Any, levels: set[str]) -> str | None:
    """The highest of ``levels`` that asks for a watermark and that ``user`` may read."""
    from app import access

    policy = state.policy()
    readable = access.readable_levels(user)
    marked = [policy.level(k) for k in levels
              if policy.is_level(k) and k in readable and policy.level(k).watermark]
    return max(marked, key=lambda lv: lv.rank).key if marked else None

