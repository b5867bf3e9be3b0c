"""``enclave seed-demo``: load seeds/demo.toml through the same services as the app."""

from __future__ import annotations

import tomllib

import pyotp
from sqlalchemy import func, select

from app import state
from app.auth import mfa
from app.auth import service as users
from app.config import REPO_ROOT
from app.db import db, utcnow
from app.ndas.models import NdaAcknowledgement
from app.orgs import service as orgs
from app.orgs.models import Organization

SEED_FILE = REPO_ROOT / "seeds" / "demo.toml"


def seed_demo(*, only_if_empty: bool = False) -> list[str] | None:
    """Create the demo world; returns printable login lines (None if skipped)."""
    if only_if_empty and db.scalar(select(func.count()).select_from(Organization)):
        return None
    data = tomllib.loads(SEED_FILE.read_text())
    password = data["password"]
    policy = state.policy()
    for o in data["orgs"]:
        org = orgs.add_org(None, slug=o["slug"], name=o["name"], domains=o["domains"],
                           ceiling=o["ceiling"], trusted=True)
        if o["status"] != "trusted":
            orgs.set_status(None, org, o["status"])
    lines = [f"{'e-mail':30} {'organization':36} {'role':10} {'clearance':13} 2FA secret"]
    o_status = {o["slug"]: o["status"] for o in data["orgs"]}
    recovery: dict[str, list[str]] = {}
    for u in data["users"]:
        org = orgs.get_org(u["org"])
        user = users.create_user(email=u["email"], org=org, clearance=u["clearance"],
                                 role=u["role"], password=password,
                                 username=u["email"].split("@")[0], display_name=u["name"])
        for key in u.get("ndas", []):
            nda = policy.ndas[key]
            db.add(NdaAcknowledgement(user_id=user.id, nda_key=key, version=nda.version,
                                      text_sha256=nda.text_sha256, signed_name=u["name"],
                                      ip="seed"))
        secret = ""
        if u.get("mfa"):
            secret = pyotp.random_base32()
            user.totp_secret_enc = mfa.seal_secret(user, secret)
            user.totp_enabled_at = utcnow()
            recovery[user.email] = mfa.new_recovery_codes(user)
        db.commit()
        org_label = f"{org.name} ({o_status[org.slug]})"
        lines.append(f"{user.email:30} {org_label:36} "
                     f"{user.role:10} {user.clearance:13} {secret}")
    for o in data["orgs"]:
        if o.get("ceiling_lowered_to"):
            orgs.set_ceiling(None, orgs.get_org(o["slug"]), o["ceiling_lowered_to"])
    extend = _extensions()
    for hook in extend:
        hook(data)
    lines.append(f"password for every demo account: {password}")
    lines.append("recovery codes (each works once, instead of an authenticator code):")
    for email, codes in recovery.items():
        lines.append(f"  {email:28} {' '.join(codes)}")
    return lines


def _extensions() -> list:  # type: ignore[type-arg]
    """Later features add demo content (findings, reviews) by registering a hook here."""
    hooks = []
    try:
        from app.findings.seed import seed_findings
    except ImportError:
        pass
    else:
        hooks.append(seed_findings)
    from app.review.seed import seed_review

    hooks.append(seed_review)
    return hooks
