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
     "![Loss around the phase change, 12 seeds](attachment:phase-change.png)\n\n"
     "Plots and configs are in the attached notebook (`induction-heads.ipynb`). "
     "Feedback welcome, @nina.",
     [("nina@northlight.example", "Same on our side with 8 seeds; the timing moves with "
                                  "the learning-rate warm-up."),
      ("rex@opencircuits.example", "Did you try removing positional embeddings?")]),
    ("sycophancy", "nina@northlight.example", "network", "evaluations", [],
     "A cheap evaluation for sycophancy drift during fine-tuning",
     "A 200-prompt set where the user states a wrong belief first. We score the agreement "
     "rate $r_t$ at each checkpoint $t$ and report the drift\n\n"
     "$$\\Delta = \\frac{1}{T}\\sum_{t=1}^{T} (r_t - r_0)$$\n\n"
     "```python\nscore = agree / total\n```",
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
        _attach_demo_files(_user("mia@opencircuits.example"), made["induction"].id)


def phase_change_png() -> bytes:
    """A small loss curve (PNG) drawn with Pillow: the demo's inline figure."""
    import io

    from PIL import Image, ImageDraw

    from app.traceability.lettering import draw_text

    width, height = 480, 240
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.line([(40, 10), (40, height - 30), (width - 10, height - 30)], fill="#59636e", width=2)
    points = []
    for x in range(0, 420, 4):
        step = x / 420 * 3000
        loss = 3.2 - 0.9 / (1 + 2.718 ** (-(step - 1500) / 120)) - step / 6000
        points.append((40 + x, int(10 + (3.4 - loss) / 2.4 * (height - 40))))
    draw.line(points, fill="#1f4e8c", width=3)
    draw.line([(40 + 210, 10), (40 + 210, height - 30)], fill="#9a5b00", width=1)
    draw_text(draw, (46, height - 24), "step 0", 11, fill="#1b1f24")
    draw_text(draw, (220, height - 24), "1,500", 11, fill="#1b1f24")
    draw_text(draw, (width - 70, height - 24), "3,000", 11, fill="#1b1f24")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def induction_notebook(figure: bytes) -> bytes:
    """The notebook finding #1 talks about: markdown, code, a table and a plot output."""
    import base64
    import json

    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": [
            "# Induction heads: when do they form?\n",
            "Twelve seeds of a two-layer attention-only model; the phase change is where the "
            "in-context loss drops."]},
        {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": [
            "import numpy as np\n", "steps = np.array([1310, 1420, 1480, 1530, 1600, 1690])\n",
            "steps.mean(), steps.std()"],
         "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                      "data": {"text/plain": ["(1505.0, 124.3)"]}}]},
        {"cell_type": "code", "execution_count": 2, "metadata": {},
         "source": ["plot_loss(runs)  # in-context loss, all seeds"],
         "outputs": [{"output_type": "display_data", "metadata": {},
                      "data": {"image/png": base64.b64encode(figure).decode(),
                               "text/plain": ["<Figure size 480x240>"]}}]},
    ]
    notebook = {"cells": cells, "metadata": {"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(notebook, indent=1).encode()


def _attach_demo_files(author: User, finding_id: int) -> None:
    import io

    from app.attachments import service as attachments

    figure = phase_change_png()
    for name, data, kind in (("phase-change.png", figure, "image/png"),
                             ("induction-heads.ipynb", induction_notebook(figure),
                              "application/x-ipynb+json")):
        attachments.upload(author, finding_id, filename=name, stream=io.BytesIO(data),
                           content_length=len(data), content_type=kind)
