"""The public pages (no sign-in): released findings, their approved files, the Atom feed.

They show only what a publication request's reviewers approved: nothing here reads the
internal finding."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, render_template, request, stream_with_context

from app import state
from app.publish import service as public

bp = Blueprint("public", __name__, template_folder="templates", url_prefix="/public")


@bp.get("/")
def index() -> Any:
    page = public.public_page(request.args)
    return render_template("publish/index.html", page=page,
                           records=[public.public_record(r) for r in page.items],
                           page_marking=state.policy().lowest())


@bp.get("/<int:item_id>")
def show(item_id: int) -> Any:
    rec = public.public_record(public.get_public(item_id))
    return render_template("publish/show.html", rec=rec, page_marking=state.policy().lowest())


@bp.get("/<int:item_id>/files/<int:file_id>")
def download(item_id: int, file_id: int) -> Any:
    row, att = public.public_file(item_id, file_id)
    chunks = public.open_public_file(att)
    response = Response(stream_with_context(chunks), mimetype="application/octet-stream")
    response.headers.set("Content-Disposition", "attachment", filename=row.filename)
    response.headers["Content-Length"] = str(row.size)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Content-SHA256"] = row.sha256
    return response


@bp.get("/feed.atom")
def feed() -> Any:
    """Ids and links come from ENCLAVE_BASE_URL, so they do not depend on the request."""
    base = state.settings().base_url.rstrip("/") + "/public"
    records = [public.public_record(r) for r in public.latest(50)]
    body = public.atom_feed(records, feed_id=f"{base}/feed.atom", self_url=f"{base}/feed.atom",
                            site_url=f"{base}/", entry_url=lambda r: f"{base}/{r.id}")
    return Response(body, mimetype="application/atom+xml")
