"""LaTeX to MathML on the server (latex2mathml), for ``$…$``, ``$$…$$`` and amsmath
environments. Browsers render MathML Core natively, so pages need no script.

latex2mathml builds an XML tree and then *unescapes* its serialization (to keep its own
character references such as ``&#x02211;``), which would let ``\\text{<b>}`` through as
markup. We serialize the tree ourselves, escaped, and restore only numeric character
references; the sanitizer (``app.rendering.sanitize``) then keeps exactly the MathML
elements and attributes listed there. Anything latex2mathml cannot convert is shown as
its source in a ``<code class="math-error">``: bad math never breaks a page.
"""

from __future__ import annotations

import re
from html import escape
from xml.etree.ElementTree import tostring

from latex2mathml.converter import convert_to_element

#: longer expressions are shown as source (the converter is recursive and unbounded)
MAX_MATH_CHARS = 4000
_CHAR_REF = re.compile(r"&amp;(#x[0-9A-Fa-f]{1,6};|#[0-9]{1,7};)")


def latex_to_mathml(latex: str, *, display: bool) -> str:
    """MathML for ``latex`` (unsanitized: the caller's sanitizer filters it), or the
    escaped source marked as an error when it cannot be converted."""
    source = latex.strip()
    if not source or len(source) > MAX_MATH_CHARS:
        return math_error(latex, display=display)
    try:
        element = convert_to_element(source, display="block" if display else "inline")
        xml = tostring(element, encoding="unicode")
    except Exception:  # noqa: BLE001 - any failure of the converter shows the source
        return math_error(latex, display=display)
    return _CHAR_REF.sub(r"&\1", xml)


def math_error(latex: str, *, display: bool) -> str:
    fence = "$$" if display else "$"
    return f'<code class="math-error">{escape(fence + latex + fence)}</code>'
