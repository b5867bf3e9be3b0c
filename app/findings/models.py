from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, false, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.auth.models import User
from app.db import Base, utcnow
from app.orgs.models import Organization


class Category(Base):
    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")


class Finding(Base):
    """A post at a security level, optionally restricted to named organizations.

    ``compartmented`` mirrors "has rows in finding_orgs" so that the access filter
    can skip the compartment lookup for the common open case. ``body_html`` caches the
    sanitized rendering of ``body`` (re-rendered by the service when the body changes).
    Lists page by keyset on (created_at, id), hence the composite indexes.
    """

    __tablename__ = "findings"
    __table_args__ = (
        Index("ix_findings_level_created", "level", "created_at",
              postgresql_include=["id", "compartmented", "org_id"]),
        # covering on PostgreSQL: deep offset pages and counts filter by the access rule
        # without visiting the table (index-only scan)
        Index("ix_findings_created_id", "created_at", "id",
              postgresql_include=["level", "compartmented", "org_id"]),
        Index("ix_findings_category_created", "category_id", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text, default="", server_default="")
    level: Mapped[str] = mapped_column(String(64))
    compartmented: Mapped[bool] = mapped_column(default=False)
    locked: Mapped[bool] = mapped_column(default=False, server_default=false())
    category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id"))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    reply_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Moves by one with every change of title, body, level or compartment (each one keeps
    # a FindingRevision): edit forms and API ETags carry it, and an edit based on an older
    # version is refused instead of overwriting the newer one unseen.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_reply_at: Mapped[datetime | None]

    author: Mapped[User] = relationship(lazy="joined")
    org: Mapped[Organization] = relationship(lazy="joined")
    category: Mapped[Category | None] = relationship(lazy="joined")
    compartment: Mapped[list[FindingOrg]] = relationship(
        cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def compartment_org_ids(self) -> set[int]:
        return {c.org_id for c in self.compartment}

    @property
    def compartment_orgs(self) -> list[Organization]:
        return sorted((c.org for c in self.compartment), key=lambda o: o.name)

    @property
    def last_activity_at(self) -> datetime:
        if self.last_reply_at is not None and self.last_reply_at > self.updated_at:
            return self.last_reply_at
        return self.updated_at


class FindingOrg(Base):
    """One organization named in a finding's compartment."""

    __tablename__ = "finding_orgs"

    finding_id: Mapped[int] = mapped_column(
        ForeignKey("findings.id", ondelete="CASCADE"), primary_key=True
    )
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), primary_key=True,
                                        index=True)
    org: Mapped[Organization] = relationship(lazy="joined")


class Reply(Base):
    """A reply in a finding's discussion; it has no access of its own (inherits)."""

    __tablename__ = "replies"
    __table_args__ = (Index("ix_replies_finding_created", "finding_id", "created_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id", ondelete="CASCADE"))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    body: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    hidden: Mapped[bool] = mapped_column(default=False)
    hidden_at: Mapped[datetime | None]
    hidden_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    hidden_reason: Mapped[str] = mapped_column(String(500), default="")

    author: Mapped[User] = relationship(lazy="joined", foreign_keys=[author_id])
    hidden_by: Mapped[User | None] = relationship(lazy="select", foreign_keys=[hidden_by_id])


class FindingRevision(Base):
    """The state of a finding before one edit: who changed it, when, and what it was."""

    __tablename__ = "finding_revisions"
    __table_args__ = (Index("ix_finding_revisions_finding_created", "finding_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id", ondelete="CASCADE"))
    editor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    old_title: Mapped[str] = mapped_column(String(300))
    old_body: Mapped[str] = mapped_column(Text)
    old_level: Mapped[str] = mapped_column(String(64))
    # Space-separated organization slugs of the compartment before the edit ("" = none).
    old_compartment: Mapped[str] = mapped_column(Text, default="")

    editor: Mapped[User] = relationship(lazy="joined")


class FindingRead(Base):
    """When a user last opened a finding; drives the unread markers in lists."""

    __tablename__ = "finding_reads"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id", ondelete="CASCADE"),
                                            primary_key=True, index=True)
    last_read_at: Mapped[datetime] = mapped_column(default=utcnow)
