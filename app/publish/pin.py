"""The SHA-256 pin of a request: a hash over a canonical serialization of exactly what the
reviewers judge.

Canonical form: UTF-8 JSON with sorted keys, no insignificant whitespace, non-ASCII kept
as is (``ensure_ascii=False``). Text is pinned as stored (the service normalises newlines
and strips NULs before pinning). Attachments are listed in order of their id with
filename, size and the SHA-256 of their plaintext, so approving a request approves those
exact bytes. The embargo (UTC, second precision) and, for a declassification, the from and
target levels are part of it too: changing any of them needs a fresh review.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

PIN_FORMAT = "enclave-review-request/1"


@dataclass(frozen=True)
class PinnedFile:
    attachment_id: str
    filename: str
    size: int
    sha256: str


def canonical(*, kind: str, finding_id: int, public_title: str, public_body: str,
              files: Sequence[PinnedFile], embargo_until: datetime | None,
              from_level: str, target_level: str) -> bytes:
    doc = {
        "format": PIN_FORMAT,
        "kind": kind,
        "finding": finding_id,
        "from_level": from_level,
        "target_level": target_level,
        "public_title": public_title,
        "public_body": public_body,
        "attachments": [
            {"id": f.attachment_id, "filename": f.filename, "size": f.size, "sha256": f.sha256}
            for f in sorted(files, key=lambda f: f.attachment_id)
        ],
        "embargo_until": (embargo_until.astimezone(UTC).replace(microsecond=0)
                          .strftime("%Y-%m-%dT%H:%M:%SZ") if embargo_until else None),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def pin(**fields: object) -> str:
    """Hex SHA-256 of :func:`canonical` (same keyword arguments)."""
    return hashlib.sha256(canonical(**fields)).hexdigest()  # type: ignore[arg-type]
