"""How many uploads one user may stream at once (``ENCLAVE_UPLOADS_PER_USER``).

Upload routes are the only ones the nginx front passes through unbuffered (the file
streams into the encryptor), so a slow upload holds an application thread for as long
as the client takes. Every other route gets its body buffered by nginx first. This cap
keeps one account from holding every thread with slow uploads.

The count is shared by every worker and app server through Redis (a sorted set of
slots per user, each slot expiring after ``SLOT_SECONDS`` in case a worker dies mid
upload); without Redis (development, or Redis down) it is counted per process.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from flask import current_app

from app import state
from app.errors import ServiceError

log = logging.getLogger("enclave.attachments")

#: a slot a dead worker never released stops counting after this long
SLOT_SECONDS = 3600
_local: dict[int, int] = {}
_local_lock = threading.Lock()


class TooManyUploads(ServiceError):
    status = 429
    code = "too_many_uploads"


def _refusal(limit: int) -> TooManyUploads:
    return TooManyUploads(f"You are already uploading {limit} file"
                          f"{'' if limit == 1 else 's'}; wait for one to finish.")


@contextmanager
def upload_slot(user_id: int) -> Iterator[None]:
    """Hold one of the user's upload slots while the body streams in, or refuse (429)."""
    limit = state.settings().uploads_per_user
    client = current_app.extensions.get("enclave.redis")
    if client is not None:
        key, token = f"enclave:uploads:{user_id}", secrets.token_hex(8)
        try:
            now = time.time()
            pipe = client.pipeline(transaction=True)
            pipe.zremrangebyscore(key, "-inf", now - SLOT_SECONDS)
            pipe.zadd(key, {token: now})
            pipe.zcard(key)
            pipe.expire(key, SLOT_SECONDS)
            held = int(pipe.execute()[2])
        except Exception as exc:  # noqa: BLE001 - Redis down: count in this process
            log.warning("upload slots: Redis unavailable, counting per process: %s",
                        type(exc).__name__)
        else:
            try:
                if held > limit:
                    raise _refusal(limit)
                yield
            finally:
                try:
                    client.zrem(key, token)
                except Exception:  # noqa: BLE001 - it expires on its own
                    log.warning("upload slots: could not release a slot (expires in %d s)",
                                SLOT_SECONDS)
            return
    with _local_lock:
        if _local.get(user_id, 0) >= limit:
            raise _refusal(limit)
        _local[user_id] = _local.get(user_id, 0) + 1
    try:
        yield
    finally:
        with _local_lock:
            _local[user_id] -= 1
            if not _local[user_id]:
                del _local[user_id]
