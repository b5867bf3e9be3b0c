from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.auth.models import User
from app.db import Base, utcnow


class AttachmentCopy(Base):
    """One per-reader copy of an attachment (a stamped download, or a page rendered for
    a view-only level). ``id`` is the copy id embedded in the file (PDF document
    information and trailer ID, image metadata, notebook metadata); ``code`` is the short
    code printed on it. Kept when the attachment or its finding goes (a leak may surface
    later), so the attachment and finding are plain ids, not foreign keys."""

    __tablename__ = "attachment_copies"
    __table_args__ = (Index("ix_attachment_copies_attachment_created", "attachment_id",
                            "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    code: Mapped[str] = mapped_column(String(11), unique=True)
    attachment_id: Mapped[str] = mapped_column(String(32))
    finding_id: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    #: pdf | image | text | notebook (downloads); view (a rendered page or image)
    kind: Mapped[str] = mapped_column(String(16))
    level: Mapped[str] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship(lazy="joined")
