"""Streaming authenticated encryption of attachment blobs.

The cipher, nonces, chunk framing, final-chunk marking and key commitment are
all cryptography's Cobblestone-256 (C2SP chunked-encryption, AES-256-GCM with
HKDF/SHA-512); nothing here touches a nonce or a tag. We only add a small header
of our own so the format can evolve::

    v2 (written now): blob = b"ENCV" || 0x02 || key id (16 bytes) || cobblestone ciphertext
    v1 (read only):   blob = b"ENCV" || 0x01 || cobblestone ciphertext

The **key id** is HKDF-SHA256 of the blob's data key with a fixed label: it names
the key without revealing it, and it stays valid when the data key is rewrapped
under another KEK (rotation, level changes), since the data key itself never
changes. A reader compares it (in constant time) before anything else, so a blob
swapped in from another attachment, or opened with the wrong key, fails with a
distinct :class:`WrongKeyError` before any chunk is processed.

The Cobblestone *context* binds our whole header (v1: the version byte) and the
caller's blob context (e.g. ``f"attachment:{attachment_id}"``), so a blob copied
over another attachment's file, or a header with any byte changed, fails
authentication instead of decrypting.

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
* threads (measured with a ticker thread on 64 MiB calls, cryptography 50.0.2):
  ``update()`` blocks other Python threads for much of the call (it builds its
  output ``bytes``); ``update_into()`` writes into the caller's buffer and lets
  them run, so a pipeline can reuse one output buffer and overlap the cipher.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator

from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor
from cryptography.exceptions import AlreadyFinalized, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "CHUNK_SIZE",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "HEADER_SIZES",
    "IO_CHUNK_SIZE",
    "KEY_ID_SIZE",
    "KEY_SIZE",
    "MAGIC",
    "PREAMBLE_SIZE",
    "IntegrityError",
    "StreamDecryptor",
    "StreamEncryptor",
    "WrongKeyError",
    "blob_format_version",
    "ciphertext_size",
    "decrypt_stream",
    "encrypt_stream",
    "key_id",
    "max_update_output",
    "new_data_key",
    "plaintext_size_from_ciphertext",
]

MAGIC = b"ENCV"
#: The version every new blob is written with.
FORMAT_VERSION = 2
#: Magic + version byte: enough to tell which header follows.
PREAMBLE_SIZE = len(MAGIC) + 1
KEY_ID_SIZE = 16
#: Header size per readable format version.
HEADER_SIZES = {1: PREAMBLE_SIZE, 2: PREAMBLE_SIZE + KEY_ID_SIZE}
#: Header size of blobs written now.
HEADER_SIZE = HEADER_SIZES[FORMAT_VERSION]
_KEY_ID_INFO = b"enclave attachment key id v2"

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


class WrongKeyError(IntegrityError):
    """The blob's key id is not the one of the key given: the blob belongs to another
    attachment (swapped) or the wrong data key was used. Raised before any chunk is
    decrypted."""

    def __init__(self) -> None:
        super().__init__("blob was not encrypted with this attachment's key")


def new_data_key() -> bytes:
    """A fresh random 32-byte data key for one blob."""
    return Cobblestone256Encryptor.generate_key()


def key_id(data_key: bytes) -> bytes:
    """The 16-byte public id of a data key (HKDF-SHA256, fixed label, no salt).

    One-way: it identifies the key without revealing anything about it, and it is
    independent of Cobblestone's own derivations (different hash and labels)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_ID_SIZE, salt=None,
                info=_KEY_ID_INFO).derive(_check_key(data_key))


def _header(data_key: bytes, version: int = FORMAT_VERSION) -> bytes:
    if version == 1:
        return MAGIC + b"\x01"
    if version == 2:
        return MAGIC + b"\x02" + key_id(data_key)
    raise ValueError(f"unknown blob format version {version}")


def _cobblestone_context(context: str | bytes, header: bytes) -> bytes:
    if isinstance(context, str):
        context = context.encode("utf-8")
    elif not isinstance(context, bytes | bytearray | memoryview):
        raise TypeError("context must be str or bytes")
    context = bytes(context)
    if not context:
        raise ValueError("blob context must not be empty")
    # label NUL <header binding> NUL context. v1 bound only its version byte (kept as
    # is so v1 blobs still open); v2 binds its whole fixed-size header, which starts
    # with "E", never 0x01, so the two encodings cannot collide. The context is the
    # last field, so the encoding is unambiguous without a length prefix.
    binding = header[len(MAGIC):] if header[len(MAGIC)] == 1 else header
    return _CONTEXT_LABEL + b"\x00" + binding + b"\x00" + context


def _check_key(data_key: bytes) -> bytes:
    if not isinstance(data_key, bytes | bytearray | memoryview):
        raise TypeError("data key must be bytes")
    if len(data_key) != KEY_SIZE:
        raise ValueError(f"data key must be {KEY_SIZE} bytes")
    return bytes(data_key)


def blob_format_version(preamble: bytes | bytearray | memoryview) -> int:
    """The format version named by a blob's first ``PREAMBLE_SIZE`` bytes;
    ``IntegrityError`` if they are not our magic and a readable version."""
    preamble = bytes(preamble[:PREAMBLE_SIZE])
    if len(preamble) < PREAMBLE_SIZE or preamble[: len(MAGIC)] != MAGIC:
        raise IntegrityError("blob failed authentication")
    version = preamble[len(MAGIC)]
    if version not in HEADER_SIZES:
        raise IntegrityError("blob failed authentication")
    return version


def _header_size(version: int) -> int:
    try:
        return HEADER_SIZES[version]
    except KeyError:
        raise ValueError(f"unknown blob format version {version}") from None


def ciphertext_size(plaintext_size: int, version: int = FORMAT_VERSION) -> int:
    """Exact blob size (our header included) for a plaintext of this size."""
    if plaintext_size < 0:
        raise ValueError("plaintext size must be >= 0")
    chunks = plaintext_size // CHUNK_SIZE + 1
    return (_header_size(version) + COBBLESTONE_PREFIX_SIZE + plaintext_size
            + chunks * TAG_SIZE)


def plaintext_size_from_ciphertext(blob_size: int, version: int = FORMAT_VERSION) -> int:
    """Inverse of :func:`ciphertext_size`; ``ValueError`` if no plaintext has that size."""
    body = blob_size - _header_size(version) - COBBLESTONE_PREFIX_SIZE
    if body < TAG_SIZE:
        raise ValueError(f"no valid blob is {blob_size} bytes")
    full, last = divmod(body, CHUNK_SIZE + TAG_SIZE)
    if last < TAG_SIZE:
        raise ValueError(f"no valid blob is {blob_size} bytes")
    return full * CHUNK_SIZE + last - TAG_SIZE


def max_update_output(n: int) -> int:
    """An output buffer size that always holds what one ``update_into`` of ``n``
    plaintext bytes may produce (whatever is pending from earlier calls)."""
    return COBBLESTONE_PREFIX_SIZE + (n // CHUNK_SIZE + 2) * (CHUNK_SIZE + TAG_SIZE)


def _slices(
    data: bytes | bytearray | memoryview, size: int = IO_CHUNK_SIZE
) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield view[start : start + size]


class StreamEncryptor:
    """Encrypts one blob (always the current format version). Emit ``header()``,
    then every ``update()`` (or ``update_into()``), then ``finalize()``.

    Also hashes and counts the plaintext, so the caller can record its size and
    SHA-256 without a second pass (``plaintext_size`` is live; ``sha256_hex`` is
    available once finalized). With ``hashing=False`` the caller hashes the
    plaintext itself (e.g. in another thread) and ``sha256_hex`` is unavailable.
    """

    def __init__(self, data_key: bytes, context: str | bytes, *, hashing: bool = True) -> None:
        self._header = _header(_check_key(data_key))
        self._enc = Cobblestone256Encryptor(bytes(data_key),
                                            _cobblestone_context(context, self._header))
        self._sha = hashlib.sha256() if hashing else None
        self._size = 0
        self._digest: str | None = None
        self._finalized = False

    def __repr__(self) -> str:
        return f"<StreamEncryptor plaintext_size={self._size} finalized={self.finalized}>"

    def header(self) -> bytes:
        """Our header: magic, format version, key id. Written before the ciphertext."""
        return self._header

    @property
    def finalized(self) -> bool:
        return self._finalized

    @property
    def plaintext_size(self) -> int:
        return self._size

    @property
    def sha256_hex(self) -> str:
        if self._digest is None:
            raise RuntimeError("sha256_hex is only known after finalize() with hashing on")
        return self._digest

    def _take(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._finalized:
            raise RuntimeError("encryptor already finalized")
        if self._sha is not None:
            self._sha.update(chunk)
        self._size += memoryview(chunk).nbytes

    def update(self, chunk: bytes | bytearray | memoryview) -> bytes:
        self._take(chunk)
        return self._enc.update(chunk)

    def update_into(self, chunk: bytes | bytearray | memoryview, out: bytearray | memoryview
                    ) -> int:
        """Encrypt ``chunk`` into ``out`` (at least ``max_update_output(len(chunk))``
        bytes); returns how many bytes of ``out`` hold ciphertext."""
        self._take(chunk)
        return int(self._enc.update_into(chunk, out))

    def finalize(self) -> bytes:
        if self._finalized:
            raise RuntimeError("encryptor already finalized")
        tail = self._enc.finalize()
        self._finalized = True
        if self._sha is not None:
            self._digest = self._sha.hexdigest()
        return tail


class StreamDecryptor:
    """Decrypts one blob (format version 1 or 2) fed in arbitrary pieces.

    ``update()`` returns only plaintext that Cobblestone has authenticated. The
    stream as a whole (no truncation, no trailing data) is only proven by a
    successful ``finalize()``; callers acting on earlier plaintext must be ready
    to discard it. After any ``IntegrityError`` the instance is dead. A v2 blob
    whose key id is not this key's raises :class:`WrongKeyError` as soon as the
    header is complete, before any ciphertext is looked at.
    """

    def __init__(self, data_key: bytes, context: str | bytes) -> None:
        self._key = _check_key(data_key)
        self._key_id = key_id(self._key)
        self._context = context
        _cobblestone_context(context, _header(self._key, 1))  # validate early
        self._header = bytearray()
        self._need = PREAMBLE_SIZE
        self._dec: Cobblestone256Decryptor | None = None
        self._state = "header"  # header -> body -> done | failed
        self.version: int | None = None

    def __repr__(self) -> str:
        return f"<StreamDecryptor state={self._state} version={self.version}>"

    def _fail(self, error: IntegrityError | None = None) -> IntegrityError:
        self._state = "failed"
        self._dec = None
        return error or IntegrityError("blob failed authentication")

    def _read_header(self, view: memoryview) -> memoryview:
        """Take header bytes from ``view``; return the rest once the header is complete."""
        while self._state == "header" and view:
            take = self._need - len(self._header)
            self._header += view[:take]
            view = view[take:]
            if len(self._header) < self._need:
                break
            if self.version is None:
                try:
                    self.version = blob_format_version(self._header)
                except IntegrityError:
                    raise self._fail() from None
                self._need = HEADER_SIZES[self.version]
            if len(self._header) == self._need:
                header = bytes(self._header)
                if self.version >= 2 and not hmac.compare_digest(
                        header[PREAMBLE_SIZE:], self._key_id):
                    raise self._fail(WrongKeyError())
                self._dec = Cobblestone256Decryptor(
                    self._key, _cobblestone_context(self._context, header))
                self._state = "body"
        return view

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._state in ("done", "failed"):
            raise IntegrityError("decryptor is finished")
        view = memoryview(data).cast("B")
        if self._state == "header":
            view = self._read_header(view)
            if self._state == "header":
                return b""
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
