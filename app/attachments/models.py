"""Encrypted attachments of findings (see docs/attachments.md for the format and keys)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.auth.models import User
from app.db import Base, utcnow
from app.findings.models import Finding
from app.sealing import Sealed, sealed_text


class Attachment(Base, Sealed):
    """One file attached to a finding; its bytes live encrypted in the blob store.

    ``id`` is a random 128-bit hex string chosen before the upload starts: it is bound
    into the blob's encryption context and into the wrapped key's AAD, so it must be
    known before the first byte is encrypted (and it cannot be guessed from outside).

    ``wrapped_key`` is the attachment's data key wrapped under the KEK
    ``(kek_level, kek_version)``. NULL means crypto-shredded: the attachment was
    deleted and its bytes are unrecoverable even if the blob survived.

    ``sha256_sealed`` is the plaintext's SHA-256 sealed under the app key, so that the
    database alone does not confirm which (known) file an attachment is.
    """

    __tablename__ = "attachments"
    __table_args__ = (
        Index("ix_attachments_finding_created", "finding_id", "created_at"),
        Index("ix_attachments_kek", "kek_level", "kek_version"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id", ondelete="CASCADE"))
    uploader_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    filename_sealed: Mapped[bytes] = mapped_column("filename", LargeBinary)
    content_type: Mapped[str] = mapped_column(String(127))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    blob_id: Mapped[str] = mapped_column(String(64), unique=True)
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    kek_level: Mapped[str] = mapped_column(String(64))
    kek_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]

    finding: Mapped[Finding] = relationship()
    uploader: Mapped[User] = relationship(lazy="joined")

    filename = sealed_text("filename_sealed")  # under the finding's level, like its bytes

    @property
    def live(self) -> bool:
        return self.wrapped_key is not None and self.deleted_at is None

    def __repr__(self) -> str:
        state = "live" if self.live else "shredded"
        return f"<Attachment {self.id} finding={self.finding_id} {self.size}B {state}>"
