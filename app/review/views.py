"""Web pages of the dual-use review: the queue, flag and request forms, the request page
(side by side with a diff, reviews, thread, history), admin actions and affiliations.

Thin: every rule is in ``app.review.service`` / ``app.review.flags``."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from wtforms.fields.choices import SelectChoice

from app import access, disclosure, links, state
from app.auth.forms import EmptyForm
from app.auth.models import Role
from app.db import db
from app.errors import ServiceError
from app.findings import service as findings
from app.findings.models import Finding
from app.orgs.models import Organization
from app.publish import content
from app.review import diff, flags, pins, rules, service
from app.review.forms import (
    AffiliationForm,
    CommentForm,
    DeclassifyForm,
    FlagForm,
    PinnedReasonForm,
    PublicationForm,
    ReasonForm,
    ResolveFlagForm,
    pin_defaults,
    review_form_class,
    scores_from,
)
from app.review.models import ReviewRequest
from app.submissions.service import AlreadySubmitted
from app.web import already_submitted, form_error, member_required, role_required

bp = Blueprint("review", __name__, template_folder="templates", url_prefix="/review")




@bp.app_template_global()
def review_panel(finding: Finding) -> dict[str, Any]:
    """What the finding page's review box shows to the current reader."""
    user = current_user
    if not getattr(user, "is_authenticated", False) or not access.can_read(user, finding):
        return {"visible": False}
    owner_or_admin = user.id == finding.author_id or (user.is_admin
                                                      and access.in_good_standing(user))
    return {
        "visible": True,
        "requests": service.requests_for_finding(user, finding),
        "flags": flags.flags_for_finding(user, finding),
        "can_publish": owner_or_admin and not finding.locked,
        "can_declassify": owner_or_admin and state.policy().rank(finding.level) > 1,
        "can_declare_conflict": rules.is_reviewer(user) and user.id != finding.author_id
        and not rules.has_conflict(user, finding.id),
        "state_labels": rules.STATE_LABELS,
        "form": EmptyForm(),
    }


# ---------------------------------------------------------------- queue and lists


@bp.get("/")
@role_required(Role.REVIEWER)
def queue() -> Any:
    page = service.queue(current_user, request.args)
    marking = findings.highest_level(i.finding.level for i in page.items)
    return render_template("review/queue.html", page=page, labels=rules.STATE_LABELS,
                           mine=service.my_requests(current_user), page_marking=marking)


@bp.get("/mine")
@member_required
def mine() -> Any:
    rows = service.my_requests(current_user)
    return render_template("review/mine.html", rows=rows, labels=rules.STATE_LABELS,
                           page_marking=findings.highest_level(r.finding.level for r in rows))


@bp.get("/admin")
@role_required(Role.ADMIN)
def admin() -> Any:
    requests_ = service.open_requests_for_admin(current_user)
    open_flags = service.open_flags_for_admin(current_user)
    marking = findings.highest_level([r.finding.level for r in requests_]
                                     + [f.finding.level for f in open_flags])
    return render_template("review/admin.html", requests=requests_, flags=open_flags,
                           labels=rules.STATE_LABELS, affiliations=flags.list_affiliations(),
                           form=_affiliation_form(False), empty=EmptyForm(),
                           page_marking=marking)


def _affiliation_form(formdata: bool = True) -> AffiliationForm:
    form = AffiliationForm() if formdata else AffiliationForm(formdata=None)
    orgs = [SelectChoice(o.slug, o.name) for o in db.scalars(select(Organization)
                                                  .order_by(Organization.name))]
    form.org_a.choices = orgs
    form.org_b.choices = orgs
    return form


@bp.post("/admin/affiliations")
@role_required(Role.ADMIN)
def add_affiliation() -> Any:
    form = _affiliation_form()
    if form.validate_on_submit():
        try:
            flags.add_affiliation(current_user, form.org_a.data, form.org_b.data,
                                  form.note.data)
        except ServiceError as exc:
            db.rollback()
            flash(exc.message, "error")
        else:
            flash("Affiliation recorded: their members no longer review each other's "
                  "findings.", "success")
    else:
        flash("Choose two organizations.", "error")
    return redirect(url_for("review.admin"))


@bp.post("/admin/affiliations/<int:affiliation_id>/delete")
@role_required(Role.ADMIN)
def remove_affiliation(affiliation_id: int) -> Any:
    if not EmptyForm().validate_on_submit():
        abort(400)
    flags.remove_affiliation(current_user, affiliation_id)
    flash("Affiliation removed.", "success")
    return redirect(url_for("review.admin"))


# ---------------------------------------------------------------- flags


def _level_choices(minimum_rank: int) -> list[SelectChoice]:
    return [SelectChoice(lv.key, lv.label) for lv in state.policy().levels
            if lv.rank >= minimum_rank]


@bp.route("/findings/<int:finding_id>/flag", methods=["GET", "POST"])
@member_required
def flag_new(finding_id: int) -> Any:
    finding = findings.get_finding(current_user, finding_id)
    rank = state.policy().rank(finding.level)
    form = FlagForm() if request.method == "POST" else FlagForm(suggested_level=finding.level)
    form.suggested_level.choices = _level_choices(rank)
    if form.validate_on_submit():
        try:
            flag = flags.create_flag(current_user, finding.id, reason=form.reason.data,
                                     suggested_level=form.suggested_level.data,
                                     submission=form.submission.data)
        except AlreadySubmitted as exc:
            db.rollback()
            return already_submitted(exc, url_for("findings.show", finding_id=finding_id))
        except ServiceError as exc:
            db.rollback()
            form_error(exc, form)
        else:
            flash("Thank you. Reviewers from other organizations will look at your flag.",
                  "success")
            return redirect(url_for("review.flag_show", flag_id=flag.id))
    status = 400 if request.method == "POST" else 200
    return render_template("review/flag_form.html", form=form, finding=finding,
                           page_marking=state.policy().level(finding.level)), status


def _resolve_form(flag: Any, formdata: bool = True) -> ResolveFlagForm:
    form = ResolveFlagForm() if formdata else ResolveFlagForm(formdata=None,
                                                              level=flag.suggested_level)
    form.outcome.choices = [SelectChoice(k, label) for k, label in flags.OUTCOMES.items()]
    rank = state.policy().rank(flag.finding.level) + 1
    form.level.choices = _level_choices(rank)
    return form


@bp.get("/flags/<int:flag_id>")
@member_required
def flag_show(flag_id: int) -> Any:
    flag = flags.get_flag(current_user, flag_id)
    return _render_flag(flag, _resolve_form(flag, False))


def _render_flag(flag: Any, form: ResolveFlagForm, status: int = 200) -> Any:
    role = flags.flag_role(current_user, flag)
    flagger, resolver = disclosure.flag_people(current_user, flag)
    why_not = None
    if flag.is_open:
        excluded = rules.exclusion(current_user, flag.finding, owner_ids=[flag.flagger_id])
        why_not = (None if excluded is None else
                   rules.EXCLUSION_MESSAGES.get(excluded, "You cannot resolve this flag."))
    return render_template(
        "review/flag.html", flag=flag, role=role, form=form, why_not=why_not,
        flagger=flagger, resolver=resolver,
        outcomes=flags.OUTCOMES, page_marking=state.policy().level(flag.finding.level)), status


@bp.post("/flags/<int:flag_id>/resolve")
@member_required
def flag_resolve(flag_id: int) -> Any:
    # the gate, then an excluded reviewer's 403 (the error page with the reason), and only
    # then the form: a refusal never renders the flag
    flag = flags.flag_for_review(current_user, flag_id)
    flags.check_can_resolve(current_user, flag)
    form = _resolve_form(flag)
    if form.validate_on_submit():
        try:
            flags.resolve_flag(current_user, flag, outcome=form.outcome.data,
                               level=form.level.data, note=form.note.data)
        except ServiceError as exc:
            db.rollback()
            form_error(exc, form)
        else:
            flash(f"Flag resolved: {flags.OUTCOMES[flag.outcome].lower()}.", "success")
            if access.can_read(current_user, flag.finding):
                return redirect(url_for("review.flag_show", flag_id=flag.id))
            return redirect(url_for("review.queue"))
    return _render_flag(flag, form, 400)


@bp.post("/findings/<int:finding_id>/conflict")
@role_required(Role.REVIEWER)
def declare_conflict(finding_id: int) -> Any:
    finding = findings.get_finding(current_user, finding_id)
    form = ReasonForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        flags.declare_conflict(current_user, finding, form.reason.data)
    except ServiceError as exc:
        db.rollback()
        flash(exc.message, "error")
        return redirect(request.referrer if _same_site(request.referrer)
                        else url_for("review.queue"))
    flash("Conflict declared: you will not review this finding.", "success")
    return redirect(url_for("review.queue"))


def _same_site(target: str | None) -> bool:
    """A referrer on this site, by ENCLAVE_BASE_URL (never by the request's Host)."""
    return bool(target) and target.startswith(links.base_url() + "/")  # type: ignore[union-attr]


# ---------------------------------------------------------------- publication requests


def _publication_form(finding: Finding, req: ReviewRequest | None = None,
                      formdata: bool = True) -> PublicationForm:
    if formdata:
        form = PublicationForm()
    elif req is not None:
        local = ""
        if req.embargo_until is not None:
            local = req.embargo_until.astimezone(ZoneInfo(req.embargo_tz)).strftime(
                "%Y-%m-%dT%H:%M")
        form = PublicationForm(formdata=None, public_title=req.public_title,
                               public_body=req.public_body, note=req.note,
                               attachments=[a.attachment_id for a in req.attachments
                                            if a.attachment_id],
                               embargo_until=local, embargo_tz=req.embargo_tz,
                               credit=req.credit)
    else:
        # Deliberately empty: the public version is written afresh, not copied from the
        # internal text.
        form = PublicationForm(formdata=None)
    files = service.attachable_files(current_user, finding)
    form.attachments.choices = [SelectChoice(a.id, f"{a.filename} ({a.size:,} bytes)")
                                for a in files]
    form.embargo_tz.choices = [SelectChoice(z) for z in content.common_timezones()]
    return form


@bp.route("/findings/<int:finding_id>/publish", methods=["GET", "POST"])
@member_required
def publish_new(finding_id: int) -> Any:
    finding = findings.get_finding(current_user, finding_id)
    form = _publication_form(finding, formdata=request.method == "POST")
    if form.validate_on_submit():
        try:
            req = service.create_publication(
                current_user, finding.id, public_title=form.public_title.data,
                public_body=form.public_body.data, attachments=form.attachments.data or [],
                embargo_until=form.embargo_until.data or None,
                embargo_tz=form.embargo_tz.data, note=form.note.data,
                credit=form.credit.data, submission=form.submission.data)
        except AlreadySubmitted as exc:
            db.rollback()
            return already_submitted(exc, url_for("findings.show", finding_id=finding_id))
        except ServiceError as exc:
            db.rollback()
            form_error(exc, form)
        else:
            flash("Publication request submitted to the review queue.", "success")
            return redirect(url_for("review.request_show", request_id=req.id))
    status = 400 if request.method == "POST" else 200
    return render_template("review/publish_form.html", form=form, finding=finding, req=None,
                           page_marking=state.policy().level(finding.level)), status


@bp.route("/findings/<int:finding_id>/declassify", methods=["GET", "POST"])
@member_required
def declassify_new(finding_id: int) -> Any:
    finding = findings.get_finding(current_user, finding_id)
    form = DeclassifyForm()
    policy = state.policy()
    form.target_level.choices = [SelectChoice(lv.key, lv.label) for lv in policy.levels
                                 if 0 < lv.rank < policy.rank(finding.level)]
    if form.validate_on_submit():
        try:
            req = service.create_declassification(current_user, finding.id,
                                                  target_level=form.target_level.data,
                                                  note=form.note.data,
                                                  submission=form.submission.data)
        except AlreadySubmitted as exc:
            db.rollback()
            return already_submitted(exc, url_for("findings.show", finding_id=finding_id))
        except ServiceError as exc:
            db.rollback()
            form_error(exc, form)
        else:
            flash("Declassification request submitted to the review queue.", "success")
            return redirect(url_for("review.request_show", request_id=req.id))
    status = 400 if request.method == "POST" else 200
    return render_template("review/declassify_form.html", form=form, finding=finding,
                           page_marking=policy.level(finding.level)), status


# ---------------------------------------------------------------- the request page


def _render_request(req: ReviewRequest, *, review_form: Any = None,
                    comment_form: CommentForm | None = None, status: int = 200,
                    stale: pins.StalePin | None = None) -> Any:
    """The request page. ``stale``: an action was refused because the request changed
    since the actor's page was drawn; the page says so, links to what changed, and its
    forms carry the current pin."""
    policy = state.policy()
    v = service.view(current_user, req)
    finding = req.finding
    lines: list[diff.DiffLine] = []
    if req.is_publication:
        lines = diff.line_diff(diff.as_document(finding.title, finding.body),
                               diff.as_document(req.public_title, req.public_body))
    form_class = review_form_class(policy.review)
    return render_template(
        "review/request.html", v=v, req=req, finding=finding,
        internal_html=findings.body_html(finding), diff_lines=lines,
        diff_stats=diff.stats(lines), rubric=policy.review.rubric,
        review_form=review_form or form_class(formdata=None, **pin_defaults(req)),
        comment_form=comment_form or CommentForm(formdata=None), reason_form=ReasonForm(),
        pinned_form=PinnedReasonForm(formdata=None, **pin_defaults(req)), stale=stale,
        empty=EmptyForm(), labels=rules.STATE_LABELS,
        page_marking=policy.level(finding.level)), status


@bp.get("/requests/<int:request_id>")
@member_required
def request_show(request_id: int) -> Any:
    req = service.get_request(current_user, request_id)
    return _render_request(req)


@bp.post("/requests/<int:request_id>/reviews")
@member_required
def request_review(request_id: int) -> Any:
    # as flag_resolve: the gate, an excluded reviewer's 403, then the form
    req = service.request_for_review(current_user, request_id)
    service.check_can_review(current_user, req)
    policy = state.policy().review
    form = review_form_class(policy)()
    if form.validate_on_submit():
        try:
            service.add_review(current_user, req, seen=_seen(form), decision=form.decision.data,
                               risk=form.risk.data, scores=scores_from(form, policy),
                               comment=form.comment.data)
        except pins.StalePin as exc:
            db.rollback()
            db.refresh(req)
            # the choices made for the old version are not carried over to the new one
            form.decision.data = None
            form.content_sha256.data = req.content_sha256
            form.round.data = str(req.round)
            return _render_request(req, review_form=form, status=409, stale=exc)
        except ServiceError as exc:
            db.rollback()
            form_error(exc, form)
        else:
            flash("Review recorded.", "success")
            return redirect(url_for("review.request_show", request_id=req.id))
    else:
        flash("Choose a decision and a risk, and score every question.", "error")
    db.refresh(req)
    return _render_request(req, review_form=form, status=400)


@bp.post("/requests/<int:request_id>/comments")
@member_required
def request_comment(request_id: int) -> Any:
    req = service.get_request(current_user, request_id)
    form = CommentForm()
    if form.validate_on_submit():
        try:
            comment = service.add_comment(current_user, req, form.body.data,
                                          submission=form.submission.data)
        except AlreadySubmitted as exc:
            db.rollback()
            return already_submitted(exc, url_for("review.request_show",
                                                  request_id=request_id))
        except ServiceError as exc:
            db.rollback()
            form_error(exc, form)
        else:
            return redirect(url_for("review.request_show", request_id=req.id,
                                    _anchor=f"comment-{comment.id}"))
    return _render_request(req, comment_form=form, status=400)


@bp.route("/requests/<int:request_id>/edit", methods=["GET", "POST"])
@member_required
def request_edit(request_id: int) -> Any:
    req = service.get_request(current_user, request_id)
    finding = req.finding
    if not req.is_publication:
        abort(404)
    form = _publication_form(finding, req, formdata=request.method == "POST")
    if form.validate_on_submit():
        try:
            changed = service.edit_request(
                current_user, req, public_title=form.public_title.data,
                public_body=form.public_body.data, attachments=form.attachments.data or [],
                embargo_until=form.embargo_until.data or None,
                embargo_tz=form.embargo_tz.data, note=form.note.data,
                credit=form.credit.data)
        except ServiceError as exc:
            db.rollback()
            form_error(exc, form)
        else:
            flash("Saved. The request is back in the queue; earlier reviews no longer count."
                  if changed else "Saved (the reviewed content did not change).", "success")
            return redirect(url_for("review.request_show", request_id=req.id))
    status = 400 if request.method == "POST" else 200
    return render_template("review/publish_form.html", form=form, finding=finding, req=req,
                           page_marking=state.policy().level(finding.level)), status


def _seen(form: Any) -> dict[str, Any]:
    """The pin fields the page was drawn with (checked by the service)."""
    return {"content_sha256": form.content_sha256.data, "round": form.round.data}


def _action(request_id: int, run: Any, done: str, *, pinned: bool = False) -> Any:
    """A state change with a reason; ``pinned`` ones also carry the version the actor
    saw (``run(req, reason, seen)``), and a changed request re-renders its page (409)."""
    req = service.get_request(current_user, request_id)
    form = PinnedReasonForm() if pinned else ReasonForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        if pinned:
            run(req, form.reason.data, _seen(form))
        else:
            run(req, form.reason.data)
    except pins.StalePin as exc:
        db.rollback()
        db.refresh(req)
        return _render_request(req, status=409, stale=exc)
    except ServiceError as exc:
        db.rollback()
        if exc.status == 404:
            raise
        flash(exc.message, "error")
    else:
        flash(done, "success")
    if access.can_read(current_user, req.finding):
        return redirect(url_for("review.request_show", request_id=req.id))
    return redirect(url_for("review.queue"))


@bp.post("/requests/<int:request_id>/withdraw")
@member_required
def request_withdraw(request_id: int) -> Any:
    return _action(request_id, lambda r, why: service.withdraw(current_user, r, why),
                   "Request withdrawn.")


@bp.post("/requests/<int:request_id>/escalate")
@role_required(Role.ADMIN)
def request_escalate(request_id: int) -> Any:
    return _action(request_id,
                   lambda r, why, seen: service.escalate(current_user, r, why, seen=seen),
                   "Escalated: the blocking review no longer stops approval.", pinned=True)


@bp.post("/requests/<int:request_id>/reopen")
@role_required(Role.ADMIN)
def request_reopen(request_id: int) -> Any:
    return _action(request_id,
                   lambda r, why, seen: service.reopen(current_user, r, why, seen=seen),
                   "Reopened: a new review round starts.", pinned=True)


@bp.post("/requests/<int:request_id>/release")
@role_required(Role.ADMIN)
def request_release(request_id: int) -> Any:
    def run(req: ReviewRequest, _why: str, seen: pins.Seen) -> None:
        service.release(current_user, req, seen=seen)

    req = service.get_request(current_user, request_id)
    if request.form.get("confirm") != "yes":
        # irreversible: the page's form asks for a ticked confirmation (the API does not)
        flash("Nothing was released: tick the confirmation first (a release cannot be "
              "undone).", "error")
        return redirect(url_for("review.request_show", request_id=req.id))
    done = ("Released: the public version is on the public pages."
            if req.is_publication
            else "Applied: the finding's level was lowered.")
    return _action(request_id, run, done, pinned=True)
