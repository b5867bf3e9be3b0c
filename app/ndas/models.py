from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, utcnow


class NdaAcknowledgement(Base):
    """A user's signature of one version of one NDA text. Never updated or deleted.

    A level with ``renew_days`` asks for the same version to be signed again after that
    many days, so one (user, key, version) can have several rows: the latest counts."""

    __tablename__ = "nda_acknowledgements"
    __table_args__ = (Index("ix_nda_acknowledgements_user_key_version", "user_id", "nda_key",
                            "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    nda_key: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    text_sha256: Mapped[str] = mapped_column(String(64))
    signed_name: Mapped[str] = mapped_column(String(200))
    ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
