"""Absolute links (invitations, password resets, e-mails, feeds, API answers).

Every absolute URL the app hands out is built from ``ENCLAVE_BASE_URL``, never from the
request's ``Host`` header or ``X-Forwarded-Host``: a forged header would otherwise put an
attacker's host into an invitation or reset link that a real person then follows.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import current_app

from app import state


def base_url() -> str:
    """``ENCLAVE_BASE_URL`` without its trailing slash."""
    return state.settings().base_url.rstrip("/")


def external_url(endpoint: str, **values: Any) -> str:
    """The absolute URL of ``endpoint`` on this site, under ``ENCLAVE_BASE_URL``
    (its scheme, host, port and path prefix), whatever host the request named."""
    parts = urlsplit(base_url())
    adapter = current_app.url_map.bind(
        parts.netloc, script_name=parts.path or "/", url_scheme=parts.scheme or "https")
    return adapter.build(endpoint, values, force_external=True)
