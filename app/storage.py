"""Blob storage for encrypted attachments.

Blobs are opaque (already encrypted) and immutable: written once through a
writer that publishes them atomically on ``commit()``, read, and deleted.
``FileSystemBlobStore`` lays them out as ``root/ab/cd/<blob_id>`` with
in-progress uploads in ``root/tmp/``.

Garbage collection is mark-and-sweep against the caller's notion of which blob
ids are referenced (the database). Both unreferenced blobs and temp files are
only swept once older than ``min_age_seconds``: a blob is committed before the
row that references it exists, so a young unreferenced blob may be an upload
that is about to be recorded.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, Self

__all__ = [
    "BLOB_ID_RE",
    "BlobNotFoundError",
    "BlobStore",
    "BlobWriter",
    "FileSystemBlobStore",
    "GcReport",
    "new_blob_id",
    "read_chunks",
    "validate_blob_id",
]

BLOB_ID_RE = re.compile(r"[a-f0-9]{32,64}")
_SHARD_RE = re.compile(r"[a-f0-9]{2}")
_TMP_DIR = "tmp"
_READ_SIZE = 256 * 1024


class BlobNotFoundError(FileNotFoundError):
    """No committed blob with that id."""


def new_blob_id() -> str:
    """A fresh random blob id (128 bits, 32 lowercase hex characters)."""
    return secrets.token_hex(16)


def validate_blob_id(blob_id: object) -> str:
    """Return ``blob_id`` if it is 32-64 lowercase hex characters, else ``ValueError``.

    This is what keeps ids from ever naming a path outside the store.
    """
    # fullmatch, not ^...$: "$" also matches before a trailing newline.
    if not isinstance(blob_id, str) or not BLOB_ID_RE.fullmatch(blob_id):
        raise ValueError(f"invalid blob id {blob_id!r}")
    return blob_id


def read_chunks(f: BinaryIO, chunk_size: int = _READ_SIZE) -> Iterator[bytes]:
    """Iterate over a binary file in ``chunk_size`` pieces (e.g. into ``decrypt_stream``)."""
    while chunk := f.read(chunk_size):
        yield chunk


@dataclass
class GcReport:
    deleted_blobs: list[str] = field(default_factory=list)
    deleted_temp: list[str] = field(default_factory=list)
    kept_referenced: int = 0
    skipped_recent: int = 0
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False


class BlobWriter(Protocol):
    """Write a new blob; invisible until ``commit()``. Leaving the ``with`` block
    without committing discards it."""

    @property
    def blob_id(self) -> str: ...

    @property
    def bytes_written(self) -> int: ...

    def write(self, data: bytes) -> int: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BlobStore(Protocol):
    def open_writer(self, blob_id: str) -> BlobWriter: ...

    def open_reader(self, blob_id: str) -> BinaryIO: ...

    def exists(self, blob_id: str) -> bool: ...

    def delete(self, blob_id: str) -> None: ...

    def size(self, blob_id: str) -> int: ...

    def iter_blob_ids(self) -> Iterator[str]: ...

    def iter_stale_temp(self, older_than_seconds: float) -> Iterator[Path]: ...

    def gc(
        self,
        referenced: Callable[[str], bool] | Container[str],
        *,
        min_age_seconds: float,
        dry_run: bool = False,
    ) -> GcReport: ...


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durable(directory: Path, stop: Path) -> None:
    """mkdir -p below ``stop``, fsyncing each parent whose entries changed."""
    missing: list[Path] = []
    current = directory
    while current != stop and not current.is_dir():
        missing.append(current)
        current = current.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue  # a concurrent writer made it
        _fsync_dir(d.parent)


class FileSystemBlobWriter:
    def __init__(self, store: FileSystemBlobStore, blob_id: str) -> None:
        self._store = store
        self._blob_id = blob_id
        fd, name = tempfile.mkstemp(prefix=f"{blob_id}.", suffix=".part", dir=store.tmp_dir)
        self._tmp_path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._written = 0
        self._state = "open"  # open -> committed | aborted

    def __repr__(self) -> str:
        return f"<FileSystemBlobWriter {self._blob_id} {self._state} {self._written}B>"

    @property
    def blob_id(self) -> str:
        return self._blob_id

    @property
    def bytes_written(self) -> int:
        return self._written

    @property
    def temp_path(self) -> Path:
        return self._tmp_path

    def write(self, data: bytes) -> int:
        if self._state != "open":
            raise ValueError(f"writer is {self._state}")
        n = self._file.write(data)
        self._written += n
        return n

    def commit(self) -> None:
        """Make the blob visible: flush, fsync, rename into place, fsync the directory.

        Refuses to replace an existing blob (``FileExistsError``): blobs are
        immutable, and a clash means a reused id.
        """
        if self._state != "open":
            raise ValueError(f"writer is {self._state}")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            final = self._store._path(self._blob_id)
            _makedirs_durable(final.parent, self._store.root)
            if final.exists():
                raise FileExistsError(f"blob {self._blob_id} already exists")
            os.replace(self._tmp_path, final)
            _fsync_dir(final.parent)
        except BaseException:
            self.abort()
            raise
        self._state = "committed"

    def abort(self) -> None:
        """Discard the upload (no-op once committed or aborted)."""
        if self._state != "open":
            return
        self._state = "aborted"
        with contextlib.suppress(OSError):
            self._file.close()
        self._tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


class FileSystemBlobStore:
    """Blobs under ``root/ab/cd/<blob_id>``; uploads staged in ``root/tmp``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.tmp_dir = self.root / _TMP_DIR
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tmp_dir.mkdir(exist_ok=True, mode=0o700)

    def __repr__(self) -> str:
        return f"<FileSystemBlobStore {self.root}>"

    def _path(self, blob_id: str) -> Path:
        blob_id = validate_blob_id(blob_id)
        return self.root / blob_id[:2] / blob_id[2:4] / blob_id

    def open_writer(self, blob_id: str) -> FileSystemBlobWriter:
        validate_blob_id(blob_id)
        return FileSystemBlobWriter(self, blob_id)

    def open_reader(self, blob_id: str) -> BinaryIO:
        path = self._path(blob_id)
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise BlobNotFoundError(f"no blob {blob_id}") from None

    def exists(self, blob_id: str) -> bool:
        return self._path(blob_id).is_file()

    def delete(self, blob_id: str) -> None:
        """Remove a blob; deleting a missing blob is not an error."""
        path = self._path(blob_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)

    def size(self, blob_id: str) -> int:
        try:
            return self._path(blob_id).stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(f"no blob {blob_id}") from None

    def _scan(self) -> Iterator[tuple[str, os.DirEntry[str]]]:
        for top in _scandir_sorted(self.root):
            if not (_SHARD_RE.fullmatch(top.name) and top.is_dir(follow_symlinks=False)):
                continue
            for sub in _scandir_sorted(top.path):
                if not (_SHARD_RE.fullmatch(sub.name) and sub.is_dir(follow_symlinks=False)):
                    continue
                for entry in _scandir_sorted(sub.path):
                    name = entry.name
                    if (
                        BLOB_ID_RE.fullmatch(name)
                        and name[:2] == top.name
                        and name[2:4] == sub.name
                        and entry.is_file(follow_symlinks=False)
                    ):
                        yield name, entry

    def iter_blob_ids(self) -> Iterator[str]:
        """Ids of committed blobs, in sorted order."""
        for blob_id, _ in self._scan():
            yield blob_id

    def iter_stale_temp(self, older_than_seconds: float) -> Iterator[Path]:
        """Temp files not modified for ``older_than_seconds`` (abandoned uploads)."""
        cutoff = time.time() - older_than_seconds
        for entry in _scandir_sorted(self.tmp_dir):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if st.st_mtime < cutoff:
                yield Path(entry.path)

    def gc(
        self,
        referenced: Callable[[str], bool] | Container[str],
        *,
        min_age_seconds: float,
        dry_run: bool = False,
    ) -> GcReport:
        """Delete unreferenced blobs and temp files older than ``min_age_seconds``.

        ``referenced`` is a set of blob ids or a predicate. Pick ``min_age_seconds``
        above the longest upload plus the time between commit and the database
        insert; anything younger is left alone.
        """
        is_referenced: Callable[[str], bool] = (
            referenced if callable(referenced) else referenced.__contains__
        )
        report = GcReport(dry_run=dry_run)
        for path in self.iter_stale_temp(min_age_seconds):
            try:
                if not dry_run:
                    path.unlink(missing_ok=True)
                report.deleted_temp.append(path.name)
            except OSError as exc:
                report.errors.append(f"temp {path.name}: {exc.strerror}")

        cutoff = time.time() - min_age_seconds
        for blob_id, entry in self._scan():
            if is_referenced(blob_id):
                report.kept_referenced += 1
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    report.skipped_recent += 1
                    continue
                if not dry_run:
                    self.delete(blob_id)
                report.deleted_blobs.append(blob_id)
            except FileNotFoundError:
                continue
            except OSError as exc:
                report.errors.append(f"blob {blob_id}: {exc.strerror}")
        return report


def _scandir_sorted(path: str | Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        return []
