"""What access and server logs may show of a URL.

Password-reset and invitation tokens travel in the link's path (``/reset/<token>``,
``/invite/<token>``), and query strings carry search words and single sign-on codes.
Servers log request lines, so every access-log format we ship shows the path with those
tokens replaced and without the query string: gunicorn (``gunicorn.conf.py`` logs
``%(U)s`` through :class:`RedactingFilter`), Werkzeug's development server (the same
filter on the ``werkzeug`` logger) and the documented nginx configuration
(``deploy/nginx/enclave.conf``, ``log_format enclave``). See docs/decisions.md.
"""

from __future__ import annotations

import logging
import re

#: path segments that are bearer secrets: /reset/<token>, /invite/<token>
TOKEN_PATH = re.compile(r"(/(?:reset|invite)/)[^/?#\s\"']+")
QUERY = re.compile(r"\?[^\s\"']*")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with reset and invitation tokens and query strings taken out."""
    return QUERY.sub("?" + REDACTED, TOKEN_PATH.sub(r"\1" + REDACTED, text))


class RedactingFilter(logging.Filter):
    """Rewrites each record's message through :func:`redact` (the arguments are merged
    first, so a token passed as an argument is caught too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: keep its text only
            message = str(record.msg)
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, ()
        return True


def install(*names: str) -> None:
    """Add the filter to the named loggers (once each)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


def describe_mail_error(exc: BaseException) -> str:
    """A failed e-mail for the log, without addresses: SMTP servers echo the refused
    recipient (``550 5.1.1 <ann@acme.example>: Recipient address rejected``) and
    smtplib puts it in the exception; GnuPG errors can name key user ids."""
    import smtplib

    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in exc.recipients.values()})
        return (f"SMTPRecipientsRefused: {len(exc.recipients)} recipient(s) refused "
                f"(SMTP {', '.join(map(str, codes))})")
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__}: SMTP {exc.smtp_code}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__


def frames(exc: BaseException) -> str:
    """Where ``exc`` was raised (the traceback's frames), without its message."""
    import traceback

    return "".join(traceback.format_tb(exc.__traceback__)).rstrip()
