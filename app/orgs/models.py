from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, utcnow


class OrgStatus(enum.StrEnum):
    PENDING = "pending"
    TRUSTED = "trusted"
    SUSPENDED = "suspended"


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=OrgStatus.PENDING.value)
    ceiling: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: when an admin last trusted or renewed the organization; levels with ``revet_days``
    #: lapse that many days later (app/access.py); NULL: never vetted (lapsed)
    vetted_at: Mapped[datetime | None] = mapped_column(default=utcnow)

    domains: Mapped[list[OrgDomain]] = relationship(
        back_populates="org", cascade="all, delete-orphan", order_by="OrgDomain.domain",
        lazy="selectin",
    )

    @property
    def trusted(self) -> bool:
        return self.status == OrgStatus.TRUSTED.value

    @property
    def domain_names(self) -> list[str]:
        return [d.domain for d in self.domains]

    def __repr__(self) -> str:
        return f"<Organization {self.slug} {self.status}>"


class OrgDomain(Base):
    __tablename__ = "org_domains"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"),
                                        index=True)
    domain: Mapped[str] = mapped_column(String(253), unique=True)

    org: Mapped[Organization] = relationship(back_populates="domains")
