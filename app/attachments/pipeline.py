"""Threads for large transfers: the upload pipeline (read, hash, encrypt and write in
three threads, with a reader that takes the request body straight into reusable
buffers) and the download's decrypt-ahead helper (:class:`DecryptAhead`).

Per GiB on the development VM, one thread doing everything spends ~0.6 s in SHA-256,
~0.4 s receiving from the socket, ~0.3 s in gunicorn's body buffering (two copies and
a fresh 1 MiB bytes object per read), ~0.15 s in AES-GCM and ~0.2 s copying into the
page cache. Measured (thread CPU time and a ticker thread): ``hashlib`` releases the
GIL on large buffers, socket and file I/O release it, and so does Cobblestone's
``update_into`` (its ``update`` blocks other threads while it builds its output). So:

* the request thread only reads the body (``recv_into`` a reused buffer; see
  :func:`body_reader`), with the GIL free while it waits for or copies bytes;
* a hasher thread runs SHA-256 on the buffer just read (GIL free);
* a sealer thread encrypts the buffer hashed before that into one reused output buffer
  (``update_into``) and writes it; every stage runs with the GIL released for the
  heavy part, so the three overlap on as many cores as there are.

Buffers travel reader -> hasher -> sealer -> back to the reader: at most ``depth``
plaintext buffers and one ciphertext buffer exist, so memory stays bounded whatever
the size. Any error in a helper stops the work (later buffers are passed along
untouched) and is raised in the request thread at its next step; an error in the
request thread (client gone, limit reached) cancels the helpers before it propagates.
Only :meth:`SealPipeline.finish` returning means every byte was hashed, encrypted
and written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, BinaryIO, Self

from app.crypto.stream import StreamEncryptor, max_update_output

DEPTH = 4
BUFFER_SIZE = 1024 * 1024
_STOP = None


class UploadTooLarge(Exception):
    """The body went past the byte budget given to :meth:`SealPipeline.run`."""


class BodyReadError(Exception):
    """Reading the request body failed (client gone, truncated body, server error);
    the cause is chained."""


class SealPipeline:
    """Hash + encrypt + write an upload from ``readinto`` in bounded memory.

    ``write`` is called from the sealer thread with a memoryview it must consume before
    returning (the buffer is reused). Use as a context manager; leaving it without
    :meth:`finish` cancels the helpers and discards what is queued.
    """

    def __init__(self, enc: StreamEncryptor, write: Callable[[memoryview], Any], *,
                 depth: int = DEPTH, buffer_size: int = BUFFER_SIZE) -> None:
        self._enc = enc
        self._write = write
        self._sha = hashlib.sha256()
        self._size = 0
        self._buffer_size = buffer_size
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(depth):
            self._free.put(bytearray(buffer_size))
        self._to_hash: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._to_seal: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._out = bytearray(max_update_output(buffer_size))
        self._error: BaseException | None = None
        self._cancel = threading.Event()
        self._digest: str | None = None
        self._threads = [
            threading.Thread(target=self._hasher, name="attachment-hash", daemon=True),
            threading.Thread(target=self._sealer, name="attachment-seal", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._open = True

    # -- helper threads ------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._cancel.set()

    def _hasher(self) -> None:
        while (item := self._to_hash.get()) is not _STOP:
            buf, n = item
            if not self._cancel.is_set():
                try:
                    with memoryview(buf) as view:
                        self._sha.update(view[:n])
                except BaseException as exc:
                    self._failed(exc)
            self._to_seal.put(item)
        self._to_seal.put(_STOP)

    def _sealer(self) -> None:
        out = memoryview(self._out)
        try:
            while (item := self._to_seal.get()) is not _STOP:
                buf, n = item
                if not self._cancel.is_set():
                    try:
                        with memoryview(buf) as view:
                            k = self._enc.update_into(view[:n], out)
                        if k:
                            self._write(out[:k])
                    except BaseException as exc:
                        self._failed(exc)
                self._free.put(buf)
        finally:
            out.release()

    # -- request thread ------------------------------------------------------------

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    @property
    def plaintext_size(self) -> int:
        return self._size

    @property
    def sha256_hex(self) -> str:
        if self._digest is None:
            raise RuntimeError("sha256_hex is only known after finish()")
        return self._digest

    def run(self, readinto: Callable[[memoryview], int], budget: int) -> int:
        """Read everything ``readinto`` gives; raise :class:`UploadTooLarge` as soon as
        more than ``budget`` bytes arrived (at most one buffer past it is read, never
        encrypted or stored). Returns the plaintext size."""
        while True:
            self._check()
            buf = self._free.get()
            filled = 0
            with memoryview(buf) as view:
                while filled < len(buf):
                    try:
                        got = readinto(view[filled:])
                    except Exception as exc:
                        self._free.put(buf)
                        raise BodyReadError(str(exc) or type(exc).__name__) from exc
                    if not got:
                        break
                    filled += got
            if filled and self._size + filled > budget:
                self._free.put(buf)
                raise UploadTooLarge()
            if filled:
                self._size += filled
                self._to_hash.put((buf, filled))
            else:
                self._free.put(buf)
            if filled < len(buf):
                return self._size

    def finish(self) -> bytes:
        """Wait until every buffer is hashed, encrypted and written; raise the first
        helper error. Returns Cobblestone's final piece, which the caller writes."""
        self._stop_helpers()
        self._check()
        self._digest = self._sha.hexdigest()
        return self._enc.finalize()

    def _stop_helpers(self) -> None:
        if self._open:
            self._open = False
            self._to_hash.put(_STOP)
            for thread in self._threads:
                thread.join()

    def cancel(self) -> None:
        self._cancel.set()
        self._stop_helpers()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cancel()


# ------------------------------------------------------------------ downloads


_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class DecryptAhead:
    """Read and decrypt a blob in a helper thread while the request thread sends.

    Reading the file and sending release the GIL; with the read and the decryption
    in a helper, the request thread only sends. At most
    ``depth`` plaintext pieces wait in the queue (bounded memory); the helper's errors
    (``IntegrityError`` above all) are raised by the iterator in order, after the pieces
    that authenticated before them. :meth:`close` stops the helper (client gone).
    """

    def __init__(self, reader: BinaryIO, update: Callable[[memoryview], bytes],
                 finalize: Callable[[], bytes], *, read_size: int = BUFFER_SIZE,
                 depth: int = DEPTH) -> None:
        self._reader = reader
        self._update = update
        self._finalize = finalize
        self._read_size = read_size
        self._q: queue.Queue[Any] = queue.Queue(depth)
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="attachment-decrypt",
                                        daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._cancel.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        buf = bytearray(self._read_size)
        try:
            with memoryview(buf) as view:
                while not self._cancel.is_set():
                    n = self._reader.readinto(buf)
                    if not n:
                        tail = self._finalize()
                        if not tail or self._put(tail):
                            self._put(_END)
                        return
                    out = self._update(view[:n])
                    if out and not self._put(out):
                        return
        except BaseException as exc:
            self._put(_Failed(exc))

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> bytes:
        item = self._q.get()
        if item is _END:
            self._q.put(_END)  # stay exhausted
            raise StopIteration
        if isinstance(item, _Failed):
            self._q.put(item)
            raise item.exc
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        self._cancel.set()
        self._thread.join()


# ------------------------------------------------------------------ the request body


def body_reader(stream: BinaryIO | Any) -> Callable[[memoryview], int]:
    """A ``readinto`` over the request body.

    Under gunicorn with a Content-Length body, the bytes gunicorn has already buffered
    are taken through its own ``read`` and then the socket is read directly with
    ``recv_into`` into the caller's buffer, keeping gunicorn's count of what is left of
    the body exact (so keep-alive and its end-of-request draining still work). That
    skips gunicorn's two copies and a fresh ``bytes`` per read. Other bodies use the
    stream's ``readinto`` (Werkzeug's streams, ``BytesIO``) or ``read``.
    """
    fast = _gunicorn_length_body(stream)
    if fast is not None:
        return fast
    readinto = getattr(stream, "readinto", None)
    if callable(readinto) and not _read_is_more_specific(type(stream)):
        return _readinto_fn(readinto)

    def read_copy(view: memoryview) -> int:
        data = stream.read(len(view))
        view[: len(data)] = data
        return len(data)

    return read_copy


def _read_is_more_specific(cls: type) -> bool:
    """True when a class (or a subclass) defines ``read`` below its ``readinto``: then
    ``readinto`` may not be implemented at all (``io.RawIOBase``) or may skip what the
    subclass does in ``read``, so ``read`` is what the stream means."""
    for klass in cls.__mro__:
        if "readinto" in vars(klass):
            return False
        if "read" in vars(klass):
            return True
    return True


def _readinto_fn(readinto: Callable[[memoryview], int | None]) -> Callable[[memoryview], int]:
    def read(view: memoryview) -> int:
        return readinto(view) or 0

    return read


def _gunicorn_length_body(stream: Any) -> Callable[[memoryview], int] | None:
    """The direct socket reader for a gunicorn ``Body`` over a ``LengthReader`` over a
    ``SocketUnreader``; None for anything else (chunked bodies, other servers)."""
    try:
        from gunicorn.http.body import Body, LengthReader
        from gunicorn.http.unreader import SocketUnreader
    except ImportError:  # pragma: no cover - gunicorn is a dependency
        return None
    if type(stream) is not Body:
        return None
    reader = getattr(stream, "reader", None)
    unreader = getattr(reader, "unreader", None)
    if type(reader) is not LengthReader or type(unreader) is not SocketUnreader:
        return None
    sock = getattr(unreader, "sock", None)
    if not callable(getattr(sock, "recv_into", None)) or not isinstance(reader.length, int):
        return None
    body_buf = getattr(stream, "buf", None)
    unreader_buf = getattr(unreader, "buf", None)
    if not all(hasattr(b, "seek") and hasattr(b, "tell") for b in (body_buf, unreader_buf)):
        return None

    def buffered() -> int:
        """Body bytes gunicorn holds already (its Body buffer and the read-ahead)."""
        stream.buf.seek(0, os.SEEK_END)
        unreader.buf.seek(0, os.SEEK_END)
        return stream.buf.tell() + min(unreader.buf.tell(), reader.length)

    def read(view: memoryview) -> int:
        if not len(view):
            return 0
        held = buffered()
        if held:
            data = stream.read(min(len(view), held))
            view[: len(data)] = data
            return len(data)
        want = min(len(view), reader.length)
        if want <= 0:
            return 0
        try:
            got = sock.recv_into(view[:want])
            if not got:
                raise ConnectionResetError("the client closed the connection before the "
                                           "body was complete")
        except BaseException:
            with contextlib.suppress(AttributeError):
                stream.failed = True  # gunicorn then closes the connection
            raise
        reader.length -= got
        return int(got)

    return read


# ------------------------------------------------------------------ disk writeback


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
