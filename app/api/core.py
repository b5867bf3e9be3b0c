"""Identity, levels, NDAs, and admin endpoints of the API."""

from __future__ import annotations

from typing import Any

from flask import request
from sqlalchemy import select

from app import access, audit, state
from app.api import api_user, bp, field, json_body, page_json, require_role
from app.auth.models import Role
from app.db import db
from app.ndas import service as ndas
from app.orgs import service as orgs
from app.orgs.models import Organization
from app.pagination import paginate


def org_json(org: Organization) -> dict[str, Any]:
    return {"slug": org.slug, "name": org.name, "status": org.status,
            "ceiling": org.ceiling, "domains": org.domain_names}


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
        "effective_clearance": access.effective_clearance(user),
        "mfa_enabled": user.mfa_enabled,
        "passkeys": len(user.passkeys),
        "openpgp_fingerprint": user.openpgp_fingerprint,
        "token_proof": user.auth_proof,
        "readable_levels": [k for k in state.policy().level_keys()
                            if k in access.readable_levels(user)],
        "ndas_to_acknowledge": [
            {"key": s.nda.key, "version": s.nda.version, "title": s.nda.title,
             "levels": s.levels}
            for s in ndas.owed_ndas(user)
        ],
    }


@bp.get("/levels")
def levels() -> Any:
    return {"items": [
        {"key": lv.key, "label": lv.label, "colour": lv.colour, "rank": lv.rank,
         "description": lv.description, "ndas": list(lv.ndas), "mfa": lv.mfa,
         "requires_compartment": lv.requires_compartment, "attachments": lv.attachments,
         "max_attachment_mb": lv.max_attachment_mb}
        for lv in state.policy().levels
    ]}


@bp.get("/ndas")
def nda_list() -> Any:
    user = api_user()
    return {"items": [
        {"key": s.nda.key, "title": s.nda.title, "version": s.nda.version,
         "binding": s.nda.binding, "summary": s.nda.summary, "levels": s.levels,
         "text": s.nda.text, "text_sha256": s.nda.text_sha256,
         "acknowledged_version": s.acknowledged_version, "current": s.current}
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


@bp.get("/admin/audit")
@require_role(Role.ADMIN)
def admin_audit() -> Any:
    query = select(audit.AuditEntry).order_by(audit.AuditEntry.seq.desc())
    if request.args.get("action"):
        query = query.where(audit.AuditEntry.action == request.args["action"])
    return page_json(paginate(query, request.args), lambda e: {
        "seq": e.seq, "created_at": e.created_at.isoformat(), "actor": e.actor,
        "actor_id": e.actor_id, "action": e.action, "target_type": e.target_type,
        "target_id": e.target_id, "details": audit.shown_details(api_user(), e), "ip": e.ip,
        "prev_hash": e.prev_hash, "hash": e.hash,
    })


_ = db
