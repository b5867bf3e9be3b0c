"""Attachment endpoints: streamed upload, list, streamed download, crypto-shredding delete."""

from __future__ import annotations

from typing import Any

from flask import request, url_for
from sqlalchemy import select

from app.api import api_user, bp, page_json
from app.api.openapi import PAGE_PARAMS, SCHEMAS, operation, page_of, ref
from app.attachments import service
from app.attachments.models import Attachment
from app.attachments.views import download_response, start_upload_request, upload_from_request
from app.pagination import paginate


def attachment_json(att: Attachment) -> dict[str, Any]:
    return service.summary(att, url_for("api.download_attachment", attachment_id=att.id))


@bp.post("/findings/<int:id>/attachments")
def upload_attachment(id: int) -> Any:
    start_upload_request()
    return attachment_json(upload_from_request(api_user(), id)), 201


@bp.get("/findings/<int:id>/attachments")
def list_attachments(id: int) -> Any:
    finding = service.readable_finding(api_user(), id)
    query = (select(Attachment)
             .where(Attachment.finding_id == finding.id, Attachment.wrapped_key.is_not(None))
             .order_by(Attachment.created_at, Attachment.id))
    return page_json(paginate(query, request.args), attachment_json)


@bp.get("/attachments/<attachment_id>")
def download_attachment(attachment_id: str) -> Any:
    return download_response(api_user(), attachment_id)


@bp.delete("/attachments/<attachment_id>")
def delete_attachment(attachment_id: str) -> Any:
    service.delete(api_user(), attachment_id)
    return "", 204


SCHEMAS["Attachment"] = {
    "type": "object",
    "required": ["id", "finding_id", "filename", "content_type", "size", "sha256",
                 "created_at", "download_url"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "finding_id": {"type": "integer"}, "filename": {"type": "string"},
        "content_type": {"type": "string",
                         "description": "As declared at upload; downloads are always "
                                        "served as application/octet-stream."},
        "size": {"type": "integer"},
        "sha256": {"type": "string", "description": "SHA-256 of the plaintext, hex"},
        "uploader": {"type": "object"}, "created_at": {"type": "string"},
        "download_url": {"type": "string"},
    },
}
_UPLOAD_PARAMS = [
    {"name": "filename", "in": "query", "required": True, "schema": {"type": "string"},
     "description": "Path components, control characters and characters Windows forbids "
                    "are removed; names are cut to 200 characters keeping the extension."},
    {"name": "X-Upload-Content-Type", "in": "header", "schema": {"type": "string"},
     "description": "Declared type of the file when the body is sent as "
                    "application/octet-stream (recorded, never used to serve it)."},
]
operation("post", "/findings/{id}/attachments",
          "Attach a file: the raw body (Content-Length or chunked) is streamed in and "
          "encrypted; refused before any byte is stored when over the level's cap, the "
          "global cap or the caller's quota (413), or when the level forbids files; "
          "429 too_many_uploads while the caller already streams "
          "ENCLAVE_UPLOADS_PER_USER uploads",
          status="201", response=ref("Attachment"), raw_body=True, params=_UPLOAD_PARAMS,
          errors=("400", "401", "403", "404", "409", "413", "429"))
operation("get", "/findings/{id}/attachments", "The finding's files",
          response=page_of("Attachment"), params=PAGE_PARAMS)
operation("get", "/attachments/{attachment_id}",
          "Download: the decrypted bytes, streamed, as application/octet-stream with a "
          "Content-Disposition filename; single byte ranges (206). A fault found "
          "mid-stream aborts the connection; one found first answers 500 integrity_error",
          raw_response=True, errors=("401", "403", "404", "416", "500"),
          params=[{"name": "Range", "in": "header", "schema": {"type": "string"}}])
operation("delete", "/attachments/{attachment_id}",
          "Delete (uploader, the finding's author, or an admin): the wrapped key is "
          "destroyed first, then the blob", status="204",
          errors=("401", "403", "404", "409"))
