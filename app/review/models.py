"""Dual-use review: flags, publication and declassification requests, reviews, escalations,
the discussion thread, the request history, organization affiliations and conflicts.

A ``ReviewRequest`` is one item of the review queue that needs a quorum: ``kind`` is
``publication`` (a public title, body and chosen attachments, pinned by SHA-256) or
``declassification`` (a lower target level for the finding). Reviews belong to a
``round``: editing the pinned content or reopening a rejected request starts a new round,
and every review of an earlier round is kept but marked stale.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

import app.attachments.models  # noqa: F401  (the attachments table, for the foreign key)
from app.auth.models import User
from app.db import Base, utcnow
from app.findings.models import Finding
from app.orgs.models import Organization
from app.sealing import LevelLookup, Sealed, public_level, sealed_text

#: Requests still in the queue (not released, applied or withdrawn): the states of
#: ``rules.OPEN_STATES``, spelled out for the partial unique index.
OPEN_REQUEST_SQL = "state IN ('submitted', 'approved', 'changes_requested', 'rejected')"


def _request_scope(cls: Any, finding_id: int) -> Any:
    from sqlalchemy import select

    return cls.request_id.in_(select(ReviewRequest.id)
                              .where(ReviewRequest.finding_id == finding_id))


class OrgAffiliation(Base):
    """Two organizations an admin declared affiliated (e.g. a parent company under another
    domain): for review conflicts they count as one. Stored once, lower id first."""

    __tablename__ = "org_affiliations"
    __table_args__ = (
        UniqueConstraint("org_a_id", "org_b_id"),
        CheckConstraint("org_a_id < org_b_id", name="ordered_pair"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_a_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"),
                                          index=True)
    org_b_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"),
                                          index=True)
    note: Mapped[str] = mapped_column(String(300), default="")
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    org_a: Mapped[Organization] = relationship(lazy="joined", foreign_keys=[org_a_id])
    org_b: Mapped[Organization] = relationship(lazy="joined", foreign_keys=[org_b_id])


class ConflictDeclaration(Base, Sealed):
    """A reviewer declared a conflict of interest on a finding: they are excluded from
    every flag and request about it."""

    __tablename__ = "review_conflicts"
    __table_args__ = (UniqueConstraint("user_id", "finding_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id", ondelete="CASCADE"),
                                            index=True)
    reason_sealed: Mapped[bytes] = mapped_column("reason", LargeBinary, default=b"")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship(lazy="joined")

    reason = sealed_text("reason_sealed")


class Flag(Base, Sealed):
    """A reader's dual-use concern about a finding; one reviewer resolves it."""

    __tablename__ = "review_flags"
    __table_args__ = (
        Index("ix_review_flags_state_created", "state", "created_at"),
        # one open flag per reader and finding, enforced by the database on both engines
        Index("uq_review_flags_open_per_flagger", "finding_id", "flagger_id", unique=True,
              sqlite_where=text("state = 'open'"), postgresql_where=text("state = 'open'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id", ondelete="CASCADE"),
                                            index=True)
    flagger_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    reason_sealed: Mapped[bytes] = mapped_column("reason", LargeBinary)
    suggested_level: Mapped[str] = mapped_column(String(64))
    level_at_flag: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="open")
    outcome: Mapped[str] = mapped_column(String(16), default="")
    outcome_level: Mapped[str] = mapped_column(String(64), default="")
    note_sealed: Mapped[bytes] = mapped_column("note", LargeBinary, default=b"")
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    resolved_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    finding: Mapped[Finding] = relationship(lazy="joined")
    flagger: Mapped[User] = relationship(lazy="joined", foreign_keys=[flagger_id])
    resolved_by: Mapped[User | None] = relationship(lazy="joined",
                                                    foreign_keys=[resolved_by_id])

    reason = sealed_text("reason_sealed")
    note = sealed_text("note_sealed")

    @property
    def is_open(self) -> bool:
        return self.state == "open"


class ReviewRequest(Base, Sealed):
    """A publication or declassification request and where it stands.

    Its texts are sealed under the finding's level; once released, the public version
    (title, body and the chosen files' names) is public content, stored readable."""

    __tablename__ = "review_requests"
    __table_args__ = (
        Index("ix_review_requests_state_submitted", "state", "submitted_at"),
        # one open request per finding and kind (open: not released, applied or withdrawn)
        Index("uq_review_requests_open_per_kind", "finding_id", "kind", unique=True,
              sqlite_where=text(OPEN_REQUEST_SQL), postgresql_where=text(OPEN_REQUEST_SQL)),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id", ondelete="CASCADE"),
                                            index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    state: Mapped[str] = mapped_column(String(24), default="submitted")
    round: Mapped[int] = mapped_column(Integer, default=1)
    from_level: Mapped[str] = mapped_column(String(64))
    target_level: Mapped[str] = mapped_column(String(64))
    public_title_sealed: Mapped[bytes] = mapped_column("public_title", LargeBinary, default=b"")
    public_body_sealed: Mapped[bytes] = mapped_column("public_body", LargeBinary, default=b"")
    public_body_html_sealed: Mapped[bytes] = mapped_column("public_body_html", LargeBinary,
                                                           default=b"")
    note_sealed: Mapped[bytes] = mapped_column("note", LargeBinary, default=b"")
    embargo_until: Mapped[datetime | None]
    embargo_tz: Mapped[str] = mapped_column(String(64), default="UTC")
    content_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]
    released_at: Mapped[datetime | None] = mapped_column(index=True)
    released_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # the public item's own number, given at release (1, 2, ...): public URLs never show
    # the request's id, which would let outsiders count requests, released or not
    public_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    # who the public page credits: "authors" (the author and organization),
    # "organization" or "anonymous"; the credit line is fixed at release
    credit: Mapped[str] = mapped_column(String(16), default="anonymous",
                                        server_default="anonymous")
    public_credit: Mapped[str] = mapped_column(String(400), default="", server_default="")
    closed_at: Mapped[datetime | None]

    finding: Mapped[Finding] = relationship(lazy="joined")
    requester: Mapped[User] = relationship(lazy="joined", foreign_keys=[requester_id])
    attachments: Mapped[list[RequestAttachment]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="RequestAttachment.id")

    public_title = sealed_text("public_title_sealed")
    public_body = sealed_text("public_body_sealed")
    public_body_html = sealed_text("public_body_html_sealed")
    note = sealed_text("note_sealed")

    PUBLIC_FIELDS = ("public_title", "public_body", "public_body_html")

    @property
    def is_publication(self) -> bool:
        return self.kind == "publication"

    @property
    def is_released(self) -> bool:
        return self.state == "released"

    def sealed_level(self, lookup: LevelLookup, field: str) -> str:
        if field in self.PUBLIC_FIELDS and self.is_released:
            return public_level()
        return lookup.finding(self.finding_id)

    def release_texts(self) -> None:
        """Call before setting ``state`` to released: the public version becomes public
        content (readable in the database), the rest stays sealed."""
        texts = {name: getattr(self, name) for name in self.PUBLIC_FIELDS}
        files = [(a, a.filename) for a in self.attachments]
        self.state = "released"
        for name, value in texts.items():
            setattr(self, name, value)
        for attachment, filename in files:
            attachment.filename = filename


class RequestAttachment(Base, Sealed):
    """An attachment chosen for the public version, with the facts the pin covers.

    ``attachment_id`` becomes NULL if the attachment is deleted later; the request then
    cannot be released until it is edited."""

    __tablename__ = "review_request_attachments"
    __table_args__ = (UniqueConstraint("request_id", "attachment_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("review_requests.id", ondelete="CASCADE"), index=True)
    attachment_id: Mapped[str | None] = mapped_column(
        ForeignKey("attachments.id", ondelete="SET NULL"), index=True)
    filename_sealed: Mapped[bytes] = mapped_column("filename", LargeBinary)
    content_type: Mapped[str] = mapped_column(String(127), default="application/octet-stream")
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))

    filename = sealed_text("filename_sealed")

    def sealed_level(self, lookup: LevelLookup, field: str) -> str:
        request = lookup.loaded(ReviewRequest, self.request_id)
        if request is not None and "state" in request.__dict__:
            if request.is_released:
                return public_level()
            return lookup.finding(request.finding_id)
        state, finding_id = lookup.request_state(self.request_id)
        return public_level() if state == "released" else lookup.finding(finding_id)

    @classmethod
    def sealed_scope(cls, finding_id: int) -> Any:
        return _request_scope(cls, finding_id)


class Escalation(Base, Sealed):
    """An admin's written decision to let a request past its blocking-risk reviews."""

    __tablename__ = "review_escalations"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("review_requests.id", ondelete="CASCADE"), index=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    round: Mapped[int] = mapped_column(Integer)
    reason_sealed: Mapped[bytes] = mapped_column("reason", LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    admin: Mapped[User] = relationship(lazy="joined")

    reason = sealed_text("reason_sealed")

    def sealed_level(self, lookup: LevelLookup, field: str) -> str:
        return lookup.finding(lookup.request_finding(self.request_id))

    @classmethod
    def sealed_scope(cls, finding_id: int) -> Any:
        return _request_scope(cls, finding_id)


class Review(Base, Sealed):
    """One reviewer's decision on one round of a request."""

    __tablename__ = "reviews"
    __table_args__ = (
        UniqueConstraint("request_id", "reviewer_id", "round"),
        Index("ix_reviews_request_round", "request_id", "round"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("review_requests.id", ondelete="CASCADE"))
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    reviewer_org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    round: Mapped[int] = mapped_column(Integer)
    content_sha256: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    risk: Mapped[str] = mapped_column(String(64))
    scores_json: Mapped[str] = mapped_column(Text, default="{}")
    comment_sealed: Mapped[bytes] = mapped_column("comment", LargeBinary, default=b"")
    stale: Mapped[bool] = mapped_column(default=False)
    stale_reason: Mapped[str] = mapped_column(String(200), default="")
    escalation_id: Mapped[int | None] = mapped_column(
        ForeignKey("review_escalations.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    reviewer: Mapped[User] = relationship(lazy="joined")
    reviewer_org: Mapped[Organization] = relationship(lazy="joined")

    comment = sealed_text("comment_sealed")

    def sealed_level(self, lookup: LevelLookup, field: str) -> str:
        return lookup.finding(lookup.request_finding(self.request_id))

    @classmethod
    def sealed_scope(cls, finding_id: int) -> Any:
        return _request_scope(cls, finding_id)

    @property
    def scores(self) -> dict[str, Any]:
        return json.loads(self.scores_json or "{}")


class ReviewComment(Base, Sealed):
    """The request's discussion: reviewers and the author (and admins) only."""

    __tablename__ = "review_comments"
    __table_args__ = (Index("ix_review_comments_request_created", "request_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("review_requests.id", ondelete="CASCADE"))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    body_sealed: Mapped[bytes] = mapped_column("body", LargeBinary)
    body_html_sealed: Mapped[bytes] = mapped_column("body_html", LargeBinary, default=b"")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    author: Mapped[User] = relationship(lazy="joined")

    body = sealed_text("body_sealed")
    body_html = sealed_text("body_html_sealed")

    def sealed_level(self, lookup: LevelLookup, field: str) -> str:
        return lookup.finding(lookup.request_finding(self.request_id))

    @classmethod
    def sealed_scope(cls, finding_id: int) -> Any:
        return _request_scope(cls, finding_id)


class ReviewEvent(Base, Sealed):
    """The history of one request or flag (also in the audit log), for its page."""

    __tablename__ = "review_events"
    __table_args__ = (
        CheckConstraint("(request_id IS NULL) <> (flag_id IS NULL)", name="one_subject"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int | None] = mapped_column(
        ForeignKey("review_requests.id", ondelete="CASCADE"), index=True)
    flag_id: Mapped[int | None] = mapped_column(
        ForeignKey("review_flags.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(64))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor_role: Mapped[str] = mapped_column(String(16), default="")
    audit_seq: Mapped[int] = mapped_column(Integer, default=0)
    details_sealed: Mapped[bytes] = mapped_column("details", LargeBinary, default=b"")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    actor: Mapped[User | None] = relationship(lazy="joined")

    details = sealed_text("details_sealed")  # JSON; reasons are free text

    def sealed_level(self, lookup: LevelLookup, field: str) -> str:
        if self.request_id is not None:
            return lookup.finding(lookup.request_finding(self.request_id))
        return lookup.finding(lookup.flag_finding(self.flag_id))  # type: ignore[arg-type]

    @classmethod
    def sealed_scope(cls, finding_id: int) -> Any:
        from sqlalchemy import or_, select

        return or_(_request_scope(cls, finding_id),
                   cls.flag_id.in_(select(Flag.id).where(Flag.finding_id == finding_id)))

    @property
    def details_dict(self) -> dict[str, Any]:
        return json.loads(self.details or "{}")
