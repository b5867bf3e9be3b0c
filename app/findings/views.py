"""Web pages of the findings forum (thin: parse, call the service, render)."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from wtforms.fields.choices import SelectChoice

from app import state
from app.auth.forms import EmptyForm
from app.auth.models import Role
from app.db import db
from app.errors import ServiceError
from app.extensions import limiter, not_a_search, search_limit, user_or_address
from app.findings import search as search_service
from app.findings import service
from app.findings.forms import (
    CategoryEditForm,
    CategoryForm,
    EditForm,
    FindingForm,
    HideForm,
    MoveForm,
    ReplyForm,
)
from app.findings.models import Finding
from app.notifications import service as notify
from app.reactions import service as reactions
from app.submissions.service import AlreadySubmitted
from app.traceability import viewing
from app.web import (
    already_submitted,
    form_error,
    int_arg,
    json_error,
    member_required,
    role_required,
)

bp = Blueprint("findings", __name__, template_folder="templates", url_prefix="/findings")
admin_bp = Blueprint("categories", __name__, template_folder="templates",
                     url_prefix="/admin/categories")


@bp.app_context_processor
def _nav_counts() -> dict[str, Any]:
    def unread_notifications() -> int:
        if not current_user.is_authenticated:
            return 0
        try:
            return notify.unread_count(current_user)
        except Exception:  # noqa: BLE001 - never break a page (e.g. the 500 page) for a count
            db.rollback()
            return 0

    return {"unread_notifications": unread_notifications}




# ---------------------------------------------------------------- lists


def _render_list(*, heading: str, endpoint: str, category: Any = None, level: str | None = None,
                 **endpoint_args: Any) -> Any:
    listing = service.list_findings(current_user, category=category, level=level,
                                    before=request.args.get("before") or None,
                                    after=request.args.get("after") or None)
    watched = notify.watched_category_ids(current_user) if category is not None else set()
    return render_template(
        "findings/list.html", listing=listing, heading=heading, endpoint=endpoint,
        endpoint_args=endpoint_args, category=category, level=level,
        categories=service.list_categories(), page_no=int_arg("p"),
        levels=[lv for lv in state.policy().levels if lv.rank > 0],
        watching_category=category is not None and category.id in watched,
        empty_form=EmptyForm(), page_marking=listing.marking)


@bp.get("/")
@member_required
def index() -> Any:
    return _render_list(heading="Latest findings", endpoint="findings.index")


@bp.get("/c/<slug>")
@member_required
def by_category(slug: str) -> Any:
    category = service.get_category(slug)
    return _render_list(heading=category.name, endpoint="findings.by_category",
                        category=category, slug=slug)


@bp.get("/level/<key>")
@member_required
def by_level(key: str) -> Any:
    policy = state.policy()
    if not policy.is_level(key):
        abort(404)
    return _render_list(heading=f"{policy.level(key).label} findings",
                        endpoint="findings.by_level", level=key, key=key)


@bp.get("/search")
@member_required
@limiter.shared_limit(search_limit, scope="search", key_func=user_or_address,
                      exempt_when=not_a_search)
def search() -> Any:
    q = request.args.get("q", "")
    results = None
    error = None
    if q.strip():
        try:
            results = search_service.search(current_user, q, request.args)
        except ServiceError as exc:
            error = exc.message
    status = 400 if error else 200
    return render_template("findings/search.html", q=q, results=results, error=error,
                           page_marking=results.marking if results else None), status


# ---------------------------------------------------------------- categories


@bp.get("/categories")
@member_required
def categories() -> Any:
    return render_template("findings/categories.html", categories=service.list_categories(),
                           watched=notify.watched_category_ids(current_user),
                           form=EmptyForm())


@bp.post("/categories/<slug>/watch")
@member_required
def watch_category(slug: str) -> Any:
    category = service.get_category(slug)
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    if request.form.get("action") == "unwatch":
        notify.unwatch_category(current_user, category)
        flash(f"You no longer watch {category.name}.", "success")
    else:
        notify.watch_category(current_user, category)
        flash(f"You will be notified of new findings in {category.name} that you can read.",
              "success")
    if request.form.get("back") == "list":
        return redirect(url_for("findings.by_category", slug=slug))
    return redirect(url_for("findings.categories"))


def _render_admin_categories(form: CategoryForm, status: int = 200) -> Any:
    return render_template("findings/admin_categories.html",
                           categories=service.list_categories(), form=form), status


@admin_bp.get("/")
@role_required(Role.ADMIN)
def admin_index() -> Any:
    return _render_admin_categories(CategoryForm())


@admin_bp.post("/")
@role_required(Role.ADMIN)
def admin_create() -> Any:
    form = CategoryForm()
    if form.validate_on_submit():
        try:
            category = service.create_category(current_user, slug=form.slug.data or "",
                                               name=form.name.data or "",
                                               description=form.description.data or "")
        except ServiceError as exc:
            db.rollback()
            form_error(exc, form)
        else:
            flash(f"Added the category {category.name}.", "success")
            return redirect(url_for("categories.admin_index"))
    return _render_admin_categories(form, 400)


@admin_bp.route("/<slug>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def admin_edit(slug: str) -> Any:
    category = service.get_category(slug)
    if request.method == "POST":
        form = CategoryEditForm()
    else:
        form = CategoryEditForm(name=category.name, description=category.description)
    if form.validate_on_submit():
        try:
            service.rename_category(current_user, category, name=form.name.data or "",
                                    description=form.description.data or "")
        except ServiceError as exc:
            db.rollback()
            form_error(exc, form)
        else:
            flash(f"Saved {category.name}.", "success")
            return redirect(url_for("categories.admin_index"))
    status = 400 if form.errors or any(f.errors for f in form) else 200
    return render_template("findings/category_edit.html", category=category, form=form), status


# ---------------------------------------------------------------- posting


def _new_form_choices(form: FindingForm) -> None:
    form.category.choices = [SelectChoice(c.slug, c.name) for c in service.list_categories()]
    form.level.choices = [SelectChoice(lv.key, lv.label)
                          for lv in service.postable_levels(current_user)]
    form.orgs.choices = [SelectChoice(o.slug, o.name) for o in service.trusted_orgs()
                         if o.id != current_user.org_id]


@bp.route("/new", methods=["GET", "POST"])
@member_required
def new() -> Any:
    form = FindingForm()
    if request.method == "GET" and request.args.get("category"):
        form.category.data = request.args["category"]
    _new_form_choices(form)
    if form.validate_on_submit():
        try:
            finding = service.create_finding(
                current_user, title=form.title.data, body=form.body.data,
                category=form.category.data, level=form.level.data, orgs=form.orgs.data or [],
                submission=form.submission.data)
        except AlreadySubmitted as exc:
            db.rollback()
            return already_submitted(exc, url_for("findings.index"))
        except ServiceError as exc:
            db.rollback()
            form_error(exc, form)
        else:
            flash("Your finding is posted.", "success")
            return redirect(url_for("findings.show", finding_id=finding.id))
    status = 400 if request.method == "POST" else 200
    return render_template("findings/form.html", form=form, finding=None,
                           max_body=state.settings().max_body_chars,
                           levels=service.postable_levels(current_user)), status


def _render_show(finding: Finding, reply_form: ReplyForm, status: int = 200) -> Any:
    page = service.replies_page(current_user, finding, int_arg("rp"))
    move_form = None
    if service.is_moderator(current_user):
        move_form = MoveForm(category=finding.category.slug if finding.category else None)
        move_form.category.choices = [SelectChoice(c.slug, c.name)
                                     for c in service.list_categories()]
    return render_template(
        "findings/show.html", finding=finding, replies=page, reply_form=reply_form,
        body_html=service.body_html, can_edit=service.can_edit(current_user, finding),
        moderator=service.is_moderator(current_user),
        watching=notify.is_watching_finding(current_user, finding),
        revisions=service.revision_count(finding),
        empty_form=EmptyForm(), hide_form=HideForm(), move_form=move_form,
        responses=reactions.responses(current_user, finding,
                                      [r.id for r in page.items if not r.hidden]),
        page_marking=state.policy().level(finding.level)), status


@bp.get("/<int:finding_id>")
@member_required
def show(finding_id: int) -> Any:
    finding = service.get_finding(current_user, finding_id)
    service.record_view(current_user, finding)
    return _render_show(finding, ReplyForm())


# ---------------------------------------------------------------- editor preview

PREVIEW_LIMIT = "120 per minute"


def _preview(finding: Finding | None) -> Any:
    """JSON ``{"html": …}``: the form's ``body`` rendered as it would be posted (with the
    finding's figures when there is one). Called by static/editor.js with the CSRF token
    in ``X-CSRFToken``; nothing is stored or audited (the text is the writer's own)."""
    try:
        html = service.preview_html(request.form.get("body", ""))
    except ServiceError as exc:
        return json_error(exc.status, exc.code, exc.message)
    if finding is not None and html:
        html = viewing.resolve_figures(
            html, viewing.figure_targets(current_user, finding),
            lambda att_id: url_for("traceability.figure", attachment_id=att_id))
    return jsonify({"html": html})


@bp.post("/preview")
@member_required
@limiter.limit(PREVIEW_LIMIT, key_func=user_or_address)
def preview_new() -> Any:
    return _preview(None)


@bp.post("/<int:finding_id>/preview")
@member_required
@limiter.limit(PREVIEW_LIMIT, key_func=user_or_address)
def preview(finding_id: int) -> Any:
    finding = service.get_finding(current_user, finding_id)  # the gate, before the form
    return _preview(finding)


@bp.get("/<int:finding_id>/mentions")
@member_required
@limiter.limit(PREVIEW_LIMIT, key_func=user_or_address)
def mentions(finding_id: int) -> Any:
    """JSON ``{"people": [{"username", "name"}]}``: whom the editor may suggest after
    ``@`` (``?q=`` the typed start): only people who can read this finding."""
    finding = service.get_finding(current_user, finding_id)  # the gate, before the query
    people = notify.mention_suggestions(current_user, finding, request.args.get("q", ""))
    return jsonify({"people": people})


@bp.post("/<int:finding_id>/replies")
@member_required
def reply(finding_id: int) -> Any:
    finding = service.get_finding(current_user, finding_id)
    form = ReplyForm()
    if form.validate_on_submit():
        try:
            new_reply = service.add_reply(current_user, finding, form.body.data,
                                          submission=form.submission.data)
        except AlreadySubmitted as exc:
            db.rollback()
            return already_submitted(exc, url_for("findings.show", finding_id=finding_id))
        except ServiceError as exc:
            db.rollback()
            form_error(exc, form)
        else:
            last_page = max(1, -(-finding.reply_count // service.REPLIES_PER_PAGE))
            return redirect(url_for("findings.show", finding_id=finding.id,
                                    rp=last_page if last_page > 1 else None,
                                    _anchor=f"reply-{new_reply.id}"))
    return _render_show(finding, form, 400)


@bp.route("/<int:finding_id>/edit", methods=["GET", "POST"])
@member_required
def edit(finding_id: int) -> Any:
    finding = service.get_finding(current_user, finding_id)
    if not service.can_edit(current_user, finding):
        abort(404)
    policy = state.policy()
    if request.method == "POST":
        form = EditForm()
    else:
        form = EditForm(title=finding.title, body=finding.body, level=finding.level,
                        orgs=[c.org.slug for c in finding.compartment
                              if c.org_id != finding.org_id], version=str(finding.version))
    conflict = None
    form.level.choices = [SelectChoice(lv.key, lv.label)
                          for lv in service.postable_levels(current_user)
                          if lv.rank >= policy.rank(finding.level)]
    if finding.compartmented:
        form.orgs.choices = [SelectChoice(o.slug, o.name) for o in finding.compartment_orgs
                             if o.id != finding.org_id]
    else:
        form.orgs.choices = [SelectChoice(o.slug, o.name) for o in service.trusted_orgs()
                             if o.id != finding.org_id]
    if form.validate_on_submit():
        try:
            changed = service.edit_finding(current_user, finding, title=form.title.data,
                                           body=form.body.data, level=form.level.data,
                                           orgs=form.orgs.data or [],
                                           base_version=_version(form.version.data))
        except service.EditConflict as exc:
            db.rollback()
            db.refresh(finding)
            conflict = exc
            form.form_errors.append(exc.message)
            # the form keeps the editor's text; saving again (after reading the current
            # text shown above it) is a deliberate replacement of the newer version
            form.version.data = str(finding.version)
        except ServiceError as exc:
            db.rollback()
            db.refresh(finding)
            form_error(exc, form)
        else:
            flash("Saved; the previous version is in the history." if changed
                  else "Nothing changed.", "success")
            return redirect(url_for("findings.show", finding_id=finding.id))
    status = 400 if request.method == "POST" else 200
    diff = service.conflict_diff(finding, form.body.data) if conflict is not None else []
    return render_template("findings/form.html", form=form, finding=finding,
                           conflict=conflict, conflict_diff=diff, body_html=service.body_html,
                           max_body=state.settings().max_body_chars,
                           page_marking=policy.level(finding.level)), \
        409 if conflict is not None else status


def _version(raw: str | None) -> int | None:
    """The edit form's base version; None (no check) when absent or not a number."""
    raw = (raw or "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else None


@bp.get("/<int:finding_id>/history")
@member_required
def history(finding_id: int) -> Any:
    finding = service.get_finding(current_user, finding_id)
    service.record_view(current_user, finding)  # old versions are content too: audited
    entries = service.history(finding, current_user)
    shown_levels = [finding.level] + [e.before.level for e in entries
                                      if e.before.title != service.WITHHELD]
    return render_template("findings/history.html", finding=finding, entries=entries,
                           withheld=service.WITHHELD,
                           page_marking=state.policy().highest(shown_levels))


@bp.post("/<int:finding_id>/watch")
@member_required
def watch(finding_id: int) -> Any:
    finding = service.get_finding(current_user, finding_id)
    if not EmptyForm().validate_on_submit():
        abort(400)
    if request.form.get("action") == "unwatch":
        notify.unwatch_finding(current_user, finding)
        flash("You no longer watch this finding.", "success")
    else:
        notify.watch_finding(current_user, finding)
        flash("You will be notified of replies.", "success")
    return redirect(url_for("findings.show", finding_id=finding.id))


# ---------------------------------------------------------------- moderation


@bp.post("/<int:finding_id>/lock")
@role_required(Role.ADMIN)
def lock(finding_id: int) -> Any:
    finding = service.get_finding(current_user, finding_id)
    if not EmptyForm().validate_on_submit():
        abort(400)
    locked = request.form.get("action") != "unlock"
    service.set_locked(current_user, finding, locked)
    flash("Locked: no more replies or edits." if locked else "Unlocked.", "success")
    return redirect(url_for("findings.show", finding_id=finding.id))


@bp.post("/<int:finding_id>/move")
@role_required(Role.ADMIN)
def move(finding_id: int) -> Any:
    finding = service.get_finding(current_user, finding_id)
    form = MoveForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        service.move_finding(current_user, finding, form.category.data)
    except ServiceError as exc:
        db.rollback()
        flash(exc.message, "error")
    else:
        flash(f"Moved to {finding.category.name if finding.category else '-'}.", "success")
    return redirect(url_for("findings.show", finding_id=finding.id))


@bp.post("/replies/<int:reply_id>/hide")
@role_required(Role.ADMIN)
def hide_reply(reply_id: int) -> Any:
    reply = service.get_reply(current_user, reply_id)
    form = HideForm()
    if not form.validate_on_submit():
        abort(400)
    hidden = request.form.get("action") != "show"
    try:
        service.set_reply_hidden(current_user, reply, hidden, form.reason.data or "")
    except ServiceError as exc:
        db.rollback()
        flash(exc.message, "error")
    else:
        flash("The reply is hidden (kept and logged)." if hidden else "The reply is shown again.",
              "success")
    return redirect(url_for("findings.show", finding_id=reply.finding_id,
                            _anchor=f"reply-{reply.id}"))
