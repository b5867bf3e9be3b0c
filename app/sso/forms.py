from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length


class SsoStartForm(FlaskForm):
    email = EmailField("Work e-mail", validators=[DataRequired(), Length(max=254)])


class SsoSettingsForm(FlaskForm):
    issuer = StringField("Issuer URL", validators=[DataRequired(), Length(max=500)])
    client_id = StringField("Client id", validators=[DataRequired(), Length(max=255)])
    client_secret = PasswordField("Client secret (leave empty to keep the stored one)",
                                  validators=[Length(max=1000)])
    no_passwords = BooleanField("Members sign in only through the provider (no passwords, "
                                "no passkey-alone sign-in)")
    group_clearances = TextAreaField("Group to clearance, one 'group = level' per line "
                                     "(optional)", validators=[Length(max=5000)])
    allowed_groups = TextAreaField("Admit members of these groups without an invitation, "
                                   "one per line (administrators only)",
                                   validators=[Length(max=5000)])
