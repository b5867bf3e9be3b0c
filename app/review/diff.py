"""A line diff between the internal finding and the proposed public version, as data
the template renders (and escapes) itself."""

from __future__ import annotations

from app.textdiff import DiffLine, line_diff

__all__ = ["DiffLine", "as_document", "line_diff", "stats"]


def as_document(title: str, body: str) -> list[str]:
    return [f"# {title}", "", *body.splitlines()]


def stats(lines: list[DiffLine]) -> tuple[int, int]:
    return (sum(1 for d in lines if d.kind == "add"), sum(1 for d in lines if d.kind == "del"))
