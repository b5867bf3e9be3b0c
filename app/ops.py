"""Operations: structured JSON logs with a request id, /healthz, Prometheus /metrics."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import tempfile
import time
from typing import Any

from flask import Blueprint, Flask, Response, abort, g, request
from flask_login import current_user
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from pythonjsonlogger.json import JsonFormatter
from sqlalchemy import text

from app import logredact, state
from app.context import request_id
from app.db import db
from app.logredact import RedactingFilter

bp = Blueprint("ops", __name__)
log = logging.getLogger("enclave.ops")

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter("enclave_http_requests_total", "HTTP requests",
                   ["method", "endpoint", "status"], registry=REGISTRY)
LATENCY = Histogram("enclave_http_request_seconds", "HTTP request latency",
                    ["method", "endpoint"], registry=REGISTRY,
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure_logging(json_logs: bool) -> None:
    """JSON lines on stderr (production), readable lines otherwise; both carry request_id."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactingFilter())
    if json_logs:
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        ))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger("enclave")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    # Flask-Limiter's own warnings (its storage unreachable, falling back to per-process
    # memory) go to the same lines, with the request id, instead of bare stderr text.
    limiter_log = logging.getLogger("flask-limiter")
    limiter_log.handlers[:] = [handler]
    limiter_log.setLevel(logging.WARNING)
    limiter_log.propagate = False
    # the development server's request lines: no reset/invitation tokens, no queries
    logredact.install("werkzeug")


def install_metrics(app: Flask) -> None:
    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.get("started")
        if started is not None and request.endpoint != "ops.metrics":
            endpoint = request.endpoint or "unknown"
            LATENCY.labels(request.method, endpoint).observe(time.perf_counter() - started)
            REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
        return response


def _metrics_token_given() -> bool:
    """The request carries ``Authorization: Bearer <ENCLAVE_METRICS_TOKEN>`` (compared in
    constant time)."""
    expected = state.settings().metrics_token
    header = request.headers.get("Authorization", "")
    if not expected or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), expected.encode())


def _metrics_allowed() -> bool:
    """Production: only the bearer token (behind a proxy every request comes from the
    proxy's address, so an address rule lets anyone in). Elsewhere also the
    ENCLAVE_METRICS_ALLOW networks and signed-in admins."""
    if _metrics_token_given():
        return True
    if state.settings().production:
        return False
    allowed = state.settings().metrics_allow
    try:
        addr = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        addr = None
    if addr is not None and any(addr in net for net in allowed):
        return True
    return bool(current_user.is_authenticated and current_user.is_admin)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format: for the bearer token ENCLAVE_METRICS_TOKEN; outside
    production also from ENCLAVE_METRICS_ALLOW networks or for admins."""
    if not _metrics_allowed():
        abort(404)
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # gunicorn workers each write their samples to files; sum them on scrape.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/healthz")
def healthz() -> Any:
    """Liveness and readiness: database, storage, keyring, Redis. No secrets, no counts."""
    checks: dict[str, str] = {}
    try:
        db.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        db.rollback()
        log.warning("healthz: database: %s", exc)
        checks["database"] = "fail"
    try:
        folder = state.settings().instance_path
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".healthz-"):
            pass
        checks["storage"] = "ok"
    except OSError as exc:
        log.warning("healthz: storage: %s", exc)
        checks["storage"] = "fail"
    keyring = state.keyring()
    missing = set(state.policy().level_keys()) - set(keyring.levels)
    checks["keyring"] = "ok" if not missing else "fail"
    client = _redis()
    if client is not None:
        try:
            client.ping()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001
            log.warning("healthz: redis: %s", exc)
            checks["redis"] = "fail"
    healthy = all(v == "ok" for k, v in checks.items() if k != "redis")
    status = "ok" if healthy and checks.get("redis", "ok") == "ok" else (
        "degraded" if healthy else "fail")
    return {"status": status, "checks": checks}, 200 if healthy else 503


def _redis() -> Any:
    from flask import current_app

    return current_app.extensions.get("enclave.redis")

