"""Member management (admins, and org admins for their own organization) and the audit log."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select
from wtforms.fields.choices import SelectChoice

from app import audit, audit_filters, audit_view, state
from app.auth import service as users
from app.auth.forms import EmptyForm, InviteForm, UserEditForm
from app.auth.models import Invitation, Role, User
from app.auth.passkeys import remove_all_passkeys
from app.db import db, utcnow
from app.errors import NotFound, ServiceError
from app.links import external_url
from app.orgs.models import Organization
from app.pagination import paginate
from app.policy import PUBLIC_LEVEL
from app.submissions.service import AlreadySubmitted
from app.web import already_submitted, form_error, role_required

bp = Blueprint("admin", __name__, template_folder="templates", url_prefix="/admin")


def _manageable_orgs() -> list[Organization]:
    query = select(Organization).order_by(Organization.name)
    if not current_user.is_admin:
        query = query.where(Organization.id == current_user.org_id)
    return list(db.scalars(query))


def _managed_user(user_id: int) -> User:
    user = db.get(User, user_id)
    if user is None or not users.can_manage_org(current_user, user.org):
        raise NotFound()
    return user


def _invite_form(formdata: bool = True) -> InviteForm:
    form = InviteForm() if formdata else InviteForm(formdata=None)
    orgs = _manageable_orgs()
    form.org.choices = [SelectChoice(o.slug, o.name) for o in orgs]
    levels = state.policy().levels
    form.clearance.choices = [SelectChoice(lv.key, lv.label) for lv in levels]
    if not formdata:  # a blank invitation starts at the lowest members' level, not public
        form.clearance.data = next((lv.key for lv in levels if lv.key != PUBLIC_LEVEL), None)
    form.role.choices = [SelectChoice(r) for r in users.grantable_roles(current_user)]
    return form


def _members_query() -> Any:
    query = select(User).join(User.org).order_by(Organization.name, User.email)
    if not current_user.is_admin:
        query = query.where(User.org_id == current_user.org_id)
    return query


def _open_invitations() -> list[Invitation]:
    """Unused, unrevoked, unexpired invitations into the organizations one manages."""
    query = select(Invitation).where(
        Invitation.used_at.is_(None), Invitation.revoked_at.is_(None),
        Invitation.expires_at > utcnow(),
    )
    if not current_user.is_admin:
        query = query.where(Invitation.org_id == current_user.org_id)
    return list(db.scalars(query.order_by(Invitation.created_at.desc()).limit(50)))


@bp.get("/users")
@role_required(Role.ORG_ADMIN)
def user_list() -> Any:
    return render_template("admin/users.html", page=paginate(_members_query(), request.args),
                           invitations=_open_invitations(), form=_invite_form(False),
                           invite_link=None, empty=EmptyForm())


@bp.post("/users/invite")
@role_required(Role.ORG_ADMIN)
def invite() -> Any:
    form = _invite_form()
    link = None
    if form.validate_on_submit():
        try:
            org = next((o for o in _manageable_orgs() if o.slug == form.org.data), None)
            if org is None:
                raise ServiceError("Choose an organization you manage.", field="org")
            new = users.invite(current_user, org, form.email.data or "",
                               form.clearance.data or "", form.role.data or "member",
                               submission=form.submission.data)
        except AlreadySubmitted as exc:
            db.rollback()
            return already_submitted(exc, url_for("admin.user_list"))
        except ServiceError as exc:
            db.rollback()
            form_error(exc, form)
        else:
            link = external_url("auth.accept_invitation", token=new.token)
            flash(f"Invitation for {new.invitation.email} created. Send them the link below; "
                  "it works once.", "success")
            form = _invite_form(False)
    return render_template("admin/users.html", page=paginate(_members_query(), request.args),
                           invitations=_open_invitations(), form=form, invite_link=link,
                           empty=EmptyForm()), 400 if form.errors else 200


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@role_required(Role.ORG_ADMIN)
def user_edit(user_id: int) -> Any:
    user = _managed_user(user_id)
    if request.method == "POST":
        form = UserEditForm()
    else:
        until = users.grant_until(user.clearance_expires_at)
        form = UserEditForm(clearance=user.clearance, role=user.role,
                            clearance_until=until.isoformat() if until else "")
    form.clearance.choices = [SelectChoice(lv.key, lv.label) for lv in state.policy().levels]
    grantable = users.grantable_roles(current_user)
    form.role.choices = [SelectChoice(r) for r in grantable]
    if user.role not in grantable:
        form.role.choices.append(SelectChoice(user.role))
    if form.validate_on_submit():
        try:
            users.update_user(current_user, user, clearance=form.clearance.data or "",
                              role=form.role.data or "",
                              until=users.parse_until(form.clearance_until.data))
        except ServiceError as exc:
            db.rollback()
            form_error(exc, form)
        else:
            flash(f"Saved {user.email}.", "success")
            return redirect(url_for("admin.user_list"))
    return render_template("admin/user_edit.html", user=user, form=form, empty=EmptyForm()), (
        400 if form.errors else 200)


@bp.post("/users/<int:user_id>/active")
@role_required(Role.ORG_ADMIN)
def user_active(user_id: int) -> Any:
    user = _managed_user(user_id)  # the gate first: unmanaged answers like missing
    if not EmptyForm().validate_on_submit():
        abort(400)
    activate = request.form.get("active") == "1"
    try:
        users.set_active(current_user, user, activate)
    except ServiceError as exc:
        flash(exc.message, "error")
    else:
        flash(f"{user.email} {'enabled' if activate else 'disabled'}; their sessions ended.",
              "success")
    return redirect(url_for("admin.user_edit", user_id=user.id))


@bp.post("/users/<int:user_id>/passkeys/reset")
@role_required(Role.ORG_ADMIN)
def user_passkeys_reset(user_id: int) -> Any:
    """A member lost every passkey: remove them all (their sessions end); they add new
    ones after signing in with their password and another factor."""
    user = _managed_user(user_id)  # the gate first: unmanaged answers like missing
    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        removed = remove_all_passkeys(current_user, user)
    except ServiceError as exc:
        flash(exc.message, "error")
    else:
        flash(f"Removed {removed} passkey{'s' if removed != 1 else ''} of {user.email}; "
              "their sessions ended.", "success")
    return redirect(url_for("admin.user_edit", user_id=user.id))


@bp.get("/audit")
@role_required(Role.ADMIN)
def audit_log() -> Any:
    filters = audit_filters.parse(request.args)
    query = audit_filters.apply(select(audit.AuditEntry).order_by(audit.AuditEntry.seq.desc()),
                                filters)
    actions, target_types = audit_filters.choices()
    total = db.scalar(select(func.count()).select_from(audit.AuditEntry))
    page = paginate(query, request.args)
    page.items = audit_view.shown_page(current_user, page.items)  # what this admin may see
    return render_template("admin/audit.html", page=page, filters=filters,
                           actions=actions, target_types=target_types, total=total,
                           verify=audit.verify_chain() if request.args.get("verify") else None)
