"""Categories, findings, replies and notifications in the API (the same services as the
web pages; every list goes through the access filter, an unreadable finding is 404)."""

from __future__ import annotations

from typing import Any

from flask import request, url_for

from app import disclosure, state
from app.api import api_user, bp, field, idempotency_key, json_body, page_json, replayed
from app.attachments import service as attachments
from app.db import db
from app.errors import Forbidden, ServiceError
from app.extensions import limiter, not_a_search, search_limit, user_or_address
from app.findings import search as search_service
from app.findings import service
from app.findings.models import Category, Finding, Reply
from app.notifications import service as notify
from app.reactions import service as reactions
from app.submissions.service import AlreadySubmitted

FINDING_FIELDS = {"title", "body", "level", "orgs", "category", "locked"}


def category_json(category: Category) -> dict[str, Any]:
    return {"slug": category.slug, "name": category.name, "description": category.description}


def finding_json(finding: Finding) -> dict[str, Any]:
    return {
        "id": finding.id,
        "title": finding.title,
        "level": finding.level,
        "level_label": state.policy().level(finding.level).label,
        "category": category_json(finding.category) if finding.category else None,
        "compartment": sorted(o.slug for o in finding.compartment_orgs)
        if finding.compartmented else [],
        "author": {"username": finding.author.username,
                   "display_name": finding.author.display_name},
        "organization": finding.org.slug,
        "locked": finding.locked,
        "reply_count": finding.reply_count,
        "created_at": finding.created_at.isoformat(),
        "updated_at": finding.updated_at.isoformat(),
    }


def reply_json(reply: service.ReplyView, moderator: bool,
               responses: reactions.Responses | None = None) -> dict[str, Any]:
    shown = not reply.hidden or moderator
    return {
        "id": reply.id,
        "author": {"username": reply.author_username, "display_name": reply.author_name},
        "created_at": reply.created_at.isoformat(),
        "hidden": reply.hidden,
        "hidden_reason": reply.hidden_reason if reply.hidden else None,
        "body": reply.body if shown else None,
        "body_html": reply.html if shown else None,
        "responses": (responses or reactions.empty()).as_json(),
    }


def _full(finding: Finding) -> dict[str, Any]:
    user = api_user()
    moderator = service.is_moderator(user)
    page = service.replies_page(user, finding, 1)
    replies = list(page.items)
    pages = page.pages
    for n in range(2, pages + 1):
        replies.extend(service.replies_page(user, finding, n).items)
    responses = reactions.responses(user, finding, [r.id for r in replies if not r.hidden])
    return {**finding_json(finding), "body": finding.body,
            "body_html": service.body_html(finding),
            "revisions": service.revision_count(finding),
            "version": finding.version,
            "responses": responses.finding.as_json(),
            "replies": [reply_json(r, moderator, responses.reply(r.id)) for r in replies],
            "attachments": [
                attachments.summary(a, url_for("api.download_attachment", attachment_id=a.id))
                for a in attachments.list_for_finding(user, finding)
            ]}


def _filters() -> tuple[Category | None, str | None]:
    slug = request.args.get("category") or None
    category = None
    if slug is not None:
        category = next((c for c in service.list_categories() if c.slug == slug), None)
        if category is None:
            raise ServiceError(f"There is no category {slug!r}.", code="unknown_category",
                               field="category")
    return category, request.args.get("level") or None


def _orgs(data: dict[str, Any]) -> list[str] | None:
    orgs = field(data, "orgs", list, required=False)
    if orgs is not None and not all(isinstance(o, str) for o in orgs):
        raise ServiceError("'orgs' must be a list of organization slugs.", code="bad_field",
                           field="orgs")
    return orgs


@bp.get("/categories")
def categories() -> Any:
    return {"items": [category_json(c) for c in service.list_categories()]}


@bp.get("/findings")
# one search budget per user, shared with the search page; the API limit still applies
@limiter.shared_limit(search_limit, scope="search", key_func=user_or_address,
                      exempt_when=not_a_search, override_defaults=False)
def finding_list() -> Any:
    user = api_user()
    category, level = _filters()
    q = request.args.get("q")
    if q is not None and q.strip():
        results = search_service.search(user, q, request.args, category=category, level=level)
        return {**page_json(results, lambda r: {  # type: ignore[arg-type]
            **finding_json(r.finding), "score": r.score, "snippet_html": str(r.snippet_html),
            "snippet_source": r.source, "reply_id": r.reply_id}),
            "total_capped": results.capped}
    page = service.page_findings(user, request.args, category=category, level=level)
    unread = service.unread_ids(user, page.items)
    return page_json(page, lambda f: {**finding_json(f), "unread": f.id in unread})


@bp.post("/findings")
def finding_create() -> Any:
    data = json_body()
    unknown = set(data) - {"category", "title", "body", "level", "orgs"}
    if unknown:
        raise ServiceError(f"Unknown field(s): {', '.join(sorted(unknown))}.",
                           code="unknown_field")
    user = api_user()
    try:
        finding = service.create_finding(
            user, title=field(data, "title", required=False, default=""),
            body=field(data, "body", required=False, default=""),
            category=field(data, "category", required=False, default=""),
            level=field(data, "level", required=False, default=""), orgs=_orgs(data),
            submission=idempotency_key())
    except AlreadySubmitted as exc:
        db.rollback()
        if exc.target_type != "finding":
            raise
        return replayed(_full(service.get_finding(user, exc.target_id or 0)))
    return _full(finding), 201, {"ETag": service.etag(finding)}


@bp.get("/findings/<int:id>")
def finding_get(id: int) -> Any:
    user = api_user()
    finding = service.get_finding(user, id)
    service.record_view(user, finding)
    return _full(finding), 200, {"ETag": service.etag(finding)}


def _if_match(finding: Finding) -> int | None:
    """The base version named by ``If-Match`` (the ETag a GET returned): None without the
    header or with ``*``; -1 (matches nothing: 409) for a tag that is not one of ours."""
    header = request.headers.get("If-Match")
    if header is None or not header.strip():
        return None
    if request.if_match.star_tag:
        return None
    for tag in request.if_match.as_set(include_weak=True):
        if tag.startswith("v") and tag[1:].isascii() and tag[1:].isdigit() \
                and len(tag) < 12:
            return int(tag[1:])
    return -1


@bp.patch("/findings/<int:id>")
def finding_patch(id: int) -> Any:
    user = api_user()
    finding = service.get_finding(user, id)
    data = json_body()
    unknown = set(data) - FINDING_FIELDS
    if unknown:
        raise ServiceError(f"Unknown field(s): {', '.join(sorted(unknown))}.",
                           code="unknown_field")
    title = field(data, "title", required=False)
    body = field(data, "body", required=False)
    level = field(data, "level", required=False)
    orgs = _orgs(data)
    category = field(data, "category", required=False)
    locked = data.get("locked")
    if locked is not None and not isinstance(locked, bool):
        raise ServiceError("'locked' must be true or false.", code="bad_field", field="locked")
    if (category is not None or locked is not None) and not service.is_moderator(user):
        raise Forbidden("Only administrators move or lock findings.")
    if category is not None:
        service.category_for(category)  # validate before anything is written
    base = _if_match(finding)
    if base is not None and base != finding.version:  # refused before anything is written
        raise service.EditConflict(base, finding.version)
    if locked is False:
        service.set_locked(user, finding, False)
    if any(v is not None for v in (title, body, level, orgs)):
        service.edit_finding(user, finding, title=title, body=body, level=level, orgs=orgs,
                             base_version=base)
    if category is not None:
        service.move_finding(user, finding, category)
    if locked is True:
        service.set_locked(user, finding, True)
    return _full(finding), 200, {"ETag": service.etag(finding)}


@bp.post("/findings/<int:id>/replies")
def reply_create(id: int) -> Any:
    user = api_user()
    finding = service.get_finding(user, id)
    data = json_body()
    moderator = service.is_moderator(user)
    try:
        reply = service.add_reply(user, finding, field(data, "body", required=False,
                                                       default=""),
                                  submission=idempotency_key())
    except AlreadySubmitted as exc:
        db.rollback()
        first = db.get(Reply, exc.target_id or 0) if exc.target_type == "reply" else None
        if first is None or first.finding_id != id:
            raise
        return replayed(reply_json(service.reply_view(first), moderator))
    return reply_json(service.reply_view(reply), moderator), 201


@bp.get("/notifications")
def notification_list() -> Any:
    user = api_user()
    page = notify.list_for(user, request.args)
    rule = disclosure.For(user)  # whose names this reader may learn, now

    def item(row: Any) -> dict[str, Any]:
        note, finding = row
        actor, label = notify.actor_of(rule, note, finding)
        return {"id": note.id, "kind": note.kind, "created_at": note.created_at.isoformat(),
                "read": note.read_at is not None, "finding": finding_json(finding),
                "reply_id": note.reply_id, "actor": actor, "actor_label": label or None,
                "text": notify.describe(note, finding, rule)}

    body = page_json(page, item)
    body["unread"] = notify.unread_count(user)
    return body


# ---------------------------------------------------------------- responses


def _response_args() -> tuple[str, bool]:
    data = json_body()
    unknown = set(data) - {"kind", "on"}
    if unknown:
        raise ServiceError(f"Unknown field(s): {', '.join(sorted(unknown))}.",
                           code="unknown_field")
    on = data.get("on", True)
    if not isinstance(on, bool):
        raise ServiceError("'on' must be true or false.", code="bad_field", field="on")
    return field(data, "kind"), on


@bp.post("/findings/<int:id>/responses")
def finding_respond(id: int) -> Any:
    user = api_user()
    finding = service.get_finding(user, id)  # the gate, before the body
    kind, on = _response_args()
    now = reactions.toggle_finding(user, finding, kind, on)
    return {"kind": kind, "on": now,
            "responses": reactions.responses(user, finding).finding.as_json()}


@bp.post("/replies/<int:reply_id>/responses")
def reply_respond(reply_id: int) -> Any:
    user = api_user()
    reply = service.get_reply(user, reply_id)  # the gate, before the body
    finding = service.get_finding(user, reply.finding_id)
    kind, on = _response_args()
    now = reactions.toggle_reply(user, reply, finding, kind, on)
    return {"kind": kind, "on": now,
            "responses": reactions.responses(user, finding, [reply.id]).reply(reply.id)
            .as_json()}
