"""Jupyter notebooks as a read-only page: nbconvert's HTML exporter (the "basic"
template: markup only, no script, no stylesheet), then the same kind of allow-list as
the rest of the app's writing.

Before export the notebook is reduced to what a reader can safely see: outputs keep only
plain text, HTML (sanitized), Markdown and PNG/JPEG pictures; JavaScript, widgets,
SVG, PDF and everything else are dropped, as are the widget state and cell attachments.
Markdown cells and Markdown outputs go through the app's own renderer (math, code,
escaped raw HTML), not nbconvert's. Pictures can be replaced on the way (``picture``:
the traceability layer stamps them with the reader's mark). Everything nbconvert
produces is then sanitized: only ``data:`` pictures of those types may be ``src``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import bleach

from app.rendering.code import TOKEN_CLASSES
from app.rendering.sanitize import (
    ALLOWED_PROTOCOLS,
    ALLOWED_TAGS,
    MATHML_TAGS,
    allowed_attribute,
)

MAX_CELLS = 2000
MAX_OUTPUTS = 50
#: output types a reader sees, in nbconvert's order of preference
KEPT_OUTPUTS = ("text/html", "text/markdown", "image/png", "image/jpeg", "text/plain")
PICTURES = ("image/png", "image/jpeg")
#: replaces one picture (type, base64) by another (type, base64), or drops it (None)
PictureHook = Callable[[str, str], "tuple[str, str] | None"]


class NotANotebook(ValueError):
    """The bytes are not an nbformat 4 notebook."""


_DATA_PICTURE = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]+")
_NB_CLASS = re.compile(r"[a-z0-9_-]{1,40}")
_DROP_BLOCKS = re.compile(r"<(script|style|template)\b[^>]*>.*?</\1\s*>", re.I | re.S)
NOTEBOOK_TAGS = ALLOWED_TAGS | {"caption", "tfoot", "colgroup", "col", "dl", "dt", "dd",
                                "small", "u", "mark", "q", "cite", "samp", "var", "ins"}


def _notebook_attribute(tag: str, name: str, value: str) -> bool:
    if tag == "img" and name == "src":
        return bool(_DATA_PICTURE.fullmatch(value))
    if tag == "img" and name in ("width", "height"):
        return value.isdigit() and len(value) < 6
    if name == "class" and tag in ("div", "span"):
        # nbconvert's layout classes, Pygments' token classes, ANSI colours
        return all(_NB_CLASS.fullmatch(c) for c in value.split()) and \
            (tag == "div" or all(c in TOKEN_CLASSES or c.startswith("ansi-")
                                 or c == "math-inline" for c in value.split()))
    if tag == "a" and name == "href" and \
            re.sub(r"[\s\x00-\x1f]", "", value).lower().startswith("data:"):
        return False
    if tag in ("th", "td") and name in ("colspan", "rowspan"):
        return value.isdigit() and len(value) < 4
    return allowed_attribute(tag, name, value)


@lru_cache(maxsize=1)
def _cleaner() -> bleach.Cleaner:
    return bleach.Cleaner(tags=NOTEBOOK_TAGS, attributes=_notebook_attribute,
                          protocols=ALLOWED_PROTOCOLS | {"data"}, strip=True,
                          strip_comments=True)


@lru_cache(maxsize=1)
def _html_output_cleaner() -> bleach.Cleaner:
    """For the HTML outputs (markup the notebook's author controls), before export: no
    MathML (the math our renderer makes is added later), so no foreign-content tricks
    (mutation XSS) can be built from an output; the final pass cleans everything again."""
    return bleach.Cleaner(tags=NOTEBOOK_TAGS - MATHML_TAGS, attributes=_notebook_attribute,
                          protocols=ALLOWED_PROTOCOLS | {"data"}, strip=True,
                          strip_comments=True)


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def _reduce_output(output: Any, picture: PictureHook | None) -> Any:
    from nbformat import NotebookNode

    kind = output.get("output_type")
    if kind == "stream":
        return NotebookNode(output_type="stream", name=str(output.get("name", "stdout")),
                            text=_text(output.get("text")))
    if kind == "error":
        return NotebookNode(output_type="error", ename=str(output.get("ename", "")),
                            evalue=str(output.get("evalue", "")),
                            traceback=[str(t) for t in output.get("traceback", [])][:200])
    if kind not in ("display_data", "execute_result"):
        return None
    data: dict[str, str] = {}
    bundle = output.get("data") or {}
    for mime in KEPT_OUTPUTS:
        if mime not in bundle:
            continue
        value = _text(bundle[mime])
        if mime in PICTURES:
            try:
                base64.b64decode(value, validate=False)
            except (binascii.Error, ValueError):
                continue
            replaced = picture(mime, value) if picture is not None else (mime, value)
            if replaced is None:
                continue
            data[replaced[0]] = replaced[1]
        elif mime == "text/html":
            data[mime] = _html_output_cleaner().clean(_DROP_BLOCKS.sub("", value))
        else:
            data[mime] = value
    if not data:
        return None
    node = NotebookNode(output_type=kind, data=NotebookNode(data), metadata=NotebookNode())
    if kind == "execute_result":
        node["execution_count"] = output.get("execution_count")
    return node


def _reduce(notebook: Any, picture: PictureHook | None) -> Any:
    from nbformat import NotebookNode

    cells = []
    for cell in notebook.get("cells", [])[:MAX_CELLS]:
        kind = cell.get("cell_type")
        if kind not in ("markdown", "code", "raw"):
            continue
        node = NotebookNode(cell_type=kind, source=_text(cell.get("source")),
                            metadata=NotebookNode())
        if kind == "raw":  # shown as text, never as markup
            runs = re.findall(r"`+", node.source)
            fence = "`" * max(3, 1 + max((len(r) for r in runs), default=0))
            node = NotebookNode(cell_type="markdown", metadata=NotebookNode(),
                                source=f"{fence}\n{node.source}\n{fence}")
        if kind == "code":
            node["execution_count"] = cell.get("execution_count")
            outputs = [_reduce_output(o, picture) for o in cell.get("outputs", [])[:MAX_OUTPUTS]
                       if isinstance(o, dict)]
            node["outputs"] = [o for o in outputs if o is not None]
        cells.append(node)
    language = str((notebook.get("metadata") or {}).get("language_info", {}).get("name", "")
                   or "python")
    return NotebookNode(nbformat=4, nbformat_minor=5, cells=cells,
                        metadata=NotebookNode(language_info=NotebookNode(name=language[:40])))


def _markdown(source: str, *_args: Any, **_kwargs: Any) -> str:
    from app.rendering import render_markdown

    return render_markdown(source)


def _exporter() -> Any:
    """A new exporter per notebook (an exporter keeps state between conversions)."""
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="basic", filters={"markdown2html": _markdown})


def render_notebook(data: bytes, picture: PictureHook | None = None) -> str:
    """Sanitized HTML of the notebook ``data`` (raises NotANotebook)."""
    import json
    import warnings

    try:
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("nbformat") != 4 or \
                not isinstance(raw.get("cells"), list):
            raise ValueError
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise NotANotebook("it is not an nbformat 4 notebook") from None
    notebook = _reduce(raw, picture)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "IPython3 lexer unavailable"
        body, _resources = _exporter().from_notebook_node(notebook)
    return _cleaner().clean(body)
