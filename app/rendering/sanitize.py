"""The sanitizer's allow-list (bleach): exactly the elements and attributes the renderer
produces, each attribute with the values it may take.

Raw HTML in Markdown is escaped by markdown-it ("js-default"), so what reaches bleach is
markup our renderer and its plugins made, including latex2mathml's MathML (whose text and
attribute values come from the author). bleach is the net under all of it: anything not
listed here is dropped, every URL attribute is checked against the allowed protocols, and
no ``style`` or event attribute survives (the Content-Security-Policy forbids inline
style anyway).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache, partial

import bleach
from bleach.linkifier import LinkifyFilter

from app.rendering.code import TOKEN_CLASSES

HTML_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "i", "kbd", "li", "ol", "p", "pre", "s", "strong", "sub", "sup",
    "table", "tbody", "td", "th", "thead", "tr", "ul",
    # rich content: highlighted code, math wrappers, footnotes, task lists, figures
    "span", "div", "section", "input", "figure", "figcaption", "img",
})
#: MathML Core elements latex2mathml emits (plus menclose, which it uses for \cancel etc.)
MATHML_TAGS = frozenset({
    "math", "mi", "mn", "mo", "ms", "mspace", "mtext", "mrow", "mfrac", "msqrt", "mroot",
    "mstyle", "merror", "mpadded", "mphantom", "msub", "msup", "msubsup", "munder",
    "mover", "munderover", "mtable", "mtr", "mtd", "menclose",
})
ALLOWED_TAGS = HTML_TAGS | MATHML_TAGS
ALLOWED_PROTOCOLS = frozenset({"http", "https", "mailto"})

#: MathML presentation attributes (no href, no style, no xlink, no event handlers)
MATHML_ATTRIBUTES = frozenset({
    "display", "displaystyle", "scriptlevel", "mathvariant", "mathsize", "mathcolor",
    "mathbackground", "stretchy", "fence", "separator", "form", "lspace", "rspace",
    "minsize", "maxsize", "movablelimits", "largeop", "symmetric", "accent", "accentunder",
    "linethickness", "width", "height", "depth", "voffset", "columnalign", "columnspacing",
    "rowspacing", "columnlines", "rowlines", "frame", "notation", "linebreak", "columnspan",
    "rowspan",
})
#: values of MathML attributes: lengths, keywords, colour names and #hex colours
_MATHML_VALUE = re.compile(r"[A-Za-z0-9 .#%+-]{0,64}")

_CLASSES: dict[str, frozenset[str]] = {
    "a": frozenset({"header-anchor", "footnote-backref"}),
    "code": frozenset({"math-error"}),
    "div": frozenset({"math-block"}),
    "figure": frozenset({"figure"}),
    "hr": frozenset({"footnotes-sep"}),
    "input": frozenset({"task-list-item-checkbox"}),
    "li": frozenset({"task-list-item", "footnote-item"}),
    "ol": frozenset({"footnotes-list"}),
    "pre": frozenset({"highlight"}),
    "section": frozenset({"footnotes"}),
    "span": TOKEN_CLASSES | {"math-inline"},
    "sup": frozenset({"footnote-ref"}),
    "td": frozenset({"align-left", "align-right", "align-center"}),
    "th": frozenset({"align-left", "align-right", "align-center"}),
    "ul": frozenset({"contains-task-list"}),
}
_IDS: dict[str, re.Pattern[str]] = {
    # heading anchors carry a prefix so they never collide with the page's own ids
    **{f"h{n}": re.compile(r"h-[a-z0-9_-]{0,100}") for n in range(1, 7)},
    "li": re.compile(r"fn-[0-9a-f]{8}-[0-9]{1,4}"),
    "a": re.compile(r"fnref-[0-9a-f]{8}-[0-9]{1,4}(:[0-9]{1,4})?"),
}
_LANGUAGE_CLASS = re.compile(r"language-[a-z0-9_+#.-]{1,40}")
_FIGURE_REF = re.compile(r"[^\x00-\x1f\x7f]{1,300}")


def allowed_attribute(tag: str, name: str, value: str) -> bool:
    """bleach's attribute filter: may ``tag`` keep ``name="value"``?"""
    if tag in MATHML_TAGS:
        return name in MATHML_ATTRIBUTES and bool(_MATHML_VALUE.fullmatch(value))
    if name == "class":
        if tag == "code" and _LANGUAGE_CLASS.fullmatch(value):
            return True
        allowed = _CLASSES.get(tag, frozenset())
        return bool(value) and all(c in allowed for c in value.split())
    if name == "id":
        pattern = _IDS.get(tag)
        return pattern is not None and bool(pattern.fullmatch(value))
    rule = _OTHER.get(tag, {}).get(name)
    return rule is not None and rule(value)


def _any(_value: str) -> bool:
    return True


def _is(*choices: str) -> Callable[[str], bool]:
    return lambda value: value in choices


_OTHER: dict[str, dict[str, Callable[[str], bool]]] = {
    "a": {"href": _any, "title": _any, "rel": _any},
    "abbr": {"title": _any},
    "ol": {"start": lambda v: v.isdigit() and len(v) < 10},
    "input": {"type": _is("checkbox"), "disabled": _any, "checked": _any},
    # figures: no src in stored HTML; the page adds it for the finding's own attachments
    "img": {"alt": _any, "data-attachment": lambda v: bool(_FIGURE_REF.fullmatch(v))},
}


def _link_rel(attrs: dict, new: bool = False) -> dict:  # type: ignore[type-arg]
    href_key = (None, "href")
    href = attrs.get(href_key, "")
    if href.startswith(("http:", "https:", "mailto:")) or href.startswith("//"):
        attrs[(None, "rel")] = "nofollow noopener noreferrer"
    return attrs


@lru_cache(maxsize=1)
def cleaner() -> bleach.Cleaner:
    linkify = partial(LinkifyFilter, callbacks=[_link_rel], skip_tags=["pre", "code", "math"],
                      parse_email=False)
    return bleach.Cleaner(tags=ALLOWED_TAGS, attributes=allowed_attribute,
                          protocols=ALLOWED_PROTOCOLS, strip=True, strip_comments=True,
                          filters=[linkify])
