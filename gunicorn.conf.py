"""gunicorn settings for `gunicorn -c gunicorn.conf.py wsgi:app` (see README).

Every value can be overridden with an ENCLAVE_GUNICORN_* environment variable.
"""

import multiprocessing
import os
import sys


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
access_log_format = (
    '{"time":"%(t)s","remote":"%(h)s","method":"%(m)s","path":"%(U)s","status":%(s)s,'
    '"bytes":"%(B)s","duration_us":%(D)s,"request_id":"%({x-request-id}o)s",'
    '"agent":"%(a)s"}'
)


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
