"""Passkey pages and the JSON steps of the WebAuthn ceremonies (same blueprint as auth).

The ceremonies are JSON posts from ``static/passkeys.js`` with the CSRF token in the
``X-CSRFToken`` header; they answer ``{"redirect": url}`` or an API-style JSON error.

Changing passkeys needs a fresh proof in this session (``REAUTH_SECONDS``): the first
passkey, the password and (with an authenticator app) a code; once the account has a
passkey, only a passkey: a phished password and code can then neither add the
attacker's passkey nor remove the owner's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Response, abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user

from app import access, audit
from app.auth import mfa, service
from app.auth import passkeys as passkey_service
from app.auth.forms import ConfirmForm, EmptyForm
from app.auth.views import _login_limit, bp, send_after_response, start_session
from app.db import db
from app.errors import ServiceError
from app.extensions import limiter
from app.web import form_error, json_error, member_required, safe_next

F = TypeVar("F", bound=Callable[..., Any])

REAUTH_SECONDS = 300
CEREMONY_KEY = "passkey_ceremony"
NEW_CODES_KEY = "new_recovery_codes"


def fresh_proof() -> str | None:
    """The proof given on the confirm page in the last five minutes, if any."""
    reauth = session.get("reauth") or {}
    if time.time() - reauth.get("at", 0) <= REAUTH_SECONDS:
        return reauth.get("proof")
    return None


def may_add_passkey(user: Any) -> bool:
    proof = fresh_proof()
    return proof == "passkey" if user.has_passkeys else proof is not None


def may_remove_passkey() -> bool:
    return fresh_proof() == "passkey"


def json_view(view: F) -> F:
    """A ceremony step: a ServiceError becomes a JSON error (the page shows its message)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except ServiceError as exc:
            db.rollback()
            return json_error(exc.status, exc.code, exc.message)

    return wrapper  # type: ignore[return-value]


def _json_body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ServiceError("Send a JSON object.", code="bad_json")
    return data


def _options(ceremony: passkey_service.Ceremony) -> Response:
    session[CEREMONY_KEY] = ceremony.state
    return Response(ceremony.options_json, mimetype="application/json")


# ---------------------------------------------------------------- the account page

@bp.get("/account/passkeys")
@member_required
def passkeys() -> Any:
    user = current_user._get_current_object()
    return render_template(
        "auth/passkeys.html", passkeys=user.passkeys, may_add=may_add_passkey(user),
        may_remove=may_remove_passkey(), new_codes=session.pop(NEW_CODES_KEY, None),
        session_passkey=session.get("auth_proof") == "passkey", empty=EmptyForm())


@bp.post("/account/passkeys/options")
@member_required
@json_view
def passkey_register_options() -> Any:
    user = current_user._get_current_object()
    if not may_add_passkey(user):
        raise ServiceError("Confirm it is you first (the confirmation lasts five minutes).",
                           code="reauth_required")
    return _options(passkey_service.registration_options(user))


@bp.post("/account/passkeys/register")
@member_required
@json_view
def passkey_register() -> Any:
    user = current_user._get_current_object()
    data = _json_body()
    if not may_add_passkey(user):
        raise ServiceError("Confirm it is you first (the confirmation lasts five minutes).",
                           code="reauth_required")
    ceremony = session.pop(CEREMONY_KEY, None)
    passkey = passkey_service.finish_registration(
        user, ceremony, passkey_service.parse_credential(data.get("credential")),
        data.get("name") if isinstance(data.get("name"), str) else None)
    if not mfa.remaining_recovery_codes(user):
        # the first second factor of the account: recovery codes come with it
        session[NEW_CODES_KEY] = mfa.new_recovery_codes(user)
        db.commit()
    flash(f"Passkey “{passkey.name}” added.", "success")
    response = json_response({"redirect": url_for("auth.passkeys")})
    send_after_response(response, passkey_service.added_notice(user, passkey), "passkey-added")
    return response


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    from flask import jsonify

    response = jsonify(body)
    response.status_code = status
    return response


@bp.post("/account/passkeys/<int:passkey_id>/remove")
@member_required
def passkey_remove(passkey_id: int) -> Any:
    if not EmptyForm().validate_on_submit():
        abort(400)
    user = current_user._get_current_object()
    if not any(p.id == passkey_id for p in user.passkeys):
        abort(404)  # someone else's or none: the same answer, before anything else
    if not may_remove_passkey():
        flash("Confirm with a passkey first: removing one needs a fresh passkey proof.",
              "warning")
        return redirect(url_for("auth.confirm", next=url_for("auth.passkeys")))
    removed = passkey_service.remove_passkey(user, passkey_id)
    flash(f"Passkey “{removed.name}” removed.", "success")
    return redirect(url_for("auth.passkeys"))


# ---------------------------------------------------------------- confirming it is you

@bp.route("/account/confirm", methods=["GET", "POST"])
@member_required
@limiter.limit(_login_limit, methods=["POST"])
def confirm() -> Any:
    user = current_user._get_current_object()
    next_url = safe_next(request.args.get("next"), url_for("auth.passkeys"))
    form = ConfirmForm()
    if form.validate_on_submit():
        try:
            proof = service.reauthenticate(user, form.password.data or "", form.code.data or "")
        except ServiceError as exc:
            form_error(exc, form)
        else:
            session["reauth"] = {"at": int(time.time()), "proof": proof}
            return redirect(next_url)
    return render_template("auth/confirm.html", form=form, next_url=next_url,
                           user=user), 400 if form.errors else 200


# ---------------------------------------------------------------- assertions

_PURPOSES = ("login", "confirm")


@bp.post("/passkeys/options")
@limiter.limit(_login_limit)
@json_view
def passkey_assertion_options() -> Any:
    purpose = _json_body().get("purpose")
    if purpose not in _PURPOSES:
        raise ServiceError("Unknown purpose.", code="bad_field")
    if purpose == "confirm":
        if not current_user.is_authenticated or not access.in_good_standing(current_user):
            abort(401)
        return _options(passkey_service.assertion_options(
            "confirm", current_user._get_current_object()))
    pending = _pending_user()
    return _options(passkey_service.assertion_options("login", pending))


def _pending_user() -> Any:
    """The user who gave their password and now owes the second factor, if any."""
    from app.auth.views import PENDING_2FA_SECONDS

    pending = session.get("pending_2fa")
    if not pending or time.time() - pending.get("at", 0) > PENDING_2FA_SECONDS:
        return None
    return service.load_session_user(f"{pending['uid']}:{pending['ver']}")


@bp.post("/passkeys/verify")
@limiter.limit(_login_limit)
@json_view
def passkey_assertion_verify() -> Any:
    data = _json_body()
    purpose = data.get("purpose")
    if purpose not in _PURPOSES:
        raise ServiceError("Unknown purpose.", code="bad_field")
    ceremony = session.pop(CEREMONY_KEY, None)
    credential = passkey_service.parse_credential(data.get("credential"))
    next_raw = data.get("next") if isinstance(data.get("next"), str) else None
    if purpose == "confirm":
        if not current_user.is_authenticated or not access.in_good_standing(current_user):
            abort(401)
        user = current_user._get_current_object()
        passkey = passkey_service.verify_assertion(ceremony, credential, "confirm")
        session["reauth"] = {"at": int(time.time()), "proof": "passkey"}
        session["auth_proof"] = "passkey"  # this session now holds a passkey proof
        access.assume_proof(user, "passkey")
        audit.record("passkey_confirmed", actor=user, target_type="passkey",
                     target_id=passkey.id)
        db.commit()
        return json_response({"redirect": safe_next(next_raw, url_for("auth.passkeys"))})
    passkey = passkey_service.verify_assertion(ceremony, credential, "login")
    user = passkey.user
    problem = service.standing_problem(user)
    if problem:
        audit.record("login_refused", actor=user, target_type="user", target_id=user.id,
                     reason=problem, method="passkey")
        db.commit()
        raise service.LoginRefused(problem)
    pending = session.get("pending_2fa") or {}
    method = (pending.get("method", "password") + "+passkey"
              if pending.get("uid") == user.id else "passkey")
    if method == "passkey" and service.sso_only_problem(user):
        audit.record("login_refused", actor=user, target_type="user", target_id=user.id,
                     reason="organization signs in through its provider", method="passkey")
        db.commit()
        raise service.LoginRefused(service.SSO_ONLY)
    next_url = pending.get("next") if method != "passkey" else next_raw
    sso_key = pending.get("sso_session") if method != "passkey" else None
    start_session(user, method, "passkey")
    if sso_key:
        session["sso_session"] = sso_key
    return json_response({"redirect": safe_next(next_url, url_for("main.home"))})
