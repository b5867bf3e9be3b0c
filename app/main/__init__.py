"""The signed-in home page and health check."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user

from app import access, state
from app.auth import mfa
from app.findings.service import latest_for_home
from app.ndas.service import owed_ndas
from app.web import member_required

bp = Blueprint("main", __name__, template_folder="templates")


@bp.get("/")
def index() -> Any:
    if current_user.is_authenticated:
        return redirect(url_for("main.home"))
    return redirect(url_for("auth.login"))


@bp.get("/home")
@member_required
def home() -> Any:
    policy = state.policy()
    readable = access.readable_levels(current_user)
    ceiling = access.effective_clearance(current_user)
    facts = access.subject_for(current_user)
    rows = []
    for level in policy.levels:
        within = ceiling is not None and policy.rank(level.key) <= policy.rank(ceiling)
        rows.append({
            "level": level,
            "within": within,
            "readable": level.key in readable,
            "missing_ndas": access.missing_ndas(current_user, level.key) if within else [],
            "needs_mfa": within and bool(level.mfa) and not (facts and facts.mfa),
            "needs_passkey": within and level.needs_passkey and bool(facts and facts.mfa)
            and not facts.passkey,
        })
    latest = latest_for_home(current_user)
    return render_template("main/home.html", rows=rows, owed=owed_ndas(current_user),
                           recovery_left=mfa.remaining_recovery_codes(current_user),
                           latest=latest, page_marking=latest.marking)


@bp.get("/levels.css")
def levels_css() -> Any:
    """Level colours from policy as CSS classes (inline styles are barred by the CSP)."""
    from flask import Response

    css = "\n".join(
        f".lv-{lv.key} {{ --level: {lv.colour}; }}" for lv in state.policy().levels
    )
    response = Response(css + "\n", mimetype="text/css")
    response.cache_control.public = True
    response.cache_control.max_age = 300
    return response
