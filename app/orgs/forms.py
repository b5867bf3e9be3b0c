from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length


class OrgForm(FlaskForm):
    slug = StringField("Slug", validators=[DataRequired(), Length(max=64)])
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    domains = TextAreaField("E-mail domains (one per line)",
                            validators=[DataRequired(), Length(max=4000)])
    ceiling = SelectField("Ceiling (highest level its members may read)",
                          validators=[DataRequired()])
    trusted = BooleanField("Trusted now")


class OrgEditForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    domains = TextAreaField("E-mail domains (one per line)",
                            validators=[DataRequired(), Length(max=4000)])
    ceiling = SelectField("Ceiling", validators=[DataRequired()])
    status = SelectField("Status", validators=[DataRequired()],
                         choices=[SelectChoice("pending"), SelectChoice("trusted"),
                                  SelectChoice("suspended")])
