"""Single sign-on pages: starting at the organization's provider, its answer, the
provider's back-channel logout, and the organization's settings page."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user

from app import audit
from app.auth import service as users
from app.auth.views import start_session
from app.db import db
from app.errors import ServiceError
from app.extensions import csrf, limiter
from app.orgs import service as orgs
from app.sso import service
from app.sso.forms import SsoSettingsForm, SsoStartForm
from app.web import form_error, member_required, safe_next

bp = Blueprint("sso", __name__, template_folder="templates")
log = logging.getLogger("enclave.sso")
FLOW_KEY = "sso_flow"


def _login_limit() -> str:
    from app import state

    return state.settings().login_limit


@bp.post("/sso/start")
@limiter.limit(_login_limit)
def start() -> Any:
    """"Sign in with your organization": the e-mail's domain names the organization."""
    form = SsoStartForm()
    if not form.validate_on_submit():
        flash("Give your work e-mail address.", "error")
        return redirect(url_for("auth.login"))
    org = service.org_for_email(form.email.data or "")
    try:
        if org is None:
            raise ServiceError("No organization on Enclave signs in with that address's "
                               "identity provider.")
        begin = service.begin(org, safe_next(request.args.get("next"), ""))
    except ServiceError as exc:
        flash(exc.message, "error")
        return redirect(url_for("auth.login"))
    session[FLOW_KEY] = begin.flow
    return redirect(begin.url)


@bp.get("/sso/callback")
@limiter.limit(_login_limit)
def callback() -> Any:
    flow = session.pop(FLOW_KEY, None)
    try:
        identity = service.complete(flow, request.url, request.args.to_dict())
        user = service.admit(identity)
    except ServiceError as exc:
        db.rollback()
        audit.record("login_failed", actor="sso", target_type="org",
                     target_id=(flow or {}).get("org", ""), stage="sso", reason=exc.message)
        db.commit()
        flash(exc.message, "error")
        return redirect(url_for("auth.login"))
    key = service.open_session(user, identity)
    next_url = safe_next((flow or {}).get("next"), url_for("main.home"))
    if user.mfa_enabled:  # Enclave's own second factor still decides the levels
        session.clear()
        session["pending_2fa"] = {"uid": user.id, "ver": user.session_version,
                                  "at": int(time.time()), "next": next_url, "method": "sso",
                                  "sso_session": key}
        return redirect(url_for("auth.second_factor"))
    start_session(user, "sso", "sso")
    session["sso_session"] = key
    return redirect(next_url)


@bp.post("/sso/backchannel-logout")
@csrf.exempt
def backchannel_logout() -> Any:
    """OpenID Connect Back-Channel Logout 1.0: the provider posts a signed logout token."""
    try:
        ended = service.backchannel_logout(request.form.get("logout_token", ""))
    except ServiceError as exc:
        db.rollback()
        log.warning("back-channel logout refused: %s", exc.message)
        return {"error": "invalid_request", "error_description": exc.message}, 400, {
            "Cache-Control": "no-store"}
    log.info("back-channel logout ended %d session(s)", ended)
    return "", 200, {"Cache-Control": "no-store"}


@bp.route("/orgs/<slug>/sso", methods=["GET", "POST"])
@member_required
def settings(slug: str) -> Any:
    """The organization's provider: admins, and the organization's own admin."""
    try:
        org = orgs.get_org(slug)
    except ServiceError:
        abort(404)
    if not users.can_manage_org(current_user, org):
        abort(404)
    config = service.config_for(org)
    form = SsoSettingsForm()
    if request.method == "GET" and config is not None:
        form.issuer.data, form.client_id.data = config.issuer, config.client_id
        form.no_passwords.data = not config.passwords_allowed
        form.group_clearances.data = "\n".join(
            f"{g} = {lv}" for g, lv in sorted(service.group_clearances(config).items()))
        form.allowed_groups.data = "\n".join(service.allowed_groups(config))
    if form.validate_on_submit():
        try:
            service.configure(
                current_user, org, issuer=form.issuer.data or "",
                client_id=form.client_id.data or "",
                client_secret_value=form.client_secret.data or None,
                passwords_allowed=not form.no_passwords.data,
                clearances=_mapping(form.group_clearances.data or ""),
                allow_groups=[g.strip() for g in (form.allowed_groups.data or "").splitlines()
                              if g.strip()])
        except ServiceError as exc:
            db.rollback()
            form_error(exc, form)
        else:
            flash(f"Single sign-on for {org.name} saved.", "success")
            return redirect(url_for("sso.settings", slug=org.slug))
    return render_template("sso/settings.html", org=org, config=config, form=form,
                           redirect_uri=service.redirect_uri(),
                           backchannel_uri=service.backchannel_uri()), \
        400 if form.errors else 200


def _mapping(text: str) -> dict[str, str]:
    mapping = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        group, sep, level = line.rpartition("=")
        if not sep or not group.strip():
            raise ServiceError(f"Write each mapping as 'group = level' (got {line.strip()!r}).",
                               field="group_clearances")
        mapping[group.strip()] = level.strip()
    return mapping
