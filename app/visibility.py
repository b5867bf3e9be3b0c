"""The visibility gate: every id a request names (in its path or in its body) resolves
here FIRST, before a form is parsed, a role or a conflict is checked, or any other error
is chosen.

An object the caller may not see is answered exactly like one that does not exist: the
same :class:`app.errors.NotFound` (status 404, code ``not_found``, message
:data:`NOT_FOUND_MESSAGE`, the same error page and headers), so that no status, code,
message, redirect or rendered page tells anyone that it exists. Who may see what is
decided by :mod:`app.access` (findings and everything in them) and by the review roles
(:func:`app.review.flags.flag_role`, :func:`app.review.service.viewer_role`); this module
only applies those rules to ids, in one place.

Documented exceptions (docs/decisions.md):

* a reader cleared for the finding who lacks an NDA, a second factor or a passkey proof
  is told so (:func:`app.access.require_readable`) and sent to sign or enrol;
* a reviewer excluded from reviewing a finding they can read (their organization, an
  affiliated one, a declared conflict) is told why with a 403 when they try to act:
  :func:`flag_for_review` / :func:`request_for_review` let them through the gate, and
  the review service refuses them before looking at what they sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn

from app import access
from app.db import db
from app.errors import NOT_FOUND_MESSAGE, NotFound

if TYPE_CHECKING:  # pragma: no cover
    from app.attachments.models import Attachment
    from app.findings.models import Finding, Reply
    from app.review.models import Flag, ReviewRequest


def hidden() -> NoReturn:
    """Answer as for a missing id."""
    raise NotFound(NOT_FOUND_MESSAGE)


def finding_or_404(user: Any, finding_id: Any, *, what: str = "read it",
                   options: Iterable[Any] = ()) -> Finding:
    """The finding, if ``user`` may read it (NDA/2FA only told to the cleared)."""
    from app.findings.models import Finding

    finding = (db.get(Finding, finding_id, options=list(options))
               if isinstance(finding_id, int) and not isinstance(finding_id, bool) else None)
    if finding is None:
        hidden()
    access.require_readable(user, finding, what=what)
    return finding


def reply_or_404(user: Any, reply_id: Any) -> Reply:
    """A reply of a finding ``user`` may read."""
    from app.findings.models import Reply

    reply = db.get(Reply, reply_id) if isinstance(reply_id, int) else None
    if reply is None:
        hidden()
    finding_or_404(user, reply.finding_id)
    return reply


def attachment_or_404(user: Any, attachment_id: Any) -> Attachment:
    """A live attachment of a finding ``user`` may read."""
    import re

    from app.attachments.models import Attachment

    if not isinstance(attachment_id, str) or not re.fullmatch(r"[0-9a-f]{32}", attachment_id):
        hidden()
    att = db.get(Attachment, attachment_id)
    if att is None or not att.live:
        hidden()
    access.require_readable(user, att.finding, what="open its files")
    return att


def attachments_of(finding: Finding, attachment_ids: Iterable[str]) -> list[Attachment]:
    """Attachment ids from a request body that must be live files of ``finding``. Any
    other id (missing, deleted, or a file of another finding, readable or not) is
    unknown, with one message that names only the id the caller sent."""
    from sqlalchemy import select

    from app.attachments.models import Attachment
    from app.errors import ServiceError

    wanted = list(attachment_ids)
    found = {a.id: a for a in db.scalars(select(Attachment).where(
        Attachment.id.in_(wanted), Attachment.finding_id == finding.id))}
    out = []
    for att_id in wanted:
        att = found.get(att_id)
        if att is None or not att.live:
            raise ServiceError(f"This finding has no attachment {att_id!r}.",
                               code="unknown_attachment", field="attachments")
        out.append(att)
    return out


def flag_or_404(user: Any, flag_id: Any) -> Flag:
    """A flag ``user`` may see (its finding readable, and a role on it)."""
    from app.review.flags import flag_role
    from app.review.models import Flag

    flag = db.get(Flag, flag_id) if isinstance(flag_id, int) else None
    if flag is None or flag_role(user, flag) is None:
        hidden()
    return flag


def flag_for_review(user: Any, flag_id: Any) -> Flag:
    """A flag to resolve: for reviewers (admins included) who can read its finding. One
    who is excluded from reviewing it is then told why (403), before anything else."""
    from app.review import rules
    from app.review.models import Flag

    flag = db.get(Flag, flag_id) if isinstance(flag_id, int) else None
    if flag is None or not (rules.is_reviewer(user) and access.can_read(user, flag.finding)):
        hidden()
    return flag


def request_or_404(user: Any, request_id: Any) -> ReviewRequest:
    """A review request ``user`` may see (author, eligible reviewer, admin)."""
    from app.review.models import ReviewRequest
    from app.review.service import viewer_role

    req = db.get(ReviewRequest, request_id) if isinstance(request_id, int) else None
    if req is None or viewer_role(user, req) is None:
        hidden()
    return req


def request_for_review(user: Any, request_id: Any) -> ReviewRequest:
    """A request to decide on: as :func:`flag_for_review`."""
    from app.review import rules
    from app.review.models import ReviewRequest

    req = db.get(ReviewRequest, request_id) if isinstance(request_id, int) else None
    if req is None or not (rules.is_reviewer(user) and access.can_read(user, req.finding)):
        hidden()
    return req


def released_or_404(item_id: Any) -> ReviewRequest:
    """A released public version (the public pages, feed and API), by its public number
    (``public_id``, given at release; never the request's id): anything else, an
    unreleased, withdrawn or declassification request included, is missing."""
    from sqlalchemy import select

    from app.review.models import ReviewRequest
    from app.review.rules import RELEASED

    req = db.scalar(select(ReviewRequest).where(ReviewRequest.public_id == item_id)) \
        if isinstance(item_id, int) else None
    if req is None or req.kind != "publication" or req.state != RELEASED:
        hidden()
    return req
