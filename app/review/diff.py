"""A line diff between the internal finding and the proposed public version, as data
the template renders (and escapes) itself."""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "add" (only in the public version), "del" (only internal), "ctx", "hunk"
    text: str


def as_document(title: str, body: str) -> list[str]:
    return [f"# {title}", "", *body.splitlines()]


def line_diff(internal: list[str], public: list[str], context: int = 3) -> list[DiffLine]:
    lines: list[DiffLine] = []
    for raw in difflib.unified_diff(internal, public, lineterm="", n=context):
        if raw.startswith(("---", "+++")):
            continue
        if raw.startswith("@@"):
            lines.append(DiffLine("hunk", raw))
        elif raw.startswith("+"):
            lines.append(DiffLine("add", raw[1:]))
        elif raw.startswith("-"):
            lines.append(DiffLine("del", raw[1:]))
        else:
            lines.append(DiffLine("ctx", raw[1:]))
    return lines


def stats(lines: list[DiffLine]) -> tuple[int, int]:
    return (sum(1 for d in lines if d.kind == "add"), sum(1 for d in lines if d.kind == "del"))
