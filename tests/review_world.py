"""A small world for review tests: the author's organization, three other trusted
organizations with a reviewer each, an admin from a fifth, and a restricted finding."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from app.attachments import service as attachments
from app.attachments.models import Attachment
from app.auth.models import User
from app.findings.models import Finding
from app.orgs.models import Organization
from app.review import service
from app.review.models import ReviewRequest
from app.review.pins import current as seen_of
from tests.factories import make_finding, make_org, make_user

INTERNAL_BODY = "Internal: layer 17 head 4 ablation recipe with exact steering vector 0xDEADBEEF."
PUBLIC_BODY = "Public: a general observation about **attention heads**, without the recipe."


@dataclass
class World:
    author_org: Organization
    org_b: Organization
    org_c: Organization
    org_d: Organization
    admin_org: Organization
    author: User
    colleague: User  # a reviewer in the author's organization
    rev_b: User
    rev_c: User
    rev_d: User
    admin: User
    reader: User  # a plain member of org_b
    finding: Finding


def build_world(level: str = "restricted") -> World:
    author_org = make_org("authorlab")
    org_b, org_c, org_d = make_org("bravo"), make_org("charlie"), make_org("delta")
    admin_org = make_org("echo")
    author = make_user(author_org, name="alice")
    world = World(
        author_org=author_org, org_b=org_b, org_c=org_c, org_d=org_d, admin_org=admin_org,
        author=author,
        colleague=make_user(author_org, name="carl", role="reviewer"),
        rev_b=make_user(org_b, name="bob", role="reviewer"),
        rev_c=make_user(org_c, name="cleo", role="reviewer"),
        rev_d=make_user(org_d, name="dan", role="reviewer"),
        admin=make_user(admin_org, name="ada", role="admin"),
        reader=make_user(org_b, name="rita"),
        finding=make_finding(author, level=level, title="Internal title: head 4 recipe",
                             body=INTERNAL_BODY),
    )
    return world


def attach(user: User, finding: Finding, data: bytes = b"public dataset\n",
           filename: str = "data.csv") -> Attachment:
    return attachments.upload(user, finding.id, filename=filename, stream=io.BytesIO(data),
                              content_length=len(data), content_type="text/csv")


def scores(value: int = 1) -> dict[str, int]:
    from app import state

    return {key: value for key in state.policy().review.rubric_keys()}


def publish_request(w: World, **overrides: Any) -> ReviewRequest:
    fields: dict[str, Any] = {"public_title": "Attention heads, in general",
                              "public_body": PUBLIC_BODY}
    fields.update(overrides)
    return service.create_publication(w.author, w.finding.id, **fields)


def approve(user: User, req: ReviewRequest, risk: str = "low") -> Any:
    return service.add_review(user, req, seen=seen_of(req),
                              decision="approve", risk=risk, scores=scores(),
                              comment="Fine to publish.")
