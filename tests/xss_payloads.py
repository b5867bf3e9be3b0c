"""A corpus of known XSS payloads (OWASP cheat sheet, PortSwigger's list, mutation-XSS
from DOMPurify bypass reports, Markdown-specific vectors, template injection).

Every payload that runs script does ``window.__pwned=1`` (or ``parent.__pwned=1`` from a
frame) or opens a dialog, so a page can be checked for a single trap and a dialog
listener. ``TEMPLATE_PROBES`` must never render as their evaluated value (49).
"""

from __future__ import annotations

import base64

JS = "window.__pwned=1"
_B64 = base64.b64encode(JS.encode()).decode()
_SVG_B64 = base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg' "
                            b"onload='alert(1)'/>").decode()
_HTML_B64 = base64.b64encode(b"<script>alert(1)</script>").decode()

SCRIPT_TAGS = [
    f"<script>{JS}</script>",
    "<script>alert(1)</script>",
    f"<SCRIPT>{JS}</SCRIPT>",
    f"<script src=data:text/javascript,{JS}></script>",
    f"<script/x>{JS}</script>",
    f"<script >{JS}</script >",
    f'"><script>{JS}</script>',
    f"'><script>{JS}</script>",
    f"</title><script>{JS}</script>",
    f"</textarea><script>{JS}</script>",
    f"</style><script>{JS}</script>",
    f"</script><script>{JS}</script>",
    f"<scr<script>ipt>{JS}</scr</script>ipt>",
    f"<<script>script>{JS}<</script>/script>",
    f'<script type="module">{JS}</script>',
    f"<script>eval(atob('{_B64}'))</script>",
    f"<script>setTimeout('{JS}')</script>",
    f"<script>document.write('<img src=x onerror={JS}>')</script>",
    f"<script src=\"data:,{JS}\"></script>",
]

EVENT_HANDLERS = [
    f"<img src=x onerror={JS}>",
    f'<img src=x onerror="{JS}">',
    "<img src=x onerror='alert(1)'>",
    f"<img/src=x/onerror={JS}>",
    f"<IMG SRC=x OnErRoR={JS}>",
    f"<img src onerror={JS}>",
    '<img src="x" onerror="&#119;indow.__pwned=1">',
    "<img src=x onerror=window&#46;__pwned=1>",
    f"<svg onload={JS}>",
    f"<svg/onload={JS}>",
    f"<body onload={JS}>",
    f"<input autofocus onfocus={JS}>",
    f"<select autofocus onfocus={JS}></select>",
    f"<textarea autofocus onfocus={JS}></textarea>",
    f"<keygen autofocus onfocus={JS}>",
    f"<details open ontoggle={JS}>",
    f"<video><source onerror={JS}></video>",
    f"<audio src=x onerror={JS}>",
    f"<video src=x onerror={JS}>",
    f"<marquee onstart={JS}>x</marquee>",
    f"<div onmouseover={JS}>hover</div>",
    f"<iframe onload={JS}></iframe>",
    f"<object data=x onerror={JS}></object>",
    f"<body onpageshow={JS}>",
    f"<style onload={JS}></style>",
    f"<link rel=stylesheet href=x onerror={JS}>",
    f"<image src=x onerror={JS}>",
    f"<x onclick={JS}>click</x>",
    f"<input type=image src=x onerror={JS}>",
    f"<svg><animate onbegin={JS} attributeName=x dur=1s>",
    f"<svg><set onbegin={JS} attributeName=x to=1>",
    "<img src=x:alert(1) onerror=eval(src)>",
    "<img src=x onerror=window['__pw'+'ned']=1>",
    "<img src=x onerror=\\u0061lert(1)>",
    f"<img src=1 onerror=import('data:text/javascript,{JS}')>",
    f"<input onblur={JS} autofocus><input autofocus>",
    f"<a id=x tabindex=1 onfocusin={JS}></a>",
    f"<xss id=x tabindex=1 onfocus={JS} autofocus></xss>",
    f"<div popover id=p onbeforetoggle={JS}>x</div>",
    f"<frameset onload={JS}>",
    f"<body onhashchange={JS}>",
    f"<svg><discard onbegin={JS}>",
]

ATTRIBUTE_BREAKOUTS = [
    f'" onmouseover="{JS}',
    f"' onfocus='{JS}' autofocus='",
    f'" autofocus onfocus="{JS}',
    f"` onerror={JS} `",
    f'"><img src=x onerror={JS}>',
    f"'><img src=x onerror={JS}>",
    f'<a href="x"onmouseover="{JS}">x</a>',
    f'\\";{JS};//',
    "'-alert(1)-'",
    f'{{"a":"</script><script>{JS}</script>"}}',
]

JAVASCRIPT_URLS = [
    f"[click](javascript:{JS})",
    f"[click](JaVaScRiPt:{JS})",
    f"[click](javascript&#58;{JS})",
    f"[click]( javascript:{JS})",
    f'[click](javascript:{JS} "title")',
    f"[click](<javascript:{JS}>)",
    "[click](javascript://%0aalert(1))",
    f"<javascript:{JS}>",
    f"![img](javascript:{JS})",
    f"[ref]\n\n[ref]: javascript:{JS}",
    f'<a href="javascript:{JS}">x</a>',
    f'<a href="jav&#x09;ascript:{JS}">x</a>',
    '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;'
    'window.__pwned=1">x</a>',
    f'<a href=" javascript:{JS}">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<iframe src="javascript:parent.__pwned=1"></iframe>',
    f'<embed src="javascript:{JS}">',
    f'<form action="javascript:{JS}"><input type=submit></form>',
    f'<form><button formaction=javascript:{JS}>x</button></form>',
    f'<math><a xlink:href="javascript:{JS}">x</a></math>',
    f'<svg><a xlink:href="javascript:{JS}"><text x=20 y=20>x</text></a></svg>',
    f'<base href="javascript:{JS}//">',
    f'<meta http-equiv="refresh" content="0;url=javascript:{JS}">',
    f'<isindex action=javascript:{JS} type=image>',
    f'<object type="text/html" data="javascript:{JS}"></object>',
    f'<form id=f></form><button form=f formaction=javascript:{JS}>x</button>',
]

DATA_URLS = [
    f'<a href="data:text/html,<script>{JS}</script>">x</a>',
    f"[x](data:text/html;base64,{_HTML_B64})",
    "[x](data:text/html,<script>alert(1)</script>)",
    '<iframe src="data:text/html,<script>parent.__pwned=1</script>"></iframe>',
    '<object data="data:text/html,<script>parent.__pwned=1</script>"></object>',
    f'<embed src="data:image/svg+xml;base64,{_SVG_B64}">',
    f'<img src="data:image/svg+xml;base64,{_SVG_B64}">',
    f"![x](data:image/svg+xml;base64,{_SVG_B64})",
]

SVG = [
    f"<svg><script>{JS}</script></svg>",
    f'<svg><script href="data:,{JS}"/></svg>',
    '<svg><foreignObject><iframe srcdoc="<script>parent.__pwned=1</script>">'
    "</iframe></foreignObject></svg>",
    f"<svg><style><img src=x onerror={JS}></style></svg>",
    f"<svg><title><![CDATA[</title><script>{JS}</script>]]></title></svg>",
    f'<svg><use href="data:image/svg+xml;base64,{_SVG_B64}#x"/></svg>',
    f"<svg><image href=x onerror={JS} /></svg>",
]

MUTATION_XSS = [
    f'<noscript><p title="</noscript><img src=x onerror={JS}>">',
    f"<math><mtext><table><mglyph><style><img src=x onerror={JS}>",
    f'<svg></p><style><a id="</style><img src=1 onerror={JS}>">',
    f"<form><math><mtext></form><form><mglyph><style></math><img src onerror={JS}>",
    f"<math><mi><table><mi><style><img src=x onerror={JS}>",
    f'<svg><p><style><a title="</style><img src=x onerror={JS}>">',
    f'<a title="a<!--"><img src=x onerror={JS}>-->">',
    f"<!--><img src=x onerror={JS}>-->",
    f"<!-- --!><img src=x onerror={JS}> -->",
    f'<xmp><p title="</xmp><img src=x onerror={JS}>">',
    f"<listing><img src=x onerror={JS}></listing>",
    f"<template><img src=x onerror={JS}></template>",
    f"<select><template><style><img src=x onerror={JS}>",
    f"<table><td><style><img src=x onerror={JS}>",
    f'<noembed><img title="</noembed><img src=x onerror={JS}>">',
    f'<noframes><p title="</noframes><img src=x onerror={JS}>">',
    f'<iframe><img title="</iframe><img src=x onerror={JS}>">',
    f'<textarea><img title="</textarea><img src=x onerror={JS}>">',
    f'<title><img title="</title><img src=x onerror={JS}>">',
    f'<style><img title="</style><img src=x onerror={JS}>">',
    f"<plaintext><img src=x onerror={JS}>",
]

BROKEN_MARKUP = [
    f"<img src=x onerror={JS} ",
    f'<img src="x" onerror="{JS}"',
    f"<<img src=x onerror={JS}>>",
    f"<img src=`x` onerror={JS}>",
    f'<img """><script>{JS}</script>">',
    f'<a href="x" <img src=x onerror={JS}>>',
    f"<div <img src=x onerror={JS}>>",
    f"</p><img src=x onerror={JS}><p>",
    f"<img src=x onerror={JS}//",
    f"<img\x0csrc=x\x0conerror={JS}>",
    f"<img\tsrc=x\tonerror={JS}>",
    f"<img\nsrc=x\nonerror={JS}>",
    f"</script>\u2028<script>{JS}</script>",
    f"\uff1cscript\uff1e{JS}\uff1c/script\uff1e",
]

CSS = [
    f'<div style="width:expression({JS})">x</div>',
    f'<div style="background:url(javascript:{JS})">x</div>',
    f"<style>@import 'javascript:{JS}';</style>",
    f'<style>body{{background:url("javascript:{JS}")}}</style>',
    f'<link rel=stylesheet href="javascript:{JS}">',
    '<div style="behavior:url(x.htc)">x</div>',
    f"<style>*{{x:expression({JS})}}</style>",
]

SRCDOC = [
    '<iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>',
    '<iframe srcdoc="&lt;img src=x onerror=parent.__pwned=1&gt;"></iframe>',
    f'<iframe src="/findings/" onload="{JS}"></iframe>',
]

ENCODED = [
    f"&lt;script&gt;{JS}&lt;/script&gt;",
    f"&#60;script&#62;{JS}&#60;/script&#62;",
    f"%3Cscript%3E{JS}%3C/script%3E",
    f"\\x3cscript\\x3e{JS}\\x3c/script\\x3e",
    f"</script><svg onload={JS}>",
]

MARKDOWN = [
    f'![x](x" onerror="{JS})',
    f"```html\n<script>{JS}</script>\n```",
    f"`<img src=x onerror={JS}>`",
    f"> <script>{JS}</script>",
    f"<details><summary>x</summary><img src=x onerror={JS}></details>",
    f'<a href="https://example.org" target=_blank onclick={JS}>x</a>',
    f"| a | b |\n|---|---|\n| <img src=x onerror={JS}> | x |",
    f"* [x](javascript:{JS})\n* <script>{JS}</script>",
    '<META HTTP-EQUIV="Set-Cookie" Content="pwned=1">',
    '<base href="//evil.example/">',
]

# Rich writing: math (LaTeX to MathML), highlighted code, figures, footnotes, task lists,
# heading anchors. Block payloads start with a newline, so that the marker word put before
# each payload stays a paragraph of its own and the block still opens.
MATH = [
    f"$\\text{{<script>{JS}</script>}}$",
    f"$$\\href{{javascript:{JS}}}{{click}}$$",
    f"$\\style{{background:url(javascript:{JS})}}{{x}}$",
    f"\n\\begin{{align}}\\text{{<img src=x onerror={JS}>}} &= 1\\end{{align}}",
    f"$\\mathrm{{</math><img src=x onerror={JS}>}}$",
    f'$\\color{{red" onmouseover="{JS}}}{{x}}$',
    f"$\\frac{{<svg onload={JS}>}}{{$",
    "\n$$\n\\operatorname{<iframe srcdoc=<script>parent.__pwned=1</script>>}\n$$",
]

CODE = [
    f'\n```"><img src=x onerror={JS}>\nx\n```',
    f"\n```javascript\n</code></pre><script>{JS}</script>\n```",
    '\n~~~html\n<iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>\n~~~',
]

FIGURES = [
    f'![x" onerror="{JS}](attachment:fig.png)',
    f"![<img src=x onerror={JS}>](attachment:fig.png)",
    f"![x](<attachment:\"><script>{JS}</script>>)",
    f"![x](attachment:javascript:{JS})",
    f"![x](attachment:fig.png#\" onload=\"{JS})",
    f"Note[^x]\n\n[^x]: <script>{JS}</script>",
    f"\n- [x] <img src=x onerror={JS}>",
    f"\n# <script>{JS}</script> heading",
]

TEMPLATE_PROBES = [
    "{{7*7}}",
    "${7*7}",
    "#{7*7}",
    "{{constructor.constructor('window.__pwned=1')()}}",
    "<%= 7*7 %>",
    "{{config}}",
    "[[7*7]]",
    "{% raw %}{{7*7}}{% endraw %}",
]

PAYLOADS: list[str] = [
    *SCRIPT_TAGS, *EVENT_HANDLERS, *ATTRIBUTE_BREAKOUTS, *JAVASCRIPT_URLS, *DATA_URLS,
    *SVG, *MUTATION_XSS, *BROKEN_MARKUP, *CSS, *SRCDOC, *ENCODED, *MARKDOWN,
    *MATH, *CODE, *FIGURES, *TEMPLATE_PROBES,
]

assert len(PAYLOADS) >= 100, len(PAYLOADS)
assert len(set(PAYLOADS)) == len(PAYLOADS), "duplicate payloads"
assert not any("\x00" in p for p in PAYLOADS), "NUL is refused before rendering"


def marked(i: int) -> str:
    """A payload with a unique word before it, to count which payloads a page shows."""
    return f"xssmark{i:03d} {PAYLOADS[i]}"


def marker(i: int) -> str:
    return f"xssmark{i:03d}"
