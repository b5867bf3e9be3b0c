"""Stamped copies of text-like files: the copy code in a header line (Markdown, code,
CSV, plain text) or a first cell (notebooks).

Text files stream: only the first ``HEAD_BYTES`` are held to place the line (after a
``#!`` line, a Python coding line or Markdown front matter, keeping a byte-order mark
first and the file's own line endings); the rest passes through as it is decrypted.
Notebooks are JSON and are rewritten whole, up to ``MAX_NOTEBOOK_BYTES``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from app.traceability.marks import Mark
from app.traceability.pdf import NotStampable

HEAD_BYTES = 64 * 1024
MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"

#: line-comment syntax by file extension (text-like files Enclave stamps)
COMMENT = {
    **dict.fromkeys(("py", "pyi", "sh", "bash", "zsh", "rb", "r", "pl", "yaml", "yml",
                     "toml", "cfg", "ini", "conf", "jl", "nim", "ps1", "mk", "cmake",
                     "dockerfile", "tf", "csv", "tsv", "psv"), "#"),
    **dict.fromkeys(("js", "mjs", "cjs", "ts", "tsx", "jsx", "c", "h", "cc", "cpp", "cxx",
                     "hpp", "hh", "java", "kt", "kts", "scala", "go", "rs", "swift", "cs",
                     "dart", "php", "proto", "cu", "cuh", "zig", "v", "sv", "groovy",
                     "gradle", "json5", "jsonc"), "//"),
    **dict.fromkeys(("sql", "lua", "hs", "elm", "ada", "vhdl"), "--"),
    **dict.fromkeys(("tex", "sty", "bib", "m", "erl", "pro"), "%"),
    **dict.fromkeys(("lisp", "clj", "cljs", "el", "scm", "rkt", "asm", "s"), ";"),
    **dict.fromkeys(("vim",), '"'),
    **dict.fromkeys(("bas", "vb"), "'"),
}
MARKDOWN = {"md", "markdown", "mdown", "mkd"}
PLAIN = {"txt", "text", "log", "rst", "adoc", "org"}


def extension(filename: str) -> str:
    name = filename.lower()
    if name in ("dockerfile", "makefile"):
        return "dockerfile" if name == "dockerfile" else "mk"
    return os.path.splitext(name)[1].lstrip(".")


def text_kind(filename: str) -> str | None:
    """'notebook', 'text' or None (not a text-like file Enclave stamps)."""
    ext = extension(filename)
    if ext == "ipynb":
        return "notebook"
    if ext in COMMENT or ext in MARKDOWN or ext in PLAIN:
        return "text"
    return None


def header_line(filename: str, mark: Mark) -> str:
    ext = extension(filename)
    if ext in MARKDOWN:
        return f"> **{mark.one_line}**"
    if ext in PLAIN:
        return f"[{mark.one_line}]"
    return f"{COMMENT[ext]} {mark.one_line}"


def _insert_at(head: bytes, filename: str) -> int:
    """Where the header line goes in the first bytes of the file."""
    pos = len(_BOM) if head.startswith(_BOM) else 0
    lines = head[pos:].splitlines(keepends=True)
    if not lines:
        return pos
    ext = extension(filename)
    if ext in MARKDOWN and lines[0].rstrip() == b"---":
        offset = pos + len(lines[0])
        for line in lines[1:]:
            offset += len(line)
            if line.rstrip() in (b"---", b"...") and line.endswith((b"\n", b"\r")):
                return offset
        return pos  # front matter not closed within the head: line goes first
    taken = 0
    if lines[0].startswith(b"#!"):
        taken = 1
    if ext in ("py", "pyi") and len(lines) > taken and b"coding" in lines[taken][:80] \
            and lines[taken].lstrip().startswith(b"#"):
        taken += 1
    if taken and not lines[taken - 1].endswith((b"\n", b"\r")):
        return pos  # a one-line script without a line end: header goes first
    return pos + sum(len(line) for line in lines[:taken])


def stamp_text(chunks: Iterator[bytes], filename: str, mark: Mark
               ) -> tuple[bytes, Iterator[bytes], int]:
    """The file with the header line in place, as (first bytes, the rest, bytes added);
    refuses binary content."""
    head = bytearray()
    for chunk in chunks:
        head += chunk
        if len(head) >= HEAD_BYTES:
            break
    sample = bytes(head[:HEAD_BYTES])
    if b"\x00" in sample:
        raise NotStampable("it contains binary data, not text")
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 4:  # (a character cut at the sample's end is fine)
            raise NotStampable("it is not UTF-8 text") from None
    newline = b"\r\n" if b"\r\n" in sample else b"\n"
    at = _insert_at(sample, filename)
    line = header_line(filename, mark).encode("utf-8") + newline
    if extension(filename) in MARKDOWN:
        line += newline  # a blank line ends the quote
    if at and not bytes(head[:at]).endswith((b"\n", b"\r")):
        line = newline + line
    return bytes(head[:at]) + line + bytes(head[at:]), chunks, len(line)


def stamp_notebook(data: bytes, mark: Mark) -> bytes:
    """The notebook with a first Markdown cell naming the copy and the copy id in its
    metadata (nbformat 4)."""
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise NotStampable(f"notebooks are stamped up to "
                           f"{MAX_NOTEBOOK_BYTES // (1024 * 1024)} MiB")
    try:
        notebook = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise NotStampable("it is not a notebook (not JSON)") from None
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list) \
            or notebook.get("nbformat") != 4:
        raise NotStampable("it is not an nbformat 4 notebook")
    cell: dict[str, object] = {
        "cell_type": "markdown",
        "metadata": {"enclave_copy": {"id": mark.copy_id, "code": mark.code}},
        "source": [f"**{mark.one_line}**"],
    }
    if any(isinstance(c, dict) and "id" in c for c in notebook["cells"]):
        cell["id"] = f"enclave-copy-{mark.code.lower()}"
    notebook["cells"].insert(0, cell)
    metadata = notebook.setdefault("metadata", {})
    if isinstance(metadata, dict):
        metadata["enclave_copy"] = {"id": mark.copy_id, "code": mark.code}
    return (json.dumps(notebook, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
