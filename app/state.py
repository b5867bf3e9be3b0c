"""The running app's policy and keyring, for services that need them.

Services take them from here rather than from ``flask.request``; outside a request
(CLI, tests) the app context still provides them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from app.config import Settings
    from app.crypto.keyring import Keyring
    from app.policy import Policy
    from app.storage import BlobStore


def policy() -> Policy:
    return current_app.extensions["enclave.policy"]


def keyring() -> Keyring:
    return current_app.extensions["enclave.keyring"]


def settings() -> Settings:
    return current_app.extensions["enclave.settings"]


def blobs() -> BlobStore:
    """The attachment blob store (``<instance>/blobs`` on the filesystem by default)."""
    return current_app.extensions["enclave.blobs"]
