"""Markdown to safe HTML: markdown-it-py renders, bleach sanitizes with an allow-list."""

from __future__ import annotations

from functools import lru_cache, partial

import bleach
from bleach.linkifier import LinkifyFilter
from markdown_it import MarkdownIt

ALLOWED_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "i", "kbd", "li", "ol", "p", "pre", "s", "strong", "sub", "sup",
    "table", "tbody", "td", "th", "thead", "tr", "ul",
})
ALLOWED_ATTRIBUTES = {
    "a": ["href", "title", "rel"],
    "abbr": ["title"],
    "code": ["class"],
    "td": ["align"],
    "th": ["align"],
    "ol": ["start"],
}
ALLOWED_PROTOCOLS = frozenset({"http", "https", "mailto"})


def _link_rel(attrs: dict, new: bool = False) -> dict:  # type: ignore[type-arg]
    href_key = (None, "href")
    href = attrs.get(href_key, "")
    if href.startswith(("http:", "https:", "mailto:")) or href.startswith("//"):
        attrs[(None, "rel")] = "nofollow noopener noreferrer"
    return attrs


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # "js-default" escapes raw HTML instead of passing it through, and validates links.
    return MarkdownIt("js-default", {"linkify": False, "typographer": False}).enable("table")


@lru_cache(maxsize=1)
def _cleaner() -> bleach.Cleaner:
    linkify = partial(LinkifyFilter, callbacks=[_link_rel], skip_tags=["pre", "code"],
                      parse_email=False)
    return bleach.Cleaner(tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES,
                          protocols=ALLOWED_PROTOCOLS, strip=True, strip_comments=True,
                          filters=[linkify])


def render_markdown(text: str) -> str:
    """Render user Markdown; the result is safe to insert into a page as HTML."""
    return _cleaner().clean(_markdown().render(text or ""))
