"""One-time form submission tokens (double-submission guard)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, utcnow


class FormSubmission(Base):
    """A create form (or an API call with an ``Idempotency-Key``) that went through.

    The row is written in the same transaction as what the submission created, under the
    unique ``token_hash``: a second submission of the same token, sequential or
    concurrent, fails on the constraint and is sent to ``target_type``/``target_id``.
    The hash covers the user id, so a token is only ever one user's.
    """

    __tablename__ = "form_submissions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    target_type: Mapped[str] = mapped_column(String(32), default="")
    target_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
