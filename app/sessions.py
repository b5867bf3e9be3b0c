"""Server-side sessions in Redis (Flask-Session) when ENCLAVE_REDIS_URL is set.

Several workers or machines then share sessions, and ending a session deletes it
everywhere. If Redis is unreachable the app keeps serving what needs no session, and
sign-in is refused with a clear message, rather than every page failing.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import redis
from flask import Flask, Request, Response, current_app
from flask.sessions import SessionMixin
from flask_session.redis import RedisSessionInterface

log = logging.getLogger("enclave.sessions")
RETRY_AFTER_SECONDS = 5.0


class ResilientRedisSessionInterface(RedisSessionInterface):
    """Flask-Session's Redis store, with a short circuit breaker around outages."""

    _down_until = 0.0

    def _unavailable(self) -> Any:
        session = self.session_class(sid=self._generate_sid(self.sid_length),
                                     permanent=self.permanent)
        session.unavailable = True  # type: ignore[attr-defined]
        return session

    def open_session(self, app: Flask, request: Request) -> Any:
        if time.monotonic() < self._down_until:
            return self._unavailable()
        try:
            return super().open_session(app, request)
        except redis.RedisError as exc:
            self._trip(exc)
            return self._unavailable()

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if getattr(session, "unavailable", False):
            return
        try:
            super().save_session(app, session, response)
        except redis.RedisError as exc:
            self._trip(exc)

    def _trip(self, exc: Exception) -> None:
        type(self)._down_until = time.monotonic() + RETRY_AFTER_SECONDS
        log.warning("session store unreachable (%s); sign-in refused until it is back", exc)


def init_sessions(app: Flask, redis_url: str | None, lifetime_hours: int) -> None:
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=lifetime_hours)
    if not redis_url:
        return  # Flask's signed cookie sessions (single process / development)
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=0.5, socket_timeout=1.0,
                                  health_check_interval=30)
    app.session_interface = ResilientRedisSessionInterface(
        app, client=client, key_prefix="enclave:session:", use_signer=False, permanent=True,
        sid_length=32,
    )
    app.extensions["enclave.redis"] = client


def sessions_available(session: SessionMixin) -> bool:
    return not getattr(session, "unavailable", False)


def rotate(session: SessionMixin) -> None:
    """A new session id (at sign-in and at 2FA changes): the old id stops working."""
    interface = current_app.session_interface
    if isinstance(interface, RedisSessionInterface) and sessions_available(session):
        # Flask-Session's regenerate() skips empty sessions; a pre-login session is often
        # empty, and its id must not survive sign-in either.
        interface._delete_session(interface._get_store_id(session.sid))  # type: ignore[attr-defined]
        session.sid = interface._generate_sid(interface.sid_length)  # type: ignore[attr-defined]
        session.modified = True
