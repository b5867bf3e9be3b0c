"""Responding to findings and replies (thin: gate, check the form, call the service).

Without JavaScript a response is a form post answered with a redirect back to the
finding; ``reactions.js`` sends the same post with ``Accept: application/json`` and gets
the new counts instead of a reload."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, request, url_for
from flask_login import current_user

from app.auth.forms import EmptyForm
from app.db import db
from app.errors import ServiceError
from app.findings import service as findings
from app.reactions import service
from app.web import int_arg, member_required

bp = Blueprint("reactions", __name__, template_folder="templates", url_prefix="/findings")


def _wants_counts() -> bool:
    return request.accept_mimetypes.best == "application/json"


def _answer(finding_id: int, anchor: str, kind: str, on: bool | None,
            responses: service.Responses, error: ServiceError | None = None) -> Any:
    if _wants_counts():
        if error is not None:
            body = {"error": {"code": error.code, "message": error.message}}
            return jsonify(body), error.status
        return jsonify({"kind": kind, "on": on, "responses": responses.as_json()})
    if error is not None:
        flash(error.message, "error")
    rp = int_arg("rp")
    return redirect(url_for("findings.show", finding_id=finding_id,
                            rp=rp if rp > 1 else None, _anchor=anchor))


@bp.post("/<int:finding_id>/responses")
@member_required
def finding(finding_id: int) -> Any:
    found = findings.get_finding(current_user, finding_id)  # the gate, before the kind is read
    if not EmptyForm().validate_on_submit():
        abort(400)
    kind = request.form.get("kind", "")
    try:
        on: bool | None = service.toggle_finding(current_user, found, kind)
        error = None
    except ServiceError as exc:
        db.rollback()
        on, error = None, exc
    responses = service.responses(current_user, found).finding
    return _answer(found.id, "responses-finding", kind, on, responses, error)


@bp.post("/replies/<int:reply_id>/responses")
@member_required
def reply(reply_id: int) -> Any:
    found = findings.get_reply(current_user, reply_id)  # the gate, before the kind is read
    finding = findings.get_finding(current_user, found.finding_id)
    if not EmptyForm().validate_on_submit():
        abort(400)
    kind = request.form.get("kind", "")
    try:
        on: bool | None = service.toggle_reply(current_user, found, finding, kind)
        error = None
    except ServiceError as exc:
        db.rollback()
        on, error = None, exc
    responses = service.responses(current_user, finding, [found.id]).reply(found.id)
    return _answer(finding.id, f"reply-{found.id}", kind, on, responses, error)
