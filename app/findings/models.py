from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, false, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.auth.models import User
from app.db import Base, utcnow
from app.orgs.models import Organization
from app.sealing import LevelLookup, Sealed, sealed_text


class Category(Base):
    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")


class Finding(Base, Sealed):
    """A post at a security level, optionally restricted to named organizations.

    ``title``, ``body`` and ``body_html`` are stored encrypted under the level's key
    (``app.sealing``); row queries read ``title_sealed`` and open it with ``reveal``.

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
    title_sealed: Mapped[bytes] = mapped_column("title", LargeBinary)
    body_sealed: Mapped[bytes] = mapped_column("body", LargeBinary)
    body_html_sealed: Mapped[bytes] = mapped_column("body_html", LargeBinary, default=b"")
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

    title = sealed_text("title_sealed")
    body = sealed_text("body_sealed")
    body_html = sealed_text("body_html_sealed")

    def sealed_level(self, lookup: LevelLookup, field: str) -> str:
        return lookup.overrides.get(self.id, self.level)

    @classmethod
    def sealed_scope(cls, finding_id: int) -> object:
        return cls.id == finding_id

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


class Reply(Base, Sealed):
    """A reply in a finding's discussion; it has no access of its own (inherits).
    Its texts are sealed under the finding's level."""

    __tablename__ = "replies"
    __table_args__ = (Index("ix_replies_finding_created", "finding_id", "created_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id", ondelete="CASCADE"))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    body_sealed: Mapped[bytes] = mapped_column("body", LargeBinary)
    body_html_sealed: Mapped[bytes] = mapped_column("body_html", LargeBinary, default=b"")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    hidden: Mapped[bool] = mapped_column(default=False)
    hidden_at: Mapped[datetime | None]
    hidden_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    hidden_reason_sealed: Mapped[bytes] = mapped_column("hidden_reason", LargeBinary,
                                                        default=b"")

    body = sealed_text("body_sealed")
    body_html = sealed_text("body_html_sealed")
    hidden_reason = sealed_text("hidden_reason_sealed")

    author: Mapped[User] = relationship(lazy="joined", foreign_keys=[author_id])
    hidden_by: Mapped[User | None] = relationship(lazy="select", foreign_keys=[hidden_by_id])


class FindingRevision(Base, Sealed):
    """The state of a finding before one edit: who changed it, when, and what it was.

    Its texts are sealed under the higher of its own level and the finding's: a version
    withheld after a declassification stays under the key of the level it was at."""

    __tablename__ = "finding_revisions"
    __table_args__ = (Index("ix_finding_revisions_finding_created", "finding_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id", ondelete="CASCADE"))
    editor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    old_title_sealed: Mapped[bytes] = mapped_column("old_title", LargeBinary)
    old_body_sealed: Mapped[bytes] = mapped_column("old_body", LargeBinary)
    old_level: Mapped[str] = mapped_column(String(64))
    # Space-separated organization slugs of the compartment before the edit ("" = none).
    old_compartment: Mapped[str] = mapped_column(Text, default="")

    editor: Mapped[User] = relationship(lazy="joined")

    old_title = sealed_text("old_title_sealed")
    old_body = sealed_text("old_body_sealed")

    def sealed_level(self, lookup: LevelLookup, field: str) -> str:
        return revision_level(self.old_level, lookup.finding(self.finding_id))


def revision_level(old_level: str, finding_level: str) -> str:
    """The level sealing a revision: the higher of the version's and the finding's."""
    from app import state

    policy = state.policy()
    if not (policy.is_level(old_level) and policy.is_level(finding_level)):
        return finding_level
    return old_level if policy.rank(old_level) > policy.rank(finding_level) else finding_level


class FindingRead(Base):
    """When a user last opened a finding; drives the unread markers in lists."""

    __tablename__ = "finding_reads"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id", ondelete="CASCADE"),
                                            primary_key=True, index=True)
    last_read_at: Mapped[datetime] = mapped_column(default=utcnow)
