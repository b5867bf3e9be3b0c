from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    HiddenField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    widgets,
)
from wtforms.validators import DataRequired, Length

from app.submissions.forms import OnceForm

# Choices are offered for convenience; the service validates every value (validate_choice
# is off) so that a crafted request gets the same clear message as the API.


class CheckboxesField(SelectMultipleField):
    """A multiple choice shown as a list of checkboxes (a <select multiple> needs
    Ctrl-click, and on a phone hides the choices)."""

    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class FindingForm(OnceForm):
    title = StringField("Title", validators=[Length(max=300)])
    category = SelectField("Category", validate_choice=False)
    level = SelectField("Level", validate_choice=False)
    orgs = CheckboxesField("Compartment: also share with (your organization is always "
                               "included)", validate_choice=False)
    body = TextAreaField("Body (Markdown)")


class EditForm(FlaskForm):
    title = StringField("Title", validators=[Length(max=300)])
    level = SelectField("Level (raise only; lowering needs a review)", validate_choice=False)
    orgs = CheckboxesField("Compartment (narrow only; your organization is always "
                               "included)", validate_choice=False)
    body = TextAreaField("Body (Markdown)")
    # the finding's version this edit started from (optimistic concurrency)
    version = HiddenField()


class ReplyForm(OnceForm):
    body = TextAreaField("Your reply (Markdown; @username to mention)")


class HideForm(FlaskForm):
    reason = StringField("Reason", validators=[Length(max=500)])


class MoveForm(FlaskForm):
    category = SelectField("Move to category", validate_choice=False)


class CategoryForm(FlaskForm):
    slug = StringField("Slug", validators=[DataRequired(), Length(max=64)])
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    description = TextAreaField("Description", validators=[Length(max=2000)])


class CategoryEditForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    description = TextAreaField("Description", validators=[Length(max=2000)])
