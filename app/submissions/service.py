"""One-time submission tokens: a double-submitted create form creates one thing.

Every create form carries a random hidden token (``OnceForm``); the API accepts the same
through an ``Idempotency-Key`` header. The creating service calls :func:`claim` first,
which inserts the token's row in the service's own transaction, and :func:`settle` once
the new thing has an id; the commit stores both or neither. A second submission of the
same token finds the row (sequential case) or fails on the unique constraint after the
first commits (concurrent case: PostgreSQL makes the second insert wait for the first
transaction, SQLite has one writer) and raises :class:`AlreadySubmitted` naming what the
first one created. A refused first submission (a validation error) is rolled back with
its row, so the same form can be corrected and sent again.

Rows older than ``KEEP`` are pruned: each claim drops the same user's old rows, and
``enclave forms prune`` drops everyone's (run it from cron with ``storage gc``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from app.db import db, utcnow
from app.errors import Conflict, ServiceError
from app.submissions.models import FormSubmission

KEEP = timedelta(days=1)
TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]{16,128}$")


class AlreadySubmitted(Conflict):
    """This token already created something: ``target_type`` / ``target_id`` say what."""

    code = "already_submitted"

    def __init__(self, row: FormSubmission | None):
        super().__init__("This form was already submitted; nothing new was created.")
        self.kind = row.kind if row is not None else ""
        self.target_type = row.target_type if row is not None else ""
        self.target_id = row.target_id if row is not None else None


def new_token() -> str:
    """A fresh random token for a form being rendered."""
    return secrets.token_urlsafe(24)


def _hash(user_id: int, token: str) -> str:
    return hashlib.sha256(f"{user_id}:{token}".encode()).hexdigest()


def check_key(token: Any, *, header: str = "Idempotency-Key") -> str | None:
    """An API idempotency key: None when absent, else 16-128 URL-safe characters."""
    if token is None or token == "":
        return None
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        raise ServiceError(f"{header} is 16-128 letters, digits, '-' or '_'.",
                           code="bad_idempotency_key")
    return token


def find(user_id: int, token: str) -> FormSubmission | None:
    return db.scalar(select(FormSubmission).where(
        FormSubmission.token_hash == _hash(user_id, token),
        FormSubmission.user_id == user_id))


def claim(user: Any, token: str | None, kind: str) -> FormSubmission | None:
    """Record ``token`` for ``user`` in the current transaction (call it first, before
    anything else is written). None when there is no token (nothing to guard).
    Raises :class:`AlreadySubmitted` when the token was used already."""
    if not token:
        return None
    token = str(token)[:200]
    existing = find(user.id, token)
    if existing is not None:
        raise AlreadySubmitted(existing)
    db.execute(delete(FormSubmission).where(FormSubmission.user_id == user.id,
                                            FormSubmission.created_at < utcnow() - KEEP))
    row = FormSubmission(user_id=user.id, token_hash=_hash(user.id, token), kind=kind,
                         created_at=utcnow())
    db.add(row)
    try:
        # waits for a concurrent transaction holding the same token, then fails if it
        # committed
        db.flush()
    except IntegrityError:
        db.rollback()
        raise AlreadySubmitted(find(user.id, token)) from None
    return row


def settle(row: FormSubmission | None, target_type: str, target_id: int) -> None:
    """Name what the submission created (same transaction; the caller commits)."""
    if row is None:
        return
    row.target_type = target_type
    row.target_id = target_id
    db.flush()


def prune(older_than: timedelta = KEEP) -> int:
    """Drop tokens older than ``older_than``; returns how many."""
    result = db.execute(delete(FormSubmission)
                        .where(FormSubmission.created_at < utcnow() - older_than))
    db.commit()
    return int(getattr(result, "rowcount", 0) or 0)
