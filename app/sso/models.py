"""Per-organization OpenID Connect sign-in and the sessions it opened."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, utcnow
from app.orgs.models import Organization


class OrgSso(Base):
    """An organization's OpenID provider. The client secret is sealed under the keyring's
    app key (bound to the organization); group rules are JSON."""

    __tablename__ = "org_sso"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"),
                                        unique=True)
    issuer: Mapped[str] = mapped_column(String(500))
    client_id: Mapped[str] = mapped_column(String(255))
    client_secret_enc: Mapped[str] = mapped_column(Text)
    passwords_allowed: Mapped[bool] = mapped_column(default=True)
    #: {"provider group": "clearance level"}: the member's clearance follows their groups
    group_clearances: Mapped[str] = mapped_column(Text, default="{}")
    #: ["provider group"]: an admin's rule admitting members of these groups without an
    #: invitation
    allowed_groups: Mapped[str] = mapped_column(Text, default="[]")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    org: Mapped[Organization] = relationship(lazy="joined")


class SsoSession(Base):
    """An Enclave session opened by single sign-on: the provider's subject and session id
    (``sid``), so that a back-channel logout naming them ends it."""

    __tablename__ = "sso_sessions"
    __table_args__ = (Index("ix_sso_sessions_org_sid", "org_id", "sid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)  # kept in the session
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    sub: Mapped[str] = mapped_column(String(255))
    sid: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
