"""Offset pagination for lists whose ordering column is indexed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select

from app.db import db
from app.errors import ServiceError

MAX_PER_PAGE = 100
MAX_PAGE = 1_000_000  # far past any real list; larger offsets overflow the database's integers


@dataclass
class Page:
    items: list[Any]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def page_args(args: Mapping[str, str], default_per_page: int = 25) -> tuple[int, int]:
    try:
        page = int(args.get("page", 1))
        per_page = int(args.get("per_page", default_per_page))
    except (TypeError, ValueError):
        raise ServiceError("page and per_page must be whole numbers.",
                           code="bad_pagination") from None
    if page < 1 or per_page < 1:
        raise ServiceError("page and per_page start at 1.", code="bad_pagination")
    if page > MAX_PAGE:
        raise ServiceError(f"page is at most {MAX_PAGE:,}.", code="bad_pagination")
    return page, min(per_page, MAX_PER_PAGE)


def paginate(query: Select[Any], args: Mapping[str, str], default_per_page: int = 25) -> Page:
    page, per_page = page_args(args, default_per_page)
    total = db.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    items = list(db.scalars(query.limit(per_page).offset((page - 1) * per_page)))
    return Page(items, page, per_page, total)
