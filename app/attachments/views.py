"""Attachment pages: streamed upload (XHR, raw body), download, delete; plus the
HTTP response for downloads that the API shares."""

from __future__ import annotations

import base64
import re
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, abort, flash, jsonify, redirect, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError
from werkzeug.routing import BuildError
from wtforms import HiddenField

from app.attachments import service
from app.errors import ServiceError
from app.extensions import csrf
from app.web import json_error, member_required, safe_next

bp = Blueprint("attachments", __name__, template_folder="templates")

_FORM_TYPES = {"multipart/form-data", "application/x-www-form-urlencoded"}
_NO_FLASK_LIMIT = 2**63 - 1
_DOWNLOAD_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"


class DeleteForm(FlaskForm):
    next = HiddenField()


# ------------------------------------------------------------------ shared with the API


def start_upload_request() -> None:
    """Let the body through Flask's form-size cap (the service enforces the policy
    limits while streaming) and refuse form encodings, which Werkzeug would parse into
    memory and temp files instead of streaming."""
    request.max_content_length = _NO_FLASK_LIMIT  # None would mean "the app default"
    if request.mimetype in _FORM_TYPES:
        raise ServiceError("Send the file itself as the request body "
                           "(Content-Type: application/octet-stream), not a form.",
                           code="unsupported_media_type")


def _body() -> Any:
    """The request body as a stream. When the server itself ends the body at its length
    (gunicorn; chunked bodies in Werkzeug) it is read directly, as Werkzeug would with no
    size limit, saving two copies of every byte; otherwise through ``request.stream``.
    The service checks the length it got against Content-Length either way."""
    if request.environ.get("wsgi.input_terminated"):
        return request.environ["wsgi.input"]
    return request.stream


def upload_from_request(user: Any, finding_id: int) -> Any:
    return service.upload(
        user, finding_id, filename=request.args.get("filename"), stream=_body(),
        content_length=request.content_length,
        content_type=request.headers.get("X-Upload-Content-Type") or request.mimetype)


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the exact name as RFC 5987 filename*."""
    fallback = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    fallback = re.sub(r"[^A-Za-z0-9._ ()+-]", "_", fallback).strip(" .") or "download"
    exact = quote(filename, safe="!#$&+-.^_`|~")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}"


def _download_headers(att: Any, sha256: str) -> dict[str, str]:
    headers = {
        "Content-Disposition": content_disposition(att.filename),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": _DOWNLOAD_CSP,
        "Accept-Ranges": "bytes",
        "ETag": f'"{att.id}"',  # attachments are immutable
        "Cache-Control": "no-store",
    }
    if sha256:
        digest = base64.b64encode(bytes.fromhex(sha256)).decode()
        headers["Repr-Digest"] = f"sha-256=:{digest}:"
    return headers


def _requested_range(size: int, etag: str) -> tuple[int, int] | None | Response:
    """One byte range from the Range header, or None for the whole file (no header,
    several ranges, or an If-Range that does not match); a 416 Response if unsatisfiable."""
    rng = request.range
    if rng is None or rng.units != "bytes" or len(rng.ranges) != 1:
        return None
    if_range = request.if_range
    if (if_range.etag is not None or if_range.date is not None) and if_range.etag != etag:
        return None
    span = rng.range_for_length(size)
    if span is None:
        return Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    return span


def download_response(user: Any, attachment_id: str) -> Response:
    """Stream-decrypt an attachment as ``application/octet-stream`` (access checked,
    audited). An integrity fault found mid-stream raises out of the response iterator,
    so the server drops the connection instead of ending the body cleanly.

    The level's ``downloads`` policy decides what is sent: the original, a per-reader
    stamped copy (``app.traceability``), or nothing (view-only levels)."""
    from app.traceability import service as copies

    att = service.get_attachment(user, attachment_id)
    level = copies.level_of(att)
    if level.view_only:
        raise copies.NotServed(f"{level.label} files can be viewed in the page only; they "
                               f"are not downloadable.", code="view_only")
    if level.stamped:
        return _stamped_response(user, att)
    if request.method == "HEAD":  # no content is read, so no download is logged
        headers = _download_headers(att, service.sha256_of(att))
        return Response(status=200, headers={**headers, "Content-Length": str(att.size)},
                        mimetype="application/octet-stream")
    span = _requested_range(att.size, att.id)
    if isinstance(span, Response):
        return span
    dl = service.open_download(user, attachment_id, byte_range=span)
    response = Response(dl.chunks, status=206 if dl.partial else 200,
                        mimetype="application/octet-stream", direct_passthrough=True)
    response.headers.update(_download_headers(dl.attachment, dl.sha256))
    response.headers["Content-Length"] = str(dl.length)
    if dl.partial:
        response.headers["Content-Range"] = f"bytes {dl.start}-{dl.stop - 1}/{att.size}"
    response.call_on_close(dl.close)
    return response


def _stamped_response(user: Any, att: Any) -> Response:
    """A copy stamped for this reader: always the whole file (a range of one copy and a
    range of the next would be two different files), never the original's digest."""
    from app.traceability import service as copies

    headers = {k: v for k, v in _download_headers(att, "").items()
               if k not in ("Accept-Ranges", "ETag")}
    if request.method == "HEAD":  # nothing is made or recorded
        return Response(status=200, headers=headers, mimetype="application/octet-stream")
    copy = copies.make_copy(user, att)
    response = Response(copy.chunks, status=200, mimetype="application/octet-stream",
                        direct_passthrough=True)
    response.headers.update(headers)
    response.headers["Content-Length"] = str(copy.length)
    response.headers["X-Enclave-Copy"] = copy.record.code
    response.call_on_close(copy.close)
    return response


# ------------------------------------------------------------------ web routes


@bp.post("/findings/<int:finding_id>/attachments")
@member_required
def upload(finding_id: int) -> Any:
    """XHR target of upload.js: the raw file as the body, ``?filename=``, and the CSRF
    token in ``X-CSRFToken``. Answers JSON either way."""
    try:
        start_upload_request()
        csrf.protect()  # after start_upload_request: the check must not read the body
        att = upload_from_request(current_user._get_current_object(), finding_id)
    except CSRFError as exc:
        return json_error(400, "csrf", exc.description or "The CSRF token is missing.")
    except ServiceError as exc:
        return json_error(exc.status, exc.code, exc.message)
    flash(f"Attached {att.filename} ({service.human_size(att.size)}).", "success")
    return jsonify(service.summary(att, url_for("attachments.download",
                                                attachment_id=att.id))), 201


csrf.exempt(upload)  # checked inside the view, once the body limit is set


@bp.get("/attachments/<attachment_id>")
@member_required
def download(attachment_id: str) -> Any:
    return download_response(current_user._get_current_object(), attachment_id)


@bp.post("/attachments/<attachment_id>/delete")
@member_required
def delete(attachment_id: str) -> Any:
    form = DeleteForm()
    if not form.validate_on_submit():
        abort(400)
    att = service.delete(current_user._get_current_object(), attachment_id)
    flash(f"Deleted {att.filename}: its key was destroyed, then the file.", "success")
    try:
        default = url_for("findings.show", finding_id=att.finding_id)
    except BuildError:  # pragma: no cover - the findings pages are always registered
        default = url_for("main.home")
    return redirect(safe_next(form.next.data, default))


# ------------------------------------------------------------------ the finding page section


@dataclass
class Row:
    att: Any
    sha256: str
    can_delete: bool
    #: original | stamped | view | unserved (what the reader can take away)
    serve: str = "original"
    #: a notebook, which also has a read-only page
    notebook: bool = False


@dataclass
class Section:
    rows: list[Row]
    refusal: str | None
    limit: service.UploadLimit | None
    upload_url: str
    delete_form: DeleteForm
    next: str


@bp.app_template_global("attachment_section")
def attachment_section(finding: Any) -> Section:
    """Everything ``attachments/_section.html`` shows for ``finding``."""
    from app.traceability.viewing import guess_kind, serve_mode

    user = current_user._get_current_object()
    rows = [Row(att, service.sha256_of(att), service.can_delete(user, att),
                serve_mode(att), guess_kind(att) == "notebook")
            for att in service.list_for_finding(user, finding)]
    refusal = service.upload_refusal(user, finding)
    return Section(rows=rows, refusal=refusal,
                   limit=None if refusal else service.upload_limit(user, finding),
                   upload_url=url_for("attachments.upload", finding_id=finding.id),
                   delete_form=DeleteForm(), next=request.path)


@bp.app_template_filter("filesize")
def filesize(n: int) -> str:
    return service.human_size(n)
