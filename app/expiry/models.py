from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, utcnow


class ExpiryNotice(Base):
    """A warning e-mail sent before a grant lapses, so that a daily run sends each one
    once: one row per (kind, subject, detail, lapse time). A renewed grant has a new
    lapse time, so its next warning is a new row."""

    __tablename__ = "expiry_notices"
    __table_args__ = (UniqueConstraint("kind", "subject_id", "detail", "lapses_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: ``clearance`` (subject: user), ``nda`` (user; detail: NDA key), ``org`` (org;
    #: detail: level)
    kind: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[int]
    detail: Mapped[str] = mapped_column(String(64), default="")
    lapses_at: Mapped[datetime]
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
