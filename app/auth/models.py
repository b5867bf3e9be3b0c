from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, utcnow
from app.orgs.models import Organization


class Role(enum.StrEnum):
    MEMBER = "member"
    REVIEWER = "reviewer"
    ORG_ADMIN = "org_admin"
    ADMIN = "admin"


ROLE_RANK = {Role.MEMBER: 0, Role.REVIEWER: 1, Role.ORG_ADMIN: 2, Role.ADMIN: 3}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    username: Mapped[str] = mapped_column(String(40), unique=True)
    display_name: Mapped[str] = mapped_column(String(120))
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    clearance: Mapped[str] = mapped_column(String(64))
    #: the clearance grant ends at this instant (NULL: no end); after it the member reads
    #: as if cleared for nothing above public (app/access.py)
    clearance_expires_at: Mapped[datetime | None]
    role: Mapped[str] = mapped_column(String(16), default=Role.MEMBER.value)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)
    totp_secret_enc: Mapped[str | None] = mapped_column(String(255))
    totp_enabled_at: Mapped[datetime | None]
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    password_changed_at: Mapped[datetime | None]
    #: the ``sub`` of this person at their organization's OpenID provider, once linked
    sso_subject: Mapped[str | None] = mapped_column(String(255), index=True)
    #: SCIM: the provider's id for this person; when SCIM deactivated or deleted the account
    scim_external_id: Mapped[str | None] = mapped_column(String(255))
    scim_deactivated_at: Mapped[datetime | None]
    scim_deleted_at: Mapped[datetime | None]
    #: the member's OpenPGP public key (notifications carry finding text encrypted to it)
    openpgp_key: Mapped[str | None] = mapped_column(Text)
    openpgp_fingerprint: Mapped[str | None] = mapped_column(String(64))
    openpgp_expires_at: Mapped[datetime | None]

    org: Mapped[Organization] = relationship(lazy="joined")
    # loaded when first read (sign-in, the account pages, the access rule of another user)
    passkeys: Mapped[list[Passkey]] = relationship(
        lazy="select", order_by="Passkey.id", back_populates="user",
        cascade="all, delete-orphan", passive_deletes=True)

    #: How this user proved who they are for the current request (``access.assume_proof``);
    #: None for a user who is not the one making the request.
    auth_proof = None  # type: str | None
    #: True when the current request authenticated with an API token
    auth_token = False

    @property
    def totp_enabled(self) -> bool:
        return self.totp_enabled_at is not None

    @property
    def has_passkeys(self) -> bool:
        return bool(self.passkeys)

    @property
    def mfa_enabled(self) -> bool:
        """A second factor is set up: an authenticator app or at least one passkey."""
        return self.totp_enabled or self.has_passkeys

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN.value

    def has_role(self, role: Role) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[role]

    # Flask-Login protocol. The id carries the session version so that bumping it
    # (logout, password change, disabling) ends every other session at once.
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"

    def __repr__(self) -> str:
        return f"<User {self.email}>"


class Passkey(Base):
    """A WebAuthn credential (passkey or security key) of a user.

    Only the public key is kept; ``sign_count`` is the authenticator's counter as last
    seen (a response at or below it means a cloned authenticator and is refused)."""

    __tablename__ = "passkeys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)  # base64url
    #: the WebAuthn user handle given at registration (random, the same for all of one
    #: user's passkeys); a discoverable sign-in must return it
    user_handle: Mapped[str] = mapped_column(String(100))  # base64url
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # COSE
    sign_count: Mapped[int] = mapped_column(Integer, default=0)
    transports: Mapped[str] = mapped_column(String(200), default="")
    aaguid: Mapped[str] = mapped_column(String(36), default="")
    backed_up: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="passkeys")


class RecoveryCode(Base):
    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: Argon2id of the code (older rows: 64 hex digits, unsalted SHA-256)
    code_hash: Mapped[str] = mapped_column(String(255))
    used_at: Mapped[datetime | None]


class Invitation(Base):
    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(254), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    clearance: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    org: Mapped[Organization] = relationship(lazy="joined")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    #: the client address of the last use (updated with ``last_used_at``)
    last_used_ip: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None]
    #: why it was revoked: "owner", "admin", "password_changed", "password_reset",
    #: "mfa_removed", "passkey_removed", "user_disabled", "org_suspended"
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
    #: the token stops working at this instant (policy: token_default_days/token_max_days)
    expires_at: Mapped[datetime]
    #: space-separated scopes: read, write, review, admin (never beyond the owner's role)
    scopes: Mapped[str] = mapped_column(String(64), default="read",
                                        server_default="read")
    #: the fresh proof its maker gave when making it ("passkey", "totp", "recovery_code";
    #: "password" when none was fresh; "operator" for the command line): a token reads a
    #: level that needs a second factor only from a fresh second-factor proof
    proof: Mapped[str] = mapped_column(String(16), default="password",
                                       server_default="password")

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())

    user: Mapped[User] = relationship(lazy="joined")


class PasswordReset(Base):
    """A single-use password reset link. Only the SHA-256 of the token is kept, so a
    copy of the database cannot be turned into working links."""

    __tablename__ = "password_resets"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]  # superseded by a newer request or a completed reset
