"""Request hooks, security headers, error pages and view guards shared by the web pages."""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import time
import traceback
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from flask import (
    Flask,
    abort,
    current_app,
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
from markupsafe import escape
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from werkzeug.exceptions import HTTPException

from app import access, clock, state
from app.auth.models import Role
from app.config import Settings
from app.crypto.fields import FieldIntegrityError
from app.db import describe_db_error
from app.errors import NOT_FOUND_MESSAGE, MfaRequired, NdaRequired, PasskeyRequired, ServiceError
from app.links import external_url

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


def install_retry_after_guard(app: Flask) -> None:
    """Keep the Retry-After a handler chose (the database 503's 5 seconds).

    Flask-Limiter's after-request hook rewrites Retry-After on every rate-limited response
    to the end of its window (up to a minute), which told API clients to wait a minute
    after a database restart. Registered before the limiter, this hook runs after it."""

    @app.after_request
    def _keep_retry_after(response: Any) -> Any:
        wanted = g.get("retry_after")
        if wanted:
            response.headers["Retry-After"] = wanted
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
        if (request.path.startswith("/api/") or _signed_in_or_unknown()) \
                and "no-store" not in h.get("Cache-Control", ""):
            h["Cache-Control"] = "no-store"  # (a view may say "private, no-store")
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
        from app.auth.service import grant_until

        return {"policy": policy, "banner": banner, "Role": Role,
                "clearance_lapsed": _clearance_lapsed, "grant_until": grant_until,
                "min_password_length": state.settings().min_password_length,
                "csp_nonce": getattr(g, "csp_nonce", ""),
                "external_url": external_url}

    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError) -> Any:
        if wants_json():
            return json_error(exc.status, exc.code, exc.message, **getattr(exc, "extra", {}))
        if isinstance(exc, NdaRequired):
            flash(exc.message, "warning")
            return redirect(url_for("ndas.index", next=request.path))
        if isinstance(exc, PasskeyRequired):
            flash(exc.message, "warning")
            if current_user.is_authenticated and current_user.has_passkeys:
                return redirect(url_for("auth.confirm", next=request.path))
            return redirect(url_for("auth.passkeys"))
        if isinstance(exc, MfaRequired):
            flash(exc.message, "warning")
            return redirect(url_for("auth.mfa_setup"))
        return _error_page(exc.status, exc.message)

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
            404: NOT_FOUND_MESSAGE,
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
        return _error_page(status, message)

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
        _anonymous_for_this_request()
        log.warning("database unavailable (request id %s): %s",
                    getattr(g, "request_id", "-"), describe_db_error(exc))
        message = ("The database is unavailable for a moment, so this request was not "
                   "completed. Try again shortly.")
        if wants_json():
            response = json_error(503, "database_unavailable", message)
        else:
            response = _error_page(503, message)
        g.retry_after = "5"
        response.headers["Retry-After"] = g.retry_after
        return response

    @app.errorhandler(FieldIntegrityError)
    def _sealed_text_broken(exc: FieldIntegrityError) -> Any:
        """A stored text does not open in its context (copied from another row, column or
        level, altered, or its key is gone): an error, never some other row's text."""
        from app.db import db

        with contextlib.suppress(Exception):
            db.rollback()
        log.error("stored content failed its integrity check (request id %s): %s",
                  getattr(g, "request_id", "-"), exc)
        message = ("Stored content failed its integrity check, so it is not shown "
                   f"(request {getattr(g, 'request_id', '-')}). Tell an administrator.")
        if wants_json():
            return json_error(500, "integrity_error", message)
        return _error_page(500, message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        from app.db import db

        with contextlib.suppress(Exception):
            db.rollback()
        if isinstance(exc, SQLAlchemyError | sqlite3.Error | psycopg.Error):
            # the frames, and the error without the values it quotes (app.db)
            log.error("unhandled database error (request id %s): %s\n%s",
                      getattr(g, "request_id", "-"), describe_db_error(exc),
                      "".join(traceback.format_tb(exc.__traceback__)).rstrip())
        else:
            log.exception("unhandled error (request id %s)", getattr(g, "request_id", "-"))
        message = f"Something went wrong on our side (request {getattr(g, 'request_id', '-')})."
        if wants_json():
            return json_error(500, "internal_error", message)
        return _error_page(500, message)


def _clearance_lapsed(user: Any) -> bool:
    ends = getattr(user, "clearance_expires_at", None)
    return ends is not None and clock.now() >= ends


def _error_page(status: int, message: str) -> Any:
    """The error page; a bare one when rendering fails (the page may need the database
    that just failed, e.g. to load the signed-in user for the banner)."""
    try:
        return make_response(render_template("error.html", status=status, message=message),
                             status)
    except Exception:  # noqa: BLE001 - an error page must not fail
        from app.db import db

        with contextlib.suppress(Exception):
            db.rollback()
        log.warning("error page %s rendered bare (request id %s)", status,
                    getattr(g, "request_id", "-"), exc_info=True)
        return make_response(
            f"<!doctype html><title>Error {status}</title><p>{escape(message)}</p>", status)


def _anonymous_for_this_request() -> None:
    """After a database failure, treat the rest of this request as anonymous, so that
    the error page and the after-request hooks do not try the database again to load
    the signed-in user (a second failure there was a bare 500). The session itself is
    kept: the user is still signed in on the next request."""
    g._login_user = current_app.login_manager.anonymous_user()  # Flask-Login's slot


def _signed_in_or_unknown() -> bool:
    """Whether the response is for a signed-in user, without failing when the database
    that loads the user is unavailable (then the answer is yes: never cacheable)."""
    try:
        return bool(current_user.is_authenticated)
    except DBAPIError:
        from app.db import db

        with contextlib.suppress(Exception):
            db.rollback()
        _anonymous_for_this_request()
        return True


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


#: characters a browser drops or reads as a slash when it parses a URL (WHATWG URL:
#: ASCII tab and newlines are removed anywhere, C0 controls and spaces trimmed at the
#: ends, a backslash is a slash in http(s) URLs): none belongs in a path we follow
_UNSAFE_IN_NEXT = re.compile(r"[\x00-\x20\x7f\\]")


def safe_next(target: str | None, default: str) -> str:
    """The ``next`` of a sign-in or NDA page, if it is a path on this site; else ``default``.

    Parsed with the standard library's URL parser, then normalised: no scheme and no
    host (``//host``, ``https://``, userinfo), ASCII only (unicode dots and full-width
    slashes), nothing a browser drops or reads as a slash (tab, newlines, backslash),
    also once percent-decoded (``%2F%2F``, ``%5C``, ``%09``), and dot segments and
    repeated slashes collapsed, so the result is one absolute path (``/.//x`` is ``/x``).
    The answer is the normalised path with its query, never the raw input."""
    if not target or len(target) > 2048 or not target.isascii():
        return default
    if _UNSAFE_IN_NEXT.search(target) or target.startswith("//"):
        return default  # ``///host`` has an empty host to Python, ``host`` to a browser
    parts = urlsplit(target)
    if (parts.scheme or parts.netloc or not parts.path.startswith("/")
            or _UNSAFE_IN_NEXT.search(unquote(parts.path))):
        return default
    segments: list[str] = []
    for segment in parts.path.split("/")[1:]:
        plain = unquote(segment)
        if plain in ("", "."):
            continue
        if plain == "..":
            if segments:
                segments.pop()
            continue
        if "/" in plain or plain.startswith("."):
            return default  # an encoded slash, or a dot segment a browser may resolve
        segments.append(segment)
    path = "/" + "/".join(segments)
    if parts.path.endswith("/") and segments:
        path += "/"
    result = urlunsplit(("", "", path, parts.query, ""))
    check = urlsplit(result)
    if check.scheme or check.netloc or not result.startswith("/") or result.startswith("//"):
        return default  # pragma: no cover - the steps above leave only a path
    return result


def int_arg(name: str, default: int = 1, *, maximum: int = 10**6) -> int:
    """A positive whole number from the query string; anything else gives ``default``."""
    raw = request.args.get(name, "")
    if raw.isascii() and raw.isdigit() and 0 < int(raw) < maximum:
        return int(raw)
    return default


def already_submitted(exc: Any, fallback: str) -> Any:
    """A double-submitted create form (``submissions.AlreadySubmitted``): nothing new was
    made; say so and show what the first submission created."""
    flash("Already submitted: this form was sent twice, so nothing new was created. Here "
          "is what the first submission made.", "warning")
    return redirect(submission_url(exc.target_type, exc.target_id) or fallback)


def submission_url(target_type: str, target_id: int | None) -> str | None:
    """The page of what a form submission created (None when unknown)."""
    from app.db import db

    if target_id is None:
        return None
    if target_type == "finding":
        return url_for("findings.show", finding_id=target_id)
    if target_type == "reply":
        from app.findings.models import Reply

        reply = db.get(Reply, target_id)
        return None if reply is None else url_for(
            "findings.show", finding_id=reply.finding_id, _anchor=f"reply-{reply.id}")
    if target_type == "flag":
        return url_for("review.flag_show", flag_id=target_id)
    if target_type == "request":
        return url_for("review.request_show", request_id=target_id)
    if target_type == "comment":
        from app.review.models import ReviewComment

        comment = db.get(ReviewComment, target_id)
        return None if comment is None else url_for(
            "review.request_show", request_id=comment.request_id,
            _anchor=f"comment-{comment.id}")
    if target_type == "invitation":
        return url_for("admin.user_list")
    return None
