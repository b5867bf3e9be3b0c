"""Rendering: Markdown through markdown-it-py and bleach; hostile titles and bodies come
out inert on every page that shows them; the HTML cache follows the body."""

from __future__ import annotations

import re

import pytest

from app.findings import service
from app.notifications import service as notify
from app.rendering import render_markdown
from tests.factories import login, make_org, make_user
from tests.findings_world import assert_inert, isolated_clients, post, refresh, reply

__all__ = ["isolated_clients"]  # autouse fixture

PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)><circle/></svg>",
    '<a href="javascript:alert(1)">click</a>',
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](java\tscript:alert(1))",
    "[click](&#106;avascript:alert(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![pic](javascript:alert(1))",
    "![pic](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "<javascript:alert(1)>",
    '<iframe src="https://evil.example"></iframe>',
    '<p style="background:url(javascript:alert(1))">styled</p>',
    '<a href="https://ok.example" onclick="alert(1)">ok</a>',
    "<style>body{display:none}</style>",
    '<form action="https://evil.example"><button>go</button></form>',
    '<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>',
    '"><script>alert(1)</script>',
    "<<script>script>alert(1)<</script>/script>",
    "[x](vbscript:msgbox(1))",
]
HOSTILE_BODY = "\n\n".join(PAYLOADS)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_renderer_makes_each_payload_inert(payload):
    html = render_markdown(payload)
    assert_inert(f"<main>{html}</main>")
    assert "<script" not in html.lower()


def test_markdown_features_survive_sanitizing():
    html = render_markdown(
        "# Title\n\n**bold** _it_ `x<y`\n\n```python\nif a < b:\n    print('<b>')\n```\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n[link](https://example.org) <https://x.example>")
    assert '<h1 id="h-title">Title <a class="header-anchor" href="#h-title">#</a></h1>' in html
    assert "<strong>bold</strong>" in html
    assert "<code>x&lt;y</code>" in html
    code = html.split('<code class="language-python">', 1)[1].split("</code>", 1)[0]
    assert re.sub(r"<[^>]+>", "", code) == "if a &lt; b:\n    print('&lt;b&gt;')\n"  # its text
    assert "<table>" in html and "<td>1</td>" in html
    assert 'href="https://example.org" rel="nofollow noopener noreferrer"' in html


def test_hostile_titles_and_bodies_are_inert_on_every_page(client, app, api_token):
    title = '<script>alert("t")</script><img src=x onerror=alert(2)> "quoted" title'
    author = make_user(make_org("north"), name="carol")
    reader = make_user(make_org("east"), name="eve")
    finding = post(author, title=title, body=HOSTILE_BODY + "\n\nneedle here @eve",
                   level="restricted")
    reply(reader, finding, HOSTILE_BODY + "\n\nneedle in reply @carol")
    service.edit_finding(author, refresh(finding), body=HOSTILE_BODY + "\n\nneedle edited")
    notify.watch_finding(reader, refresh(finding))
    reply(author, refresh(finding), "ping")
    login(client, reader)
    pages = ["/findings/", "/home", f"/findings/{finding.id}", f"/findings/{finding.id}/history",
             "/findings/search?q=needle", "/notifications/", "/findings/c/circuits",
             f"/findings/{finding.id}/edit"]
    for url in pages:
        response = client.get(url)
        assert response.status_code in (200, 404), url
        assert_inert(response.text)
        assert '<script>alert("t")' not in response.text
    assert "&lt;script&gt;alert(&#34;t&#34;)&lt;/script&gt;" in client.get("/findings/").text
    api = client.get(f"/api/v1/findings/{finding.id}", headers=api_token(reader)).json
    assert_inert(f"<main>{api['body_html']}</main>")
    for r in api["replies"]:
        assert_inert(f"<main>{r['body_html']}</main>")
    hits = client.get("/api/v1/findings?q=needle", headers=api_token(reader)).json
    for hit in hits["items"]:
        assert_inert(f"<main>{hit['snippet_html']}</main>")
        assert "<script" not in hit["snippet_html"]


def test_rendered_html_is_cached_and_follows_the_body(app):
    author = make_user(make_org("north"), name="carol")
    finding = post(author, body="*first*")
    assert finding.body_html == "<p><em>first</em></p>\n"
    service.edit_finding(author, finding, title="Only the title")
    assert finding.body_html == "<p><em>first</em></p>\n"
    service.edit_finding(author, finding, body="**second**")
    assert refresh(finding).body_html == "<p><strong>second</strong></p>\n"
