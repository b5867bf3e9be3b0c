from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
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
    can skip the compartment lookup for the common open case.
    """

    __tablename__ = "findings"
    __table_args__ = (Index("ix_findings_level_created", "level", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    level: Mapped[str] = mapped_column(String(64))
    compartmented: Mapped[bool] = mapped_column(default=False)
    category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    author: Mapped[User] = relationship(lazy="joined")
    org: Mapped[Organization] = relationship(lazy="joined")
    category: Mapped[Category | None] = relationship(lazy="joined")
    compartment: Mapped[list[FindingOrg]] = relationship(
        cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def compartment_org_ids(self) -> set[int]:
        return {c.org_id for c in self.compartment}


class FindingOrg(Base):
    """One organization named in a finding's compartment."""

    __tablename__ = "finding_orgs"

    finding_id: Mapped[int] = mapped_column(
        ForeignKey("findings.id", ondelete="CASCADE"), primary_key=True
    )
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), primary_key=True,
                                        index=True)
    org: Mapped[Organization] = relationship(lazy="joined")
