"""Small real PDFs made on the fly for the stamping tests: text pages (pypdf writes a
classic cross-reference table), a rotated page, and the same file after an incremental
update (which pypdf writes as a cross-reference stream)."""

from __future__ import annotations

import io

from pypdf import PdfReader, PdfWriter
from pypdf.generic import DictionaryObject, NameObject, StreamObject


def text_pdf(lines: list[str], *, pages: int = 2, rotate_last: bool = False,
             width: float = 612, height: float = 792) -> bytes:
    writer = PdfWriter()
    font = writer._add_object(DictionaryObject({
        NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Times-Roman")}))
    for n in range(pages):
        page = writer.add_blank_page(width=width, height=height)
        ops = [b"BT /F1 18 Tf 72 700 Td"]
        for line in [*lines, f"Page {n + 1}"]:
            ops.append(b"(" + line.encode("latin-1") + b") Tj 0 -26 Td")
        ops.append(b"ET")
        content = StreamObject()
        content.set_data(b"\n".join(ops))
        page[NameObject("/Contents")] = writer._add_object(content)
        page[NameObject("/Resources")] = DictionaryObject({
            NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})
        if rotate_last and n == pages - 1:
            page.rotate(90)
    writer.add_metadata({"/Title": "Sample finding appendix"})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def with_xref_stream(data: bytes) -> bytes:
    """``data`` plus an incremental update that pypdf writes as a cross-reference stream."""
    writer = PdfWriter(PdfReader(io.BytesIO(data)), incremental=True)
    writer.add_metadata({"/Subject": "updated"})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
