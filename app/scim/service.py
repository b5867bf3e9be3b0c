"""SCIM 2.0 (RFC 7643/7644) Users, one organization per token: its identity provider
deprovisions leavers.

The whitelist stays central: SCIM may create an account only for someone with an open
invitation to that organization (the account signs in through single sign-on), may
change a member's name, and may deactivate or delete them; deactivating ends every
session and API token at once. It may re-activate only an account it deactivated
itself, never one an Enclave administrator disabled. Deleting keeps the account's
content and audit trail: it is deactivated and disappears from SCIM (404 afterwards).
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from app import audit, state
from app.auth import service as users
from app.auth.models import Invitation, User
from app.db import db, utcnow
from app.errors import ServiceError
from app.orgs.models import Organization
from app.scim.models import ScimToken

TOKEN_PREFIX = "scim_"  # noqa: S105 - a public marker
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
MAX_COUNT = 200
_FILTER = re.compile(r'^\s*(userName|externalId)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.I)


class ScimError(ServiceError):
    """An RFC 7644 error: ``status`` and an optional ``scimType``."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None):
        super().__init__(detail, code=scim_type or "scim")
        self.status = status
        self.scim_type = scim_type

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(self.status),
                                "detail": self.message}
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


# ---------------------------------------------------------------- tokens

def new_token(org: Organization) -> str:
    """A new bearer token for ``org`` (shown once); earlier ones stop working."""
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    db.execute(update(ScimToken).where(ScimToken.org_id == org.id,
                                       ScimToken.revoked_at.is_(None)).values(revoked_at=now))
    token = ScimToken(org_id=org.id, token_hash=users.sha256_hex(plaintext),
                      prefix=plaintext[: len(TOKEN_PREFIX) + 6])
    db.add(token)
    db.flush()
    audit.record("scim_token_created", actor="cli", target_type="org", target_id=org.id,
                 org=org.slug, token=token.prefix)
    db.commit()
    return plaintext


def org_for_token(slug: str, plaintext: str) -> Organization:
    """The organization a live token belongs to, if it is ``slug``; else 401 (the same
    answer for an unknown organization, a wrong one and a bad token)."""
    wanted = users.sha256_hex(plaintext or "")
    token = db.scalar(select(ScimToken).where(ScimToken.token_hash == wanted)) \
        if plaintext.startswith(TOKEN_PREFIX) and len(plaintext) < 200 else None
    if (token is None or not hmac.compare_digest(token.token_hash, wanted)
            or token.revoked_at is not None or token.org.slug != slug):
        raise ScimError(401, "A valid SCIM bearer token for this organization is required.")
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=5):
        token.last_used_at = now
        db.commit()
    return token.org


# ---------------------------------------------------------------- representation

@dataclass
class Scim:
    """One organization's SCIM service; ``base`` is its URL (for ``meta.location``)."""

    org: Organization
    base: str

    def actor(self) -> str:
        return f"scim:{self.org.slug}"

    def user_json(self, user: User) -> dict[str, Any]:
        modified = max(d for d in (user.created_at, user.last_login_at,
                                   user.password_changed_at, user.scim_deactivated_at) if d)
        body: dict[str, Any] = {
            "schemas": [USER_SCHEMA], "id": str(user.id), "userName": user.email,
            "name": {"formatted": user.display_name}, "displayName": user.display_name,
            "emails": [{"value": user.email, "type": "work", "primary": True}],
            "active": bool(user.is_active),
            "meta": {"resourceType": "User", "created": _iso(user.created_at),
                     "lastModified": _iso(modified),
                     "location": f"{self.base}/Users/{user.id}"},
        }
        if user.scim_external_id:
            body["externalId"] = user.scim_external_id
        return body

    def _members(self) -> Any:
        return select(User).where(User.org_id == self.org.id, User.scim_deleted_at.is_(None))

    def get(self, user_id: str) -> User:
        if not user_id.isascii() or not user_id.isdigit() or len(user_id) > 9:
            raise ScimError(404, f"No user {user_id[:40]!r} here.")
        user = db.scalar(self._members().where(User.id == int(user_id)))
        if user is None:
            raise ScimError(404, f"No user {user_id!r} here.")
        return user

    def search(self, filter_text: str | None, start: int, count: int) -> dict[str, Any]:
        query = self._members()
        if filter_text:
            match = _FILTER.match(filter_text)
            if not match:
                raise ScimError(400, "Only 'userName eq \"...\"' and 'externalId eq \"...\"' "
                                "filters are supported.", "invalidFilter")
            attribute, value = match.group(1).lower(), match.group(2).replace('\\"', '"')
            if attribute == "username":
                query = query.where(func.lower(User.email) == value.lower())
            else:
                query = query.where(User.scim_external_id == value)
        total = db.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = db.scalars(query.order_by(User.id).offset(start - 1).limit(count)).all() \
            if count else []
        return {"schemas": [LIST_SCHEMA], "totalResults": total, "startIndex": start,
                "itemsPerPage": len(rows), "Resources": [self.user_json(u) for u in rows]}

    # ------------------------------------------------------------ changes

    def create(self, data: dict[str, Any]) -> User:
        _check_schemas(data)
        email = _user_name(data)
        try:
            email = users.normalize_email(email)
        except ServiceError:
            raise ScimError(400, f"userName {email!r} is not an e-mail address.",
                            "invalidValue") from None
        if users.email_domain(email) not in self.org.domain_names:
            raise ScimError(400, f"{email} is not in a domain of {self.org.name}.",
                            "invalidValue")
        if users.get_user_by_email(email) is not None:
            raise ScimError(409, f"{email} already has an account.", "uniqueness")
        invitation = db.scalar(
            select(Invitation).where(Invitation.email == email,
                                     Invitation.org_id == self.org.id,
                                     Invitation.used_at.is_(None),
                                     Invitation.revoked_at.is_(None),
                                     Invitation.expires_at > utcnow()))
        try:
            invitation = users.find_invitation_by_id(invitation.id) if invitation else None
        except ServiceError:
            invitation = None
        if invitation is None:
            audit.record("scim_create_refused", actor=self.actor(), target_type="org",
                         target_id=self.org.id, email=email, reason="no invitation")
            db.commit()
            raise ScimError(403, f"{email} has no open invitation to {self.org.name} on "
                            "Enclave: an identity provider cannot add people by itself.")
        policy = state.policy()
        name = _display_name(data) or email.split("@", 1)[0]
        user = User(email=email, username=users.free_username(email.split("@", 1)[0]),
                    display_name=name, org_id=self.org.id,
                    clearance=min(invitation.clearance, self.org.ceiling, key=policy.rank),
                    role=invitation.role, password_hash=None,
                    scim_external_id=_external_id(data))
        claimed = db.execute(update(Invitation).where(Invitation.id == invitation.id,
                                                      Invitation.used_at.is_(None))
                             .values(used_at=utcnow()))
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            db.rollback()
            raise ScimError(409, "The invitation was just used.", "uniqueness")
        db.add(user)
        db.flush()
        audit.record("scim_user_created", actor=self.actor(), target_type="user",
                     target_id=user.id, email=email, invitation=invitation.id,
                     clearance=user.clearance)
        if data.get("active") is False:
            self._set_active(user, False)
        db.commit()
        return user

    def replace(self, user: User, data: dict[str, Any]) -> User:
        _check_schemas(data)
        if _user_name(data).strip().lower() != user.email.lower():
            raise ScimError(400, "userName (the e-mail address) cannot be changed here.",
                            "mutability")
        name = _display_name(data)
        if name:
            self._rename(user, name)
        user.scim_external_id = _external_id(data)
        if "active" in data:
            self._set_active(user, _bool(data["active"], "active"))
        db.commit()
        return user

    def patch(self, user: User, data: dict[str, Any]) -> User:
        if PATCH_SCHEMA not in (data.get("schemas") or []):
            raise ScimError(400, f"A PATCH body names the schema {PATCH_SCHEMA}.",
                            "invalidSyntax")
        operations = data.get("Operations")
        if not isinstance(operations, list) or not operations:
            raise ScimError(400, "Operations must be a non-empty list.", "invalidSyntax")
        changes: list[tuple[str, Any]] = []
        for op in operations:
            if not isinstance(op, dict) or str(op.get("op", "")).lower() not in (
                    "add", "replace", "remove"):
                raise ScimError(400, "Each operation is add, replace or remove.",
                                "invalidSyntax")
            kind, path, value = str(op["op"]).lower(), op.get("path"), op.get("value")
            if path is None:
                if kind == "remove" or not isinstance(value, dict):
                    raise ScimError(400, "Without a path, the value is an object of "
                                    "attributes.", "noTarget")
                changes += [(_patch_path(k), v) for k, v in value.items()]
            elif kind == "remove":
                if _patch_path(path) != "externalid":
                    raise ScimError(400, f"{path} cannot be removed.", "mutability")
                changes.append(("externalid", None))
            else:
                changes.append((_patch_path(path), value))
        for path, value in changes:  # all checked before any is applied
            if path not in ("active", "displayname", "name.formatted", "externalid"):
                raise ScimError(400, f"{path} cannot be changed through SCIM here.",
                                "invalidPath")
            if path == "active":
                _bool(value, "active")
        for path, value in changes:
            if path == "active":
                self._set_active(user, _bool(value, "active"))
            elif path in ("displayname", "name.formatted"):
                if isinstance(value, str) and value.strip():
                    self._rename(user, value)
            else:
                user.scim_external_id = value if isinstance(value, str) else None
        db.commit()
        return user

    def delete(self, user: User) -> None:
        self._set_active(user, False)
        user.scim_deleted_at = utcnow()
        audit.record("scim_user_deleted", actor=self.actor(), target_type="user",
                     target_id=user.id, email=user.email)
        db.commit()

    def _rename(self, user: User, name: str) -> None:
        name = " ".join(name.split())[:120]
        if len(name) >= 2 and name != user.display_name:
            audit.record("scim_user_renamed", actor=self.actor(), target_type="user",
                         target_id=user.id, old=user.display_name, new=name)
            user.display_name = name

    def _set_active(self, user: User, active: bool) -> None:
        if active == user.is_active:
            return
        if active and user.scim_deactivated_at is None:
            raise ScimError(403, "This account was disabled in Enclave, not through SCIM; "
                            "only an Enclave administrator can enable it.")
        users.set_active(None, user, active, by=self.actor())
        user.scim_deactivated_at = None if active else utcnow()


def _iso(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _check_schemas(data: dict[str, Any]) -> None:
    if USER_SCHEMA not in (data.get("schemas") or []):
        raise ScimError(400, f"A User names the schema {USER_SCHEMA}.", "invalidSyntax")


def _user_name(data: dict[str, Any]) -> str:
    value = data.get("userName")
    if not isinstance(value, str) or not value.strip():
        raise ScimError(400, "userName is required.", "invalidValue")
    return value.strip()


def _display_name(data: dict[str, Any]) -> str:
    name = data.get("displayName")
    if not isinstance(name, str) and isinstance(data.get("name"), dict):
        parts = data["name"]
        name = parts.get("formatted") or " ".join(
            p for p in (parts.get("givenName"), parts.get("familyName")) if isinstance(p, str))
    return " ".join(name.split())[:120] if isinstance(name, str) else ""


def _external_id(data: dict[str, Any]) -> str | None:
    value = data.get("externalId")
    return value[:255] if isinstance(value, str) and value else None


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):  # some providers
        return value.lower() == "true"
    raise ScimError(400, f"{name} must be true or false.", "invalidValue")


def _patch_path(path: Any) -> str:
    if not isinstance(path, str):
        raise ScimError(400, "A path is a string.", "invalidPath")
    path = path.strip()
    if path.lower().startswith(USER_SCHEMA.lower() + ":"):
        path = path[len(USER_SCHEMA) + 1:]
    return path.lower()
