"""Demo content for the review queue (``enclave seed-demo``): a publication request in
progress, with one approval of the two needed, and an open dual-use flag."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app import access
from app.auth.service import get_user_by_email
from app.db import db
from app.findings import service as findings
from app.findings.models import Category, Finding
from app.notifications import service as notify
from app.review import flags, pins, service

INTERNAL = """We found that ablating heads 4.2 and 4.7 together removes in-context copying in
our 1.3B model. Exact recipe: patch the OV circuit with the mean activation over the
first 2,048 tokens of the held-out set, then scale by 0.37.
"""
PUBLIC = """Two attention heads in layer 4 carry most of the in-context copying behaviour of a
mid-sized language model: ablating them together removes it. We share the observation
so that other teams can check their own models; the ablation recipe stays inside Enclave.
"""


def _user(email: str) -> Any:
    user = get_user_by_email(email)
    # the operator writes the demo content on each author's behalf, as if they had
    # signed in with a passkey (levels that need one accept their posts)
    access.assume_proof(user, "passkey")
    if user is None:
        raise LookupError(f"seed user {email} missing")
    return user


def seed_review(data: dict[str, Any]) -> None:
    """Needs the demo users of seeds/demo.toml (carol, rita, mia, admin)."""
    admin = _user("admin@northlight.example")
    carol = _user("carol@northlight.example")
    rita = _user("rita@meridian.example")
    mia = _user("mia@opencircuits.example")
    category = db.scalar(select(Category).order_by(Category.id).limit(1))
    if category is None:
        category = findings.create_category(admin, slug="circuits", name="Circuits",
                                            description="Circuits and mechanisms.")
    with notify.suppress_email():
        secret = findings.create_finding(
            carol, title="Copying heads in layer 4 (with the ablation recipe)", body=INTERNAL,
            category=category.slug, level="restricted")
        req = service.create_publication(
            carol, secret.id, public_title="Two heads carry in-context copying",
            public_body=PUBLIC, note="The recipe is left out on purpose.",
            credit="organization")
        scores = {key: 1 for key in _rubric_keys()}
        service.add_review(rita, req, seen=pins.current(req), decision="approve", risk="low",
                           scores=scores,
                           comment="The public text gives no recipe. Fine to publish.")
        open_finding = findings.create_finding(
            carol, title="Steering vectors transfer across model sizes",
            body="Vectors found on the small model work on the large one after a linear map.",
            category=category.slug, level="network")
        flags.create_flag(mia, open_finding.id,
                          reason="The linear map is enough to reproduce the steering attack.",
                          suggested_level="restricted")
        _released(admin)


RELEASED_BODY = r"""A 200-prompt evaluation where the user states a wrong belief first. We score the
agreement rate $r_t$ at each fine-tuning checkpoint $t$ and report its drift

$$\Delta = \frac{1}{T}\sum_{t=1}^{T} (r_t - r_0)$$

Across three fine-tuning runs the drift was positive in all of them, largest in the run
with the most preference data.
"""


def _released(admin: Any) -> None:
    """Nina's evaluation, approved by reviewers of two other organizations (Meridian and
    Open Circuits) and released by the admin: /public and the feed are not empty."""
    nina = _user("nina@northlight.example")
    finding = db.scalar(select(Finding).where(Finding.author_id == nina.id)
                        .order_by(Finding.id).limit(1))
    if finding is None:
        return
    req = service.create_publication(
        nina, finding.id, public_title="A cheap evaluation for sycophancy drift",
        public_body=RELEASED_BODY,
        note="Safe to share: no model details.", credit="authors")
    scores = {key: 0 for key in _rubric_keys()}
    for reviewer in ("rita@meridian.example", "rex@opencircuits.example"):
        service.add_review(_user(reviewer), req, seen=pins.current(req), decision="approve",
                           risk="low", scores=scores, comment="Nothing sensitive.")
    service.release(admin, req, seen=pins.current(req))


def _rubric_keys() -> list[str]:
    from app import state

    return state.policy().review.rubric_keys()
