"""Per-request facts that services may log without importing Flask's request."""

from __future__ import annotations

from contextvars import ContextVar

client_ip: ContextVar[str] = ContextVar("client_ip", default="")
request_id: ContextVar[str] = ContextVar("request_id", default="")
