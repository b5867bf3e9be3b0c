from __future__ import annotations

import logging
import time
from email.message import EmailMessage
from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select

from app import access, logredact, state
from app.auth import mfa, service, throttle
from app.auth import tokens as tokens_service
from app.auth.forms import (
    AcceptInvitationForm,
    ChangePasswordForm,
    EmptyForm,
    ForgotPasswordForm,
    LoginForm,
    MfaConfirmForm,
    MfaDisableForm,
    OpenPgpKeyForm,
    ResetPasswordForm,
    SecondFactorForm,
    TokenForm,
)
from app.auth.models import ApiToken
from app.db import db, utcnow
from app.errors import ServiceError
from app.extensions import limiter
from app.notifications import openpgp
from app.sessions import rotate as rotate_session
from app.sessions import sessions_available
from app.web import form_error, member_required, safe_next

bp = Blueprint("auth", __name__, template_folder="templates")
log = logging.getLogger("enclave.auth")

PENDING_2FA_SECONDS = 300


def _login_limit() -> str:
    return state.settings().login_limit


def _account_key() -> str:
    return "account:" + (request.form.get("email") or "").strip().lower()[:254]


def _reset_limit() -> str:
    return state.settings().reset_limit


def _pending_key() -> str:
    pending = session.get("pending_2fa") or {}
    return f"pending2fa:{pending.get('uid', request.remote_addr)}"


def start_session(user: Any, method: str, proof: str) -> None:
    """Fresh session (no fixation): clear everything, then sign in. ``proof`` is what the
    access rule counts for this session ("password", "totp", "recovery_code", "passkey")."""
    session.clear()
    rotate_session(session)
    login_user(user)
    now = int(time.time())
    session["login_at"] = now
    session["seen_at"] = now
    session["auth_proof"] = proof
    access.assume_proof(user, proof)
    service.complete_login(user, method=method)


#: A session from before proofs were recorded passed the second factor its account had.
LEGACY_PROOF = "totp"


def load_signed_in_user(session_token: str) -> Any:
    """Flask-Login's user loader: the user, with this session's proof for the access rule."""
    user = service.load_session_user(session_token)
    if user is None:
        return None
    sso_key = session.get("sso_session")
    if sso_key:
        from app.sso.service import session_ended

        if session_ended(sso_key):  # the provider's back-channel logout named it
            return None
    access.assume_proof(user, session.get("auth_proof", LEGACY_PROOF))
    return user


def _stay_signed_in() -> None:
    """Re-issue this browser's session for the user's new session version (the bump
    ended every other session). Flask-Login needs the real user object: given its own
    ``current_user`` proxy, the proxy would resolve to itself (endless recursion)."""
    login_user(current_user._get_current_object())


def _login_account_limit() -> str:
    return state.settings().login_account_limit


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
@limiter.limit(_login_limit, methods=["POST"], key_func=throttle.account_and_address_key,
               deduct_when=throttle.failed)
@limiter.limit(_login_account_limit, methods=["POST"], key_func=throttle.account_key,
               deduct_when=throttle.failed, exempt_when=throttle.from_known_address,
               on_breach=throttle.ceiling_reached)
def login() -> Any:
    if current_user.is_authenticated:
        return redirect(url_for("main.home"))
    form = LoginForm()
    next_url = safe_next(request.args.get("next"), url_for("main.home"))
    if request.method == "POST" and not sessions_available(session):
        flash("Sign-in is unavailable for a moment (the session store is unreachable). "
              "Try again shortly.", "error")
        return render_template("auth/login.html", form=form), 503
    if form.validate_on_submit():
        try:
            user = service.authenticate(form.email.data or "", form.password.data or "")
        except ServiceError as exc:
            flash(exc.message, "error")
            return render_template("auth/login.html", form=form), 401
        throttle.remember_address(user.email)
        if user.mfa_enabled:
            session.clear()
            rotate_session(session)
            session["pending_2fa"] = {"uid": user.id, "ver": user.session_version,
                                      "at": int(time.time()), "next": next_url}
            db.commit()
            return redirect(url_for("auth.second_factor"))
        start_session(user, "password", "password")
        return redirect(next_url)
    return render_template("auth/login.html", form=form), 400 if form.errors else 200


@bp.route("/login/2fa", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"], key_func=_pending_key)
def second_factor() -> Any:
    pending = session.get("pending_2fa")
    if not pending or time.time() - pending.get("at", 0) > PENDING_2FA_SECONDS:
        session.pop("pending_2fa", None)
        flash("Sign in again.", "info")
        return redirect(url_for("auth.login"))
    user = service.load_session_user(f"{pending['uid']}:{pending['ver']}")
    if user is None:
        session.clear()
        return redirect(url_for("auth.login"))
    form = SecondFactorForm()
    if not user.totp_enabled and not mfa.remaining_recovery_codes(user):
        form = None  # a passkey is this account's only second factor
    if form is not None and form.validate_on_submit():
        try:
            method = service.second_factor(user, form.code.data or "")
        except ServiceError as exc:
            form_error(exc, form)
            return render_template("auth/second_factor.html", form=form, user=user), 401
        next_url = pending.get("next") or url_for("main.home")
        sso_key = pending.get("sso_session")
        start_session(user, f"{pending.get('method', 'password')}+{method}", method)
        if sso_key:
            session["sso_session"] = sso_key
        if method == "recovery_code":
            flash(f"You used a recovery code; {mfa.remaining_recovery_codes(user)} remain.",
                  "warning")
        return redirect(safe_next(next_url, url_for("main.home")))
    return render_template("auth/second_factor.html", form=form, user=user)


@bp.post("/logout")
def logout() -> Any:
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    if current_user.is_authenticated:
        service.logout(current_user)
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/invite/<token>", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
def accept_invitation(token: str) -> Any:
    if current_user.is_authenticated:
        flash("Sign out before accepting an invitation.", "warning")
        return redirect(url_for("main.home"))
    try:
        invitation = service.find_invitation(token)
    except ServiceError as exc:
        return render_template("error.html", status=404, message=exc.message), 404
    form = AcceptInvitationForm()
    if form.validate_on_submit():
        try:
            service.accept_invitation(
                token, username=form.username.data or "",
                display_name=form.display_name.data or "", password=form.password.data or "",
            )
        except ServiceError as exc:
            form_error(exc, form)
        else:
            flash("Your account is ready. Sign in, then turn on two-factor authentication.",
                  "success")
            return redirect(url_for("auth.login"))
    status = 400 if form.errors else 200
    return render_template("auth/accept.html", form=form, invitation=invitation), status


RESET_SENT = ("If that address belongs to an active Enclave account, we sent it a link to "
              "choose a new password. Check your inbox (and spam folder); the link works "
              "once and expires soon.")


def send_after_response(response: Any, msg: EmailMessage, label: str) -> None:
    """Send the e-mail once the answer has gone out (the WSGI server closes the response
    after the last byte), so that whether an account exists does not show in the time
    the answer takes, and a slow mail server does not hold up the page."""
    settings = state.settings()
    smtp_url, outbox = settings.smtp_url, settings.instance_path / "outbox"

    def send() -> None:
        from app.notifications.mail import deliver_message

        try:
            deliver_message(msg, label, smtp_url=smtp_url, outbox=outbox)
        except Exception as exc:  # noqa: BLE001 - the answer is already sent; log, go on
            # without the message: SMTP errors quote the recipient's address
            log.error("could not send a %s e-mail: %s\n%s", label,
                      logredact.describe_mail_error(exc), logredact.frames(exc))

    response.call_on_close(send)


@bp.route("/forgot", methods=["GET", "POST"])
@limiter.limit(_reset_limit, methods=["POST"])
@limiter.limit(_reset_limit, methods=["POST"], key_func=_account_key)
def forgot_password() -> Any:
    if current_user.is_authenticated:
        return redirect(url_for("auth.account"))
    form = ForgotPasswordForm()
    if form.validate_on_submit():
        msg = service.request_password_reset(form.email.data or "")
        flash(RESET_SENT, "info")
        response = redirect(url_for("auth.login"))
        if msg is not None:
            send_after_response(response, msg, "password-reset")
        return response
    return render_template("auth/forgot.html", form=form), 400 if form.errors else 200


@bp.route("/reset/<token>", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
def reset_password(token: str) -> Any:
    try:
        service.find_password_reset(token)
    except ServiceError as exc:
        return render_template("auth/reset_invalid.html", message=exc.message), 404
    form = ResetPasswordForm()
    if form.validate_on_submit():
        try:
            service.complete_password_reset(token, form.password.data or "")
        except ServiceError as exc:
            if exc.status == 404:  # used or expired meanwhile
                return render_template("auth/reset_invalid.html", message=exc.message), 404
            form_error(exc, form)
        else:
            logout_user()
            session.clear()
            flash("Your password is changed and all your sessions were signed out. "
                  "Sign in with the new password.", "success")
            return redirect(url_for("auth.login"))
    return render_template("auth/reset.html", form=form), 400 if form.errors else 200


@bp.route("/account", methods=["GET", "POST"])
@member_required
def account() -> Any:
    form = ChangePasswordForm()
    if form.validate_on_submit():
        try:
            service.change_password(current_user, form.current_password.data or "",
                                    form.password.data or "")
        except ServiceError as exc:
            form_error(exc, form)
        else:
            # This session stays; every other one ended with the version bump.
            _stay_signed_in()
            flash("Password changed. Your other sessions were signed out.", "success")
            return redirect(url_for("auth.account"))
    return render_template("auth/account.html", form=form,
                           recovery_left=mfa.remaining_recovery_codes(current_user),
                           empty=EmptyForm(), pgp_form=OpenPgpKeyForm(),
                           pgp_warning=openpgp.expiry_warning(current_user)), \
        400 if form.errors else 200


@bp.post("/account/openpgp-key")
@member_required
def openpgp_key() -> Any:
    """Set (or, with the remove button, clear) the member's OpenPGP public key."""
    form = OpenPgpKeyForm()
    if not form.validate_on_submit():
        abort(400)
    armored = "" if request.form.get("remove") else (form.key.data or "")
    try:
        info = openpgp.set_key(current_user, current_user, armored)
    except ServiceError as exc:
        flash(exc.message, "error")
        return redirect(url_for("auth.account", _anchor="pgp-h"))
    flash(f"OpenPGP key {info.fingerprint} saved: notifications now carry finding text "
          "encrypted to it." if info else "OpenPGP key removed.", "success")
    return redirect(url_for("auth.account", _anchor="pgp-h"))


@bp.route("/account/2fa", methods=["GET", "POST"])
@member_required
def mfa_setup() -> Any:
    if current_user.totp_enabled:
        return render_template("auth/mfa_on.html", form=MfaDisableForm(),
                               regen=MfaConfirmForm(),
                               legacy_codes=mfa.has_legacy_recovery_codes(current_user),
                               recovery_left=mfa.remaining_recovery_codes(current_user))
    secret = service.start_mfa_enrolment(current_user)
    form = MfaConfirmForm()
    if form.validate_on_submit():
        try:
            codes = service.enable_mfa(current_user, form.code.data or "")
        except ServiceError as exc:
            form_error(exc, form)
        else:
            proof = session.get("auth_proof", LEGACY_PROOF)
            session.clear()
            rotate_session(session)
            _stay_signed_in()  # rotate: new session version, new cookie
            now = int(time.time())
            session["login_at"] = now
            session["seen_at"] = now
            # the code just given is a second factor; a passkey proof stays one
            session["auth_proof"] = "passkey" if proof == "passkey" else "totp"
            flash("Two-factor authentication is on.", "success")
            if not codes:
                return redirect(url_for("auth.account"))
            return render_template("auth/recovery_codes.html", codes=codes)
    uri = mfa.provisioning_uri(current_user, secret)
    return render_template("auth/mfa_setup.html", form=form, secret=secret,
                           qr=mfa.qr_svg(uri)), 400 if form.errors else 200


@bp.post("/account/2fa/disable")
@member_required
@limiter.limit(_login_limit)
def mfa_disable() -> Any:
    form = MfaDisableForm()
    if not form.validate_on_submit():
        if form.csrf_token.errors:
            abort(400)
        flash("Give your password and a current code or an unused recovery code.", "error")
        return redirect(url_for("auth.mfa_setup"))
    try:
        service.disable_mfa(current_user, form.password.data or "", form.code.data or "")
    except ServiceError as exc:
        flash(exc.message, "error")
        return redirect(url_for("auth.mfa_setup"))
    _stay_signed_in()
    flash("Two-factor authentication is off. Levels that require it are closed to you.",
          "warning")
    return redirect(url_for("auth.account"))


@bp.post("/account/2fa/recovery-codes")
@member_required
def mfa_recovery_codes() -> Any:
    form = MfaConfirmForm()
    if form.validate_on_submit():
        try:
            codes = service.regenerate_recovery_codes(current_user, form.code.data or "")
        except ServiceError as exc:
            flash(exc.message, "error")
            return redirect(url_for("auth.mfa_setup"))
        return render_template("auth/recovery_codes.html", codes=codes)
    abort(400)


SCOPE_LABELS = {
    "read": "read: read what you can read (GET)",
    "write": "write: post, reply, flag, edit, upload (everything else you may do)",
    "review": "review: review decisions, resolve flags, reopen (reviewers)",
    "admin": "admin: manage organizations, members, audit (admins, org admins)",
}


def fresh_token_proof() -> str:
    """The second-factor proof this session gave recently enough for a new token to
    carry it (a confirmation in the last five minutes, or a sign-in with a second factor
    in the last five minutes); "password" otherwise."""
    from app.auth.passkey_views import REAUTH_SECONDS, fresh_proof

    confirmed = fresh_proof()
    if confirmed in tokens_service.FRESH_SECOND_FACTOR:
        return str(confirmed)
    proof = session.get("auth_proof")
    if proof in tokens_service.FRESH_SECOND_FACTOR and \
            time.time() - session.get("login_at", 0) <= REAUTH_SECONDS:
        return str(proof)
    return "password"


@bp.route("/account/tokens", methods=["GET", "POST"])
@member_required
def tokens() -> Any:
    user = current_user._get_current_object()
    form = TokenForm()
    form.scopes.choices = [(s, SCOPE_LABELS[s]) for s in tokens_service.allowed_scopes(user)]
    policy = state.policy()
    new_token = None
    proof = fresh_token_proof()
    if form.validate_on_submit():
        try:
            _, new_token = tokens_service.create_token(
                user, form.name.data or "", proof=proof,
                scopes=form.scopes.data or [], days=form.days.data)
        except ServiceError as exc:
            form_error(exc, form)
    listed = db.scalars(
        select(ApiToken).where(ApiToken.user_id == current_user.id)
        .order_by(ApiToken.created_at.desc())
    ).all()
    mfa_levels = [lv for lv in policy.levels if lv.mfa and lv.api_tokens]
    return render_template("auth/tokens.html", form=form, tokens=listed, new_token=new_token,
                           empty=EmptyForm(), fresh=proof in tokens_service.FRESH_SECOND_FACTOR,
                           mfa_levels=mfa_levels, policy_days=(policy.token_default_days,
                                                               policy.token_max_days),
                           expired={t.id for t in listed
                                    if access.as_utc(t.expires_at) <= utcnow()}), \
        400 if form.errors else 200


@bp.post("/account/tokens/<int:token_id>/revoke")
@member_required
def revoke_token(token_id: int) -> Any:
    if not EmptyForm().validate_on_submit():
        abort(400)
    tokens_service.revoke_token(current_user, token_id)
    flash("Token revoked.", "success")
    return redirect(url_for("auth.tokens"))


from app.auth import passkey_views  # noqa: E402,F401  (routes on this blueprint)
