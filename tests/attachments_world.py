"""Fixtures and helpers for the attachment tests: an app with its own keyring and blob
store (so rotations and tampering stay inside one test), users, findings, uploads,
and a real HTTP server in a thread."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from werkzeug.serving import make_server

from app import audit, state
from app.attachments import service
from app.attachments.models import Attachment
from app.auth.models import User
from app.db import db
from app.findings.models import Finding
from app.orgs.models import Organization
from tests.conftest import running_app
from tests.factories import make_finding, make_org, make_user

CHUNK = 16384


@pytest.fixture
def att_app(migrated: str, tmp_path: Path) -> Iterator[Flask]:
    """Like ``app``, with a fresh instance folder: its own keyring and blob store."""
    instance = tmp_path / "instance"
    with running_app(migrated, instance) as app:
        yield app


@pytest.fixture
def att_client(att_app: Flask) -> Any:
    return att_app.test_client()


def payload(size: int, seed: int = 1) -> bytes:
    """Deterministic, non-repeating test bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


@dataclass
class World:
    org: Organization
    other_org: Organization
    author: User
    reader: User  # same org, cleared for everything
    admin: User
    outsider: User  # other org, cleared; not in compartments
    low: User  # author's org, cleared for network only
    finding: Finding  # network
    secret: Finding  # confidential, compartment = author's org


def build_world() -> World:
    org = make_org("lab")
    other = make_org("elsewhere")
    author = make_user(org, name="alice")
    world = World(
        org=org, other_org=other, author=author,
        reader=make_user(org, name="rita"),
        admin=make_user(other, name="ada", role="admin"),
        outsider=make_user(other, name="oscar"),
        low=make_user(org, name="lou", clearance="network"),
        finding=make_finding(author, level="network", title="Open finding"),
        secret=make_finding(author, level="confidential", title="Compartmented finding",
                            compartment=[org]),
    )
    return world


def attach(user: User, finding: Finding, data: bytes, filename: str = "data.bin",
           content_type: str = "application/octet-stream") -> Attachment:
    return service.upload(user, finding.id, filename=filename, stream=io.BytesIO(data),
                          content_length=len(data), content_type=content_type)


def blob_path(att: Attachment) -> Path:
    return state.blobs()._path(att.blob_id)  # type: ignore[attr-defined]


def blob_files() -> list[Path]:
    root = state.blobs().root  # type: ignore[attr-defined]
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and p.relative_to(root).parts[0] != "tmp")


def temp_files() -> list[Path]:
    return sorted(state.blobs().tmp_dir.iterdir())  # type: ignore[attr-defined]


def audit_actions(action: str | None = None) -> list[audit.AuditEntry]:
    db.rollback()
    query = select(audit.AuditEntry).order_by(audit.AuditEntry.seq)
    if action:
        query = query.where(audit.AuditEntry.action == action)
    return list(db.scalars(query))


def reload(att: Attachment) -> Attachment:
    db.rollback()
    fresh = db.get(Attachment, att.id)
    assert fresh is not None
    db.refresh(fresh)
    return fresh


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


class ServerThread:
    """The app on a real Werkzeug server (threaded) on 127.0.0.1, for socket-level checks."""

    def __init__(self, app: Flask) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(10)


def api_headers(token_headers: dict[str, str], **extra: str) -> dict[str, str]:
    return {**token_headers, **extra}
