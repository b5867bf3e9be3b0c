from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from wtforms.fields.choices import SelectChoice

from app import state
from app.auth.forms import EmptyForm
from app.auth.models import Role
from app.db import db
from app.errors import ServiceError
from app.orgs import service
from app.orgs.forms import OrgEditForm, OrgForm
from app.web import form_error, role_required

bp = Blueprint("orgs", __name__, template_folder="templates", url_prefix="/admin/orgs")


def _level_choices() -> list[SelectChoice]:
    return [SelectChoice(lv.key, lv.label) for lv in state.policy().levels]


def _render_index(form: OrgForm, status: int = 200) -> Any:
    return render_template("orgs/index.html", orgs=service.list_orgs(),
                           counts=service.member_counts(), form=form,
                           trust_lapse=service.trust_lapse), status


@bp.get("/")
@role_required(Role.ADMIN)
def index() -> Any:
    form = OrgForm(ceiling="network")
    form.ceiling.choices = _level_choices()
    return _render_index(form)


@bp.post("/")
@role_required(Role.ADMIN)
def create() -> Any:
    form = OrgForm()
    form.ceiling.choices = _level_choices()
    if form.validate_on_submit():
        try:
            org = service.add_org(
                current_user, slug=form.slug.data or "", name=form.name.data or "",
                domains=(form.domains.data or "").split(), ceiling=form.ceiling.data or "",
                trusted=bool(form.trusted.data),
            )
        except ServiceError as exc:
            form_error(exc, form)
        else:
            flash(f"Added {org.name} ({org.status}).", "success")
            return redirect(url_for("orgs.index"))
    return _render_index(form, 400)


@bp.route("/<slug>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def edit(slug: str) -> Any:
    org = service.get_org(slug)
    if request.method == "POST":
        form = OrgEditForm()
    else:
        form = OrgEditForm(name=org.name, domains="\n".join(org.domain_names),
                           ceiling=org.ceiling, status=org.status)
    form.ceiling.choices = _level_choices()
    if form.validate_on_submit():
        try:
            service.update_org(current_user, org, name=form.name.data or "",
                               domains=(form.domains.data or "").split(),
                               ceiling=form.ceiling.data or "", status=form.status.data or "")
        except ServiceError as exc:
            db.rollback()
            form_error(exc, form)
        else:
            flash(f"Saved {org.name}.", "success")
            return redirect(url_for("orgs.index"))
    return render_template("orgs/edit.html", org=org, form=form,
                           lapse=service.trust_lapse(org), renew_form=EmptyForm()), (
        400 if form.errors else 200)


@bp.post("/<slug>/renew")
@role_required(Role.ADMIN)
def renew(slug: str) -> Any:
    org = service.get_org(slug)
    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        service.renew_trust(current_user, org)
    except ServiceError as exc:
        flash(exc.message, "error")
    else:
        lapse = service.trust_lapse(org)
        flash(f"Recorded a re-vetting of {org.name}" + (
            f"; the next is due by {lapse.at:%Y-%m-%d}." if lapse else "."), "success")
    return redirect(url_for("orgs.edit", slug=org.slug))
