"""Request hooks, security headers, error pages and view guards shared by the web pages."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import (
    Flask,
    abort,
    flash,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, logout_user
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from app import access, state
from app.auth.models import Role
from app.config import Settings
from app.errors import MfaRequired, NdaRequired, ServiceError

log = logging.getLogger("enclave.web")
F = TypeVar("F", bound=Callable[..., Any])

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def wants_json() -> bool:
    return request.path.startswith("/api/")


def json_error(status: int, code: str, message: str, **extra: Any) -> Any:
    body: dict[str, Any] = {"code": code, "message": message}
    body.update(extra)
    response = jsonify({"error": body})
    response.status_code = status
    return response


def install_web_hooks(app: Flask, settings: Settings) -> None:
    @app.before_request
    def _refuse_nul_characters() -> Any:
        """PostgreSQL text cannot hold NUL: refuse it in a page's path, query or form up
        front (400, nothing changed) rather than failing inside a query (500). The API
        validates its own input and answers with its own error codes."""
        if wants_json() or _has_nul(request) is None:
            return None
        message = "The request contains a NUL character, which Enclave does not accept."
        return render_template("error.html", status=400, message=message), 400

    @app.before_request
    def _session_timeouts() -> Any:
        if wants_json() or not current_user.is_authenticated:
            return None
        now = int(time.time())
        started = session.get("login_at", now)
        seen = session.get("seen_at", now)
        if (now - started > settings.session_absolute_hours * 3600
                or now - seen > settings.session_idle_minutes * 60):
            logout_user()
            session.clear()
            flash("Your session expired. Please sign in again.", "info")
            return redirect(url_for("auth.login", next=request.full_path))
        if now - seen > 30:
            session["seen_at"] = now
        return None

    @app.after_request
    def _security_headers(response: Any) -> Any:
        h = response.headers
        h.setdefault("Content-Security-Policy", CSP)
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "no-referrer")
        h.setdefault("Permissions-Policy",
                     "camera=(), microphone=(), geolocation=(), payment=(), usb=()")
        h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if request.is_secure:
            h.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
        if current_user.is_authenticated or request.path.startswith("/api/"):
            h["Cache-Control"] = "no-store"
        h["X-Request-Id"] = getattr(g, "request_id", "")
        return response

    @app.context_processor
    def _template_globals() -> dict[str, Any]:
        policy = state.policy()
        banner = None
        if current_user.is_authenticated:
            banner = {
                "user": current_user._get_current_object(),  # not the proxy, per lookup
                "org": current_user.org,
                "effective": access.effective_clearance(current_user),
                "levels": access.readable_levels(current_user),
            }
        return {"policy": policy, "banner": banner, "Role": Role,
                "min_password_length": state.settings().min_password_length,
                "csp_nonce": getattr(g, "csp_nonce", "")}

    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError) -> Any:
        if wants_json():
            return json_error(exc.status, exc.code, exc.message)
        if isinstance(exc, NdaRequired):
            flash(exc.message, "warning")
            return redirect(url_for("ndas.index", next=request.path))
        if isinstance(exc, MfaRequired):
            flash(exc.message, "warning")
            return redirect(url_for("auth.mfa_setup"))
        return render_template("error.html", status=exc.status, message=exc.message), exc.status

    @app.errorhandler(CSRFError)
    def _csrf_error(exc: CSRFError) -> Any:
        from app.sessions import sessions_available

        if not sessions_available(session):
            message = ("Sign-in is unavailable for a moment (the session store is unreachable). "
                       "Try again shortly.")
            return render_template("error.html", status=503, message=message), 503
        message = "The form expired or was not sent from Enclave. Reload the page and try again."
        return render_template("error.html", status=400, message=message), 400

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        messages = {
            404: "There is nothing here, or you cannot see it.",
            405: "That method is not allowed here.",
            413: "The request is too large.",
            429: "Too many attempts. Wait a moment and try again.",
        }
        message = messages.get(status, exc.description or "The request could not be handled.")
        if wants_json():
            codes = {400: "bad_request", 401: "unauthorized", 403: "forbidden",
                     404: "not_found", 405: "method_not_allowed", 413: "too_large",
                     415: "unsupported_media_type", 429: "rate_limited"}
            return json_error(status, codes.get(status, "http_error"), message)
        return render_template("error.html", status=status, message=message), status

    @app.errorhandler(DBAPIError)
    def _database_error(exc: DBAPIError) -> Any:
        """A lost or refused database connection (PostgreSQL restarting, a connection
        killed, SQLite busy): 503 with a clear message, not a stack trace. The open
        transaction is rolled back, and the pool replaces dead connections (pre-ping), so
        the next request works once the database is back. Other database errors are bugs
        and answer 500."""
        if not (exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)):
            return _unexpected(exc)
        from app.db import db

        with contextlib.suppress(Exception):  # the connection is gone; the pool drops it
            db.rollback()
        log.warning("database unavailable (request id %s): %s",
                    getattr(g, "request_id", "-"), str(exc.orig or exc).strip()[:300])
        message = ("The database is unavailable for a moment, so this request was not "
                   "completed. Try again shortly.")
        if wants_json():
            response = json_error(503, "database_unavailable", message)
        else:
            try:
                response = make_response(
                    render_template("error.html", status=503, message=message), 503)
            except Exception:  # noqa: BLE001 - the page itself may need the database
                with contextlib.suppress(Exception):
                    db.rollback()
                response = make_response(
                    f"<!doctype html><title>Unavailable</title><p>{message}</p>", 503)
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        from app.db import db

        db.rollback()
        log.exception("unhandled error (request id %s)", getattr(g, "request_id", "-"))
        message = f"Something went wrong on our side (request {getattr(g, 'request_id', '-')})."
        if wants_json():
            return json_error(500, "internal_error", message)
        return render_template("error.html", status=500, message=message), 500


def _has_nul(req: Any) -> str | None:
    """Where the request carries a NUL character (path, query, form), if anywhere."""
    if "\x00" in req.path:
        return "path"
    if any("\x00" in k or "\x00" in v for k, v in req.args.items(multi=True)):
        return "query"
    if req.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data") and any(
        "\x00" in k or "\x00" in v for k, v in req.form.items(multi=True)
    ):
        return "form"
    return None


def member_required(view: F) -> F:
    """Signed in, active, organization trusted (checked on every request)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_authenticated:
            return redirect(url_for("auth.login", next=request.full_path))
        if not access.in_good_standing(current_user):
            abort(404)
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def role_required(role: Role) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        @wraps(view)
        @member_required
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_user.has_role(role):
                abort(404)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def form_error(exc: ServiceError, form: Any) -> None:
    """Attach a service error to the form field it names, or flash it.

    Either way ``form.errors`` is non-empty afterwards, so the view answers 400.
    """
    field = getattr(form, exc.field, None) if exc.field else None
    if field is not None:
        field.errors = [*list(field.errors), exc.message]
    else:
        form.form_errors.append(exc.message)
        flash(exc.message, "error")


def safe_next(target: str | None, default: str) -> str:
    """Only same-site relative paths are followed after sign-in."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def int_arg(name: str, default: int = 1, *, maximum: int = 10**6) -> int:
    """A positive whole number from the query string; anything else gives ``default``."""
    raw = request.args.get(name, "")
    if raw.isascii() and raw.isdigit() and 0 < int(raw) < maximum:
        return int(raw)
    return default
