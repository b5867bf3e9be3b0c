"""A world of organizations, members and findings at every level, shared by the
findings, search and notification tests, plus request isolation for test clients."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask, g
from flask.testing import FlaskClient

from app import access
from app.auth.models import User
from app.db import db
from app.findings import service
from app.findings.models import Category, Finding, Reply
from app.orgs.models import Organization
from tests.factories import make_org, make_user

FINDING_ID_RE = re.compile(r'data-finding="(\d+)"')


class IsolatedClient(FlaskClient):
    """Each request starts like a production request: nothing cached in ``g`` (the
    signed-in user) or in the database session (access facts cached on users)."""

    @staticmethod
    def _reset() -> None:
        vars(g).clear()
        db.rollback()
        for obj in list(db.identity_map.values()):
            access.forget(obj)

    def open(self, *args: Any, **kwargs: Any) -> Any:
        self._reset()
        try:
            return super().open(*args, **kwargs)
        finally:
            self._reset()


@pytest.fixture(autouse=True)
def isolated_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Flask, "test_client_class", IsolatedClient)


def refresh(obj: Any) -> Any:
    """Re-read a row after requests changed it; drop cached access facts."""
    db.rollback()
    db.expire_all()
    for o in list(db.identity_map.values()):
        access.forget(o)
    return obj


def make_category(slug: str = "circuits", name: str | None = None) -> Category:
    category = db.query(Category).filter_by(slug=slug).one_or_none()
    if category is None:
        category = Category(slug=slug, name=name or slug.replace("-", " ").title(),
                            description=f"About {slug}.")
        db.add(category)
        db.commit()
    return category


def post(author: User, *, title: str = "A finding", body: str = "Some text.",
         level: str = "network", category: str = "circuits",
         orgs: list[str] | None = None) -> Finding:
    make_category(category)
    return service.create_finding(author, title=title, body=body, category=category,
                                  level=level, orgs=orgs)


def reply(author: User, finding: Finding, body: str) -> Reply:
    return service.add_reply(author, finding, body)


@dataclass
class World:
    orgs: dict[str, Organization]
    users: dict[str, User]
    findings: dict[str, Finding]
    replies: dict[str, Reply] = field(default_factory=dict)

    def expected(self, user: User) -> set[int]:
        """The Python form of the rule: what ``user`` may read."""
        access.forget(user)
        return {f.id for f in self.findings.values() if access.can_read(user, f)}


def build_world() -> World:
    """Findings at every postable level, open and compartmented, each with a reply.

    Every finding body says "zebrafish" plus its own key word; every reply says "quokka"
    plus the key word, so searches can hit findings and replies separately.
    """
    orgs = {
        "north": make_org("north"),
        "mer": make_org("mer", ceiling="restricted"),
        "east": make_org("east"),
        "pend": make_org("pend", status="pending"),
    }
    users = {
        "carol": make_user(orgs["north"], name="carol"),
        "nina": make_user(orgs["north"], clearance="network", name="nina",
                          ndas=["network-terms"], mfa_on=False),
        "omar": make_user(orgs["mer"], name="omar"),  # confidential, but ceiling restricted
        "rita": make_user(orgs["mer"], clearance="restricted", name="rita", mfa_on=False),
        "sam": make_user(orgs["mer"], clearance="restricted", name="sam", ndas=[]),
        "eve": make_user(orgs["east"], name="eve"),
        "pat": make_user(orgs["pend"], clearance="network", name="pat"),
        "root": make_user(orgs["north"], role="admin", name="root"),
    }
    make_category("circuits")
    make_category("steering")
    c = users["carol"]
    findings = {
        "net": post(c, title="Open network note", body="zebrafish alpha", level="network"),
        "res": post(c, title="Restricted note", body="zebrafish bravo", level="restricted",
                    category="steering"),
        "res_north": post(c, title="North-only restricted", body="zebrafish charlie",
                          level="restricted", orgs=["north"]),
        "conf_north": post(c, title="North confidential", body="zebrafish delta",
                           level="confidential"),
        "conf_east": post(c, title="North and east confidential", body="zebrafish echo",
                          level="confidential", orgs=["east"]),
        "res_mer": post(users["omar"], title="Meridian restricted", body="zebrafish foxtrot",
                        level="restricted", orgs=["north"]),
    }
    world = World(orgs, users, findings)
    words = {"net": "alpha", "res": "bravo", "res_north": "charlie", "conf_north": "delta",
             "conf_east": "echo", "res_mer": "foxtrot"}
    for key, finding in findings.items():
        world.replies[key] = reply(users["carol"], finding, f"quokka {words[key]}")
    return world


def finding_ids(page_html: str) -> set[int]:
    return {int(i) for i in FINDING_ID_RE.findall(page_html)}


def page_text(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


class _MainCollector(HTMLParser):
    """Collects every tag (with attributes) inside <main>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "main":
            self.depth += 1
        elif self.depth:
            self.tags.append((tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag == "main" and self.depth:
            self.depth -= 1


def main_tags(page_html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    parser = _MainCollector()
    parser.feed(page_html)
    return parser.tags


def assert_inert(page_html: str) -> None:
    """No inline or foreign script, no event handler, no javascript:/data: URL (but data:
    PNG/JPEG/GIF/WebP pictures, as notebooks' outputs) and no inline style in <main>;
    MathML only with its own elements (the renderer's math), never SVG."""
    for tag, attrs in main_tags(page_html):
        assert tag not in {"iframe", "object", "embed", "style", "svg", "base", "meta",
                           "mglyph", "malignmark", "annotation-xml", "semantics"}, tag
        values = dict(attrs)
        if tag == "script":  # only our own files (feature sections such as uploads bring one)
            assert (values.get("src") or "").startswith("/static/"), attrs
        if tag == "link":  # only our own stylesheets
            assert values.get("rel") == "stylesheet", attrs
            assert (values.get("href") or "").startswith("/static/"), attrs
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name, value)
            assert name != "style", (tag, name, value)
            if name in {"href", "src", "action", "formaction", "xlink:href"} and value:
                cleaned = re.sub(r"[\s\x00-\x1f]", "", html.unescape(value)).lower()
                if tag == "img" and name == "src" and re.match(
                        r"data:image/(png|jpeg|gif|webp);base64,[a-z0-9+/=]*$", cleaned):
                    continue
                assert not cleaned.startswith(("javascript:", "data:", "vbscript:")), \
                    (tag, name, value)
