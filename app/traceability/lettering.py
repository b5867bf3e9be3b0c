"""Text drawn on pictures (stamped images, the watermark tile) with Pillow's FreeType
fonts, one thread at a time.

FreeType lets one thread at a time use a face, and one thread at a time create or destroy
faces of a library; Pillow leaves that to its callers. Pages are served by several
threads at once (a page's watermark tile, its stamped images and notebook figures), and a
CI run died with a segmentation fault inside ``ImageDraw.text``. So each size's font is
made once and kept (never destroyed while another thread draws), and every measurement
and drawing holds one process-wide lock. Drawing text is a small part of a stamp; the
lock costs little beside the image work around it."""

from __future__ import annotations

import functools
import threading

from PIL import Image, ImageDraw, ImageFont

_FREETYPE = threading.Lock()
_PROBE = ImageDraw.Draw(Image.new("RGBA", (1, 1)))  # measured on, never drawn
MIN_SIZE, MAX_SIZE = 6, 128


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _sized(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return _font(max(MIN_SIZE, min(MAX_SIZE, int(size))))


def text_width(text: str, size: int) -> float:
    """The width in pixels of ``text`` in the stamp font at ``size``."""
    with _FREETYPE:
        return _PROBE.textlength(text, font=_sized(size))


def draw_text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, size: int,
              fill: str | tuple[int, ...]) -> None:
    """Draw ``text`` at ``xy`` in the stamp font at ``size``."""
    with _FREETYPE:
        draw.text(xy, text, font=_sized(size), fill=fill)

