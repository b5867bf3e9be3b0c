"""Figures: images written as ``![caption](attachment:ID)`` or
``![caption](attachment:file-name.png)`` (``<attachment:my plot.png>`` for names with
spaces) refer to the finding's own attachments.

Rendering (cached with the text) turns them into ``<img alt="…" data-attachment="REF">``
with no ``src``: the stored HTML names no URL and works whatever is attached later. A
paragraph holding nothing but one such image becomes a ``<figure>`` with its caption.
When a page shows the text, :func:`resolve` gives each placeholder its ``src`` (the
figure endpoint, which applies the access rule, the level's download policy and the
audit) or replaces it with a short note. Images from anywhere else become plain links:
fetching them would tell a third party who reads what, and the CSP forbids them anyway.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from html import escape, unescape
from typing import Any
from urllib.parse import unquote

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token

PREFIX = "attachment:"


def _ref(src: str) -> str | None:
    if not src.lower().startswith(PREFIX):
        return None
    ref = unquote(src[len(PREFIX):]).strip()
    return ref or None


def _lone_image(inline: Token) -> Token | None:
    kids = [t for t in inline.children or []
            if not (t.type == "text" and not t.content.strip()) and t.type != "softbreak"]
    if len(kids) == 1 and kids[0].type == "image" and _ref(str(kids[0].attrs.get("src", ""))):
        return kids[0]
    return None


def _figure_rule(state: StateCore) -> None:
    tokens = state.tokens
    for i in range(len(tokens) - 2):
        if (tokens[i].type == "paragraph_open" and tokens[i + 1].type == "inline"
                and tokens[i + 2].type == "paragraph_close"):
            image = _lone_image(tokens[i + 1])
            if image is not None:
                tokens[i].tag = tokens[i + 2].tag = "figure"
                tokens[i].attrSet("class", "figure")
                image.meta["figure"] = True


def _render_image(self: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env)
    src = str(token.attrs.get("src", ""))
    ref = _ref(src)
    if ref is None:
        # an outside image becomes a link to it, never fetched by the reader's browser
        return f'<a href="{escape(src)}">{escape(alt or src)}</a>'
    html = f'<img alt="{escape(alt)}" data-attachment="{escape(ref)}">'
    if token.meta.get("figure") and alt.strip():
        html += f"<figcaption>{escape(alt)}</figcaption>"
    return html


def figures_plugin(md: MarkdownIt) -> None:
    md.core.ruler.push("attachment_figures", _figure_rule)
    md.add_render_rule("image", _render_image)


# --------------------------------------------------------------------------- pages


@dataclass(frozen=True)
class Figure:
    """What a placeholder becomes: an image (``url``) or a note saying why not."""

    url: str | None = None
    note: str = ""
    link: str | None = None


_IMG = re.compile(r'<img\b[^>]*\bdata-attachment="([^"]*)"[^>]*>')
_ALT = re.compile(r'\balt="([^"]*)"')


def has_figures(html: str) -> bool:
    return 'data-attachment="' in html


def resolve(html: str, lookup: Callable[[str], Figure | None]) -> str:
    """``html`` (sanitized, from the cache) with each figure placeholder made an image
    through ``lookup(ref)``, or a note where it gives None or a note."""
    if not has_figures(html):
        return html

    def one(match: re.Match[str]) -> str:
        ref = unescape(match.group(1))
        alt_match = _ALT.search(match.group(0))
        alt = unescape(alt_match.group(1)) if alt_match else ""
        figure = lookup(ref)
        if figure is not None and figure.url:
            return (f'<img class="figure-img" src="{escape(figure.url)}" alt="{escape(alt)}" '
                    f'loading="lazy" decoding="async">')
        note = figure.note if figure is not None else \
            f"No file “{ref}” is attached to this finding."
        label = escape(alt or ref)
        if figure is not None and figure.link:
            label = f'<a href="{escape(figure.link)}">{label}</a>'
        return f'<span class="figure-missing">{label} ({escape(note)})</span>'

    return _IMG.sub(one, html)
