"""Stamped PDF copies as incremental updates, in bounded memory.

A stamped copy is the original file, byte for byte, followed by an *incremental update*
(ISO 32000-1, 7.5.6): new objects (a font, a graphics state, the stamp as a form
XObject), every page object redefined with the stamp drawn over its content, a new
document information dictionary carrying the copy id, and a cross-reference section
whose ``/Prev`` points at the original's. Readers show the updated pages; the original
stays inside the copy unchanged (that is what an incremental update is), so the stamp
can be removed by someone who knows PDF internals: see docs/traceability.md.

The plaintext of an attachment can only be produced front to back (Cobblestone cannot
seek), and pypdf needs random access to parse the page tree. :class:`ReplayReader` gives
it a seekable view that keeps at most ``cache_blocks`` MiB of plaintext and decrypts the
file again from the start when pypdf seeks back past what it kept (each such restart is
a *pass*; a file that would need more than ``max_passes`` is refused, as is one whose
structure pypdf would read whole). Then the copy streams out: the original (one more
pass, or the cache when the whole file fits in it) and the update.
"""

from __future__ import annotations

import io
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import segno
from pypdf import PdfReader
from pypdf.errors import PdfReadError
from pypdf.generic import (
    ArrayObject,
    DictionaryObject,
    IndirectObject,
    NameObject,
    StreamObject,
    TextStringObject,
)

from app.traceability.marks import Mark, latin1_safe

MiB = 1024 * 1024
BAND_W, BAND_H = 560.0, 34.0
_STARTXREF_RE = re.compile(rb"startxref\s+(\d+)\s+%%EOF")


class NotStampable(Exception):
    """This file cannot be stamped (the message says why, for the reader)."""


class _ReadTooLarge(BaseException):
    """Raised inside pypdf when it tries to read more than the memory bound at once;
    a BaseException so that pypdf's own ``except Exception`` recovery cannot swallow it
    (its recovery would read the whole file into memory)."""


class _TooManyPasses(BaseException):
    """Raised inside pypdf when reading on would mean one pass too many (a
    BaseException for the same reason as _ReadTooLarge)."""


class ReplayReader(io.RawIOBase):
    """A seekable, read-only view of a plaintext that can only be produced front to back.

    ``open_stream()`` starts the plaintext again from its first byte. Blocks of
    ``block_size`` are kept in an LRU cache of ``cache_blocks``; reading a block before
    the stream's position starts a new pass.
    """

    def __init__(self, open_stream: Callable[[], Iterator[bytes]], size: int, *,
                 block_size: int = MiB, cache_blocks: int = 16, max_passes: int = 6,
                 max_read: int = 8 * MiB) -> None:
        super().__init__()
        self._open = open_stream
        self.size = size
        self.block_size = block_size
        self.cache_blocks = cache_blocks
        self.max_passes = max_passes
        self.max_read = max_read
        self.passes = 0
        self._pos = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._stream: Iterator[bytes] | None = None
        self._next_block = 0
        self._pending = bytearray()

    # -- io protocol
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self._pos
        if n > self.max_read:
            raise _ReadTooLarge(n)
        out = bytearray()
        while n > 0 and self._pos < self.size:
            index, offset = divmod(self._pos, self.block_size)
            block = self._block(index)
            piece = block[offset: offset + n]
            out += piece
            self._pos += len(piece)
            n -= len(piece)
        return bytes(out)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._close_stream()
        super().close()

    # -- blocks
    @property
    def whole_file_cached(self) -> bool:
        blocks = math.ceil(self.size / self.block_size) if self.size else 0
        return all(i in self._cache for i in range(blocks))

    def cached_bytes(self) -> Iterator[bytes]:
        for i in range(math.ceil(self.size / self.block_size)):
            yield self._cache[i]

    def _close_stream(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()
        self._stream = None

    def _restart(self) -> None:
        self._close_stream()
        self.passes += 1
        if self.passes > self.max_passes:
            raise _TooManyPasses(self.max_passes)
        self._stream = self._open()
        self._next_block = 0
        self._pending = bytearray()

    def _block(self, index: int) -> bytes:
        block = self._cache.get(index)
        if block is not None:
            self._cache.move_to_end(index)
            return block
        if self._stream is None or self._next_block > index:
            self._restart()
        assert self._stream is not None
        while True:
            want = min(self.block_size, self.size - self._next_block * self.block_size)
            while len(self._pending) < want:
                piece = next(self._stream, None)
                if piece is None:
                    raise NotStampable("the file ended before its recorded size")
                self._pending += piece
            block = bytes(self._pending[:want])
            del self._pending[:want]
            number = self._next_block
            self._next_block += 1
            self._cache[number] = block
            self._cache.move_to_end(number)
            while len(self._cache) > self.cache_blocks:
                self._cache.popitem(last=False)
            if number == index:
                return block


# --------------------------------------------------------------------------- content

def _pdf_string(text: str) -> bytes:
    raw = latin1_safe(text).encode("cp1252", "replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") \
        + b")"


def _qr_ops(text: str, x: float, y: float, size: float) -> bytes:
    """The QR code of ``text`` as filled squares (segno makes the matrix)."""
    qr = segno.make(text, error="m", micro=False)
    matrix = [list(row) for row in qr.matrix]
    n = len(matrix)
    quiet = 1
    module = size / (n + 2 * quiet)
    ops = [b"q 1 1 1 rg", f"{x:.2f} {y:.2f} {size:.2f} {size:.2f} re f".encode(), b"0 0 0 rg"]
    for r, row in enumerate(matrix):
        for c, dark in enumerate(row):
            if dark:
                mx = x + (c + quiet) * module
                my = y + (n - 1 - r + quiet) * module
                ops.append(f"{mx:.3f} {my:.3f} {module:.3f} {module:.3f} re".encode())
    ops += [b"f Q"]
    return b"\n".join(ops)


def stamp_band(mark: Mark) -> bytes:
    """The stamp, drawn in its own BAND_W x BAND_H space: a white, slightly transparent
    band with a red border, two lines of text and a QR code of the copy code."""
    qr_size = BAND_H - 4
    text_w = BAND_W - qr_size - 12
    head, foot = _pdf_string(mark.headline), _pdf_string(mark.footline)
    return b"\n".join([
        b"q /EnclaveGSband gs 1 1 1 rg",
        f"0 0 {BAND_W:.2f} {BAND_H:.2f} re f Q".encode(),
        b"q 0.72 0.11 0.11 RG 0.8 w",
        f"0.4 0.4 {BAND_W - 0.8:.2f} {BAND_H - 0.8:.2f} re S Q".encode(),
        b"BT /EnclaveF 8 Tf 0.55 0.05 0.05 rg",
        f"6 {BAND_H - 13:.2f} Td".encode(), head + b" Tj",
        b"/EnclaveF 7 Tf 0.15 0.15 0.15 rg 0 -12 Td", foot + b" Tj ET",
        _qr_ops(mark.qr_text, text_w + 8, 2, qr_size),
    ])


def _base_transform(box: list[float], rotate: int) -> tuple[list[float], float, float]:
    """The matrix from the displayed page (origin bottom-left, as a reader shows it after
    /Rotate) to the page's own space, and the displayed width and height."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    rotate %= 360
    if rotate == 90:
        return [0, 1, -1, 0, x1, y0], height, width
    if rotate == 180:
        return [-1, 0, 0, -1, x1, y1], width, height
    if rotate == 270:
        return [0, -1, 1, 0, x0, y1], height, width
    return [1, 0, 0, 1, x0, y0], width, height


def page_overlay(mark: Mark, box: list[float], rotate: int) -> bytes:
    """Closes the graphics state the original content left (``Q``, matching the ``q``
    stream put first), then draws the band at the displayed bottom and a faint diagonal
    line with the reader's name and the code across the page."""
    base, width, height = _base_transform(box, rotate)
    margin = 6.0
    scale = min(1.0, (width - 2 * margin) / BAND_W) if width > 2 * margin else 0.2
    base_cm = " ".join(f"{v:.4f}" for v in base) + " cm"
    diag = _pdf_string(f"{mark.reader} - {mark.org} - {mark.code}")
    angle = math.atan2(height, width)
    font = max(10.0, min(42.0, math.hypot(width, height) * 0.8 / (len(diag) * 0.55)))
    cos, sin = math.cos(angle), math.sin(angle)
    start_x, start_y = width * 0.08, height * 0.08
    return b"\n".join([
        b"Q",
        f"q {base_cm} {scale:.4f} 0 0 {scale:.4f} {margin:.2f} {margin:.2f} cm".encode(),
        b"/EnclaveStamp Do Q",
        f"q {base_cm} /EnclaveGSdiag gs 0.55 0.1 0.1 rg BT /EnclaveF {font:.1f} Tf".encode(),
        f"{cos:.4f} {sin:.4f} {-sin:.4f} {cos:.4f} {start_x:.2f} {start_y:.2f} Tm".encode(),
        diag + b" Tj ET Q",
        b"",
    ])


# --------------------------------------------------------------------------- update


class _Update:
    """Collects the objects of an incremental update and writes them."""

    def __init__(self, start: int, next_number: int) -> None:
        self.start = start
        self.out = io.BytesIO()
        self.offsets: dict[int, tuple[int, int]] = {}  # number -> (offset, generation)
        self.next_number = next_number

    def new_number(self) -> int:
        number = self.next_number
        self.next_number += 1
        return number

    def write(self, number: int, generation: int, obj: Any) -> IndirectObject:
        self.offsets[number] = (self.start + self.out.tell(), generation)
        self.out.write(f"{number} {generation} obj\n".encode())
        obj.write_to_stream(self.out)
        self.out.write(b"\nendobj\n")
        return IndirectObject(number, generation, None)  # type: ignore[arg-type]

    def add(self, obj: Any) -> IndirectObject:
        return self.write(self.new_number(), 0, obj)


def _stream(data: bytes, **entries: Any) -> StreamObject:
    stream = StreamObject()
    for key, value in entries.items():
        stream[NameObject(f"/{key}")] = value
    stream.set_data(data)
    return stream


def _resolved_dict(value: Any) -> DictionaryObject:
    value = value.get_object() if value is not None else None
    return DictionaryObject(value) if isinstance(value, DictionaryObject) else DictionaryObject()


def _subsections(numbers: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if runs and runs[-1][0] + runs[-1][1] == n:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((n, 1))
    return runs


def build_update(source: ReplayReader, mark: Mark) -> bytes:
    """The incremental update that stamps every page of the PDF read from ``source``.

    Raises NotStampable with the reason when it cannot (encrypted, damaged, unusual
    page tree, or beyond the memory bound)."""
    try:
        return _build_update(source, mark)
    except _ReadTooLarge:
        raise NotStampable("reading this PDF's structure would need more memory than "
                           "stamping is allowed") from None
    except _TooManyPasses as exc:
        raise NotStampable(f"this PDF's structure is spread over the file so that "
                           f"stamping it would mean decrypting it more than {exc.args[0]} "
                           f"times") from None
    except NotStampable:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError,
            IndexError, RecursionError) as exc:
        raise NotStampable(f"it is not a PDF that Enclave can read ({exc.__class__.__name__})"
                           ) from None


def _build_update(source: ReplayReader, mark: Mark) -> bytes:
    size = source.size
    source.seek(max(0, size - 4096))
    tail = source.read(min(size, 4096))
    found = list(_STARTXREF_RE.finditer(tail))
    if not found or not tail.rstrip().endswith(b"%%EOF"):
        raise NotStampable("it does not end like a PDF (no startxref and %%EOF at its end)")
    prev = int(found[-1][1])
    source.seek(prev)
    xref_is_stream = not source.read(4).startswith(b"xref")

    reader = PdfReader(source, strict=False)
    if reader.is_encrypted:
        raise NotStampable("it is password-protected (encrypted)")
    trailer = reader.trailer
    update = _Update(start=size + 1, next_number=int(trailer["/Size"]))

    font = update.add(DictionaryObject({
        NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica"),
        NameObject("/Encoding"): NameObject("/WinAnsiEncoding")}))
    band_gs = update.add(DictionaryObject({
        NameObject("/Type"): NameObject("/ExtGState"),
        NameObject("/ca"): _num(0.9)}))
    diag_gs = update.add(DictionaryObject({
        NameObject("/Type"): NameObject("/ExtGState"), NameObject("/ca"): _num(0.16)}))
    gstates = {"/EnclaveGSband": band_gs, "/EnclaveGSdiag": diag_gs}
    form = update.add(_stream(
        stamp_band(mark), Type=NameObject("/XObject"), Subtype=NameObject("/Form"),
        BBox=ArrayObject([_num(0), _num(0), _num(BAND_W), _num(BAND_H)]),
        Resources=DictionaryObject({
            NameObject("/Font"): DictionaryObject({NameObject("/EnclaveF"): font}),
            NameObject("/ExtGState"): DictionaryObject(
                {NameObject(k): v for k, v in gstates.items()})})))
    opening = update.add(_stream(b"q\n"))

    overlays: dict[tuple[tuple[float, ...], int], IndirectObject] = {}
    pages = 0
    for page in reader.pages:
        ref = page.indirect_reference
        if ref is None:
            raise NotStampable("its page tree holds pages inline")
        box = [float(v) for v in (page.get("/CropBox") or page.get("/MediaBox")
                                  or [0, 0, 612, 792])]
        box = [min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]),
               max(box[1], box[3])]
        rotate = int(page.get("/Rotate", 0) or 0)
        key = (tuple(box), rotate % 360)
        if key not in overlays:
            overlays[key] = update.add(_stream(page_overlay(mark, box, rotate)))
        contents = page.raw_get("/Contents") if "/Contents" in page else None
        if contents is None:
            parts: list[Any] = []
        else:
            resolved = contents.get_object() if isinstance(contents, IndirectObject) else contents
            parts = list(resolved) if isinstance(resolved, ArrayObject) else [contents]
        resources = _resolved_dict(page.raw_get("/Resources") if "/Resources" in page
                                   else None)
        for name, entry, value in (("/XObject", "/EnclaveStamp", form),
                                   ("/Font", "/EnclaveF", font),
                                   ("/ExtGState", None, None)):
            sub = _resolved_dict(resources.raw_get(name) if name in resources else None)
            if entry is not None:
                sub[NameObject(entry)] = value
            else:
                for k, v in gstates.items():
                    sub[NameObject(k)] = v
            resources[NameObject(name)] = sub
        new_page = DictionaryObject({NameObject(k): v for k, v in page.items()})
        new_page[NameObject("/Resources")] = resources
        new_page[NameObject("/Contents")] = ArrayObject([opening, *parts, overlays[key]])
        update.write(ref.idnum, ref.generation, new_page)
        pages += 1
    if not pages:
        raise NotStampable("it has no pages")

    info = _resolved_dict(trailer.raw_get("/Info") if "/Info" in trailer else None)
    info[NameObject("/EnclaveCopy")] = TextStringObject(mark.copy_id)
    info[NameObject("/EnclaveCopyCode")] = TextStringObject(mark.code)
    info_ref = update.add(info)
    old_id = trailer.get("/ID")
    first = bytes(old_id[0].original_bytes) if old_id else bytes.fromhex(mark.copy_id)
    ids = f"[<{first.hex()}> <{mark.copy_id}>]"
    root = trailer.raw_get("/Root")
    xref_at = update.start + update.out.tell()
    common = (f"/Root {root.idnum} {root.generation} R /Info {info_ref.idnum} 0 R "
              f"/Prev {prev} /ID {ids}")
    if xref_is_stream:
        number = update.new_number()
        update.offsets[number] = (xref_at, 0)
        width = max(4, (xref_at.bit_length() + 7) // 8)
        runs = _subsections(list(update.offsets))
        rows = b"".join(b"\x01" + update.offsets[n][0].to_bytes(width, "big")
                        + update.offsets[n][1].to_bytes(2, "big")
                        for start, count in runs for n in range(start, start + count))
        index = " ".join(f"{s} {c}" for s, c in runs)
        update.out.write(
            f"{number} 0 obj\n<< /Type /XRef /Size {update.next_number} /Index [{index}] "
            f"/W [1 {width} 2] {common} /Length {len(rows)} >>\nstream\n".encode())
        update.out.write(rows + b"\nendstream\nendobj\n")
    else:
        lines = [b"xref"]
        for start, count in _subsections(list(update.offsets)):
            lines.append(f"{start} {count}".encode())
            for n in range(start, start + count):
                offset, generation = update.offsets[n]
                lines.append(f"{offset:010d} {generation:05d} n\r".encode())
        update.out.write(b"\n".join(lines) + b"\n")
        update.out.write(f"trailer\n<< /Size {update.next_number} {common} >>\n".encode())
    update.out.write(f"startxref\n{xref_at}\n%%EOF\n".encode())
    return b"\n" + update.out.getvalue()


def _num(value: float) -> Any:
    from pypdf.generic import FloatObject

    return FloatObject(value)
