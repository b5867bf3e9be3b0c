"""The OpenAPI 3.1 description of /api/v1, served at /api/v1/openapi.json.

Each feature adds its operations with ``operation(...)``; the route-matrix test
compares this document with the app's URL map so that nothing goes undocumented.
"""

from __future__ import annotations

from typing import Any

from app.api import bp, public

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }},
    },
    "Org": {
        "type": "object", "required": ["slug", "name", "status", "ceiling", "domains"],
        "properties": {
            "slug": {"type": "string"}, "name": {"type": "string"},
            "status": {"enum": ["pending", "trusted", "suspended"]},
            "ceiling": {"type": "string"},
            "domains": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Me": {
        "type": "object",
        "required": ["id", "email", "role", "organization", "clearance",
                     "effective_clearance", "readable_levels", "ndas_to_acknowledge"],
        "properties": {
            "id": {"type": "integer"}, "email": {"type": "string"},
            "username": {"type": "string"}, "display_name": {"type": "string"},
            "role": {"enum": ["member", "reviewer", "org_admin", "admin"]},
            "organization": {"type": "object"}, "clearance": {"type": "string"},
            "effective_clearance": {"type": ["string", "null"]},
            "mfa_enabled": {"type": "boolean"},
            "readable_levels": {"type": "array", "items": {"type": "string"}},
            "ndas_to_acknowledge": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Level": {"type": "object", "required": ["key", "label", "rank"],
              "properties": {"key": {"type": "string"}, "label": {"type": "string"},
                             "rank": {"type": "integer"}}},
    "Nda": {"type": "object", "required": ["key", "title", "version", "text_sha256"],
            "properties": {"key": {"type": "string"}, "title": {"type": "string"},
                           "version": {"type": "integer"},
                           "text_sha256": {"type": "string"}}},
    "AuditEntry": {"type": "object", "required": ["seq", "action", "hash", "prev_hash"],
                   "properties": {"seq": {"type": "integer"}, "action": {"type": "string"},
                                  "hash": {"type": "string"},
                                  "prev_hash": {"type": "string"}}},
}

PATHS: dict[str, dict[str, Any]] = {}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def page_of(name: str) -> dict[str, Any]:
    return {"type": "object", "required": ["items", "page", "pages", "total"],
            "properties": {"items": {"type": "array", "items": ref(name)},
                           "page": {"type": "integer"}, "pages": {"type": "integer"},
                           "per_page": {"type": "integer"}, "total": {"type": "integer"}}}


PAGE_PARAMS = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
    {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
]


def operation(method: str, path: str, summary: str, *, response: dict[str, Any] | None = None,
              status: str = "200", body: dict[str, Any] | None = None,
              params: list[dict[str, Any]] | None = None, auth: bool = True,
              errors: tuple[str, ...] = ("400", "401", "403", "404"),
              raw_body: bool = False, raw_response: bool = False) -> None:
    op: dict[str, Any] = {"summary": summary, "responses": {}}
    if raw_response:
        op["responses"][status] = {"description": "OK", "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    else:
        op["responses"][status] = {"description": "OK", "content": {
            "application/json": {"schema": response or {"type": "object"}}}}
    for code in errors:
        op["responses"][code] = {"description": "Error", "content": {
            "application/json": {"schema": ref("Error")}}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if raw_body:
        op["requestBody"] = {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}}
    path_params = [
        {"name": part[1:-1], "in": "path", "required": True,
         "schema": {"type": "integer"} if part[1:-1] == "id" else {"type": "string"}}
        for part in path.split("/") if part.startswith("{")
    ]
    if path_params or params:
        op["parameters"] = path_params + (params or [])
    if not auth:
        op["security"] = []
    PATHS.setdefault(path, {})[method.lower()] = op


operation("get", "/me", "The caller, their organization, clearance and open NDAs",
          response=ref("Me"))
operation("get", "/levels", "The security levels from policy, lowest first",
          response={"type": "object", "properties": {"items": {"type": "array",
                                                                "items": ref("Level")}}})
operation("get", "/ndas", "NDAs for the caller's clearance and their state",
          response={"type": "object", "properties": {"items": {"type": "array",
                                                                "items": ref("Nda")}}})
operation("post", "/ndas/{key}/acknowledge", "Sign the current version of an NDA",
          status="201", body={"type": "object", "required": ["signed_name"],
                              "properties": {"signed_name": {"type": "string"},
                                             "version": {"type": "integer"}}})
operation("get", "/admin/orgs", "Admin: the organization whitelist", response=page_of("Org"),
          params=PAGE_PARAMS)
operation("post", "/admin/orgs", "Admin: add an organization", status="201",
          response=ref("Org"),
          body={"type": "object", "required": ["slug", "name", "domains", "ceiling"],
                "properties": {"slug": {"type": "string"}, "name": {"type": "string"},
                               "domains": {"type": "array", "items": {"type": "string"}},
                               "ceiling": {"type": "string"},
                               "status": {"enum": ["pending", "trusted"]}}})
operation("patch", "/admin/orgs/{slug}", "Admin: trust, suspend, or set the ceiling",
          response=ref("Org"),
          body={"type": "object", "properties": {
              "status": {"enum": ["pending", "trusted", "suspended"]},
              "ceiling": {"type": "string"}, "name": {"type": "string"},
              "domains": {"type": "array", "items": {"type": "string"}}}})
operation("get", "/admin/audit", "Admin: the audit log, newest first",
          response=page_of("AuditEntry"),
          params=[*PAGE_PARAMS, {"name": "action", "in": "query", "schema": {"type": "string"}}])
operation("get", "/openapi.json", "This document", auth=False, errors=())


def spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Enclave API", "version": "1"},
        "servers": [{"url": "/api/v1"}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": PATHS,
    }


@bp.get("/openapi.json")
@public
def openapi_json() -> Any:
    return spec()
