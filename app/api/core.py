"""Identity, levels, NDAs, and admin endpoints of the API."""

from __future__ import annotations

from typing import Any

from flask import g, request
from sqlalchemy import select

from app import access, audit, audit_view, state
from app.api import api_user, bp, field, json_body, page_json, require_role
from app.auth import service as users
from app.auth.models import Role, User
from app.db import db
from app.errors import NotFound, ServiceError
from app.ndas import service as ndas
from app.orgs import service as orgs
from app.orgs.models import Organization
from app.pagination import paginate


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def org_json(org: Organization) -> dict[str, Any]:
    lapse = orgs.trust_lapse(org)
    return {"slug": org.slug, "name": org.name, "status": org.status,
            "ceiling": org.ceiling, "domains": org.domain_names,
            "vetted_at": _iso(org.vetted_at),
            "revet_due": None if lapse is None else {"level": lapse.level,
                                                     "at": lapse.at.isoformat(),
                                                     "lapsed": lapse.lapsed}}


def user_json(user: User) -> dict[str, Any]:
    until = users.grant_until(user.clearance_expires_at)
    return {"id": user.id, "email": user.email, "username": user.username,
            "display_name": user.display_name, "organization": user.org.slug,
            "role": user.role, "active": user.is_active, "clearance": user.clearance,
            "clearance_until": until.isoformat() if until else None,
            "clearance_expires_at": _iso(user.clearance_expires_at),
            "effective_clearance": access.effective_clearance(user)}


def _token_json() -> dict[str, Any] | None:
    token = g.get("api_token")
    if token is None:
        return None
    return {"id": token.id, "name": token.name, "prefix": token.prefix,
            "scopes": sorted(token.scope_set), "proof": token.proof,
            "expires_at": _iso(token.expires_at)}


@bp.get("/me")
def me() -> Any:
    user = api_user()
    return {
        "id": user.id,
        "email": user.email,
        "username": user.username,
        "display_name": user.display_name,
        "role": user.role,
        "organization": {"slug": user.org.slug, "name": user.org.name,
                         "status": user.org.status, "ceiling": user.org.ceiling},
        "clearance": user.clearance,
        "clearance_expires_at": _iso(user.clearance_expires_at),
        "effective_clearance": access.effective_clearance(user),
        "mfa_enabled": user.mfa_enabled,
        "passkeys": len(user.passkeys),
        "openpgp_fingerprint": user.openpgp_fingerprint,
        "token_proof": user.auth_proof,
        "token": _token_json(),
        "readable_levels": [k for k in state.policy().level_keys()
                            if k in access.readable_levels(user)],
        "ndas_to_acknowledge": [
            {"key": s.nda.key, "version": s.nda.version, "title": s.nda.title,
             "levels": s.levels, "renewal": s.signed}
            for s in ndas.owed_ndas(user)
        ],
    }


@bp.get("/levels")
def levels() -> Any:
    return {"items": [
        {"key": lv.key, "label": lv.label, "colour": lv.colour, "rank": lv.rank,
         "description": lv.description, "ndas": list(lv.ndas), "mfa": lv.mfa,
         "requires_compartment": lv.requires_compartment, "attachments": lv.attachments,
         "max_attachment_mb": lv.max_attachment_mb, "downloads": lv.downloads,
         "watermark": lv.watermark, "renew_days": lv.renew_days,
         "revet_days": lv.revet_days}
        for lv in state.policy().levels
    ]}


@bp.get("/ndas")
def nda_list() -> Any:
    user = api_user()
    return {"items": [
        {"key": s.nda.key, "title": s.nda.title, "version": s.nda.version,
         "binding": s.nda.binding, "summary": s.nda.summary, "levels": s.levels,
         "text": s.nda.text, "text_sha256": s.nda.text_sha256,
         "acknowledged_version": s.acknowledged_version, "current": s.current,
         "signed_at": _iso(s.signed_at), "lapses_at": _iso(s.lapses_at)}
        for s in ndas.relevant_ndas(user)
    ]}


@bp.post("/ndas/<key>/acknowledge")
def nda_acknowledge(key: str) -> Any:
    user = api_user()
    data = json_body()
    version = field(data, "version", int, required=False)
    ack = ndas.acknowledge(user, key, field(data, "signed_name"), version=version)
    return {"key": ack.nda_key, "version": ack.version, "text_sha256": ack.text_sha256,
            "signed_name": ack.signed_name, "created_at": ack.created_at.isoformat()}, 201


@bp.get("/admin/orgs")
@require_role(Role.ADMIN)
def admin_orgs() -> Any:
    query = select(Organization).order_by(Organization.slug)
    return page_json(paginate(query, request.args), org_json)


@bp.post("/admin/orgs")
@require_role(Role.ADMIN)
def admin_org_create() -> Any:
    data = json_body()
    domains = field(data, "domains", list)
    if not all(isinstance(d, str) for d in domains):
        from app.errors import ServiceError

        raise ServiceError("'domains' must be a list of strings.", code="bad_field")
    org = orgs.add_org(api_user(), slug=field(data, "slug"), name=field(data, "name"),
                       domains=domains, ceiling=field(data, "ceiling"),
                       trusted=field(data, "status", required=False) == "trusted")
    return org_json(org), 201


@bp.patch("/admin/orgs/<slug>")
@require_role(Role.ADMIN)
def admin_org_update(slug: str) -> Any:
    org = orgs.get_org(slug)
    data = json_body()
    unknown = set(data) - {"status", "ceiling", "name", "domains"}
    if unknown:
        from app.errors import ServiceError

        raise ServiceError(f"Unknown field(s): {', '.join(sorted(unknown))}.",
                           code="unknown_field")
    orgs.update_org(api_user(), org, name=field(data, "name", required=False),
                    domains=field(data, "domains", list, required=False),
                    ceiling=field(data, "ceiling", required=False),
                    status=field(data, "status", required=False))
    return org_json(org)


@bp.post("/admin/orgs/<slug>/renew")
@require_role(Role.ADMIN)
def admin_org_renew(slug: str) -> Any:
    org = orgs.get_org(slug)
    orgs.renew_trust(api_user(), org)
    return org_json(org)


@bp.get("/admin/users/<int:user_id>")
@require_role(Role.ORG_ADMIN)
def admin_user(user_id: int) -> Any:
    return user_json(_managed_user(user_id))


@bp.patch("/admin/users/<int:user_id>")
@require_role(Role.ORG_ADMIN)
def admin_user_update(user_id: int) -> Any:
    """Clearance (with an optional end date) and role, under the members page's rules."""
    user = _managed_user(user_id)
    data = json_body()
    unknown = set(data) - {"clearance", "clearance_until", "role"}
    if unknown:
        raise ServiceError(f"Unknown field(s): {', '.join(sorted(unknown))}.",
                           code="unknown_field")
    until: Any = users.KEEP
    if "clearance_until" in data:
        raw = data["clearance_until"]
        if raw is not None and not isinstance(raw, str):
            raise ServiceError("'clearance_until' must be a date (YYYY-MM-DD) or null.",
                               code="bad_field", field="clearance_until")
        until = users.parse_until(raw) if raw else None
    users.update_user(api_user(), user, clearance=field(data, "clearance", required=False),
                      role=field(data, "role", required=False), until=until)
    return user_json(user)


def _managed_user(user_id: int) -> User:
    """A member the caller manages (admins: anyone; org admins: their organization's);
    anyone else is answered like a missing id."""
    user = db.get(User, user_id)
    if user is None or not users.can_manage_org(api_user(), user.org):
        raise NotFound("No such user.")
    return user


@bp.get("/admin/audit")
@require_role(Role.ADMIN)
def admin_audit() -> Any:
    query = select(audit.AuditEntry).order_by(audit.AuditEntry.seq.desc())
    if request.args.get("action"):
        query = query.where(audit.AuditEntry.action == request.args["action"])
    page = paginate(query, request.args)
    page.items = audit_view.shown_page(api_user(), page.items)  # what this admin may see
    return page_json(page, lambda e: {
        "seq": e.seq, "created_at": e.created_at.isoformat(), "actor": e.actor,
        "actor_id": e.actor_id, "action": e.action, "target_type": e.target_type,
        "target_id": e.target_id, "details": e.details, "ip": e.ip,
        "prev_hash": e.prev_hash, "hash": e.hash, "withheld": e.withheld,
    })


_ = db
