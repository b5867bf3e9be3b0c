"""Pages of traceability: view-only files, the on-screen watermark, and the admin's
trace page; plus the API's trace endpoint."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from markupsafe import Markup
from wtforms import StringField
from wtforms.validators import Length

from app import access, state
from app.attachments import service as attachments
from app.auth.models import Role
from app.errors import NotFound, ServiceError
from app.rendering.figures import has_figures
from app.traceability import service, viewing
from app.web import member_required, role_required

bp = Blueprint("traceability", __name__, template_folder="templates")

TRACE_UPLOAD_MAX = 64 * 1024 * 1024
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


# ------------------------------------------------------------------ watermark

@bp.app_template_global("mark_level")
def mark_level(level: str) -> str:
    """Called by templates for each level whose content the page shows; the base layout
    adds the watermark of the highest one that asks for it."""
    g.setdefault("page_levels", set()).add(level)
    return ""


@bp.app_template_global("page_watermark")
def page_watermark(marking: str | None = None) -> str | None:
    """The level whose watermark this page shows: the highest of the page's marking
    (the views' ``page_marking``) and the levels templates named with ``mark_level``."""
    levels = set(g.get("page_levels") or ())
    if marking:
        levels.add(marking)
    if not levels or not current_user.is_authenticated:
        return None
    return viewing.watermark_level(current_user._get_current_object(), levels)


def _watermarked_level(level: str) -> Any:
    """The level, if the signed-in reader may read it and it asks for a watermark;
    otherwise 404, as for a level that does not exist."""
    policy = state.policy()
    user = current_user._get_current_object()
    if (not policy.is_level(level) or not policy.level(level).watermark
            or level not in access.readable_levels(user)):
        raise NotFound()
    return policy.level(level)


@bp.get("/watermark/<level>.css")
@member_required
def watermark_css(level: str) -> Any:
    _watermarked_level(level)
    body = f'.watermark{{background-image:url("{level}.png")}}\n'
    return Response(body, mimetype="text/css", headers=_NO_STORE)


@bp.get("/watermark/<level>.png")
@member_required
def watermark_png(level: str) -> Any:
    lv = _watermarked_level(level)
    png = viewing.watermark_png(current_user._get_current_object(), lv.label)
    return Response(png, mimetype="image/png", headers=_NO_STORE)


# ------------------------------------------------------------------ view-only files

def _viewable(attachment_id: str) -> Any:
    """A file with a view page (a view-only level's, or a notebook) the reader may read
    (else 404 / NDA / 2FA as for downloads)."""
    att = attachments.get_attachment(current_user._get_current_object(), attachment_id)
    if not viewing.viewable(att):
        raise NotFound()
    return att


@bp.get("/attachments/<attachment_id>/view")
@member_required
def view(attachment_id: str) -> Any:
    att = _viewable(attachment_id)
    shown = viewing.open_view(current_user._get_current_object(), att)
    return render_template("traceability/view.html", view=shown, finding=att.finding,
                           page_marking=service.level_of(att))


@bp.get("/attachments/<attachment_id>/view/<copy_id>/<int:page>.png")
@member_required
def view_image(attachment_id: str, copy_id: str, page: int) -> Any:
    att = _viewable(attachment_id)
    user = current_user._get_current_object()
    copy = viewing.view_copy(user, att, copy_id)
    png = viewing.render_png(user, att, copy, page)
    return Response(png, mimetype="image/png",
                    headers={**_NO_STORE, "Content-Disposition": "inline",
                             "Content-Security-Policy": "default-src 'none'; sandbox"})


# ------------------------------------------------------------------ figures in the text

_FIGURE_HEADERS = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff",
                   "Content-Disposition": "inline",
                   "Content-Security-Policy": "default-src 'none'; sandbox"}


@bp.get("/attachments/<attachment_id>/figure")
@member_required
def figure(attachment_id: str) -> Any:
    """An image attachment shown in a finding's text: the access rule, the level's
    download policy and the audit exactly as for downloads (``viewing.open_figure``)."""
    user = current_user._get_current_object()
    att = attachments.get_attachment(user, attachment_id)
    if request.method == "HEAD":  # nothing is decrypted, made or recorded
        if viewing.figure_plan(att).mode is None:
            raise NotFound()
        return Response(status=200, headers=_FIGURE_HEADERS)
    picture = viewing.open_figure(user, att)
    response = Response(picture.chunks, mimetype=picture.mimetype, direct_passthrough=True,
                        headers=_FIGURE_HEADERS)
    response.headers["Content-Length"] = str(picture.length)
    if picture.code:
        response.headers["X-Enclave-Copy"] = picture.code
    response.call_on_close(picture.close)
    return response


@bp.app_template_global("with_figures")
def with_figures(html: str, finding: Any) -> Markup:
    """Cached, sanitized ``html`` of ``finding`` or one of its replies, with its figure
    placeholders pointing at the finding's own image attachments (the finding's files
    are listed once per request)."""
    if not has_figures(html):
        return Markup(html)  # noqa: S704 - sanitized when it was rendered
    cache = g.setdefault("figure_targets", {})
    if finding.id not in cache:
        cache[finding.id] = viewing.figure_targets(current_user._get_current_object(), finding)
    return Markup(viewing.resolve_figures(  # noqa: S704 - sanitized; src escaped
        html, cache[finding.id],
        lambda att_id: url_for("traceability.figure", attachment_id=att_id)))


# ------------------------------------------------------------------ tracing (admins)

class TraceForm(FlaskForm):
    file = FileField("A leaked file")
    code = StringField("…or a copy code read off it", validators=[Length(max=100)])


@bp.route("/admin/trace", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def trace() -> Any:
    request.max_content_length = TRACE_UPLOAD_MAX
    form = TraceForm()
    result = None
    status = 200
    if form.validate_on_submit():
        upload = form.file.data
        if upload and getattr(upload, "filename", ""):
            data = upload.read(TRACE_UPLOAD_MAX + 1)
            if len(data) > TRACE_UPLOAD_MAX:
                form.file.errors = [*form.file.errors, "Files up to 64 MiB can be traced "
                                    "here; use `enclave trace FILE` for larger ones."]
                status = 400
            else:
                result = service.trace_bytes(data, filename=upload.filename)
                service.audit_trace(current_user._get_current_object(), result,
                                    f"page upload {upload.filename[:80]}")
        elif (form.code.data or "").strip():
            result = service.trace_code(form.code.data or "")
            service.audit_trace(current_user._get_current_object(), result, "page code")
        else:
            form.form_errors.append("Choose a file, or type a copy code.")
            status = 400
    elif request.method == "POST":
        status = 400
    return render_template("traceability/trace.html", form=form, result=result), status


def _copy_json(copy: Any) -> dict[str, Any]:
    return {"id": copy.id, "code": copy.code, "attachment_id": copy.attachment_id,
            "finding_id": copy.finding_id, "kind": copy.kind, "level": copy.level,
            "created_at": copy.created_at.isoformat(), "ip": copy.ip,
            "reader": {"id": copy.user.id, "email": copy.user.email,
                       "display_name": copy.user.display_name,
                       "organization": copy.user.org.slug}}


def trace_json(result: service.TraceResult) -> dict[str, Any]:
    copy = result.identified
    return {"kind": result.kind, "identified": copy is not None,
            "copy": _copy_json(copy) if copy else None,
            "verdict": result.verdict(),
            "marks": [{"how": f.how, "value": f.value,
                       "copy_code": f.copy.code if f.copy else None} for f in result.found],
            "originals": [a.id for a in result.originals]}


def api_trace() -> Any:
    """``POST /api/v1/admin/trace``: the leaked file as the raw body."""
    from app.api import api_user

    request.max_content_length = TRACE_UPLOAD_MAX
    data = request.get_data(cache=False)
    if not data:
        raise ServiceError("Send the leaked file as the request body.", code="empty_file")
    result = service.trace_bytes(data, filename=request.args.get("filename", ""))
    service.audit_trace(api_user(), result, "api")
    return trace_json(result)
