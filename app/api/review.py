"""Dual-use review and public release in the API: flags, publication and declassification
requests, the reviewer queue, decisions, escalation, reopening, release, affiliations, and
the public (no token) released findings. The same services as the web pages."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import request

from app import disclosure, visibility
from app.api import (
    api_user,
    bp,
    field,
    idempotency_key,
    json_body,
    needs_scope,
    page_json,
    public,
    replayed,
    require_role,
)
from app.auth.models import Role
from app.db import db
from app.errors import ServiceError
from app.findings import service as findings
from app.links import external_url
from app.publish import service as public_service
from app.review import flags, pins, service
from app.review.models import Flag, OrgAffiliation, ReviewComment, ReviewRequest
from app.submissions.service import AlreadySubmitted


def _only(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ServiceError(f"Unknown field(s): {', '.join(unknown)}; allowed: "
                           f"{', '.join(sorted(allowed))}.", code="unknown_field")


def _when(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def request_json(req: ReviewRequest) -> dict[str, Any]:
    """The request as the caller may see it (reviewer names hidden from authors when
    reviewers are anonymous)."""
    v = service.view(api_user(), req)
    asker = v.requester  # as the disclosure rule lets the caller see them

    def person(shown: service.Shown) -> dict[str, Any]:
        out: dict[str, Any] = {"name": shown.label}
        if shown.org:
            out["organization"] = shown.org
        return out

    body: dict[str, Any] = {
        "id": req.id, "kind": req.kind, "state": req.state, "round": req.round,
        "finding_id": req.finding_id, "from_level": req.from_level,
        "target_level": req.target_level, "your_role": v.role,
        "requester": {"username": asker.username, "display_name": asker.label},
        "note": req.note, "content_sha256": req.content_sha256,
        "created_at": _when(req.created_at), "submitted_at": _when(req.submitted_at),
        "updated_at": _when(req.updated_at), "released_at": _when(req.released_at),
        "embargo_until": _when(req.embargo_until), "embargo_tz": req.embargo_tz,
        "credit": req.credit,
        "embargo_display": v.embargo_text or None,
        "tally": {"approvals": v.tally.approvals_counted, "quorum": v.tally.quorum,
                  "quorum_met": v.tally.quorum_met, "blocked": v.tally.blocked,
                  "escalated": len(v.tally.escalated)},
        "release_problems": v.problems,
        "reviews": [{
            "id": r.id, "round": r.round, "stale": r.stale, "stale_reason": r.stale_reason,
            "decision": r.decision, "risk": r.risk, "scores": r.scores,
            "comment": r.comment, "escalated": r.escalation_id is not None,
            "created_at": _when(r.created_at), "reviewer": person(who),
        } for r, who in v.reviews],
        "comments": [{"id": c.id, "author": person(who), "body": c.body,
                      "created_at": _when(c.created_at)} for c, who in v.comments],
        "escalations": [{"by": person(who), "reason": e.reason, "round": e.round,
                         "created_at": _when(e.created_at)} for e, who in v.escalations],
        "history": [{"action": e.action, "by": person(who), "created_at": _when(e.created_at),
                     "details": e.details_dict} for e, who in v.events],
    }
    if req.kind == "publication":
        body["public_title"] = req.public_title
        body["public_body"] = req.public_body
        body["attachments"] = [{"attachment_id": a.attachment_id, "filename": a.filename,
                                "size": a.size, "sha256": a.sha256} for a in req.attachments]
    if req.state == "released":
        body["public_url"] = external_url("public.show", item_id=req.public_id)
    return body


def flag_json(flag: Flag) -> dict[str, Any]:
    flagger, resolver = disclosure.flag_people(api_user(), flag)
    out: dict[str, Any] = {
        "id": flag.id, "finding_id": flag.finding_id, "state": flag.state,
        "reason": flag.reason, "suggested_level": flag.suggested_level,
        "level_at_flag": flag.level_at_flag, "outcome": flag.outcome or None,
        "outcome_level": flag.outcome_level or None, "note": flag.note,
        "created_at": _when(flag.created_at), "resolved_at": _when(flag.resolved_at),
    }
    if flagger.named:  # only as the disclosure rule allows
        out["flagger"] = {"username": flagger.username,
                          "organization": flag.flagger.org.slug}
    if resolver is not None and resolver.named:
        out["resolved_by"] = {"username": resolver.username,
                              "organization": flag.resolved_by.org.slug}
    return out


PIN_FIELDS = frozenset({"content_sha256", "round"})


def _seen(data: dict[str, Any]) -> dict[str, Any]:
    """The version the caller read (required; the service checks it after the permission
    checks): ``content_sha256`` and ``round`` as ``GET /review/requests/{id}`` shows them."""
    return {name: data.get(name) for name in PIN_FIELDS}


@contextmanager
def _stale_links(request_id: int) -> Iterator[None]:
    """A 409 for a changed request says where to read what changed."""
    try:
        yield
    except pins.StalePin as exc:
        db.rollback()
        exc.extra["request_url"] = external_url("api.request_get", id=request_id)
        exc.extra["diff_url"] = external_url("review.request_show",
                                             request_id=request_id) + "#diff-h"
        raise


def _request(item_id: int) -> ReviewRequest:
    return service.get_request(api_user(), item_id)


# ---------------------------------------------------------------- flags and requests


@bp.post("/findings/<int:id>/flags")
def flag_create(id: int) -> Any:
    visibility.finding_or_404(api_user(), id)
    data = json_body()
    _only(data, {"reason", "suggested_level"})
    try:
        flag = flags.create_flag(api_user(), id, reason=field(data, "reason"),
                                 suggested_level=field(data, "suggested_level", required=False),
                                 submission=idempotency_key())
    except AlreadySubmitted as exc:
        db.rollback()
        if exc.target_type != "flag":
            raise
        return replayed(flag_json(flags.get_flag(api_user(), exc.target_id or 0)))
    return flag_json(flag), 201


@bp.get("/review/flags/<int:id>")
def flag_get(id: int) -> Any:
    return flag_json(flags.get_flag(api_user(), id))


@bp.post("/review/flags/<int:id>/resolve")
@needs_scope("review")
def flag_resolve(id: int) -> Any:
    flag = flags.flag_for_review(api_user(), id)
    flags.check_can_resolve(api_user(), flag)
    data = json_body()
    _only(data, {"outcome", "level", "note"})
    flags.resolve_flag(api_user(), flag, outcome=field(data, "outcome"),
                       level=field(data, "level", required=False),
                       note=field(data, "note", required=False))
    return flag_json(flag)


@bp.post("/findings/<int:id>/conflicts")
def conflict_declare(id: int) -> Any:
    finding = findings.get_finding(api_user(), id)
    data = json_body()
    _only(data, {"reason"})
    flags.declare_conflict(api_user(), finding, field(data, "reason"))
    return {"finding_id": id, "declared": True}, 201


PUBLICATION_FIELDS = {"public_title", "public_body", "attachments", "embargo_until", "credit",
                      "embargo_tz", "note"}


@bp.post("/findings/<int:id>/publication-requests")
def publication_create(id: int) -> Any:
    visibility.finding_or_404(api_user(), id)
    data = json_body()
    _only(data, PUBLICATION_FIELDS)
    try:
        req = service.create_publication(
            api_user(), id, public_title=field(data, "public_title"),
            public_body=field(data, "public_body"),
            attachments=field(data, "attachments", list, required=False, default=[]),
            embargo_until=field(data, "embargo_until", required=False),
            embargo_tz=field(data, "embargo_tz", required=False),
            note=field(data, "note", required=False),
            credit=field(data, "credit", required=False), submission=idempotency_key())
    except AlreadySubmitted as exc:
        db.rollback()
        if exc.target_type != "request":
            raise
        return replayed(request_json(_request(exc.target_id or 0)))
    return request_json(req), 201


@bp.post("/findings/<int:id>/declassification-requests")
def declassification_create(id: int) -> Any:
    visibility.finding_or_404(api_user(), id)
    data = json_body()
    _only(data, {"target_level", "note"})
    try:
        req = service.create_declassification(api_user(), id,
                                              target_level=field(data, "target_level"),
                                              note=field(data, "note"),
                                              submission=idempotency_key())
    except AlreadySubmitted as exc:
        db.rollback()
        if exc.target_type != "request":
            raise
        return replayed(request_json(_request(exc.target_id or 0)))
    return request_json(req), 201


@bp.get("/review/queue")
@require_role(Role.REVIEWER)
def review_queue() -> Any:
    page = service.queue(api_user(), request.args)

    def item(q: service.QueueItem) -> dict[str, Any]:
        base = {"type": q.kind, "waiting_since": _when(q.since),
                "finding": {"id": q.finding.id, "title": q.finding.title,
                            "level": q.finding.level}}
        if q.request is not None:
            base.update(id=q.request.id, kind=q.request.kind, state=q.request.state,
                        round=q.request.round)
        elif q.flag is not None:
            base.update(id=q.flag.id, suggested_level=q.flag.suggested_level,
                        state=q.flag.state)
        return base

    return page_json(page, item)


@bp.get("/review/requests/<int:id>")
def request_get(id: int) -> Any:
    return request_json(_request(id))


@bp.patch("/review/requests/<int:id>")
def request_edit(id: int) -> Any:
    req = _request(id)
    data = json_body()
    _only(data, PUBLICATION_FIELDS | {"target_level"})
    kwargs = {name: data[name] for name in data}
    for name in ("public_title", "public_body", "embargo_tz", "note", "target_level",
                 "credit"):
        if name in kwargs and kwargs[name] is not None and not isinstance(kwargs[name], str):
            raise ServiceError(f"'{name}' must be a string.", code="bad_field", field=name)
    if "attachments" in kwargs and not isinstance(kwargs["attachments"], list):
        raise ServiceError("'attachments' must be a list.", code="bad_field",
                           field="attachments")
    changed = service.edit_request(api_user(), req, **kwargs)
    return {**request_json(req), "content_changed": changed}


@bp.post("/review/requests/<int:id>/decisions")
@needs_scope("review")
def request_decide(id: int) -> Any:
    req = service.request_for_review(api_user(), id)
    service.check_can_review(api_user(), req)
    data = json_body()
    _only(data, {"decision", "risk", "scores", "comment"} | PIN_FIELDS)
    with _stale_links(id):
        review = service.add_review(api_user(), req, seen=_seen(data),
                                    decision=field(data, "decision"), risk=field(data, "risk"),
                                    scores=field(data, "scores", dict),
                                    comment=field(data, "comment", required=False))
    return {"review_id": review.id, "round": review.round, "state": req.state,
            "request": request_json(req)}, 201


@bp.post("/review/requests/<int:id>/comments")
def request_comment(id: int) -> Any:
    req = _request(id)
    data = json_body()
    _only(data, {"body"})
    try:
        comment = service.add_comment(api_user(), req, field(data, "body"),
                                      submission=idempotency_key())
    except AlreadySubmitted as exc:
        db.rollback()
        first = (db.get(ReviewComment, exc.target_id or 0) if exc.target_type == "comment"
                 else None)
        if first is None or first.request_id != id:
            raise
        return replayed({"id": first.id, "request_id": first.request_id,
                         "body": first.body})
    return {"id": comment.id, "request_id": req.id, "body": comment.body}, 201


def _reason(data: dict[str, Any], required: bool = True,
            also: frozenset[str] = frozenset()) -> Any:
    _only(data, {"reason"} | also)
    return field(data, "reason", required=required)


@bp.post("/review/requests/<int:id>/escalate")
@needs_scope("admin")
def request_escalate(id: int) -> Any:
    req = _request(id)
    data = json_body()
    reason = _reason(data, also=PIN_FIELDS)
    with _stale_links(id):
        service.escalate(api_user(), req, reason, seen=_seen(data))
    return request_json(req)


@bp.post("/review/requests/<int:id>/reopen")
@needs_scope("review")
def request_reopen(id: int) -> Any:
    req = _request(id)
    data = json_body()
    reason = _reason(data, also=PIN_FIELDS)
    with _stale_links(id):
        service.reopen(api_user(), req, reason, seen=_seen(data))
    return request_json(req)


@bp.post("/review/requests/<int:id>/withdraw")
def request_withdraw(id: int) -> Any:
    req = _request(id)
    data = request.get_json(silent=True) or {}
    data = json_body() if isinstance(data, dict) and data else {}  # checks it (e.g. NUL)
    reason = _reason(data, required=False)
    service.withdraw(api_user(), req, reason)
    return request_json(req)


@bp.post("/review/requests/<int:id>/release")
def request_release(id: int) -> Any:
    req = _request(id)
    data = json_body()
    _only(data, PIN_FIELDS)
    with _stale_links(id):
        service.release(api_user(), req, seen=_seen(data))
    return request_json(req)


# ---------------------------------------------------------------- affiliations


def affiliation_json(a: OrgAffiliation) -> dict[str, Any]:
    return {"id": a.id, "orgs": [a.org_a.slug, a.org_b.slug], "note": a.note,
            "created_at": _when(a.created_at)}


@bp.get("/review/affiliations")
@require_role(Role.ADMIN)
def affiliations_list() -> Any:
    return {"items": [affiliation_json(a) for a in flags.list_affiliations()]}


@bp.post("/review/affiliations")
@require_role(Role.ADMIN)
def affiliations_add() -> Any:
    data = json_body()
    _only(data, {"orgs", "note"})
    orgs = field(data, "orgs", list)
    if len(orgs) != 2 or not all(isinstance(o, str) for o in orgs):
        raise ServiceError("'orgs' names two organization slugs.", code="bad_field",
                           field="orgs")
    row = flags.add_affiliation(api_user(), orgs[0], orgs[1],
                                field(data, "note", required=False, default=""))
    return affiliation_json(row), 201


@bp.delete("/review/affiliations/<int:id>")
@require_role(Role.ADMIN)
def affiliations_remove(id: int) -> Any:
    flags.remove_affiliation(api_user(), id)
    return "", 204


# ---------------------------------------------------------------- public, no token


def public_json(rec: public_service.PublicRecord) -> dict[str, Any]:
    return public_service.record_json(
        rec, page_url=external_url("public.show", item_id=rec.id),
        file_url=lambda f: external_url("public.download", item_id=rec.id,
                                        file_id=f.id))


@bp.get("/public/findings")
@public
def public_findings() -> Any:
    page = public_service.public_page(request.args)
    return page_json(page, lambda r: public_json(public_service.public_record(r)))


@bp.get("/public/findings/<int:id>")
@public
def public_finding(id: int) -> Any:
    return public_json(public_service.public_record(public_service.get_public(id)))

