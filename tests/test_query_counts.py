"""The number of SQL statements behind each list and finding page does not grow with
the number of findings, replies, attachments, organizations, reviews or notifications
on the page (no N+1 queries).

Each test builds a small world, counts the statements of every page, grows the world
tenfold (more findings, each in a larger compartment of more organizations, by more
authors; more replies, attachments, comments, reviews, flags, notifications and public
items) and counts again: the counts must be equal.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from app.attachments import service as attachments
from app.auth.models import User
from app.findings.models import Finding
from app.notifications import service as notify
from app.orgs.models import Organization
from app.review import flags
from app.review import service as review
from app.review.pins import current as seen_of
from tests.factories import login, make_org, make_user
from tests.findings_world import isolated_clients, make_category, post, reply  # noqa: F401
from tests.review_world import scores

SMALL, LARGE = 3, 30
LEVELS = ("network", "restricted", "confidential")


@contextmanager
def counted(app: Flask) -> Iterator[list[str]]:
    """Every statement sent to the database while the block runs."""
    statements: list[str] = []
    engine = app.extensions["enclave.engine"]

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


def count(app: Flask, client: FlaskClient, url: str, headers: dict[str, str] | None = None
          ) -> int:
    with counted(app) as statements:
        response = client.get(url, headers=headers)
    assert response.status_code == 200, (url, response.status_code)
    return len(statements)


# ------------------------------------------------------------------ the world


@dataclass
class World:
    home: Organization  # the reader's and the reviewer's organization
    lab: Organization  # the big finding's organization
    reader: User  # cleared for everything, 2FA on, every NDA
    reviewer: User
    admin: User
    author: User
    big: Finding  # grows replies and attachments
    request: Any  # grows reviews and comments
    orgs: list[Organization] = field(default_factory=list)
    people: list[User] = field(default_factory=list)  # one per extra organization
    released: list[Any] = field(default_factory=list)


def build() -> World:
    home, lab = make_org("home"), make_org("lab")
    admin_org = make_org("hq")
    make_category("circuits")
    reader = make_user(home, name="reader")
    reviewer = make_user(home, name="reviewer", role="reviewer")
    author = make_user(lab, name="author")
    big = post(author, title="The big one", body="zebrafish big", level="network")
    attach_file(author, big, "first.txt")
    request = review.create_publication(author, big.id, public_title="Public big one",
                                        public_body="A general remark.")
    notify.watch_finding(reader, big)
    notify.watch_category(reader, make_category("circuits"))
    return World(home=home, lab=lab, reader=reader, reviewer=reviewer,
                 admin=make_user(admin_org, name="admin", role="admin"),
                 author=author, big=big, request=request)


def attach_file(user: User, finding: Finding, name: str) -> Any:
    data = f"contents of {name}\n".encode()
    return attachments.upload(user, finding.id, filename=name, stream=io.BytesIO(data),
                              content_length=len(data), content_type="text/plain")


def grow(w: World, total: int) -> None:
    """Bring every collection of the world to ``total`` items."""
    with notify.suppress_email():
        _grow(w, total)


def _grow(w: World, total: int) -> None:
    while len(w.orgs) < total:
        n = len(w.orgs)
        org = make_org(f"grow{n}")
        w.orgs.append(org)
        w.people.append(make_user(org, name=f"person{n}", role="reviewer"))
    compartment = [w.home.slug, w.admin.org.slug] + [o.slug for o in w.orgs]
    for n in range(len(w.released), total):
        person = w.people[n]
        level = LEVELS[n % len(LEVELS)]
        # a finding the reader sees on every list, in a compartment of every organization
        finding = post(person, title=f"Finding {n}", body=f"zebrafish number {n}",
                       level=level, orgs=compartment_without(compartment, person))
        file = attach_file(person, finding, f"data{n}.csv")
        # the big finding: one more reply and one more attachment, by someone else each time
        reply(person, w.big, f"quokka reply {n}")
        attach_file(person, w.big, f"extra{n}.txt")
        # the big request: one more comment and one more review
        review.add_comment(person, w.request, f"Comment {n}")
        review.add_review(person, w.request, seen=seen_of(w.request),
                          decision="changes", risk="low",
                          scores=scores(), comment=f"Change {n}")
        # the public index: one more released item with a file
        released = review.create_publication(person, finding.id, public_title=f"Public {n}",
                                             public_body="Released text.",
                                             attachments=[file.id])
        for approver in (w.reviewer, w.people[(n + 1) % len(w.people)]):
            if approver.org_id != person.org_id:
                review.add_review(approver, released, seen=seen_of(released),
                                  decision="approve", risk="low",
                                  scores=scores(), comment="Fine.")
        review.release(w.admin, released, seen=seen_of(released))
        w.released.append(released)
        pending = post(person, title=f"Pending {n}", body=f"zebrafish pending {n}",
                       level="restricted", orgs=compartment_without(compartment, person))
        # review work waiting for the reviewer: a request and a flag
        review.create_publication(person, pending.id, public_title=f"Pending public {n}",
                                  public_body="Waiting.")
        flags.create_flag(w.people[(n + 1) % len(w.people)], pending.id,
                          reason=f"Concern {n}", suggested_level="restricted")


def compartment_without(slugs: list[str], person: User) -> list[str]:
    return [s for s in slugs if s != person.org.slug]


def pages(w: World, search_term: str = "zebrafish") -> dict[str, str]:
    return {
        "latest": "/findings/",
        "category": "/findings/c/circuits",
        "level": "/findings/level/restricted",
        "search": f"/findings/search?q={search_term}",
        "search replies": "/findings/search?q=quokka",
        "finding": f"/findings/{w.big.id}",
        "notifications": "/notifications/",
        "home": "/home",
    }


def measure(app: Flask, client: FlaskClient, urls: dict[str, str],
            headers: dict[str, str] | None = None) -> dict[str, int]:
    for url in urls.values():  # warm up: first-use work is not per-item work
        count(app, client, url, headers)
    return {name: count(app, client, url, headers) for name, url in urls.items()}


# ------------------------------------------------------------------ the test


def test_statement_counts_do_not_grow_with_the_page(app, api_token):
    """One world (building it is the slow part), every page, as the people who see it."""
    w = build()
    grow(w, SMALL)
    clients = {who: app.test_client() for who in ("reader", "reviewer", "author", "public")}
    login(clients["reader"], w.reader)
    login(clients["reviewer"], w.reviewer)
    login(clients["author"], w.author)
    reader_api, reviewer_api = api_token(w.reader), api_token(w.reviewer)
    plan: list[tuple[str, dict[str, str], dict[str, str] | None]] = [
        ("reader", pages(w), None),
        ("reviewer", {"queue": "/review/", "request": f"/review/requests/{w.request.id}",
                      "mine": "/review/mine"}, None),
        ("author", {"request": f"/review/requests/{w.request.id}", "mine": "/review/mine",
                    "finding": f"/findings/{w.big.id}"}, None),
        ("public", {"index": "/public/", "item": f"/public/{w.released[0].public_id}",
                    "feed": "/public/feed.atom", "api": "/api/v1/public/findings"}, None),
        ("public", {"api list": "/api/v1/findings?per_page=100",
                    "api get": f"/api/v1/findings/{w.big.id}",
                    "api attachments": f"/api/v1/findings/{w.big.id}/attachments",
                    "api notifications": "/api/v1/notifications?per_page=100"}, reader_api),
        ("public", {"api queue": "/api/v1/review/queue?per_page=100",
                    "api request": f"/api/v1/review/requests/{w.request.id}"}, reviewer_api),
    ]

    def measure_all() -> dict[str, int]:
        counts: dict[str, int] = {}
        for who, urls, headers in plan:
            for name, number in measure(app, clients[who], urls, headers).items():
                counts[f"{who}: {name}"] = number
        return counts

    small = measure_all()
    grow(w, LARGE)
    large = measure_all()
    assert large == small
