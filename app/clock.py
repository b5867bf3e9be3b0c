"""The time the app runs on: the wall clock, unless a test has set it.

Every rule that depends on time (grants that end on a date, NDA renewal, organizations'
re-vetting, stamped copies' times) reads ``now()``, and ``app.db.utcnow`` (the default of
every timestamp column) is ``now()`` too, so a test moves one clock and the whole app,
signatures and deadlines alike, sees the same time. No sleeps.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

_lock = threading.Lock()
_fixed: datetime | None = None


def now() -> datetime:
    """Timezone-aware UTC now (or the time a test set)."""
    fixed = _fixed
    return fixed if fixed is not None else datetime.now(UTC)


def set_time(when: datetime | None) -> None:
    """Fix the clock at ``when`` (aware); None returns to the wall clock. Tests only."""
    global _fixed
    if when is not None and when.tzinfo is None:
        raise ValueError("the clock takes aware datetimes")
    with _lock:
        _fixed = when.astimezone(UTC) if when is not None else None


def advance(delta: timedelta) -> datetime:
    """Move a fixed clock (fixing it at the wall time first). Tests only."""
    global _fixed
    with _lock:
        _fixed = (_fixed or datetime.now(UTC)) + delta
        return _fixed
