"""A finding written the way researchers write: math (MathML), highlighted code,
footnotes, a task list, a table, a figure from its own attachments and an attached
notebook read in the page, in Chromium at
1280 and 390 px: everything renders, nothing breaks the strict CSP, the page does not
scroll sideways on a phone."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image, ImageDraw

from app.attachments import service as attachments
from app.db import db
from tests.browser.conftest import screenshot
from tests.factories import PASSWORD, make_finding, make_org, make_user

pytestmark = pytest.mark.browser

BODY = r"""## Setup

We ablate heads in layer $\ell \in \{1,\dots,L\}$ and measure the logit difference
$\Delta = \mathrm{logit}(y) - \mathrm{logit}(y')$ over the prompts[^data].

$$
\mathcal{L}(\theta) = -\frac{1}{N}\sum_{i=1}^{N} \log p_\theta\left(y_i \mid x_i\right)
  + \lambda \lVert \theta \rVert_2^2
  + \sum_{k=1}^{K} \alpha_k \, \mathrm{KL}\left(p_k \,\Vert\, q_k\right)
$$

\begin{align}
h_{\ell+1} &= h_\ell + \mathrm{Attn}(h_\ell) + \mathrm{MLP}(h_\ell) \\
\hat{y} &= \mathrm{softmax}(W_U h_L)
\end{align}

Broken math stays readable: $\frac{1}{$.

```python
def ablate(model, layer: int, head: int) -> float:
    \"\"\"Zero one head and return the logit difference.\"\"\"
    with model.hooks(zero_head(layer, head)):
        return logit_diff(model(prompts))  # averaged over the batch
```

| head | $\Delta$ | share |
|:-----|---------:|------:|
| 9.6  | 2.31     | 41 %  |
| 9.9  | 1.87     | 33 %  |

- [x] reproduce on GPT-2 small
- [ ] check on the 1B model

![Logit difference by layer](attachment:sweep.png)

[^data]: 500 prompts from the IOI template set.
"""


def _png_b64() -> str:
    img = Image.new("RGB", (480, 240), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for i in range(10):
        draw.rectangle([20 + 45 * i, 220 - 18 * i, 50 + 45 * i, 220], fill=(200, 80, 40))
    out = io.BytesIO()
    img.save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


NOTEBOOK = json.dumps({
    "nbformat": 4, "nbformat_minor": 5, "metadata": {"language_info": {"name": "python"}},
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source":
         "# Head ablations\n\nWe zero head $h$ and record $\\Delta$ for each layer."},
        {"cell_type": "code", "metadata": {}, "execution_count": 1,
         "source": "for layer, d in sweep():\n    print(f'layer {layer}: {d:.2f}')",
         "outputs": [{"output_type": "stream", "name": "stdout",
                      "text": "layer 9: 2.31\nlayer 10: 1.87\n"}]},
        {"cell_type": "code", "metadata": {}, "execution_count": 2, "source": "plot(sweep)",
         "outputs": [{"output_type": "display_data", "metadata": {},
                      "data": {"image/png": _png_b64(), "text/plain": "<Figure>"}},
                     {"output_type": "execute_result", "execution_count": 2, "metadata": {},
                      "data": {"text/plain": "table",
                               "text/html": "<table><tr><th>head</th><th>delta</th></tr>"
                                            "<tr><td>9.6</td><td>2.31</td></tr></table>"}}]},
    ]}).encode()


def _sweep_png() -> bytes:
    img = Image.new("RGB", (1600, 700), (250, 250, 247))
    draw = ImageDraw.Draw(img)
    for i in range(12):
        draw.rectangle([80 + 120 * i, 620 - 45 * i, 160 + 120 * i, 620], fill=(40, 90, 160))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def test_math_code_and_figures_render_in_chromium(browser, live_server):  # type: ignore[no-untyped-def]
    org = make_org("northlight")
    author = make_user(org, name="alice", clearance="network", mfa_on=False)
    reader = make_user(org, name="nina", clearance="network", mfa_on=False)
    finding = make_finding(author, level="network", title="Name movers, ablated",
                           body=BODY.replace('\\"', '"'))
    data = _sweep_png()
    attachments.upload(author, finding.id, filename="sweep.png", stream=io.BytesIO(data),
                       content_length=len(data), content_type="image/png")
    db.commit()

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20000)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(f"{live_server}/login")
    page.fill('input[name="email"]', reader.email)
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_url(f"{live_server}/home")

    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_server}/findings/{finding.id}")
        prose = page.locator("article.finding .prose")
        # MathML is laid out by the browser: a fraction is taller than a line of text
        assert prose.locator("math").count() >= 4
        frac = prose.locator("div.math-block mfrac").first
        assert frac.bounding_box()["height"] > 20
        assert prose.locator("code.math-error").inner_text() == r"$\frac{1}{$"
        # code colours come from the static stylesheet
        keyword = prose.locator("pre.highlight span.k").first
        assert keyword.inner_text() == "def"
        assert keyword.evaluate("e => getComputedStyle(e).color") == "rgb(0, 128, 0)"
        assert prose.locator("section.footnotes li").count() == 1
        assert prose.locator("input.task-list-item-checkbox[disabled]").count() == 2
        assert prose.locator("td.align-right").count() == 4
        figure = prose.locator("figure.figure img.figure-img")
        figure.scroll_into_view_if_needed()
        assert figure.evaluate("i => i.decode().then(() => i.naturalWidth)") == 1600
        box = figure.bounding_box()
        assert box["width"] <= min(width, 48 * 16) + 1  # width-limited rendering
        assert prose.locator("figcaption").inner_text() == "Logit difference by layer"
        # the text fits the screen: wide math, code and tables scroll inside their own box
        # (the rest of the page's fit at 390 px is the page-wide overflow test's job)
        wide = prose.evaluate("""p => [...p.querySelectorAll('*')]
            .filter(e => e.getBoundingClientRect().right > innerWidth + 1
                    && !e.parentElement.closest('.math-block, pre, table'))
            .map(e => e.tagName + '.' + e.className)""")
        assert wide == [], f"{width}px: {wide}"
        assert prose.evaluate("p => p.scrollWidth <= p.clientWidth")
        screenshot(page, f"writing-finding-{width}")
    # the attached notebook, read in the page
    nb = attachments.upload(author, finding.id, filename="probe.ipynb",
                            stream=io.BytesIO(NOTEBOOK), content_length=len(NOTEBOOK))
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_server}/findings/{finding.id}")
        page.get_by_role("link", name="Read it here").click()
        page.wait_for_url(f"{live_server}/attachments/{nb.id}/view")
        view = page.locator("article.notebook-view")
        assert view.locator(".code_cell").count() == 2
        assert view.locator("math").count() == 2
        assert view.locator("pre").filter(has_text="layer 9: 2.31").count() == 1
        out = view.locator(".output_png img")
        assert out.evaluate("i => i.decode().then(() => i.naturalWidth)") == 480
        assert view.locator("table th").first.text_content() == "head"
        assert view.evaluate("v => v.scrollWidth <= v.clientWidth")
        assert page.locator(".marking").first.inner_text() == "NETWORK"
        screenshot(page, f"writing-notebook-{width}")
    assert problems == []
    context.close()


def test_the_preview_tab_renders_on_the_server(browser, live_server):  # type: ignore[no-untyped-def]
    org = make_org("northlight")
    author = make_user(org, name="alice", clearance="network", mfa_on=False)
    finding = make_finding(author, level="network", title="Preview me", body="Body.")
    data = _sweep_png()
    attachments.upload(author, finding.id, filename="sweep.png", stream=io.BytesIO(data),
                       content_length=len(data), content_type="image/png")
    context = browser.new_context(viewport={"width": 390, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20000)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(f"{live_server}/login")
    page.fill('input[name="email"]', author.email)
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_url(f"{live_server}/home")
    page.goto(f"{live_server}/findings/{finding.id}")
    area = page.locator("form textarea[name=body]")
    area.fill("Agreed: $\\sum_i x_i^2$ holds.\n\n![Sweep](attachment:sweep.png)\n\n"
              "```python\nprint('ok')\n```")
    page.get_by_role("tab", name="Preview").click()
    pane = page.locator(".editor-preview")
    pane.locator("math").wait_for()
    assert area.is_hidden()
    assert pane.locator("img.figure-img").evaluate(
        "i => i.decode().then(() => i.naturalWidth)") == 1600
    assert pane.locator("pre.highlight span.nb").inner_text() == "print"
    screenshot(page, "writing-preview-390")
    page.get_by_role("tab", name="Write").click()
    assert area.is_visible() and pane.is_hidden()
    assert area.input_value().startswith("Agreed")  # the text is untouched
    assert problems == []
    context.close()


def test_mention_suggestions_offer_only_readers(browser, live_server):  # type: ignore[no-untyped-def]
    org = make_org("northlight")
    author = make_user(org, name="alice", clearance="network", mfa_on=False)
    make_user(org, name="nina", clearance="network", mfa_on=False)
    make_user(org, name="nick", clearance="public", mfa_on=False)  # cannot read it
    finding = make_finding(author, level="network", title="Mentions", body="Body.")
    context = browser.new_context(viewport={"width": 390, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20000)
    page.goto(f"{live_server}/login")
    page.fill('input[name="email"]', author.email)
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_url(f"{live_server}/home")
    page.goto(f"{live_server}/findings/{finding.id}")
    area = page.locator("form textarea[name=body]")
    area.click()
    area.press_sequentially("Thanks @ni", delay=30)
    options = page.locator(".mention-list [role=option]")
    options.first.wait_for()
    assert options.count() == 1 and options.first.inner_text().startswith("@nina")
    screenshot(page, "writing-mentions-390")
    area.press("Enter")
    assert area.input_value() == "Thanks @nina "
    assert page.locator(".mention-list").is_hidden()
    context.close()


def test_formatting_buttons_and_quoting_a_reply(browser, live_server):  # type: ignore[no-untyped-def]
    from app.findings import service as findings

    org = make_org("northlight")
    author = make_user(org, name="alice", clearance="network", mfa_on=False)
    reader = make_user(org, name="nina", clearance="network", mfa_on=False)
    finding = make_finding(author, level="network", title="Quotes", body="Body.")
    findings.add_reply(reader, finding, "Heads 9.6 and 9.9 move names.\n\nSecond line.")
    context = browser.new_context(viewport={"width": 390, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20000)
    page.goto(f"{live_server}/login")
    page.fill('input[name="email"]', author.email)
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_url(f"{live_server}/home")
    page.goto(f"{live_server}/findings/{finding.id}")
    area = page.locator("form textarea[name=body]")
    page.locator("article.reply").get_by_role("button", name="Quote this reply").click()
    assert area.input_value() == ("> Heads 9.6 and 9.9 move names.\n> \n> Second line.\n\n")
    area.press("End")
    area.type("Agreed")
    area.evaluate("a => a.setSelectionRange(a.value.length - 6, a.value.length)")
    page.get_by_role("button", name="Bold").click()
    assert area.input_value().endswith("**Agreed**")
    area.press("Control+End")
    page.get_by_role("button", name="Math").click()  # nothing selected: a placeholder
    assert "$x^2$" in area.input_value()
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    screenshot(page, "writing-editor-tools-390")
    context.close()
