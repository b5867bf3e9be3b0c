"""Stamped image copies with Pillow: a band added below the picture (the reader's name,
organization, time, the copy code and a QR code of it), a faint diagonal line with the
name and code repeated across the picture, and the copy id in the file's metadata (PNG
text chunk, JPEG comment and EXIF description, WebP EXIF, GIF comment).

Pillow decodes the whole picture, so images are stamped in memory up to
``MAX_IMAGE_BYTES`` and ``MAX_PIXELS``; larger ones, animations and formats Pillow cannot
write back are refused (NotStampable)."""

from __future__ import annotations

import io
import math

import segno
from PIL import Image, ImageDraw, ImageOps, PngImagePlugin

from app.traceability.lettering import draw_text, text_width
from app.traceability.marks import Mark
from app.traceability.pdf import NotStampable

MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 60_000_000
FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}
EXIF_DESCRIPTION = 0x010E


def sniff(head: bytes) -> str | None:
    """The image format from the first bytes, if it is one we stamp."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    return None


def stamped_picture(img: Image.Image, mark: Mark) -> Image.Image:
    """The picture with the band below and the diagonal line over it (RGB or RGBA)."""
    mode = "RGBA" if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info \
        else "RGB"
    base = img.convert(mode)
    width, height = base.size
    band = max(60, min(220, width // 9))
    out = Image.new(mode, (width, height + band), (255, 255, 255, 255))
    out.paste(base, (0, 0))

    # the faint diagonal over the picture
    text = f"{mark.reader} - {mark.org} - {mark.code}"
    diag = math.hypot(width, height)
    size = max(10, min(96, int(diag * 0.7 / max(1, len(text)) * 1.8)))
    layer = Image.new("RGBA", (int(diag), size * 2), (0, 0, 0, 0))
    draw_text(ImageDraw.Draw(layer), (size // 2, size // 2), text, size,
              fill=(170, 25, 25, 72))
    layer = layer.rotate(math.degrees(math.atan2(height, width)), expand=True,
                         resample=Image.Resampling.BICUBIC)
    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    overlay.paste(layer, ((width - layer.width) // 2, (height - layer.height) // 2), layer)
    framed = out.convert("RGBA")
    framed.alpha_composite(overlay, (0, 0))

    # the band: two lines of text and the QR code
    draw = ImageDraw.Draw(framed)
    draw.rectangle([0, height, width - 1, height + band - 1], fill=(255, 255, 255, 255),
                   outline=(180, 30, 30, 255), width=max(1, band // 40))
    qr_side = band - 6
    qr = segno.make(mark.qr_text, error="m", micro=False)
    scale = max(1, qr_side // (qr.symbol_size(scale=1, border=2)[0]))
    qr_buf = io.BytesIO()
    qr.save(qr_buf, kind="png", scale=scale, border=2)
    qr_img = Image.open(io.BytesIO(qr_buf.getvalue())).convert("RGBA")
    framed.paste(qr_img, (width - qr_img.width - 3, height + (band - qr_img.height) // 2))
    text_room = width - qr_img.width - 12
    line = max(8, min(band // 3, 28))
    for offset, words, colour in ((3, mark.headline, (150, 20, 20, 255)),
                                  (3 + line + 2, mark.footline, (40, 40, 40, 255))):
        while line > 8 and text_width(words, line) > text_room:
            line -= 1
        draw_text(draw, (6, height + offset), words, line, fill=colour)
    return framed if mode == "RGBA" else framed.convert("RGB")


def stamp_image(data: bytes, mark: Mark) -> tuple[bytes, str]:
    """A stamped copy of the image ``data`` and its Pillow format name."""
    if len(data) > MAX_IMAGE_BYTES:
        raise NotStampable(f"images are stamped up to {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    kind = sniff(data[:16])
    if kind is None:
        raise NotStampable("it is not a PNG, JPEG, WebP or GIF image")
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_PIXELS:
            raise NotStampable(f"images are stamped up to {MAX_PIXELS // 1_000_000} "
                               f"megapixels")
        if getattr(img, "n_frames", 1) > 1:
            raise NotStampable("animated images cannot be stamped frame by frame")
        img.load()
        img = ImageOps.exif_transpose(img)  # the copy is upright without its EXIF
    except NotStampable:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise NotStampable(f"Pillow cannot read it ({exc.__class__.__name__})") from None
    picture = stamped_picture(img, mark)
    out = io.BytesIO()
    note = f"EnclaveCopy:{mark.copy_id} code:{mark.code}"
    exif = Image.Exif()
    exif[EXIF_DESCRIPTION] = note
    if kind == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("EnclaveCopy", mark.copy_id)
        info.add_itxt("EnclaveCopyCode", mark.code)
        picture.save(out, "PNG", pnginfo=info, exif=exif)
    elif kind == "JPEG":
        picture.convert("RGB").save(out, "JPEG", quality=92, comment=note.encode(),
                                    exif=exif)
    elif kind == "WEBP":
        picture.save(out, "WEBP", quality=92, exif=exif)
    else:
        picture.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE).save(
            out, "GIF", comment=note.encode())
    return out.getvalue(), kind


def embedded_ids(img: Image.Image) -> list[str]:
    """Copy ids in an image's metadata (what stamp_image wrote), if any survived."""
    from app.traceability.marks import COPY_ID_RE

    found: list[str] = []
    texts = [str(v) for k, v in (getattr(img, "text", None) or {}).items()
             if k.startswith("Enclave")]
    comment = img.info.get("comment")
    if isinstance(comment, bytes):
        texts.append(comment.decode("utf-8", "replace"))
    try:
        desc = img.getexif().get(EXIF_DESCRIPTION)
    except Exception:  # noqa: BLE001 - broken EXIF is just no EXIF
        desc = None
    if desc:
        texts.append(str(desc))
    for text in texts:
        for match in COPY_ID_RE.findall(text):
            if match not in found:
                found.append(match)
    return found
