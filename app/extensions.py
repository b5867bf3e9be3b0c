from __future__ import annotations

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, default_limits=[], headers_enabled=True)


def search_limit() -> str:
    """ENCLAVE_SEARCH_LIMIT: full-text search is the costliest read."""
    from app import state

    return state.settings().search_limit


def user_or_address() -> str:
    """Rate-limit key: the signed-in user (page session or API token), else the address.
    A user's count is the same on the pages and the API and across tokens."""
    from flask import g
    from flask_login import current_user

    user = g.get("api_user") or (current_user if current_user.is_authenticated else None)
    if user is not None:
        return f"user:{user.id}"
    return "ip:" + (get_remote_address() or "")


def not_a_search() -> bool:
    """A request without a query (the empty search page, a plain list) is not counted."""
    from flask import request

    return not request.args.get("q", "").strip()
