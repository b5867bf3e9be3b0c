"""Failed sign-ins, counted so that an attacker cannot lock the owner out.

Three counters (Flask-Limiter, in Redis in production):

* per address: every sign-in post (``ENCLAVE_LOGIN_LIMIT``);
* per account *and* address: failed sign-ins only (``ENCLAVE_LOGIN_LIMIT``), so ten
  failures from an attacker's address refuse that address for that account, not the
  owner at theirs;
* per account, from every address but the ones it signed in from before: failed sign-ins
  only, a slower ceiling (``ENCLAVE_LOGIN_ACCOUNT_LIMIT``) against guessing from many
  addresses. When it is reached the owner gets an e-mail (once per hour) and can still
  sign in from an address they used before, or with a passkey.

An address counts as "used before" for 90 days after a successful sign-in from it; it
is kept as a keyed hash of (account, address) in the limiter's store, never in plain.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from flask import current_app, request

from app import audit, state
from app.db import db

log = logging.getLogger("enclave.auth")
KNOWN_ADDRESS_SECONDS = 90 * 24 * 3600
NOTICE_SECONDS = 3600


def typed_account() -> str:
    return (request.form.get("email") or "").strip().lower()[:254]


def _storage():  # type: ignore[no-untyped-def]
    from app.extensions import limiter

    return limiter.storage


def _digest(*parts: str) -> str:
    key = current_app.secret_key
    secret = key.encode() if isinstance(key, str) else bytes(key or b"")
    return hmac.new(secret, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()[:40]


def _address() -> str:
    from flask_limiter.util import get_remote_address

    return get_remote_address() or ""


def account_and_address_key() -> str:
    return "login-fail:" + _digest("pair", typed_account(), _address())


def account_key() -> str:
    return "login-fail-account:" + _digest("account", typed_account())


def failed(response: object) -> bool:
    """Only a refused sign-in (401) counts against the account."""
    return getattr(response, "status_code", 0) == 401


def _incr(key: str, expiry: int) -> int | None:
    """Count in the limiter's store; None when it is unreachable (Redis down: the limits
    fall back to per-process counters, and these extras are skipped)."""
    storage = _storage()
    if storage is None:
        return None
    try:
        return int(storage.incr(key, expiry))
    except Exception:  # noqa: BLE001 - any store error: go on without the extra
        log.warning("rate-limit store unreachable: %s skipped", key.split(":", 1)[0])
        return None


def remember_address(email: str) -> None:
    """A successful sign-in: this address is one the owner uses."""
    _incr("login-known:" + _digest("known", email.strip().lower(), _address()),
          KNOWN_ADDRESS_SECONDS)


def from_known_address() -> bool:
    """The account's ceiling does not apply at an address it signed in from before."""
    storage = _storage()
    account = typed_account()
    if storage is None or not account:
        return False
    try:
        return int(storage.get("login-known:" + _digest("known", account, _address()))) > 0
    except Exception:  # noqa: BLE001 - store unreachable: the ceiling applies
        return False


def ceiling_reached(_limit: object) -> None:
    """Flask-Limiter's ``on_breach`` of the account ceiling: audit it and tell the owner
    (once an hour). Answers nothing itself: the refusal is the usual 429."""
    from flask import after_this_request

    from app.auth import service

    account = typed_account()
    if not account or _incr("login-notice:" + _digest("notice", account),
                            NOTICE_SECONDS) != 1:
        return None
    user = service.get_user_by_email(account)
    if user is None or service.standing_problem(user):
        return None
    audit.record("login_ceiling_reached", actor="", target_type="user", target_id=user.id,
                 limit=state.settings().login_account_limit)
    db.commit()
    msg = ceiling_message(user.display_name, user.email)

    @after_this_request
    def send_later(response):  # type: ignore[no-untyped-def]
        from app.auth.views import send_after_response

        send_after_response(response, msg, "login-ceiling")
        return response

    return None


def ceiling_message(name: str, email: str) -> EmailMessage:
    from app.notifications.mail import sender_address

    msg = EmailMessage()
    msg["From"] = sender_address()
    msg["To"] = formataddr((name, email))
    msg["Subject"] = "[Enclave] Many failed sign-ins to your account"
    msg["Message-ID"] = make_msgid(domain="enclave.invalid")
    msg.set_content("\n".join([
        "Someone tried many wrong passwords for your Enclave account, from more than one",
        "address. Password sign-in to your account is paused for new addresses for a while.",
        "",
        "You can still sign in from an address you signed in from before, or with a",
        "passkey. If these attempts were not yours, nothing is wrong with your account; if",
        "your password is also used elsewhere, change it.",
    ]))
    return msg
