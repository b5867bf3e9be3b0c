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
            "clearance_expires_at": {"type": ["string", "null"], "format": "date-time",
                                     "description": "the clearance grant lapses then; "
                                                    "after it the member reads as if "
                                                    "cleared for public content only"},
            "effective_clearance": {"type": ["string", "null"]},
            "mfa_enabled": {"type": "boolean"},
            "passkeys": {"type": "integer", "description": "passkeys on the account"},
            "token_proof": {"type": ["string", "null"],
                            "description": "how this token's maker proved who they were "
                                           "(passkey, totp, password, or operator: made on "
                                           "the command line, judged by the account's "
                                           "factors); a level that needs a passkey opens "
                                           "only to passkey and operator tokens; "
                                           "a level that needs any second factor only "
                                           "to tokens made right after one"},
            "token": {"type": ["object", "null"],
                      "description": "this token: id, name, prefix, scopes (read, write, "
                                     "review, admin; a request beyond them answers 403 "
                                     "insufficient_scope), proof, expires_at",
                      "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                                     "prefix": {"type": "string"},
                                     "scopes": {"type": "array",
                                                "items": {"enum": ["read", "write",
                                                                   "review", "admin"]}},
                                     "proof": {"type": "string"},
                                     "expires_at": {"type": "string",
                                                    "format": "date-time"}}},
            "readable_levels": {"type": "array", "items": {"type": "string"}},
            "ndas_to_acknowledge": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Level": {"type": "object", "required": ["key", "label", "rank", "mfa"],
              "properties": {"key": {"type": "string"}, "label": {"type": "string"},
                             "rank": {"type": "integer"},
                             "mfa": {"enum": [False, True, "passkey"],
                                     "description": "the factor reading needs: none, any "
                                                    "second factor, or a passkey "
                                                    "(phishing-resistant)"}}},
    "Nda": {"type": "object", "required": ["key", "title", "version", "text_sha256"],
            "properties": {"key": {"type": "string"}, "title": {"type": "string"},
                           "version": {"type": "integer"},
                           "text_sha256": {"type": "string"}}},
    "User": {"type": "object",
             "required": ["id", "email", "organization", "role", "clearance",
                          "clearance_until", "effective_clearance"],
             "properties": {"id": {"type": "integer"}, "email": {"type": "string"},
                            "username": {"type": "string"},
                            "display_name": {"type": "string"},
                            "organization": {"type": "string"}, "role": {"type": "string"},
                            "active": {"type": "boolean"}, "clearance": {"type": "string"},
                            "clearance_until": {"type": ["string", "null"], "format": "date",
                                                "description": "last day (UTC) the grant "
                                                               "holds"},
                            "clearance_expires_at": {"type": ["string", "null"]},
                            "effective_clearance": {"type": ["string", "null"]}}},
    "AuditEntry": {"type": "object", "required": ["seq", "action", "hash", "prev_hash"],
                   "properties": {"seq": {"type": "integer"}, "action": {"type": "string"},
                                  "hash": {"type": "string"},
                                  "prev_hash": {"type": "string"},
                                  "withheld": {"type": "boolean", "description":
                                               "about a finding you cannot read: its text, "
                                               "people and address are withheld"}}},
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


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_\\-]{16,128}$"},
    "description": "Optional. The same key (per user, kept a day) creates one thing: a "
                   "repeat, sequential or concurrent, creates nothing and answers 200 with "
                   "what the first call created (header Idempotent-Replayed: true). A key "
                   "already used for another call is a 409 already_submitted; a malformed "
                   "one a 400 bad_idempotency_key.",
}
IF_MATCH = {
    "name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
    "description": "Optional: the ETag a GET of the finding returned (\"v<version>\"). When "
                   "the finding changed since, nothing is written and the answer is 409 "
                   "edit_conflict. Without it, the edit applies to the current version.",
}
ETAG_HEADER = {"ETag": {"description": "The finding's version, for If-Match on PATCH",
                        "schema": {"type": "string"}}}


def operation(method: str, path: str, summary: str, *, response: dict[str, Any] | None = None,
              status: str = "200", body: dict[str, Any] | None = None,
              params: list[dict[str, Any]] | None = None, auth: bool = True,
              errors: tuple[str, ...] = ("400", "401", "403", "404"),
              raw_body: bool = False, raw_response: bool = False,
              idempotent: bool = False, etag: bool = False) -> None:
    """Declare one API operation. ``idempotent``: a create call that honours an
    ``Idempotency-Key`` header (a repeat answers 200). ``etag``: the answer carries the
    finding's ETag."""
    if idempotent:
        params = [*(params or []), IDEMPOTENCY_KEY]
    op: dict[str, Any] = {"summary": summary, "responses": {}}
    if status == "204":
        op["responses"][status] = {"description": "Done (no content)"}
    elif raw_response:
        op["responses"][status] = {"description": "OK", "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    else:
        op["responses"][status] = {"description": "OK", "content": {
            "application/json": {"schema": response or {"type": "object"}}}}
    if idempotent:
        op["responses"]["200"] = {
            "description": "A repeated Idempotency-Key: what the first call created",
            "content": {"application/json": {"schema": response or {"type": "object"}}}}
    if etag:
        op["responses"][status]["headers"] = ETAG_HEADER
    for code in errors:
        op["responses"][code] = {"description": "Error", "content": {
            "application/json": {"schema": ref("Error")}}}
    # every endpoint counts against ENCLAVE_API_LIMIT (searches also ENCLAVE_SEARCH_LIMIT)
    op["responses"]["429"] = {"description": "Too many requests (see Retry-After)",
                              "content": {"application/json": {"schema": ref("Error")}}}
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
operation("get", "/me/passkeys", "The caller's passkeys (added and removed in the browser)",
          response={"type": "object", "required": ["items"], "properties": {"items": {
              "type": "array", "items": {"type": "object", "required": ["id", "name"],
                                         "properties": {"id": {"type": "integer"},
                                                        "name": {"type": "string"}}}}}},
          errors=("401",))
operation("put", "/me/openpgp-key",
          "Set the caller's OpenPGP public key (an empty key removes it): notifications then "
          "carry finding text encrypted to it", body={
              "type": "object", "properties": {"key": {"type": "string"}}},
          response={"type": "object", "required": ["fingerprint"], "properties": {
              "fingerprint": {"type": ["string", "null"]},
              "expires_at": {"type": ["string", "null"]}}},
          errors=("400", "401"))
_SSO = {"type": "object", "required": ["configured", "redirect_uri"], "properties": {
    "configured": {"type": "boolean"}, "issuer": {"type": "string"},
    "client_id": {"type": "string"}, "passwords_allowed": {"type": "boolean"},
    "group_clearances": {"type": "object", "additionalProperties": {"type": "string"}},
    "allowed_groups": {"type": "array", "items": {"type": "string"}},
    "redirect_uri": {"type": "string"}, "backchannel_logout_uri": {"type": "string"}}}
operation("get", "/admin/orgs/{slug}/sso",
          "An organization's OpenID provider (admins; the organization's own admin)",
          response=_SSO, errors=("401", "404"))
operation("put", "/admin/orgs/{slug}/sso",
          "Set an organization's OpenID provider: the secret is write-only; admission "
          "rules (allowed_groups) are for admins; group_clearances never above what the "
          "caller may grant", response=_SSO,
          body={"type": "object", "required": ["issuer", "client_id"], "properties": {
              "issuer": {"type": "string"}, "client_id": {"type": "string"},
              "client_secret": {"type": "string"}, "passwords_allowed": {"type": "boolean"},
              "group_clearances": {"type": "object",
                                   "additionalProperties": {"type": "string"}},
              "allowed_groups": {"type": "array", "items": {"type": "string"}}}},
          errors=("400", "401", "403", "404"))
operation("get", "/levels", "The security levels from policy, lowest first",
          response={"type": "object", "properties": {"items": {"type": "array",
                                                                "items": ref("Level")}}})
operation("get", "/ndas", "NDAs for the caller's clearance and their state",
          response={"type": "object", "properties": {"items": {"type": "array",
                                                                "items": ref("Nda")}}})
operation("post", "/ndas/{key}/acknowledge", "Sign the current version of an NDA",
          status="201", response={
              "type": "object",
              "required": ["key", "version", "text_sha256", "signed_name", "created_at"],
              "properties": {"key": {"type": "string"}, "version": {"type": "integer"},
                             "text_sha256": {"type": "string"},
                             "signed_name": {"type": "string"},
                             "created_at": {"type": "string", "format": "date-time"}}},
          body={"type": "object", "required": ["signed_name"],
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
operation("post", "/admin/orgs/{slug}/renew",
          "Admin: record a re-vetting: the organization's trust runs for another "
          "revet_days (policy) at every level", response=ref("Org"),
          errors=("400", "401", "403", "404"))
operation("get", "/admin/users/{user_id}",
          "Admins, and org admins for their own organization: one member's grant",
          response=ref("User"))
operation("patch", "/admin/users/{user_id}",
          "Change a member's clearance, its end date (clearance_until: the last day it "
          "holds, null for none) or role, under the members page's rules",
          response=ref("User"),
          body={"type": "object", "properties": {
              "clearance": {"type": "string"},
              "clearance_until": {"type": ["string", "null"], "format": "date"},
              "role": {"enum": ["member", "reviewer", "org_admin", "admin"]}}})
operation("get", "/admin/audit", "Admin: the audit log, newest first",
          response=page_of("AuditEntry"),
          params=[*PAGE_PARAMS, {"name": "action", "in": "query", "schema": {"type": "string"}}])
# ---- findings forum (app/api/findings.py)
_STR = {"type": "string"}
_USER_REF = {"type": "object", "properties": {"username": _STR, "display_name": _STR}}
SCHEMAS.update({
    "Category": {"type": "object", "required": ["slug", "name"],
                 "properties": {"slug": _STR, "name": _STR, "description": _STR}},
    "Finding": {
        "type": "object",
        "required": ["id", "title", "level", "compartment", "author", "created_at"],
        "properties": {
            "id": {"type": "integer"}, "title": _STR, "level": _STR, "level_label": _STR,
            "category": {"oneOf": [ref("Category"), {"type": "null"}]},
            "compartment": {"type": "array", "items": _STR,
                            "description": "slugs of the organizations that may read it; "
                                           "empty when every cleared member may"},
            "author": _USER_REF, "organization": _STR, "locked": {"type": "boolean"},
            "reply_count": {"type": "integer"}, "unread": {"type": "boolean"},
            "created_at": _STR, "updated_at": _STR,
        },
    },
    "Reply": {"type": "object", "required": ["id", "author", "created_at", "hidden"],
              "properties": {"id": {"type": "integer"}, "author": _USER_REF,
                             "created_at": _STR, "hidden": {"type": "boolean"},
                             "hidden_reason": {"type": ["string", "null"]},
                             "body": {"type": ["string", "null"]},
                             "body_html": {"type": ["string", "null"]},
                             "responses": {"type": "array", "items": ref("Response")}}},
    "Response": {
        "type": "object", "required": ["kind", "label", "count", "mine", "people", "names",
                                       "others"],
        "description": "one kind of response (agree, disagree, insightful, needs_evidence, "
                       "unclear) to a finding or a reply: one per reader per kind",
        "properties": {"kind": _STR, "label": _STR, "count": {"type": "integer"},
                       "mine": {"type": "boolean"},
                       "people": {"type": "array", "items": _STR,
                                  "description": "usernames of those who responded that "
                                                 "the disclosure rule lets you learn"},
                       "names": {"type": "array", "items": _STR,
                                 "description": "their display names, in the same order"},
                       "others": {"type": "integer",
                                  "description": "how many more responded, unnamed"}}},
    "SearchHit": {"allOf": [ref("Finding"), {"type": "object", "properties": {
        "score": {"type": "number"},
        "snippet_html": {"type": "string", "description": "escaped text with <mark> tags"},
        "snippet_source": {"enum": ["finding", "reply"]},
        "reply_id": {"type": ["integer", "null"]}}}]},
    "Notification": {"type": "object", "required": ["id", "kind", "finding", "read"],
                     "properties": {"id": {"type": "integer"},
                                    "kind": {"enum": ["reply", "mention", "new_finding",
                                                      "review_work", "review_result",
                                                      "flag_outcome"]},
                                    "created_at": _STR, "read": {"type": "boolean"},
                                    "finding": ref("Finding"),
                                    "reply_id": {"type": ["integer", "null"]},
                                    "actor": {"type": ["string", "null"],
                                              "description": "the actor's username, only "
                                              "when the disclosure rule lets you learn it"},
                                    "actor_label": {"type": ["string", "null"],
                                                    "description": "the actor's name, or "
                                                    "their role ('a reviewer', 'an "
                                                    "administrator')"},
                                    "text": _STR}},
})
SCHEMAS["FindingFull"] = {"allOf": [ref("Finding"), {"type": "object", "properties": {
    "body": _STR, "body_html": _STR, "revisions": {"type": "integer"},
    "version": {"type": "integer", "description": "moves with every edit; the ETag is "
                                                  "\"v<version>\""},
    "responses": {"type": "array", "items": ref("Response")},
    "replies": {"type": "array", "items": ref("Reply")}}}]}
operation("get", "/categories", "Categories (research areas)",
          response={"type": "object", "properties": {"items": {"type": "array",
                                                                "items": ref("Category")}}})
operation("get", "/findings",
          "Readable findings, newest first; with q: full-text search ranked by relevance "
          "(items are SearchHit). A broad search ranks only its newest 1,000 matching "
          "findings and 1,000 matching replies: total counts those and total_capped is true",
          response={"allOf": [page_of("Finding"), {"type": "object", "properties": {
              "total_capped": {"type": "boolean"}}}]},
          params=[*PAGE_PARAMS,
                  {"name": "q", "in": "query", "schema": {"type": "string", "maxLength": 200},
                   "description": 'words, "phrases", OR, -excluded; a malformed query is a '
                                  '400 bad_query'},
                  {"name": "level", "in": "query", "schema": _STR},
                  {"name": "category", "in": "query", "schema": _STR}])
operation("post", "/findings", "Post a finding (orgs: a compartment; yours is always in it)",
          status="201", response=ref("FindingFull"), idempotent=True, etag=True,
          body={"type": "object", "required": ["category", "title", "body", "level"],
                "properties": {"category": _STR, "title": {"type": "string", "maxLength": 300},
                               "body": _STR, "level": _STR,
                               "orgs": {"type": "array", "items": _STR}}},
          errors=("400", "401", "403", "404", "409"))
operation("get", "/findings/{id}", "A finding with its replies (reading above network is "
          "audit-logged); the ETag names its version", response=ref("FindingFull"),
          etag=True)
operation("patch", "/findings/{id}",
          "Edit (author or admin; keeps a revision). Raising the level is immediate, "
          "lowering it is refused (400 needs_review). Admins: category, locked. With "
          "If-Match (the ETag of a GET): 409 edit_conflict when someone edited it since",
          response=ref("FindingFull"), params=[IF_MATCH], etag=True,
          body={"type": "object", "properties": {
              "title": _STR, "body": _STR, "level": _STR,
              "orgs": {"type": "array", "items": _STR}, "category": _STR,
              "locked": {"type": "boolean"}}},
          errors=("400", "401", "403", "404", "409"))
operation("post", "/findings/{id}/replies", "Reply (inherits the finding's access)",
          status="201", response=ref("Reply"), idempotent=True,
          body={"type": "object", "required": ["body"], "properties": {"body": _STR}},
          errors=("400", "401", "403", "404", "409"))
_RESPONDED = {"type": "object", "required": ["kind", "on", "responses"], "properties": {
    "kind": _STR, "on": {"type": "boolean"},
    "responses": {"type": "array", "items": ref("Response")}}}
_RESPOND = {"type": "object", "required": ["kind"], "properties": {
    "kind": {"enum": ["agree", "disagree", "insightful", "needs_evidence", "unclear"]},
    "on": {"type": "boolean", "description": "false takes the response back (default true)"}}}
operation("post", "/findings/{id}/responses",
          "Give (or with on=false take back) your response of one kind to a finding: one "
          "per reader per kind; answers the finding's responses", response=_RESPONDED,
          body=_RESPOND, errors=("400", "401", "403", "404", "409"))
operation("post", "/replies/{reply_id}/responses",
          "As for a finding, for a reply (not a hidden one)", response=_RESPONDED,
          body=_RESPOND, errors=("400", "401", "403", "404", "409"))
operation("get", "/notifications", "Your notifications on findings you can read now",
          response={"allOf": [page_of("Notification"), {"type": "object", "properties": {
              "unread": {"type": "integer"}}}]}, params=PAGE_PARAMS)
operation("get", "/openapi.json", "This document", auth=False, errors=())


# ---- dual-use review and public release (app/api/review.py)

SCHEMAS["Flag"] = {
    "type": "object", "required": ["id", "finding_id", "state", "reason", "suggested_level"],
    "properties": {
        "id": {"type": "integer"}, "finding_id": {"type": "integer"},
        "state": {"enum": ["open", "resolved"]}, "reason": {"type": "string"},
        "suggested_level": {"type": "string"}, "level_at_flag": {"type": "string"},
        "outcome": {"enum": ["raise", "lock", "redact", "dismiss", None]},
        "outcome_level": {"type": ["string", "null"]}, "note": {"type": "string"},
        "flagger": {"type": "object"}, "resolved_by": {"type": "object"},
    },
}
SCHEMAS["ReviewRequest"] = {
    "type": "object",
    "required": ["id", "kind", "state", "round", "finding_id", "content_sha256", "tally",
                 "reviews", "comments", "history"],
    "properties": {
        "id": {"type": "integer"}, "kind": {"enum": ["publication", "declassification"]},
        "state": {"enum": ["submitted", "approved", "changes_requested", "rejected",
                           "released", "applied", "withdrawn"]},
        "round": {"type": "integer"}, "finding_id": {"type": "integer"},
        "from_level": {"type": "string"}, "target_level": {"type": "string"},
        "your_role": {"enum": ["admin", "author", "reviewer"]},
        "public_title": {"type": "string"}, "public_body": {"type": "string"},
        "attachments": {"type": "array", "items": {"type": "object"}},
        "embargo_until": {"type": ["string", "null"], "format": "date-time"},
        "embargo_tz": {"type": "string"}, "embargo_display": {"type": ["string", "null"]},
        "content_sha256": {"type": "string"},
        "tally": {"type": "object"}, "release_problems": {"type": "array",
                                                          "items": {"type": "string"}},
        "reviews": {"type": "array", "items": {"type": "object"}},
        "comments": {"type": "array", "items": {"type": "object"}},
        "escalations": {"type": "array", "items": {"type": "object"}},
        "history": {"type": "array", "items": {"type": "object"}},
        "public_url": {"type": "string"},
        "credit": {"enum": ["authors", "organization", "anonymous"]},
    },
}
SCHEMAS["PublicFinding"] = {
    "type": "object",
    "required": ["id", "title", "body", "body_html", "released_at", "content_sha256",
                 "attachments"],
    "properties": {
        "id": {"type": "integer"}, "title": {"type": "string"}, "body": {"type": "string"},
        "body_html": {"type": "string"}, "released_at": {"type": "string",
                                                         "format": "date-time"},
        "content_sha256": {"type": "string"}, "url": {"type": "string"},
        "credit": {"type": ["string", "null"],
                   "description": "who the item credits (null: anonymous)"},
        "attachments": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "integer"}, "filename": {"type": "string"},
            "size": {"type": "integer"}, "sha256": {"type": "string"},
            "url": {"type": "string"}}}},
    },
}
_PUBLICATION_BODY = {
    "type": "object", "required": ["public_title", "public_body"],
    "properties": {
        "public_title": {"type": "string"}, "public_body": {"type": "string"},
        "attachments": {"type": "array", "items": {"type": "string"},
                        "description": "ids of this finding's attachments"},
        "embargo_until": {"type": ["string", "null"],
                          "description": "ISO 8601; without an offset it is read in "
                                         "embargo_tz"},
        "embargo_tz": {"type": "string", "description": "IANA zone, default UTC"},
        "note": {"type": "string", "description": "to the reviewers, never published"},
        "credit": {"enum": ["authors", "organization", "anonymous"],
                   "description": "who the public page names (default anonymous)"},
    },
}
SCHEMAS["QueueItem"] = {
    "type": "object", "required": ["type", "id", "finding", "waiting_since"],
    "properties": {
        "type": {"enum": ["request", "flag"]}, "id": {"type": "integer"},
        "kind": {"enum": ["publication", "declassification"]}, "state": {"type": "string"},
        "round": {"type": "integer"}, "suggested_level": {"type": "string"},
        "waiting_since": {"type": ["string", "null"], "format": "date-time"},
        "finding": {"type": "object", "required": ["id", "title", "level"],
                    "properties": {"id": {"type": "integer"}, "title": {"type": "string"},
                                   "level": {"type": "string"}}},
    },
}
SCHEMAS["Affiliation"] = {
    "type": "object", "required": ["id", "orgs", "note"],
    "properties": {"id": {"type": "integer"},
                   "orgs": {"type": "array", "items": {"type": "string"}, "minItems": 2,
                            "maxItems": 2},
                   "note": {"type": "string"},
                   "created_at": {"type": ["string", "null"], "format": "date-time"}},
}
_REASON = {"type": "object", "required": ["reason"],
           "properties": {"reason": {"type": "string"}}}
#: The version the actor read, as GET /review/requests/{id} showed it: a review,
#: escalation, reopening or release of any other version is refused with 409
#: (``stale_pin``, with ``seen``, ``current``, ``request_url`` and ``diff_url``).
_PIN_PROPS = {
    "content_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                       "description": "the request's content_sha256 as you read it"},
    "round": {"type": "integer", "minimum": 1,
              "description": "the request's round as you read it"},
}
_PINNED = {"type": "object", "required": ["content_sha256", "round"], "properties": _PIN_PROPS}
_PINNED_REASON = {"type": "object", "required": ["reason", "content_sha256", "round"],
                  "properties": {"reason": {"type": "string"}, **_PIN_PROPS}}
operation("post", "/findings/{id}/flags", "Flag a readable finding as a dual-use concern",
          status="201", response=ref("Flag"), idempotent=True,
          body={"type": "object", "required": ["reason"],
                "properties": {"reason": {"type": "string"},
                               "suggested_level": {"type": "string"}}},
          errors=("400", "401", "403", "404", "409"))
operation("get", "/review/flags/{id}", "A flag (flagger, author, eligible reviewers, admins)",
          response=ref("Flag"))
operation("post", "/review/flags/{id}/resolve",
          "Resolve an open flag: raise (applied at once), lock, redact or dismiss",
          response=ref("Flag"),
          body={"type": "object", "required": ["outcome"], "properties": {
              "outcome": {"enum": ["raise", "lock", "redact", "dismiss"]},
              "level": {"type": "string"}, "note": {"type": "string"}}},
          errors=("400", "401", "403", "404", "409"))
operation("post", "/findings/{id}/conflicts",
          "Reviewer: declare a conflict of interest on a finding (excluded from its reviews)",
          status="201", body=_REASON, errors=("400", "401", "403", "404", "409"),
          response={"type": "object", "required": ["finding_id", "declared"],
                    "properties": {"finding_id": {"type": "integer"},
                                   "declared": {"const": True}}})
operation("post", "/findings/{id}/publication-requests",
          "Author or admin: ask to publish a public version (pinned by SHA-256)",
          status="201", response=ref("ReviewRequest"), body=_PUBLICATION_BODY, idempotent=True,
          errors=("400", "401", "403", "404", "409"))
operation("post", "/findings/{id}/declassification-requests",
          "Author or admin: ask to lower the finding's level", status="201",
          response=ref("ReviewRequest"), idempotent=True,
          body={"type": "object", "required": ["target_level", "note"],
                "properties": {"target_level": {"type": "string"},
                               "note": {"type": "string"}}},
          errors=("400", "401", "403", "404", "409"))
operation("get", "/review/queue",
          "Reviewers: requests and flags you may review, waiting longest first (never "
          "your own, your organization's, an affiliated one's, or where you declared a "
          "conflict)",
          response={"type": "object", "required": ["items", "page", "pages", "total"],
                    "properties": {"items": {"type": "array", "items": ref("QueueItem")},
                                   "page": {"type": "integer"}, "pages": {"type": "integer"},
                                   "total": {"type": "integer"}}},
          params=PAGE_PARAMS)
operation("get", "/review/requests/{id}",
          "A request with its reviews, thread and history (reviewer names hidden from the "
          "author when reviewers are anonymous)", response=ref("ReviewRequest"))
operation("patch", "/review/requests/{id}",
          "Author or admin: edit; changing pinned content starts a new round (back to "
          "submitted, earlier reviews kept but stale)", response=ref("ReviewRequest"),
          body={"type": "object", "properties": {
              **_PUBLICATION_BODY["properties"], "target_level": {"type": "string"}}},
          errors=("400", "401", "403", "404", "409"))
operation("post", "/review/requests/{id}/decisions",
          "Reviewer: one review per round (decision, risk, a score per rubric question, "
          "comment)", status="201",
          body={"type": "object",
                "required": ["decision", "risk", "scores", "content_sha256", "round"],
                "properties": {
                    **_PIN_PROPS,
                    "decision": {"enum": ["approve", "changes", "reject"]},
                    "risk": {"type": "string", "description": "one of review.toml risks"},
                    "scores": {"type": "object",
                               "additionalProperties": {"type": "integer"}},
                    "comment": {"type": "string"}}},
          response={"type": "object", "required": ["review_id", "round", "state", "request"],
                    "properties": {"review_id": {"type": "integer"},
                                   "round": {"type": "integer"}, "state": {"type": "string"},
                                   "request": ref("ReviewRequest")}},
          errors=("400", "401", "403", "404", "409"))
operation("post", "/review/requests/{id}/comments",
          "Reviewers and the author: add to the request's discussion", status="201",
          idempotent=True,
          body={"type": "object", "required": ["body"],
                "properties": {"body": {"type": "string"}}},
          response={"type": "object", "required": ["id", "request_id", "body"],
                    "properties": {"id": {"type": "integer"}, "request_id": {"type": "integer"},
                                   "body": {"type": "string"}}},
          errors=("400", "401", "404", "409"))
operation("post", "/review/requests/{id}/escalate",
          "Admin: let a request past its blocking-risk reviews, with a written reason",
          response=ref("ReviewRequest"), body=_PINNED_REASON,
          errors=("400", "401", "403", "404", "409"))
operation("post", "/review/requests/{id}/reopen",
          "Admin: reopen a rejected request (a new round)", response=ref("ReviewRequest"),
          body=_PINNED_REASON, errors=("400", "401", "403", "404", "409"))
operation("post", "/review/requests/{id}/withdraw", "Author or admin: withdraw a request",
          response=ref("ReviewRequest"),
          body={"type": "object", "properties": {"reason": {"type": "string"}}},
          errors=("400", "401", "403", "404", "409"))
operation("post", "/review/requests/{id}/release",
          "Admin: release an approved publication request (refused without quorum, while "
          "blocked, before the embargo); for a declassification, apply the new level",
          response=ref("ReviewRequest"), body=_PINNED,
          errors=("400", "401", "403", "404", "409"))
operation("get", "/review/affiliations", "Admin: affiliated organizations",
          response={"type": "object", "required": ["items"],
                    "properties": {"items": {"type": "array", "items": ref("Affiliation")}}})
operation("post", "/review/affiliations",
          "Admin: declare two organizations affiliated (they never review each other)",
          status="201",
          body={"type": "object", "required": ["orgs"], "properties": {
              "orgs": {"type": "array", "items": {"type": "string"}, "minItems": 2,
                       "maxItems": 2}, "note": {"type": "string"}}},
          response=ref("Affiliation"), errors=("400", "401", "403", "409"))
operation("delete", "/review/affiliations/{id}", "Admin: remove an affiliation",
          status="204", errors=("401", "403", "404"))
operation("get", "/public/findings",
          "Released findings: only the approved public version and files (no token)",
          response=page_of("PublicFinding"), params=PAGE_PARAMS, auth=False, errors=("400",))
operation("get", "/public/findings/{id}", "One released finding (no token)",
          response=ref("PublicFinding"), auth=False, errors=("404",))


def spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Enclave API", "version": "1"},
        "servers": [{"url": "/api/v1"}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "An API token from the tokens page or `enclave token "
                               "create`. Scopes: read (GET), write (other member "
                               "actions), review (review decisions, flags, the queue), "
                               "admin (admin and org-admin endpoints); it expires, and "
                               "is revoked when its owner's password changes or 2FA is "
                               "turned off."}},
        },
        "security": [{"bearer": []}],
        "paths": PATHS,
    }


@bp.get("/openapi.json")
@public
def openapi_json() -> Any:
    return spec()
