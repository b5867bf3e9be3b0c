"""The hidden one-time token every create form carries."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField
from wtforms.validators import Length

from app.submissions.service import new_token


class OnceForm(FlaskForm):
    """A create form: a fresh token when rendered, the posted one when re-rendered after
    an error (the refused submission was rolled back, so it stays usable)."""

    submission = HiddenField(default=new_token, validators=[Length(max=128)])
