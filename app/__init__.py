"""Enclave: restricted-sharing research coordination."""

from __future__ import annotations

import logging
import os
import secrets
from typing import Any

from flask import Flask, g, request, session
from sqlalchemy.exc import DBAPIError
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from app.config import (
    ConfigError,
    Settings,
    ensure_dev_secret,
    load_settings,
    prepare_instance,
)
from app.context import client_ip, request_id
from app.db import bind, db, describe_db_error, make_engine

log = logging.getLogger("enclave")


class BoundedIntConverter(IntegerConverter):
    """``<int:...>`` URL parts: an id beyond what an id column holds (32-bit INTEGER on
    PostgreSQL) becomes 0, which no row has, so the view answers 404 (no such item)
    instead of the database failing with an integer overflow (500). Refusing the match
    instead would make Werkzeug answer 405 to every method but GET."""

    def to_python(self, value: str) -> int:
        number = int(value)
        return number if number < 2**31 else 0


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app. ``overrides`` replace settings (tests); the environment does the rest.

    Start-up fails with a one-line ConfigError/PolicyError/KeyringError message when
    a setting, a policy file or a key is wrong, never later on first use.
    """
    from app.config import keyring_unsealer
    from app.crypto.keyring import configure_unsealer, ensure_levels_in_file, load_or_create
    from app.policy import load_policy

    settings = load_settings(overrides)
    prepare_instance(settings)
    ensure_dev_secret(settings)
    policy = load_policy(settings.policy_dir)
    configure_unsealer(keyring_unsealer())
    keyring, created = load_or_create(
        settings.keyring_path, policy.level_keys(), allow_create=not settings.production
    )
    if created:
        log.warning("generated a development keyring in %s; production must set "
                    "ENCLAVE_KEYRING", settings.keyring_path)
    if not keyring.sealed:
        if settings.production and os.environ.get("ENCLAVE_KEYRING_UNSEALED") != "allow":
            raise ConfigError(
                f"production settings refused: the keyring {settings.keyring_path} is not "
                "sealed (anyone who reads the file has every key); seal it with "
                "`enclave keys seal` and set ENCLAVE_KEYRING_PASSPHRASE_FILE or "
                "ENCLAVE_KEYRING_COMMAND (ENCLAVE_KEYRING_UNSEALED=allow accepts it)")
        if settings.env == "development":
            log.warning("the keyring %s is not sealed: whoever reads the file has every "
                        "key (`enclave keys seal` seals it with a passphrase)",
                        settings.keyring_path)
    elif set(policy.level_keys()) - set(keyring.levels):
        # A level new to the keyring: add its key under a file lock, so that several
        # workers starting at once agree on one key.
        keyring, _ = ensure_levels_in_file(settings.keyring_path, policy.level_keys())

    from app.ops import configure_logging

    configure_logging(settings.json_logs)
    app = Flask(__name__, instance_path=str(settings.instance_path))
    from app.jsonbody import BoundedJSONProvider

    app.json = BoundedJSONProvider(app)  # a deeply nested body is a 400, not a 500
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_form_bytes,
        MAX_FORM_MEMORY_SIZE=settings.max_form_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        SESSION_COOKIE_NAME="enclave_session",
        REMEMBER_COOKIE_DURATION=0,
        WTF_CSRF_TIME_LIMIT=None,
        RATELIMIT_STORAGE_URI=settings.redis_url or "memory://",
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_KEY_PREFIX="enclave",
        TESTING=settings.env == "test",
    )
    app.extensions["enclave.settings"] = settings
    app.extensions["enclave.policy"] = policy
    app.extensions["enclave.keyring"] = keyring
    engine = make_engine(settings.database_url)
    app.extensions["enclave.engine"] = engine
    bind(engine)
    _init_attachments(app, settings, engine, keyring)

    if settings.proxy_count:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_count,  # type: ignore
                                x_proto=settings.proxy_count, x_host=settings.proxy_count)

    _init_extensions(app, settings)
    app.url_map.converters["int"] = BoundedIntConverter  # before any route is added
    _register_blueprints(app)
    _register_hooks(app, settings)

    from app.cli import register_cli

    register_cli(app)
    return app


def _init_extensions(app: Flask, settings: Settings) -> None:
    from app.auth.views import load_signed_in_user
    from app.extensions import csrf, limiter, login_manager
    from app.ops import install_metrics
    from app.sessions import init_sessions
    from app.web import install_retry_after_guard

    init_sessions(app, settings.redis_url, settings.session_absolute_hours)
    install_metrics(app)
    install_retry_after_guard(app)  # before the limiter, so that it runs after it
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = None  # session ids rotate at login instead
    login_manager.user_loader(load_signed_in_user)


def _init_attachments(app: Flask, settings: Settings, engine: Any, keyring: Any) -> None:
    """The blob store, and the start-up check that every KEK version attachments use is
    in the keyring (a KeyringError naming the key, not a failure on first download)."""
    from app.attachments.service import check_keys
    from app.storage import FileSystemBlobStore

    app.extensions["enclave.blobs"] = FileSystemBlobStore(settings.instance_path / "blobs")
    check_keys(engine, keyring)


def _register_blueprints(app: Flask) -> None:
    from app.admin.views import bp as admin_bp
    from app.api import bp as api_bp
    from app.attachments.views import bp as attachments_bp
    from app.auth.views import bp as auth_bp
    from app.extensions import csrf
    from app.findings.views import admin_bp as categories_bp
    from app.findings.views import bp as findings_bp
    from app.main import bp as main_bp
    from app.ndas.views import bp as ndas_bp
    from app.notifications.views import bp as notifications_bp
    from app.ops import bp as ops_bp
    from app.orgs.views import bp as orgs_bp
    from app.publish.views import bp as public_bp
    from app.reactions.views import bp as reactions_bp
    from app.review.views import bp as review_bp
    from app.scim.views import bp as scim_bp
    from app.sso.views import bp as sso_bp
    from app.traceability.views import bp as traceability_bp

    app.register_blueprint(main_bp)
    app.register_blueprint(ops_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(ndas_bp)
    app.register_blueprint(orgs_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(findings_bp)
    app.register_blueprint(categories_bp)
    app.register_blueprint(reactions_bp)
    app.register_blueprint(notifications_bp)
    app.register_blueprint(attachments_bp)
    app.register_blueprint(review_bp)
    app.register_blueprint(traceability_bp)
    app.register_blueprint(public_bp)
    app.register_blueprint(sso_bp)
    app.register_blueprint(scim_bp)
    app.register_blueprint(api_bp)
    csrf.exempt(api_bp)  # bearer tokens only; cookie sessions are not accepted there


def _register_hooks(app: Flask, settings: Settings) -> None:
    from app.web import install_web_hooks

    @app.before_request
    def _request_context() -> None:
        g.request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
        g.csp_nonce = secrets.token_urlsafe(16)
        client_ip.set(request.remote_addr or "")
        request_id.set(g.request_id)

    @app.teardown_request
    def _end_transaction(_exc: BaseException | None) -> None:
        # Nothing uncommitted outlives a request, and objects are re-read next time.
        # The connection may die after the answer was ready (PostgreSQL restarting):
        # the answer stands (what it reports was committed or only read), and the pool
        # drops the dead connection; raising here turned it into a bare 500.
        try:
            db.rollback()
        except DBAPIError as exc:
            log.warning("rollback at the end of the request failed: %s",
                        describe_db_error(exc))

    @app.teardown_appcontext
    def _remove_session(_exc: BaseException | None) -> None:
        try:
            db.remove()
        except DBAPIError as exc:
            log.warning("closing the database session failed: %s",
                        describe_db_error(exc))

    install_web_hooks(app, settings)
    _ = session  # imported for hooks defined in app.web
