"""Tracing a leaked file (admins)."""

from __future__ import annotations

from typing import Any

from app.api import bp, require_role
from app.api.openapi import SCHEMAS, operation
from app.auth.models import Role


@bp.post("/admin/trace")
@require_role(Role.ADMIN)
def admin_trace() -> Any:
    from app.traceability.views import api_trace

    return api_trace()


SCHEMAS["Trace"] = {
    "type": "object", "required": ["kind", "identified", "verdict", "marks"],
    "properties": {
        "kind": {"type": "string"}, "identified": {"type": "boolean"},
        "copy": {"type": ["object", "null"],
                 "description": "the recorded copy the file came from (when every mark "
                                "read agrees on one)"},
        "verdict": {"type": "string"},
        "marks": {"type": "array", "items": {"type": "object"}},
        "originals": {"type": "array", "items": {"type": "string"},
                      "description": "attachments whose unstamped original this file is"},
    },
}
operation("post", "/admin/trace",
          "Admin: which recorded copy a leaked file (the raw body, up to 64 MiB) came "
          "from, read from its embedded copy id or its printed copy code; says plainly "
          "when it cannot tell", response={"$ref": "#/components/schemas/Trace"},
          raw_body=True, errors=("400", "401", "403", "413"),
          params=[{"name": "filename", "in": "query", "schema": {"type": "string"},
                   "description": "the leaked file's name (helps tell text formats)"}])
