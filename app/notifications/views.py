"""The in-app notification list."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from app import disclosure
from app.auth.forms import EmptyForm
from app.findings.service import highest_level
from app.notifications import service
from app.web import member_required

bp = Blueprint("notifications", __name__, template_folder="templates",
               url_prefix="/notifications")


@bp.get("/")
@member_required
def index() -> Any:
    page = service.list_for(current_user, request.args)
    rule = disclosure.For(current_user)  # whose names this reader may learn, now

    def describe(note: Any, finding: Any) -> str:
        return service.describe(note, finding, rule)

    return render_template("notifications/index.html", page=page, describe=describe,
                           form=EmptyForm(),
                           page_marking=highest_level(f.level for _, f in page.items))


@bp.post("/read")
@member_required
def mark_all_read() -> Any:
    if not EmptyForm().validate_on_submit():
        abort(400)
    service.mark_all_read(current_user)
    flash("All notifications are marked read.", "success")
    return redirect(url_for("notifications.index"))
