"""Streaming authenticated encryption of attachment blobs.

The cipher, nonces, chunk framing, final-chunk marking and key commitment are
all cryptography's Cobblestone-256 (C2SP chunked-encryption, AES-256-GCM with
HKDF/SHA-512); nothing here touches a nonce or a tag. We only add a 5-byte
header of our own so the format can evolve::

    blob = b"ENCV" || version (1 byte) || cobblestone ciphertext

The Cobblestone *context* binds the format version and the caller's blob
context (e.g. ``f"enclave-attachment:v1:{attachment_id}"``), so a blob copied
over another attachment's file, or a header with its version byte changed,
fails authentication instead of decrypting.

Cobblestone-256 framing (measured against cryptography 50.0.2):

* 56-byte prefix: 24-byte random nonce + 32-byte key commitment. The
  commitment is checked as soon as those 56 bytes arrive, so a wrong key or
  context fails before any chunk is processed.
* plaintext is cut into 16 KiB chunks, each followed by a 16-byte GCM tag;
  the final chunk is always present and strictly shorter than 16 KiB (it may
  be empty), so a message of ``n`` bytes has ``n // 16384 + 1`` chunks.
* the decryptor releases a chunk's plaintext only after that chunk's tag
  verifies. A full-size chunk is known to be non-final and is released as
  soon as its last byte arrives; the short final chunk is only released by
  ``finalize()``, which is also what detects truncation and extension.
* every failure is ``cryptography.exceptions.InvalidTag``; afterwards the
  decryptor raises ``AlreadyFinalized``. Both become our ``IntegrityError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor
from cryptography.exceptions import AlreadyFinalized, InvalidTag

__all__ = [
    "CHUNK_SIZE",
    "FORMAT_VERSION",
    "HEADER",
    "HEADER_SIZE",
    "IO_CHUNK_SIZE",
    "KEY_SIZE",
    "MAGIC",
    "IntegrityError",
    "StreamDecryptor",
    "StreamEncryptor",
    "ciphertext_size",
    "decrypt_stream",
    "encrypt_stream",
    "new_data_key",
    "plaintext_size_from_ciphertext",
]

MAGIC = b"ENCV"
FORMAT_VERSION = 1
HEADER = MAGIC + bytes([FORMAT_VERSION])
HEADER_SIZE = len(HEADER)

KEY_SIZE = 32
#: Cobblestone's plaintext chunk size.
CHUNK_SIZE = 16 * 1024
#: Cobblestone's per-chunk overhead (AES-GCM tag).
TAG_SIZE = 16
#: Cobblestone's per-message prefix (nonce + key commitment).
COBBLESTONE_PREFIX_SIZE = 56
#: How much input is handed to Cobblestone per call; bounds per-call memory.
IO_CHUNK_SIZE = 256 * 1024

_CONTEXT_LABEL = b"enclave/blob"


class IntegrityError(Exception):
    """Ciphertext failed authentication: tampered, truncated, extended, bad header,
    wrong key or wrong context. Deliberately carries no detail on which."""


def new_data_key() -> bytes:
    """A fresh random 32-byte data key for one blob."""
    return Cobblestone256Encryptor.generate_key()


def _cobblestone_context(context: str | bytes, version: int = FORMAT_VERSION) -> bytes:
    if isinstance(context, str):
        context = context.encode("utf-8")
    elif not isinstance(context, bytes | bytearray | memoryview):
        raise TypeError("context must be str or bytes")
    context = bytes(context)
    if not context:
        raise ValueError("blob context must not be empty")
    # label NUL version NUL context: the context is the last field, so the
    # encoding is unambiguous without a length prefix.
    return _CONTEXT_LABEL + b"\x00" + bytes([version]) + b"\x00" + context


def _check_key(data_key: bytes) -> bytes:
    if not isinstance(data_key, bytes | bytearray | memoryview):
        raise TypeError("data key must be bytes")
    if len(data_key) != KEY_SIZE:
        raise ValueError(f"data key must be {KEY_SIZE} bytes")
    return bytes(data_key)


def ciphertext_size(plaintext_size: int) -> int:
    """Exact blob size (our header included) for a plaintext of this size."""
    if plaintext_size < 0:
        raise ValueError("plaintext size must be >= 0")
    chunks = plaintext_size // CHUNK_SIZE + 1
    return HEADER_SIZE + COBBLESTONE_PREFIX_SIZE + plaintext_size + chunks * TAG_SIZE


def plaintext_size_from_ciphertext(blob_size: int) -> int:
    """Inverse of :func:`ciphertext_size`; ``ValueError`` if no plaintext has that size."""
    body = blob_size - HEADER_SIZE - COBBLESTONE_PREFIX_SIZE
    if body < TAG_SIZE:
        raise ValueError(f"no valid blob is {blob_size} bytes")
    full, last = divmod(body, CHUNK_SIZE + TAG_SIZE)
    if last < TAG_SIZE:
        raise ValueError(f"no valid blob is {blob_size} bytes")
    return full * CHUNK_SIZE + last - TAG_SIZE


def _slices(
    data: bytes | bytearray | memoryview, size: int = IO_CHUNK_SIZE
) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield view[start : start + size]


class StreamEncryptor:
    """Encrypts one blob. Emit ``header()``, then every ``update()``, then ``finalize()``.

    Also hashes and counts the plaintext, so the caller can record its size and
    SHA-256 without a second pass (``plaintext_size`` is live; ``sha256_hex`` is
    available once finalized).
    """

    def __init__(self, data_key: bytes, context: str | bytes) -> None:
        self._enc = Cobblestone256Encryptor(_check_key(data_key), _cobblestone_context(context))
        self._sha = hashlib.sha256()
        self._size = 0
        self._digest: str | None = None

    def __repr__(self) -> str:
        return f"<StreamEncryptor plaintext_size={self._size} finalized={self.finalized}>"

    @staticmethod
    def header() -> bytes:
        return HEADER

    @property
    def finalized(self) -> bool:
        return self._digest is not None

    @property
    def plaintext_size(self) -> int:
        return self._size

    @property
    def sha256_hex(self) -> str:
        if self._digest is None:
            raise RuntimeError("sha256_hex is only known after finalize()")
        return self._digest

    def update(self, chunk: bytes | bytearray | memoryview) -> bytes:
        if self._digest is not None:
            raise RuntimeError("encryptor already finalized")
        self._sha.update(chunk)
        self._size += memoryview(chunk).nbytes
        return self._enc.update(chunk)

    def finalize(self) -> bytes:
        if self._digest is not None:
            raise RuntimeError("encryptor already finalized")
        tail = self._enc.finalize()
        self._digest = self._sha.hexdigest()
        return tail


class StreamDecryptor:
    """Decrypts one blob fed in arbitrary pieces.

    ``update()`` returns only plaintext that Cobblestone has authenticated. The
    stream as a whole (no truncation, no trailing data) is only proven by a
    successful ``finalize()``; callers acting on earlier plaintext must be ready
    to discard it. After any ``IntegrityError`` the instance is dead.
    """

    def __init__(self, data_key: bytes, context: str | bytes) -> None:
        self._key = _check_key(data_key)
        self._context = context
        _cobblestone_context(context)  # validate early
        self._header = bytearray()
        self._dec: Cobblestone256Decryptor | None = None
        self._state = "header"  # header -> body -> done | failed

    def __repr__(self) -> str:
        return f"<StreamDecryptor state={self._state}>"

    def _fail(self) -> IntegrityError:
        self._state = "failed"
        self._dec = None
        return IntegrityError("blob failed authentication")

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._state in ("done", "failed"):
            raise IntegrityError("decryptor is finished")
        view = memoryview(data).cast("B")
        if self._state == "header":
            need = HEADER_SIZE - len(self._header)
            self._header += view[:need]
            view = view[need:]
            if len(self._header) < HEADER_SIZE:
                return b""
            if bytes(self._header[: len(MAGIC)]) != MAGIC:
                raise self._fail()
            version = self._header[len(MAGIC)]
            if version != FORMAT_VERSION:
                raise self._fail()
            self._dec = Cobblestone256Decryptor(
                self._key, _cobblestone_context(self._context, version)
            )
            self._state = "body"
        assert self._dec is not None
        try:
            return self._dec.update(view)
        except (InvalidTag, AlreadyFinalized) as exc:
            raise self._fail() from exc

    def finalize(self) -> bytes:
        if self._state in ("done", "failed"):
            raise IntegrityError("decryptor is finished")
        if self._state == "header":
            raise self._fail()  # shorter than our header: truncated
        assert self._dec is not None
        try:
            tail = self._dec.finalize()
        except (InvalidTag, AlreadyFinalized) as exc:
            raise self._fail() from exc
        self._state = "done"
        self._dec = None
        return tail


def encrypt_stream(
    data_key: bytes, context: str | bytes, chunks: Iterable[bytes]
) -> Iterator[bytes]:
    """Yield the blob for the plaintext ``chunks``: header, then ciphertext pieces.

    Large input pieces are fed in ``IO_CHUNK_SIZE`` slices, so each yielded
    piece stays bounded whatever the caller passes in. Use
    :class:`StreamEncryptor` directly when you also need the size and hash.
    """
    enc = StreamEncryptor(data_key, context)
    yield enc.header()
    for chunk in chunks:
        for piece in _slices(chunk):
            out = enc.update(piece)
            if out:
                yield out
    yield enc.finalize()


def decrypt_stream(
    data_key: bytes, context: str | bytes, chunks: Iterable[bytes]
) -> Iterator[bytes]:
    """Yield authenticated plaintext of a blob given as ciphertext ``chunks``.

    Nothing is yielded before Cobblestone has verified it; ``IntegrityError`` is
    raised as soon as a check fails (header, key commitment, a chunk's tag, or
    truncation/extension at the end). Because plaintext is streamed, a consumer
    may already have passed on earlier authenticated chunks when the error
    arrives; it must treat the error as "the whole blob is bad" (e.g. abort the
    HTTP response so the client sees an incomplete transfer).
    """
    dec = StreamDecryptor(data_key, context)
    for chunk in chunks:
        for piece in _slices(chunk):
            out = dec.update(piece)
            if out:
                yield out
    tail = dec.finalize()
    if tail:
        yield tail
