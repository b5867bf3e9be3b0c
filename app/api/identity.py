"""Identity endpoints of the API: the caller's passkeys, an organization's single sign-on.

Passkeys are added and removed in the browser only (the WebAuthn ceremonies need it, and
a token is no proof of presence); the API lists them."""

from __future__ import annotations

from typing import Any

from app.api import api_user, bp, field, json_body
from app.auth import service as users
from app.errors import NotFound, ServiceError
from app.orgs import service as orgs
from app.sso import service as sso
from app.sso.models import OrgSso


@bp.get("/me/passkeys")
def my_passkeys() -> Any:
    user = api_user()
    return {"items": [
        {"id": p.id, "name": p.name, "created_at": p.created_at.isoformat(),
         "last_used_at": p.last_used_at.isoformat() if p.last_used_at else None,
         "backed_up": p.backed_up}
        for p in user.passkeys
    ]}


@bp.put("/me/openpgp-key")
def my_openpgp_key() -> Any:
    """Set the caller's OpenPGP public key (``{"key": armored}``; an empty key removes it)."""
    from app.notifications import openpgp

    user = api_user()
    data = json_body()
    armored = field(data, "key", required=False, default="")
    info = openpgp.set_key(user, user, armored)
    return {"fingerprint": info.fingerprint if info else None,
            "expires_at": info.expires_at.isoformat() if info and info.expires_at else None}


def sso_json(config: OrgSso | None) -> dict[str, Any]:
    if config is None:
        return {"configured": False, "redirect_uri": sso.redirect_uri(),
                "backchannel_logout_uri": sso.backchannel_uri()}
    return {"configured": True, "issuer": config.issuer, "client_id": config.client_id,
            "passwords_allowed": config.passwords_allowed,
            "group_clearances": sso.group_clearances(config),
            "allowed_groups": sso.allowed_groups(config),
            "redirect_uri": sso.redirect_uri(),
            "backchannel_logout_uri": sso.backchannel_uri(),
            "updated_at": config.updated_at.isoformat()}


def _managed_org(slug: str) -> Any:
    """The organization, if the caller manages it (admins; its own org admin); a 404 for
    everyone else, the same as a missing one."""
    user = api_user()
    try:
        org = orgs.get_org(slug)
    except ServiceError:
        raise NotFound() from None
    if not users.can_manage_org(user, org):
        raise NotFound()
    return org


@bp.get("/admin/orgs/<slug>/sso")
def org_sso_get(slug: str) -> Any:
    return sso_json(sso.config_for(_managed_org(slug)))


@bp.put("/admin/orgs/<slug>/sso")
def org_sso_put(slug: str) -> Any:
    org = _managed_org(slug)
    data = json_body()
    unknown = set(data) - {"issuer", "client_id", "client_secret", "passwords_allowed",
                           "group_clearances", "allowed_groups"}
    if unknown:
        raise ServiceError(f"Unknown field(s): {', '.join(sorted(unknown))}.",
                           code="unknown_field")
    allowed = data.get("passwords_allowed", True)
    if not isinstance(allowed, bool):
        raise ServiceError("'passwords_allowed' must be true or false.", code="bad_field")
    mapping = field(data, "group_clearances", dict, required=False)
    if mapping is not None and not all(isinstance(v, str) for v in mapping.values()):
        raise ServiceError("'group_clearances' maps group names to level keys.",
                           code="bad_field")
    groups = field(data, "allowed_groups", list, required=False)
    if groups is not None and not all(isinstance(g, str) for g in groups):
        raise ServiceError("'allowed_groups' is a list of group names.", code="bad_field")
    config = sso.configure(api_user(), org, issuer=field(data, "issuer"),
                           client_id=field(data, "client_id"),
                           client_secret_value=field(data, "client_secret", required=False),
                           passwords_allowed=allowed, clearances=mapping, allow_groups=groups)
    return sso_json(config)
