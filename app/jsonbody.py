"""JSON request bodies with a bounded depth.

Python's ``json`` decoder recurses once per nesting level, so a body of a few thousand
``[`` raises ``RecursionError`` (not ``ValueError``): Flask's ``get_json(silent=True)``
lets it through and the request ends in a 500. The app's JSON provider turns that into
:class:`TooDeep` (a ``ValueError``, which Flask treats as a malformed body), and refuses
anything nested deeper than :data:`MAX_DEPTH` levels, measured without recursion, so no
later walk over the parsed value can recurse too deeply either.
"""

from __future__ import annotations

from typing import Any

from flask.json.provider import DefaultJSONProvider

#: No API or SCIM body needs more than a handful of levels.
MAX_DEPTH = 32


class TooDeep(ValueError):
    """The JSON body is nested more deeply than :data:`MAX_DEPTH`."""


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests lists/objects more than ``limit`` deep (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class BoundedJSONProvider(DefaultJSONProvider):
    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            value = super().loads(s, **kwargs)
        except RecursionError:
            raise TooDeep(f"nested more than {MAX_DEPTH} levels") from None
        if depth_exceeds(value):
            raise TooDeep(f"nested more than {MAX_DEPTH} levels")
        return value
