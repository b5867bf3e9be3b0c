from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import DataRequired, Length

from app.errors import ServiceError
from app.ndas import service
from app.web import form_error, member_required, safe_next

bp = Blueprint("ndas", __name__, template_folder="templates", url_prefix="/ndas")


class SignForm(FlaskForm):
    signed_name = StringField("Type your full name to sign",
                              validators=[DataRequired(), Length(max=200)])
    version = HiddenField()


@bp.get("/")
@member_required
def index() -> Any:
    return render_template("ndas/index.html", statuses=service.relevant_ndas(current_user),
                           next=safe_next(request.args.get("next"), ""))


@bp.route("/<key>", methods=["GET", "POST"])
@member_required
def show(key: str) -> Any:
    status = service.nda_for(current_user, key)
    form = SignForm()
    next_url = safe_next(request.args.get("next"), url_for("ndas.index"))
    if form.validate_on_submit():
        try:
            # The page always sends the version it showed; a missing one counts as stale
            # (0 is never a version) so nobody signs a text the page did not show.
            raw = (form.version.data or "").strip()
            version = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else 0
            service.acknowledge(current_user, key, form.signed_name.data or "", version=version)
        except ServiceError as exc:
            form_error(exc, form)
        else:
            flash(f"You signed {status.nda.title}, version {status.nda.version}.", "success")
            owed = service.owed_ndas(current_user)
            if owed:
                return redirect(url_for("ndas.show", key=owed[0].nda.key, next=next_url))
            return redirect(next_url)
    form.version.data = str(status.nda.version)
    return render_template("ndas/show.html", status=status, form=form,
                           text_html=render_nda(status.nda.text)), 400 if form.errors else 200


def render_nda(text: str) -> str:
    from app.rendering import render_markdown

    return render_markdown(text)
