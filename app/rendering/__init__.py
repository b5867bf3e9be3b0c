"""Markdown to safe HTML: markdown-it-py and its plugins render, bleach sanitizes with an
allow-list (``app.rendering.sanitize``).

What authors can write: CommonMark with tables, strikethrough, footnotes, task lists,
heading anchors, ``$…$`` / ``$$…$$`` math and amsmath environments (MathML, rendered on
the server: ``mathml.py``), fenced code highlighted by Pygments (``code.py``) and figures
from the finding's own attachments (``figures.py``). Raw HTML is escaped, never passed
through. The result is cached with each text (findings, replies, public versions), so
a page reads the stored rendering and rendering costs nothing per view.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from html import escape
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from mdit_py_plugins.amsmath import amsmath_plugin
from mdit_py_plugins.anchors import anchors_plugin
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.footnote import footnote_plugin
from mdit_py_plugins.tasklists import tasklists_plugin

from app.rendering.code import highlight_block
from app.rendering.figures import figures_plugin
from app.rendering.mathml import latex_to_mathml
from app.rendering.sanitize import cleaner

__all__ = ["render_markdown"]


def _inline_math(self: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
    return f'<span class="math-inline">{latex_to_mathml(tokens[idx].content, display=False)}' \
           f"</span>"


def _display_math(self: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
    """``$$…$$`` in a line of text: display math, kept inside the paragraph."""
    return f'<span class="math-inline">{latex_to_mathml(tokens[idx].content, display=True)}' \
           f"</span>"


def _block_math(self: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
    return f'<div class="math-block">{latex_to_mathml(tokens[idx].content, display=True)}' \
           f"</div>\n"


def _table_alignment(state: StateCore) -> None:
    """Table cells say their alignment with a class instead of an inline style."""
    for token in state.tokens:
        if token.type in ("th_open", "td_open"):
            style = str(token.attrs.pop("style", ""))
            side = style.removeprefix("text-align:")
            if side in ("left", "right", "center"):
                token.attrSet("class", f"align-{side}")


def _slug(title: str) -> str:
    from mdit_py_plugins.anchors.index import slugify

    return "h-" + slugify(title)[:90]


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # "js-default" escapes raw HTML instead of passing it through, and validates links.
    md = MarkdownIt("js-default", {"linkify": False, "typographer": False,
                                   "highlight": highlight_block})
    md.enable(["table", "strikethrough"])
    # $5 and $10 stay text: an opening $ must touch what follows it and a closing $
    # must touch what precedes it and not be followed by a digit (as in pandoc)
    dollarmath_plugin(md, allow_labels=False, allow_space=False, allow_digits=False,
                      double_inline=True)
    amsmath_plugin(md)
    md.add_render_rule("math_inline", _inline_math)
    md.add_render_rule("math_inline_double", _display_math)
    md.add_render_rule("math_block", _block_math)
    md.add_render_rule("amsmath", _block_math)
    footnote_plugin(md)
    tasklists_plugin(md)
    anchors_plugin(md, min_level=1, max_level=4, slug_func=_slug, permalink=True,
                   permalinkSymbol="#")
    figures_plugin(md)
    md.core.ruler.push("table_alignment", _table_alignment)
    return md


def render_markdown(text: str) -> str:
    """Render user Markdown; the result is safe to insert into a page as HTML."""
    text = text or ""
    # footnote ids carry a short digest of the text, so two texts on one page (a finding
    # and its replies) do not share them
    env = {"docId": hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:8]}
    try:
        html = _markdown().render(text, env)
    except RecursionError:
        html = f"<pre>{escape(text)}</pre>"
    return cleaner().clean(html)
