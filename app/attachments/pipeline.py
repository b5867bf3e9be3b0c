"""Overlap disk writes with encryption during uploads.

Python runs the Cobblestone cipher with the GIL held, while file writes release it.
Writing from the request thread adds disk time to cipher time; handing the writes to a
helper thread lets them overlap, and starting writeback as the file grows means the
fsync at commit has little left to do. Memory stays bounded: at most ``depth`` pieces
(about 1 MiB each) wait in the queue. (A second helper reading the request body, or one
reading the blob for downloads, measured no faster: more GIL hand-offs than overlap.)
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

DEPTH = 4


class WriteBehind:
    """Call ``write`` from a helper thread; ``write()`` here only queues (bounded).

    ``finish()`` waits until everything queued is written and re-raises a write error;
    leaving the ``with`` block without ``finish()`` discards what is still queued and
    stops the helper, so the caller can then abort the underlying writer safely.
    """

    def __init__(self, write: Callable[[bytes], Any], depth: int = DEPTH) -> None:
        self._write = write
        self._q: queue.Queue[bytes | None] = queue.Queue(depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="attachment-write-behind",
                                        daemon=True)
        self._thread.start()
        self._open = True

    def _run(self) -> None:
        while True:
            data = self._q.get()
            if data is None:
                return
            if self._error is not None or self._stop.is_set():
                continue  # drain without writing, so the producer never blocks forever
            try:
                self._write(data)
            except BaseException as exc:
                self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, data: bytes) -> None:
        self._check()
        if data:
            self._q.put(data)

    def finish(self) -> None:
        """Block until every queued piece is written; raise the first write error."""
        if self._open:
            self._open = False
            self._q.put(None)
            self._thread.join()
        self._check()

    def cancel(self) -> None:
        if self._open:
            self._open = False
            self._stop.set()
            self._q.put(None)
            self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cancel()


class Writeback:
    """Ask the kernel to start writing a file to disk every ``step`` bytes while it is
    still being written, instead of all at the ``fsync`` at the end.

    Without this, an upload first streams into the page cache and then waits for the
    whole file to reach the disk at commit; with it the disk works while later pieces
    are still being encrypted, and the final fsync has little left to do. On Linux,
    ``posix_fadvise(POSIX_FADV_DONTNEED)`` starts writeback of the range without waiting
    for it (and lets the kernel drop those pages once written, so blobs do not crowd the
    page cache). A no-op where that call does not exist.
    """

    def __init__(self, path: Any, step: int = 16 * 1024 * 1024) -> None:
        self._step = step
        self._done = 0
        self._written = 0
        self._fd: int | None = None
        if path is not None and hasattr(os, "posix_fadvise"):
            try:
                self._fd = os.open(path, os.O_RDONLY)
            except OSError:
                self._fd = None

    def written(self, n: int) -> None:
        self._written += n
        if self._fd is not None and self._written - self._done >= self._step:
            with contextlib.suppress(OSError):  # only a hint
                os.posix_fadvise(self._fd, self._done, self._written - self._done,
                                 os.POSIX_FADV_DONTNEED)
            self._done = self._written

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
