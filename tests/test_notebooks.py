# ruff: noqa: F811  (the attachment fixtures are imported, then taken as arguments)
"""Notebooks as read-only pages: nbconvert's HTML exporter, Markdown through the app's
renderer, outputs reduced to text, sanitized HTML and pictures (stamped at stamped and
view-only levels), no script of any kind; through the access rule, at the finding's
level and marking, audited."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from PIL import Image
from sqlalchemy import select

from app.audit import AuditEntry
from app.db import db
from app.rendering.notebook import NotANotebook, render_notebook
from app.traceability.models import AttachmentCopy
from tests.attachments_world import att_app, att_client, attach  # noqa: F401
from tests.factories import login, make_finding, make_org, make_user
from tests.findings_world import assert_inert
from tests.xss_payloads import PAYLOADS


def png_b64(colour=(200, 30, 30), size=(60, 40)) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


SVG = "<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'><script>alert(1)</script></svg>"


def notebook(*cells: dict, metadata: dict | None = None) -> bytes:
    return json.dumps({"nbformat": 4, "nbformat_minor": 5,
                       "metadata": metadata or {"language_info": {"name": "python"}},
                       "cells": list(cells)}).encode()


def md(source: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": source}


def code(source: str, *outputs: dict, n: int | None = 1) -> dict:
    return {"cell_type": "code", "metadata": {}, "execution_count": n, "source": source,
            "outputs": list(outputs)}


def display(data: dict) -> dict:
    return {"output_type": "display_data", "metadata": {}, "data": data}


SAMPLE = notebook(
    md("# Probing\n\nThe loss is $\\mathcal{L} = -\\log p$.\n\n- [x] trained"),
    code("import numpy as np\nprint('hello')",
         {"output_type": "stream", "name": "stdout", "text": "hello\n"},
         {"output_type": "execute_result", "execution_count": 1, "metadata": {},
          "data": {"text/plain": "   a\n0  1",
                   "text/html": "<style scoped>.dataframe{}</style>"
                                "<table class='dataframe'><tr><th>a</th></tr>"
                                "<tr><td>1</td></tr></table>"}},
         display({"image/png": png_b64(), "text/plain": "<Figure>"})),
)


def test_a_notebook_renders_cells_outputs_math_and_pictures():
    html = render_notebook(SAMPLE)
    assert '<h1 id="h-probing">' in html
    assert '<span class="math-inline"><math display="inline">' in html
    assert '<span class="k">import</span>' in html or '<span class="kn">import</span>' in html
    assert "<pre>hello\n</pre>" in html
    assert "<table><tbody><tr><th>a</th></tr>" in html and ".dataframe" not in html
    assert re.search(r'<img alt="[^"]*" src="data:image/png;base64,', html)
    assert re.search(r"In\s\[1\]:", html) and re.search(r"Out\[1\]:", html)
    assert_inert(f"<main>{html}</main>")


def test_scripts_widgets_svg_and_raw_html_never_survive():
    hostile = notebook(
        *(md(p) for p in PAYLOADS),
        code("\n".join(PAYLOADS),
             display({"application/javascript": "window.__pwned=1", "text/plain": "js"}),
             display({"image/svg+xml": SVG}),
             display({"text/markdown": "<script>alert(1)</script> **md**"}),
             display({"application/vnd.jupyter.widget-view+json": {"model_id": "x"}}),
             display({"image/png": base64.b64encode(SVG.encode()).decode()}),
             {"output_type": "error", "ename": "<script>alert(1)</script>",
              "evalue": "<img src=x onerror=alert(1)>",
              "traceback": ["\x1b[31m<script>alert(1)</script>\x1b[0m"]}),
        # at most 50 outputs a cell are shown: one cell per payload
        *(code(p, {"output_type": "stream", "name": "stdout", "text": p},
               display({"text/html": p, "text/plain": "x"})) for p in PAYLOADS),
        {"cell_type": "raw", "metadata": {}, "source": "<script>alert(1)</script>```"},
        metadata={"widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}}},
    )
    html = render_notebook(hostile)
    assert_inert(f"<main>{html}</main>")
    lowered = html.lower()
    assert "<script" not in lowered and "<svg" not in lowered and "<style" not in lowered
    assert "widget-state" not in html and '"model_id"' not in html
    assert "<strong>md</strong>" in html
    assert "<math><mtext><table>" not in html  # outputs' HTML carries no MathML


def test_not_a_notebook():
    for data in (b"{}", b"[]", b"not json", b'{"nbformat": 3, "cells": []}',
                 b"\xff\xfe", b"[" * 100000):
        with pytest.raises(NotANotebook):
            render_notebook(data)


# --------------------------------------------------------------------------- pages


@pytest.fixture
def world(att_app):
    org = make_org("northlight")
    author = make_user(org, name="alice")
    reader = make_user(org, name="nina")
    outsider = make_user(make_org("elsewhere"), name="otto", clearance="public")
    return {"org": org, "author": author, "reader": reader, "outsider": outsider}


def test_a_network_notebook_is_read_in_the_page(att_app, att_client, world):
    f = make_finding(world["author"], level="network", title="Probes")
    nb = attach(world["author"], f, SAMPLE, filename="probe.ipynb")
    txt = attach(world["author"], f, b"text\n", filename="notes.txt")
    login(att_client, world["reader"])
    finding_page = att_client.get(f"/findings/{f.id}").text
    assert f'href="/attachments/{nb.id}/view">Read it here</a>' in finding_page
    page = att_client.get(f"/attachments/{nb.id}/view")
    assert page.status_code == 200
    assert '<article class="notebook-view prose card"' in page.text
    assert "read-only view of this notebook" in page.text and "NETWORK" in page.text
    assert_inert(page.text)
    entry = db.scalar(select(AuditEntry).where(AuditEntry.action == "attachment_viewed",
                                               AuditEntry.target_id == nb.id))
    assert entry is not None and entry.actor_id == world["reader"].id
    assert db.scalar(select(AttachmentCopy)) is None  # nothing to stamp at this level
    # other files have no view page below view-only levels
    assert att_client.get(f"/attachments/{txt.id}/view").status_code == 404
    # an outsider gets exactly what a missing id gets
    other = att_app.test_client()
    login(other, world["outsider"])
    theirs = other.get(f"/attachments/{nb.id}/view")
    missing = other.get(f"/attachments/{'0' * 32}/view")
    assert theirs.status_code == missing.status_code == 404
    # the same page, but for the sign-out form's CSRF token (signed with the time)
    assert re.sub(r'value="[^"]*"', "", theirs.text) == \
        re.sub(r'value="[^"]*"', "", missing.text)


def test_a_stamped_level_notebook_is_marked_for_its_reader(att_app, att_client, world):
    secret = make_finding(world["author"], level="confidential", title="Secret probes",
                          compartment=[world["org"]])
    nb = attach(world["author"], secret, SAMPLE, filename="probe.ipynb")
    login(att_client, world["reader"])
    page = att_client.get(f"/attachments/{nb.id}/view")
    assert page.status_code == 200
    copy = db.scalar(select(AttachmentCopy).where(AttachmentCopy.attachment_id == nb.id))
    assert copy is not None and copy.kind == "view" and copy.user_id == world["reader"].id
    assert copy.code in page.text and '<p class="file-mark">' in page.text
    assert "CONFIDENTIAL" in page.text and '<div class="watermark"' in page.text
    shown = re.search(r'src="data:image/png;base64,([^"]+)"', page.text).group(1)
    picture = Image.open(io.BytesIO(base64.b64decode(shown)))
    assert picture.height > 40  # stamped: the band with the mark is below the output
    assert_inert(page.text)
