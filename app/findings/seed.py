"""Demo findings for ``enclave seed-demo``: every postable level, open and compartmented,
with replies, an edit in the history, a hidden reply, a lock and a few watches. Everything
goes through the services, so the access rule decides who may post what."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app import access
from app.auth.models import User
from app.auth.service import get_user_by_email
from app.db import db
from app.findings import service
from app.findings.models import Category
from app.notifications import service as notify

CATEGORIES = [
    ("circuits", "Circuits", "Mechanistic circuits and the features they compute."),
    ("sparse-autoencoders", "Sparse autoencoders",
     "Dictionary learning on activations: features, splitting, dead latents."),
    ("steering", "Steering", "Activation steering, control vectors and their side effects."),
    ("evaluations", "Evaluations", "Capability and safety evaluations, probes and benchmarks."),
]

# (key, author, level, category, compartment orgs, title, body, [(reply author, body)])
FINDINGS: list[tuple[str, str, str, str, list[str], str, str, list[tuple[str, str]]]] = [
    ("induction", "mia@opencircuits.example", "network", "circuits", [],
     "Induction heads appear at ~1.5k steps in two-layer attention-only models",
     "We trained 12 seeds of a two-layer attention-only model.\n\n"
     "* the phase change happens between steps 1,300 and 1,700\n"
     "* the previous-token head in layer 0 forms first\n\n"
     "Plots and configs are in the attached notebook. Feedback welcome, @nina.",
     [("nina@northlight.example", "Same on our side with 8 seeds; the timing moves with "
                                  "the learning-rate warm-up."),
      ("rex@opencircuits.example", "Did you try removing positional embeddings?")]),
    ("sycophancy", "nina@northlight.example", "network", "evaluations", [],
     "A cheap evaluation for sycophancy drift during fine-tuning",
     "A 200-prompt set where the user states a wrong belief first. We score agreement "
     "rate at each checkpoint.\n\n```python\nscore = agree / total\n```",
     [("carol@northlight.example", "Useful. @mia, could this run in your eval harness?")]),
    ("refusal", "omar@meridian.example", "restricted", "steering", [],
     "The refusal direction transfers across model sizes",
     "A direction found on the 1B model, mapped linearly, removes refusals on the 7B "
     "model in 83% of our held-out prompts. Details stay at Restricted.",
     [("carol@northlight.example", "Matches our numbers. @rita, worth a review?"),
      ("rita@meridian.example", "Yes: this is a jailbreak recipe in all but name.")]),
    ("splitting", "carol@northlight.example", "restricted", "sparse-autoencoders",
     ["meridian"],
     "Feature splitting predicts jailbreak susceptibility",
     "Shared with Meridian only. Models whose SAE features split early under "
     "fine-tuning are easier to jailbreak.",
     [("omar@meridian.example", "We see the same with our 3B run.")]),
    ("uplift", "carol@northlight.example", "confidential", "sparse-autoencoders",
     ["meridian"],
     "SAE latents that track capability uplift",
     "Need to know. A handful of latents predict uplift on the synthesis benchmark. "
     "(Meridian is named, but its ceiling is Restricted, so only cleared members of "
     "Northlight can read this today.)",
     [("admin@northlight.example", "Logged for the quarterly review.")]),
    ("synthesis", "carol@northlight.example", "confidential", "circuits", [],
     "A circuit for multi-step synthesis planning",
     "Northlight only. The circuit spans layers 12-19; ablating it removes the planning "
     "behaviour without hurting general chemistry answers.",
     [("admin@northlight.example", "Locking this thread; continue in the review.")]),
]


def _user(email: str) -> User:
    user = get_user_by_email(email)
    # the operator writes the demo content on each author's behalf, as if they had
    # signed in with a passkey (levels that need one accept their posts)
    access.assume_proof(user, "passkey")
    if user is None:
        raise LookupError(f"demo user {email} is missing from seeds/demo.toml")
    return user


def _ensure_categories(admin: User) -> None:
    existing = set(db.scalars(select(Category.slug)))
    for slug, name, description in CATEGORIES:
        if slug not in existing:
            service.create_category(admin, slug=slug, name=name, description=description)


def seed_findings(data: dict[str, Any]) -> None:
    """Add the demo findings (``data`` is seeds/demo.toml; its users must exist)."""
    admin = _user("admin@northlight.example")
    _ensure_categories(admin)
    made = {}
    with notify.suppress_email():
        notify.watch_category(_user("nina@northlight.example"),
                              service.get_category("circuits"))
        notify.watch_category(_user("omar@meridian.example"),
                              service.get_category("steering"))
        for key, author, level, category, orgs, title, body, replies in FINDINGS:
            finding = service.create_finding(_user(author), title=title, body=body,
                                             category=category, level=level, orgs=orgs)
            for reply_author, reply_body in replies:
                service.add_reply(_user(reply_author), finding, reply_body)
            made[key] = finding
        carol = _user("carol@northlight.example")
        service.edit_finding(carol, made["splitting"],
                             body=made["splitting"].body + "\n\nUpdate: holds on 4 of 5 "
                             "model families we tried.")
        rex_reply = service.add_reply(_user("rex@opencircuits.example"), made["induction"],
                                      "Off topic: is anyone selling spare GPUs?")
        service.set_reply_hidden(admin, rex_reply, True, "Off topic; kept for the record.")
        service.set_locked(admin, made["synthesis"], True)
