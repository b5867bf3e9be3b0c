"""Rich writing: math (MathML), highlighted code, footnotes, task lists, tables, heading
anchors and figure placeholders, all through the sanitizer; hostile input in each of
them comes out inert, and bad math shows its source instead of failing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.rendering import render_markdown
from app.rendering.code import stylesheet
from app.rendering.figures import Figure, resolve
from app.rendering.sanitize import MATHML_TAGS
from tests.findings_world import assert_inert

STATIC = Path(__file__).resolve().parent.parent / "app" / "static"


def _tags(html: str) -> set[str]:
    return {t.lower() for t in re.findall(r"<([a-zA-Z][a-zA-Z0-9-]*)", html)}


# --------------------------------------------------------------------------- math


def test_inline_and_display_math_become_mathml():
    html = render_markdown(r"Euler: $e^{i\pi} + 1 = 0$." "\n\n" r"$$\frac{a}{b} < \sqrt{c}$$")
    assert '<span class="math-inline"><math display="inline">' in html
    assert "<msup><mi>e</mi>" in html
    assert '<div class="math-block"><math display="block">' in html
    assert "<mfrac>" in html and "<msqrt>" in html
    assert "&#x0003C;" in html  # "<" is an operator, as a character reference
    assert "xmlns" not in html  # not needed in HTML, not allowed


def test_amsmath_environments_render():
    html = render_markdown("\\begin{align}\na &= b \\\\\nc &= d\n\\end{align}")
    assert '<div class="math-block"><math display="block">' in html
    assert "<mtable" in html and 'columnalign="right"' in html


def test_dollars_in_prose_stay_text():
    html = render_markdown("It costs $5 and $10, or $ 3 $.")
    assert "<math" not in html and "$5 and $10" in html


@pytest.mark.parametrize("source", [r"$\frac{$", r"$\begin{x}$", r"$\sqrt[$",
                                    "$" + "{" * 3000 + "$", "$" + "x^" * 3000 + "x$"])
def test_malformed_math_shows_its_source(source):
    html = render_markdown(f"before {source} after")
    assert "before" in html and "after" in html
    assert ("<math" in html) != ('<code class="math-error">' in html)


def test_math_error_is_its_escaped_source():
    html = render_markdown(r"$\sqrt[<b>$")
    assert r'<code class="math-error">$\sqrt[&lt;b&gt;$</code>' in html


@pytest.mark.parametrize("latex", [
    r"\text{<script>alert(1)</script>}",
    r"\text{<img src=x onerror=alert(1)>}",
    r"\href{javascript:alert(1)}{x}",
    r"\style{background:url(javascript:alert(1))}{x}",
    r"\color{red;background:url(x)}{x}",
    r"\mathrm{</math><img src=x onerror=alert(1)>}",
    r"\text{&#x3C;script&#x3E;alert(1)}",
    r"\hspace{1em\" onmouseover=\"alert(1)}x",
    r"\operatorname{<svg onload=alert(1)>}",
])
def test_hostile_latex_is_inert(latex):
    for text in (f"${latex}$", f"$${latex}$$", f"\\begin{{align}}{latex}\\end{{align}}"):
        html = render_markdown(text)
        assert_inert(f"<main>{html}</main>")
        assert "<script" not in html and "<img" not in html and "<svg" not in html
        assert "href" not in html.split("<math", 1)[-1].split("</math>")[0] \
            if "<math" in html else True
        assert not re.search(r"\sstyle=", html)
        assert not _tags(html) - MATHML_TAGS - {"p", "span", "div", "code"}


# --------------------------------------------------------------------------- code


def test_fenced_code_is_highlighted_with_classes():
    html = render_markdown("```python\ndef f(x):\n    return '<b>'  # note\n```")
    assert html.startswith('<pre class="highlight"><code class="language-python">')
    assert '<span class="k">def</span>' in html
    assert '<span class="c1"># note</span>' in html
    assert "&lt;b&gt;" in html and "style=" not in html


def test_unknown_language_and_hostile_info_strings_are_plain():
    html = render_markdown("```nosuchlanguage\n<script>alert(1)</script>\n```")
    assert '<code class="language-nosuchlanguage">&lt;script&gt;' in html
    hostile = render_markdown('```"><img src=x onerror=alert(1)>\nx\n```')
    assert_inert(f"<main>{hostile}</main>")
    assert '<pre class="highlight"><code>x\n</code></pre>' in hostile


def test_highlight_stylesheet_is_static_and_current():
    css = (STATIC / "highlight.css").read_text()
    assert css == stylesheet()
    assert ".highlight .k {" in css and "pre {" not in css


# --------------------------------------------------------------------------- structure


def test_footnotes_tasks_tables_and_anchors():
    html = render_markdown(
        "# A title\n\nClaim[^1].\n\n- [ ] open\n- [x] done\n\n"
        "| left | right |\n|:--|--:|\n| 1 | 2 |\n\n[^1]: The source.\n")
    assert '<h1 id="h-a-title">' in html and 'href="#h-a-title"' in html
    ref = re.search(r'<sup class="footnote-ref"><a href="#(fn-[0-9a-f]{8}-1)" '
                    r'id="(fnref-[0-9a-f]{8}-1)">\[1\]</a></sup>', html)
    assert ref, html
    assert f'<li id="{ref.group(1)}" class="footnote-item">' in html
    assert f'href="#{ref.group(2)}" class="footnote-backref"' in html
    assert '<input class="task-list-item-checkbox" disabled type="checkbox"> open' in html
    assert '<input class="task-list-item-checkbox" checked disabled type="checkbox">' in html
    assert '<th class="align-left">left</th>' in html and '<td class="align-right">2</td>' in html
    assert "style" not in html


def test_footnote_ids_differ_between_texts():
    one = render_markdown("A[^1]\n\n[^1]: x")
    two = render_markdown("B[^1]\n\n[^1]: y")
    ids = [set(re.findall(r'id="([^"]+)"', h)) for h in (one, two)]
    assert ids[0] and not ids[0] & ids[1]


def test_ids_classes_and_inputs_cannot_be_forged():
    # raw HTML is escaped; the only ids and classes are the renderer's own
    html = render_markdown('<h1 id="csrf_token" class="flash">x</h1> <input type=text name=x>')
    assert "<h1" not in html and "<input" not in html
    html = render_markdown("# csrf_token\n\n## flash-error")
    assert 'id="h-csrf_token"' in html and 'id="h-flash-error"' in html


# --------------------------------------------------------------------------- figures


def test_attachment_images_become_placeholders_and_figures():
    html = render_markdown("![Loss *curve*](attachment:plot.png)\n\n"
                           "Inline ![tiny](<attachment:my plot.png>) here.")
    assert ('<figure class="figure"><img alt="Loss curve" data-attachment="plot.png">'
            "<figcaption>Loss curve</figcaption></figure>") in html
    assert '<p>Inline <img alt="tiny" data-attachment="my plot.png"> here.</p>' in html
    assert "src=" not in html


def test_outside_images_become_links_and_never_load():
    html = render_markdown("![pixel](https://tracker.example/p.png) "
                           "![svg](data:image/svg+xml;base64,PHN2Zz4=)")
    assert "<img" not in html
    assert '<a href="https://tracker.example/p.png" rel="nofollow noopener noreferrer">pixel' \
        in html
    assert not re.search(r"(href|src)=\"data:", html)


def test_hostile_figure_references_are_inert():
    for text in ('![x" onerror="alert(1)](attachment:1)',
                 '![x](attachment:"onerror=alert(1))',
                 "![<img src=x onerror=alert(1)>](attachment:a)",
                 "![x](<attachment:\"><script>alert(1)</script>>)",
                 "![x](attachment:javascript:alert(1))"):
        html = render_markdown(text)
        assert_inert(f"<main>{html}</main>")
        resolved = resolve(html, lambda ref: Figure(url="/attachments/abc/figure"))
        assert_inert(f"<main>{resolved}</main>")
        assert "<script" not in resolved


def test_resolve_gives_sources_or_notes():
    html = render_markdown("![A](attachment:a.png)\n\n![B](attachment:b.png)\n\n"
                           "![C](attachment:c.pdf)")
    found = {"a.png": Figure(url="/attachments/" + "a" * 32 + "/figure"),
             "c.pdf": Figure(note="not an image", link="/attachments/x")}
    out = resolve(html, found.get)
    assert ('<img class="figure-img" src="/attachments/' + "a" * 32 + '/figure" alt="A" '
            'loading="lazy" decoding="async">') in out
    assert "No file “b.png” is attached to this finding." in out
    assert '<a href="/attachments/x">C</a> (not an image)' in out
    assert resolve("<p>plain</p>", found.get) == "<p>plain</p>"
