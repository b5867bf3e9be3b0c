"""gunicorn settings for `gunicorn -c gunicorn.conf.py wsgi:app` (see README).

Every value can be overridden with an ENCLAVE_GUNICORN_* environment variable.
"""

import multiprocessing
import os
import sys

from gunicorn.glogging import Logger

from app.logredact import RedactingFilter, redact


def _env(name: str, default: str) -> str:
    return os.environ.get(f"ENCLAVE_GUNICORN_{name}", default)


bind = _env("BIND", "127.0.0.1:8000")
workers = int(_env("WORKERS", str(min(4, multiprocessing.cpu_count() * 2))))
threads = int(_env("THREADS", "4"))
worker_class = "gthread"
# Uploads and downloads of large attachments stream for minutes: the timeout guards
# against hung workers, not slow transfers (gthread keeps heartbeats while streaming).
timeout = int(_env("TIMEOUT", "120"))
graceful_timeout = int(_env("GRACEFUL_TIMEOUT", "30"))
keepalive = int(_env("KEEPALIVE", "5"))
max_requests = int(_env("MAX_REQUESTS", "5000"))
max_requests_jitter = int(_env("MAX_REQUESTS_JITTER", "500"))
preload_app = _env("PRELOAD", "1") == "1"
forwarded_allow_ips = _env("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = _env("ACCESS_LOG", "-")
errorlog = "-"
# The path only (%(U)s: no query string, which may carry search words or sign-on codes),
# with reset and invitation tokens replaced (RedactingLogger); no Referer, no headers.
access_log_format = (
    '{"time":"%(t)s","remote":"%(h)s","method":"%(m)s","path":"%(U)s","status":%(s)s,'
    '"bytes":"%(B)s","duration_us":%(D)s,"request_id":"%({x-request-id}o)s",'
    '"agent":"%(a)s"}'
)


class RedactingLogger(Logger):
    """gunicorn's logger with reset/invitation tokens and query strings taken out of the
    access log's path and request line, and out of its error log (which names the
    request's URI when a request fails)."""

    def setup(self, cfg):  # type: ignore[no-untyped-def]
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            if not any(isinstance(f, RedactingFilter) for f in log.filters):
                log.addFilter(RedactingFilter())

    def atoms(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("U", "r", "f"):
            if isinstance(atoms.get(key), str):
                atoms[key] = redact(atoms[key])
        atoms["q"] = ""
        return atoms


logger_class = RedactingLogger


def post_fork(server, worker):  # type: ignore[no-untyped-def]
    """Connections made before the fork (preload) must not be shared between workers.

    Only an app already loaded (preload) has any; looking it up rather than importing
    ``wsgi`` keeps this config usable for other WSGI apps (the benchmark's bare route)."""
    app = getattr(sys.modules.get("wsgi"), "app", None)
    engine = getattr(app, "extensions", {}).get("enclave.engine")
    if engine is not None:
        engine.dispose(close=False)


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
