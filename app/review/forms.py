"""Forms of the review pages (CSRF through flask-wtf)."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    HiddenField,
    IntegerField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    widgets,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, Optional

from app.policy import ReviewPolicy
from app.submissions.forms import OnceForm


class MultiCheckboxField(SelectMultipleField):
    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class FlagForm(OnceForm):
    reason = TextAreaField("Why is this a dual-use concern?",
                           validators=[InputRequired(), Length(max=5000)])
    suggested_level = SelectField("Suggested level", choices=[])


class PublicationForm(OnceForm):
    public_title = StringField("Public title", validators=[InputRequired(), Length(max=300)])
    public_body = TextAreaField("Public text (Markdown)", validators=[InputRequired()])
    attachments = MultiCheckboxField("Files to publish", choices=[], validate_choice=False)
    embargo_until = StringField("Earliest release (optional)", validators=[Optional()],
                                render_kw={"type": "datetime-local"})
    embargo_tz = SelectField("Time zone of the embargo", choices=[], default="UTC",
                             validate_choice=False)
    note = TextAreaField("Note to the reviewers (not published)",
                         validators=[Optional(), Length(max=5000)])
    credit = RadioField("Credit on the public page", default="anonymous",
                        validate_choice=False,
                        choices=[SelectChoice("authors", "The author and their organization"),
                                 SelectChoice("organization", "The organization only"),
                                 SelectChoice("anonymous", "Nobody (anonymous)")])


class DeclassifyForm(OnceForm):
    target_level = SelectField("New level", choices=[])
    note = TextAreaField("Why can it be read more widely?",
                         validators=[InputRequired(), Length(max=5000)])


class CommentForm(OnceForm):
    body = TextAreaField("Comment (Markdown)", validators=[InputRequired(), Length(max=20000)])


class ReasonForm(FlaskForm):
    reason = TextAreaField("Reason", validators=[Optional(), Length(max=5000)])


class PinFields:
    """The version of the request the page showed (content SHA-256 and round), sent
    back with the action so the service can refuse it when the request changed since."""

    content_sha256 = HiddenField()
    round = HiddenField()


class PinnedReasonForm(PinFields, ReasonForm):
    """Escalate, reopen, release: a reason and the pin the administrator saw."""


class ResolveFlagForm(FlaskForm):
    outcome = RadioField("Outcome", choices=[])
    level = SelectField("Raise to", choices=[], validate_choice=False)
    note = TextAreaField("Note (required to dismiss or to ask for a redaction)",
                         validators=[Optional(), Length(max=5000)])


class AffiliationForm(FlaskForm):
    org_a = SelectField("Organization", choices=[])
    org_b = SelectField("is affiliated with", choices=[])
    note = StringField("Note", validators=[Optional(), Length(max=300)])


def review_form_class(policy: ReviewPolicy) -> type[FlaskForm]:
    """A review form with one score field per rubric question of the policy."""

    class ReviewForm(PinFields, FlaskForm):
        decision = RadioField("Decision", choices=[
            SelectChoice("approve", "Approve"), SelectChoice("changes", "Ask for changes"),
            SelectChoice("reject", "Reject")], validators=[InputRequired()])
        risk = RadioField("Dual-use risk", choices=[SelectChoice(r) for r in policy.risks],
                          validators=[InputRequired()])
        comment = TextAreaField("Comment", validators=[Optional(), Length(max=20000)])

    for item in policy.rubric:
        setattr(ReviewForm, f"score_{item.key}", IntegerField(
            item.question, validators=[InputRequired()],
            render_kw={"min": item.min, "max": item.max, "type": "number"},
            description=f"{item.min}–{item.max}. {item.help}"))
    return ReviewForm


def pin_defaults(req: Any) -> dict[str, Any]:
    """Initial values of a form's pin fields: the request as the page shows it."""
    return {"content_sha256": req.content_sha256, "round": str(req.round)}


def scores_from(form: Any, policy: ReviewPolicy) -> dict[str, Any]:
    return {item.key: getattr(form, f"score_{item.key}").data for item in policy.rubric}
