"""Progress of the resumable content jobs (one row per job and table)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, utcnow


class ContentJob(Base):
    """``kind`` is ``encrypt`` (rows migration 0011 left as plaintext) or ``rotate``
    (values not yet under the active key versions). ``last_id`` is the highest row id of
    ``table_name`` done so far; ``done`` once the table is finished. A job with rows not
    done is resumed where it stopped."""

    __tablename__ = "content_jobs"
    __table_args__ = (UniqueConstraint("kind", "table_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    table_name: Mapped[str] = mapped_column(String(64))
    last_id: Mapped[str] = mapped_column(String(64), default="")
    done: Mapped[bool] = mapped_column(default=False)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
