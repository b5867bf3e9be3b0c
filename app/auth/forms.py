from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    EmailField,
    IntegerField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    widgets,
)
from wtforms.validators import DataRequired, EqualTo, Length, Optional

from app.submissions.forms import OnceForm

SAME_AS_PASSWORD = EqualTo("password", "The passwords differ.")


class LoginForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class SecondFactorForm(FlaskForm):
    code = StringField("Code from your authenticator app, or a recovery code",
                       validators=[DataRequired(), Length(max=32)])


class AcceptInvitationForm(FlaskForm):
    username = StringField("Username (for @mentions)", validators=[DataRequired(), Length(max=40)])
    display_name = StringField("Full name", validators=[DataRequired(), Length(max=120)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    confirm = PasswordField("Repeat password", validators=[DataRequired(), SAME_AS_PASSWORD])


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired()])
    password = PasswordField("New password", validators=[DataRequired(), Length(max=1024)])
    confirm = PasswordField("Repeat new password", validators=[DataRequired(), SAME_AS_PASSWORD])


class ForgotPasswordForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])


class ResetPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired(), Length(max=1024)])
    confirm = PasswordField("Repeat new password", validators=[DataRequired(), SAME_AS_PASSWORD])


class MfaConfirmForm(FlaskForm):
    code = StringField("6-digit code", validators=[DataRequired(), Length(max=12)])


class MfaDisableForm(FlaskForm):
    password = PasswordField("Password", validators=[DataRequired()])
    code = StringField("Code from your authenticator app, or a recovery code",
                       validators=[DataRequired(), Length(max=40)])


class ConfirmForm(FlaskForm):
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    code = StringField("Code from your authenticator app", validators=[Length(max=12)])


class OpenPgpKeyForm(FlaskForm):
    key = TextAreaField("Your OpenPGP public key (ASCII-armored)",
                        validators=[Length(max=100_000)])


class MultiCheckboxField(SelectMultipleField):
    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class TokenForm(FlaskForm):
    name = StringField("Token name", validators=[DataRequired(), Length(max=80)])
    scopes = MultiCheckboxField("What it may do", choices=[], default=["read"])
    days = IntegerField("Lifetime in days", validators=[Optional()])


class EmptyForm(FlaskForm):
    """CSRF only (buttons such as revoke or logout)."""


class InviteForm(OnceForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])
    org = SelectField("Organization", validators=[DataRequired()])
    clearance = SelectField("Clearance", validators=[DataRequired()])
    role = SelectField("Role", validators=[DataRequired()])


class UserEditForm(FlaskForm):
    clearance = SelectField("Clearance", validators=[DataRequired()])
    # a plain string checked by the service (one message for the page, CLI and API)
    clearance_until = StringField("Clearance ends after (optional)",
                                  validators=[Length(max=40)], render_kw={"type": "date"})
    role = SelectField("Role", validators=[DataRequired()])
