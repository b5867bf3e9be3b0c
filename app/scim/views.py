"""SCIM 2.0 endpoints at ``/scim/v2/<org>/``: bearer token per organization, JSON only
(``application/scim+json``), no cookies, so no CSRF. Every call is audit-logged."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, g, request

from app import audit, links, state
from app.auth.service import sha256_hex
from app.db import db
from app.extensions import csrf, limiter
from app.scim import discovery
from app.scim.service import MAX_COUNT, Scim, ScimError, org_for_token

bp = Blueprint("scim", __name__, url_prefix="/scim/v2/<org>")
csrf.exempt(bp)
MEDIA = "application/scim+json"
log = logging.getLogger("enclave.scim")


def _rate_key() -> str:
    header = request.headers.get("Authorization", "")
    return "scim:" + (sha256_hex(header)[:32] if header else request.remote_addr or "")


# the API's budget, per token (or address): a provider syncing thousands of people is fine
limiter.shared_limit(lambda: state.settings().api_limit, scope="scim", key_func=_rate_key)(bp)


def _answer(body: Any, status: int = 200, **headers: str) -> Response:
    response = Response(json.dumps(body), status=status, mimetype=MEDIA)
    response.headers["Cache-Control"] = "no-store"
    for key, value in headers.items():
        response.headers[key] = value
    return response


@bp.url_value_preprocessor
def _take_org(_endpoint: str | None, values: dict[str, Any] | None) -> None:
    """The views act on ``g.scim``; the slug in the path only picks the organization."""
    request.environ["enclave.scim_org"] = (values or {}).pop("org", "")


@bp.before_request
def _authenticate() -> None:
    slug = request.environ.get("enclave.scim_org", "")
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.startswith("Bearer ") else ""
    g.scim = None
    g.scim_org_slug = slug
    org = org_for_token(slug, token)
    g.scim = Scim(org, links.base_url() + f"/scim/v2/{org.slug}")


@bp.errorhandler(ScimError)
def _scim_error(exc: ScimError) -> Response:
    db.rollback()
    if g.get("scim") is not None:
        _audit(exc.status)
    else:  # no valid token: no actor to record; a refusal changes nothing (rate-limited)
        log.warning("SCIM call refused: %s %s (%s)", request.method, request.path[:200],
                    exc.status)
    headers = {"WWW-Authenticate": 'Bearer realm="scim"'} if exc.status == 401 else {}
    return _answer(exc.body(), exc.status, **headers)


@bp.after_request
def _audit_success(response: Response) -> Response:
    if response.status_code < 400:
        _audit(response.status_code)
    return response


def _audit(status: int) -> None:
    scim: Scim | None = g.get("scim")
    audit.record("scim_request", actor=scim.actor() if scim else "scim:?",
                 target_type="org", target_id=scim.org.id if scim else "",
                 method=request.method, path=request.path[:200], status=status)
    db.commit()


def _body() -> dict[str, Any]:
    data = request.get_json(force=True, silent=True)
    if not isinstance(data, dict):
        raise ScimError(400, "Send a JSON object.", "invalidSyntax")
    return data


def _scim() -> Scim:
    return g.scim


@bp.get("/ServiceProviderConfig")
def service_provider_config() -> Response:
    return _answer(discovery.service_provider_config(_scim().base))


@bp.get("/ResourceTypes")
def resource_types() -> Response:
    return _answer(discovery.resource_types(_scim().base))


@bp.get("/Schemas")
def schemas() -> Response:
    return _answer(discovery.schemas(_scim().base))


@bp.get("/Users")
def user_list() -> Response:
    def number(name: str, default: int) -> int:
        raw = request.args.get(name, "")
        if not raw:
            return default
        if not raw.lstrip("-").isdigit():
            raise ScimError(400, f"{name} must be a number.", "invalidValue")
        return int(raw)

    start = max(1, number("startIndex", 1))
    count = min(MAX_COUNT, max(0, number("count", 100)))
    return _answer(_scim().search(request.args.get("filter"), start, count))


@bp.post("/Users")
def user_create() -> Response:
    scim = _scim()
    user = scim.create(_body())
    body = scim.user_json(user)
    return _answer(body, 201, Location=body["meta"]["location"])


@bp.get("/Users/<user_id>")
def user_get(user_id: str) -> Response:
    scim = _scim()
    return _answer(scim.user_json(scim.get(user_id)))


@bp.put("/Users/<user_id>")
def user_replace(user_id: str) -> Response:
    scim = _scim()
    user = scim.get(user_id)
    return _answer(scim.user_json(scim.replace(user, _body())))


@bp.patch("/Users/<user_id>")
def user_patch(user_id: str) -> Response:
    scim = _scim()
    user = scim.get(user_id)
    return _answer(scim.user_json(scim.patch(user, _body())))


@bp.delete("/Users/<user_id>")
def user_delete(user_id: str) -> Response:
    scim = _scim()
    scim.delete(scim.get(user_id))
    return Response(status=204)
