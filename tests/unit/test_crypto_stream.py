"""Streaming blob encryption (app.crypto.stream) on top of Cobblestone-256."""

from __future__ import annotations

import hashlib
import os
import random
import tracemalloc
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from app.crypto.stream import (
    CHUNK_SIZE,
    COBBLESTONE_PREFIX_SIZE,
    FORMAT_VERSION,
    HEADER_SIZE,
    IO_CHUNK_SIZE,
    KEY_ID_SIZE,
    MAGIC,
    TAG_SIZE,
    IntegrityError,
    StreamDecryptor,
    StreamEncryptor,
    WrongKeyError,
    blob_format_version,
    ciphertext_size,
    decrypt_stream,
    encrypt_stream,
    key_id,
    max_update_output,
    new_data_key,
    plaintext_size_from_ciphertext,
)

CTX_A = "enclave-attachment:v1:1001"
CTX_B = "enclave-attachment:v1:1002"
#: Offset of the first Cobblestone chunk in a blob.
BODY = HEADER_SIZE + COBBLESTONE_PREFIX_SIZE
#: Size of one full encrypted chunk.
FULL = CHUNK_SIZE + TAG_SIZE
MIB = 1024 * 1024


def chunk_offset(i: int) -> int:
    return BODY + i * FULL


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def encrypt(key: bytes, ctx: str | bytes, plaintext: bytes, piece: int = 10_000) -> bytes:
    return b"".join(encrypt_stream(key, ctx, pieces(plaintext, piece)))


def decrypt(key: bytes, ctx: str | bytes, blob: bytes, piece: int = 4096) -> bytes:
    return b"".join(decrypt_stream(key, ctx, pieces(blob, piece)))


def decrypt_collect(
    key: bytes, ctx: str | bytes, blob: bytes | Iterable[bytes], piece: int = 1000
) -> tuple[bytes, IntegrityError | None]:
    """Decrypt, returning what was yielded before any IntegrityError, and the error."""
    source = pieces(blob, piece) if isinstance(blob, bytes) else blob
    out = bytearray()
    try:
        for part in decrypt_stream(key, ctx, source):
            out += part
    except IntegrityError as exc:
        return bytes(out), exc
    return bytes(out), None


def assert_rejected_safely(yielded: bytes, err: IntegrityError | None, original: bytes) -> None:
    """The blob was rejected and what came out before is an authenticated prefix.

    Cobblestone releases only whole authenticated chunks before finalize, and the
    short final chunk only on success, so a rejected stream can only have produced
    whole 16 KiB chunks of the original.
    """
    assert err is not None, "expected IntegrityError"
    assert original.startswith(yielded)
    assert len(yielded) % CHUNK_SIZE == 0
    assert len(yielded) < max(len(original), 1) or len(original) % CHUNK_SIZE == 0


@pytest.fixture
def key() -> bytes:
    return new_data_key()


@pytest.fixture(scope="module")
def three_and_a_half() -> bytes:
    """3 full chunks plus a short final chunk."""
    return random.Random(7).randbytes(3 * CHUNK_SIZE + CHUNK_SIZE // 2)


# -- round trips and sizes -------------------------------------------------------


SIZES = [0, 1, 2, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 3 * MIB + 7]


# byte-at-a-time feeding only for the small sizes (multi-MiB would just be slow)
ROUND_TRIPS = [
    (size, piece)
    for size in SIZES
    for piece in [1, 7, 4096, CHUNK_SIZE + 3, 2 * MIB]
    if not (piece == 1 and size > 2 * CHUNK_SIZE)
]


@pytest.mark.parametrize(("size", "piece"), ROUND_TRIPS)
def test_round_trip(key: bytes, size: int, piece: int) -> None:
    plaintext = os.urandom(size)
    blob = encrypt(key, CTX_A, plaintext, piece=piece)
    assert blob.startswith(MAGIC + b"\x02" + key_id(key))
    assert len(blob) == ciphertext_size(size)
    assert plaintext_size_from_ciphertext(len(blob)) == size
    assert decrypt(key, CTX_A, blob, piece=piece) == plaintext


def test_header_is_magic_version_and_key_id(key: bytes) -> None:
    assert FORMAT_VERSION == 2
    assert HEADER_SIZE == 5 + KEY_ID_SIZE == 21
    header = StreamEncryptor(key, CTX_A).header()
    assert header == b"ENCV\x02" + key_id(key)
    assert blob_format_version(header) == 2
    # the key id is stable for a key, differs between keys, and is not the key
    assert key_id(key) == key_id(bytes(key)) and len(key_id(key)) == KEY_ID_SIZE
    assert key_id(key) != key_id(new_data_key())
    assert key_id(key) not in key


def test_key_id_is_hkdf_sha256_with_our_label(key: bytes) -> None:
    """Pinned derivation: changing it would make every v2 blob unreadable."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    expected = HKDF(algorithm=hashes.SHA256(), length=16, salt=None,
                    info=b"enclave attachment key id v2").derive(key)
    assert key_id(key) == expected
    assert key_id(bytes(range(32))).hex() == KNOWN_KEY_ID


KNOWN_KEY_ID = "52d39064fdcbdc9ee9d51178faf7582c"


@pytest.mark.parametrize("version, header", [(1, 5), (2, 21)])
def test_ciphertext_size_formula(version: int, header: int) -> None:
    # our header, 56-byte Cobblestone prefix, 16-byte tag per chunk, and the
    # final chunk is always present and shorter than CHUNK_SIZE (maybe empty).
    assert ciphertext_size(0, version) == header + 56 + 16
    assert ciphertext_size(CHUNK_SIZE - 1, version) == header + 56 + CHUNK_SIZE - 1 + 16
    assert ciphertext_size(CHUNK_SIZE, version) == header + 56 + CHUNK_SIZE + 2 * 16
    for n in range(0, 4 * CHUNK_SIZE, 997):
        assert plaintext_size_from_ciphertext(ciphertext_size(n, version), version) == n
    with pytest.raises(ValueError):
        ciphertext_size(-1, version)
    assert ciphertext_size(1000) == ciphertext_size(1000, 2)
    with pytest.raises(ValueError):
        ciphertext_size(1000, 3)


@pytest.mark.parametrize("blob_size", [0, 5, 21, 76, 77 + 15, 77 + FULL, 77 + FULL + 15])
def test_impossible_blob_sizes(blob_size: int) -> None:
    with pytest.raises(ValueError):
        plaintext_size_from_ciphertext(blob_size)


def test_update_into_matches_update(key: bytes) -> None:
    plaintext = os.urandom(3 * MIB + 5)
    enc = StreamEncryptor(key, CTX_A, hashing=False)
    out = bytearray(max_update_output(MIB))
    parts = [enc.header()]
    for p in pieces(plaintext, MIB):
        n = enc.update_into(p, out)
        parts.append(bytes(out[:n]))
    parts.append(enc.finalize())
    assert enc.plaintext_size == len(plaintext)
    with pytest.raises(RuntimeError):
        _ = enc.sha256_hex  # hashing was left to the caller
    assert decrypt(key, CTX_A, b"".join(parts)) == plaintext
    # odd piece sizes leave plaintext pending between calls: the bound still holds
    enc = StreamEncryptor(key, CTX_A)
    for size in (1, CHUNK_SIZE - 1, 3, CHUNK_SIZE * 5 + 7, 100_000, CHUNK_SIZE):
        enc.update_into(os.urandom(size), bytearray(max_update_output(size)))


def test_encryptor_hash_and_size(key: bytes) -> None:
    plaintext = os.urandom(CHUNK_SIZE * 2 + 5)
    enc = StreamEncryptor(key, CTX_A)
    with pytest.raises(RuntimeError):
        _ = enc.sha256_hex
    parts = [enc.header()]
    for p in pieces(plaintext, 3000):
        parts.append(enc.update(p))
    assert enc.plaintext_size == len(plaintext)
    parts.append(enc.finalize())
    assert enc.sha256_hex == hashlib.sha256(plaintext).hexdigest()
    assert enc.plaintext_size == len(plaintext)
    assert decrypt(key, CTX_A, b"".join(parts)) == plaintext
    with pytest.raises(RuntimeError):
        enc.update(b"x")
    with pytest.raises(RuntimeError):
        enc.finalize()
    assert key.hex() not in repr(enc)


def test_encryption_is_randomised(key: bytes) -> None:
    assert encrypt(key, CTX_A, b"same") != encrypt(key, CTX_A, b"same")


def test_str_and_bytes_context_are_equivalent(key: bytes) -> None:
    blob = encrypt(key, CTX_A, b"hello")
    assert decrypt(key, CTX_A.encode(), blob) == b"hello"


def test_new_data_key() -> None:
    k1, k2 = new_data_key(), new_data_key()
    assert len(k1) == 32 and isinstance(k1, bytes)
    assert k1 != k2


@pytest.mark.parametrize("bad", [b"", b"x" * 16, b"x" * 31, b"x" * 33])
def test_bad_key_length_is_a_programming_error(bad: bytes) -> None:
    with pytest.raises(ValueError):
        StreamEncryptor(bad, CTX_A)
    with pytest.raises(ValueError):
        StreamDecryptor(bad, CTX_A)


def test_empty_context_refused(key: bytes) -> None:
    with pytest.raises(ValueError):
        StreamEncryptor(key, "")
    with pytest.raises(ValueError):
        StreamDecryptor(key, b"")


def test_large_input_piece_is_rebuffered(key: bytes) -> None:
    """One huge input piece comes out as bounded ciphertext pieces."""
    plaintext = os.urandom(5 * MIB)
    out = list(encrypt_stream(key, CTX_A, [plaintext]))
    assert max(len(p) for p in out) <= IO_CHUNK_SIZE + IO_CHUNK_SIZE // 1024 + FULL + 56
    blob = b"".join(out)
    plain_out = list(decrypt_stream(key, CTX_A, [blob]))
    assert max(len(p) for p in plain_out) <= IO_CHUNK_SIZE + CHUNK_SIZE
    assert b"".join(plain_out) == plaintext


def test_plaintext_is_streamed_before_input_ends(key: bytes, three_and_a_half: bytes) -> None:
    """The first authenticated chunk is yielded without reading the rest."""
    blob = encrypt(key, CTX_A, three_and_a_half)
    consumed = 0

    def source() -> Iterator[bytes]:
        nonlocal consumed
        for p in pieces(blob, 1000):
            consumed += len(p)
            yield p

    gen = decrypt_stream(key, CTX_A, source())
    first = next(gen)
    assert three_and_a_half.startswith(first) and len(first) == CHUNK_SIZE
    assert consumed < chunk_offset(1) + 1000
    gen.close()


# -- tampering ---------------------------------------------------------------------


@pytest.mark.parametrize("offset", range(HEADER_SIZE))
def test_flip_in_our_header(key: bytes, three_and_a_half: bytes, offset: int) -> None:
    blob = bytearray(encrypt(key, CTX_A, three_and_a_half))
    blob[offset] ^= 0x01
    yielded, err = decrypt_collect(key, CTX_A, bytes(blob))
    assert_rejected_safely(yielded, err, three_and_a_half)
    assert yielded == b""


@pytest.mark.parametrize("version", [0, 1, 3, 255])
def test_other_format_version_refused(key: bytes, version: int) -> None:
    """A v2 blob relabelled v1 (or as an unknown version) does not decrypt."""
    blob = bytearray(encrypt(key, CTX_A, b"data"))
    blob[4] = version
    with pytest.raises(IntegrityError):
        decrypt(key, CTX_A, bytes(blob))


@pytest.mark.parametrize("offset", range(5, HEADER_SIZE))
def test_flip_in_key_id_is_a_wrong_key_error(key: bytes, three_and_a_half: bytes,
                                             offset: int) -> None:
    blob = bytearray(encrypt(key, CTX_A, three_and_a_half))
    blob[offset] ^= 0x01
    with pytest.raises(WrongKeyError, match="not encrypted with this attachment's key"):
        decrypt(key, CTX_A, bytes(blob), piece=7)


def test_whole_header_is_bound_by_the_context(key: bytes) -> None:
    """The key id is not secret, so a correct v2 header can be put in front of any
    Cobblestone body made with this key: it still does not open unless that body was
    encrypted for exactly this header (here: a v1 body with a v2 header)."""
    v1 = encrypt_v1(key, CTX_A, b"data" * 5000)
    forged = StreamEncryptor(key, CTX_A).header() + v1[5:]
    with pytest.raises(IntegrityError) as info:
        decrypt(key, CTX_A, forged)
    assert not isinstance(info.value, WrongKeyError)


@pytest.mark.parametrize("offset", [HEADER_SIZE, HEADER_SIZE + 23, HEADER_SIZE + 24, BODY - 1])
def test_flip_in_cobblestone_prefix(key: bytes, three_and_a_half: bytes, offset: int) -> None:
    """Nonce (first 24 bytes) and key commitment (next 32)."""
    blob = bytearray(encrypt(key, CTX_A, three_and_a_half))
    blob[offset] ^= 0x80
    yielded, err = decrypt_collect(key, CTX_A, bytes(blob))
    assert_rejected_safely(yielded, err, three_and_a_half)
    assert yielded == b""


@pytest.mark.parametrize(
    ("chunk", "where", "max_yield"),
    [
        (0, 0, 0),  # first byte of first chunk
        (0, FULL - 1, 0),  # tag of first chunk
        (1, 100, CHUNK_SIZE),
        (2, FULL - 1, 2 * CHUNK_SIZE),
        (3, 0, 3 * CHUNK_SIZE),  # first byte of the short final chunk
    ],
)
def test_flip_in_chunk(
    key: bytes, three_and_a_half: bytes, chunk: int, where: int, max_yield: int
) -> None:
    blob = bytearray(encrypt(key, CTX_A, three_and_a_half))
    blob[chunk_offset(chunk) + where] ^= 0x01
    yielded, err = decrypt_collect(key, CTX_A, bytes(blob))
    assert_rejected_safely(yielded, err, three_and_a_half)
    # nothing from the tampered chunk or after it
    assert len(yielded) <= max_yield


def test_flip_last_byte(key: bytes, three_and_a_half: bytes) -> None:
    blob = bytearray(encrypt(key, CTX_A, three_and_a_half))
    blob[-1] ^= 0x01
    yielded, err = decrypt_collect(key, CTX_A, bytes(blob))
    assert_rejected_safely(yielded, err, three_and_a_half)
    assert len(yielded) == 3 * CHUNK_SIZE  # the three authenticated full chunks only


def test_every_sampled_flip_is_caught(key: bytes) -> None:
    plaintext = os.urandom(2 * CHUNK_SIZE + 333)
    blob = encrypt(key, CTX_A, plaintext)
    for offset in range(0, len(blob), 97):
        bad = bytearray(blob)
        bad[offset] ^= 0x10
        yielded, err = decrypt_collect(key, CTX_A, bytes(bad), piece=4096)
        assert_rejected_safely(yielded, err, plaintext)


def test_error_is_raised_as_soon_as_the_bad_chunk_arrives(
    key: bytes, three_and_a_half: bytes
) -> None:
    blob = bytearray(encrypt(key, CTX_A, three_and_a_half))
    blob[chunk_offset(1) + 5] ^= 0x01
    fed = 0

    def source() -> Iterator[bytes]:
        nonlocal fed
        for p in pieces(bytes(blob), 512):
            fed += len(p)
            yield p

    yielded, err = decrypt_collect(key, CTX_A, source())
    assert_rejected_safely(yielded, err, three_and_a_half)
    assert yielded == three_and_a_half[:CHUNK_SIZE]
    assert fed <= chunk_offset(2) + 512  # did not read on to the end first


# -- truncation, extension, reordering ----------------------------------------------------


def test_drop_last_byte(key: bytes, three_and_a_half: bytes) -> None:
    blob = encrypt(key, CTX_A, three_and_a_half)
    yielded, err = decrypt_collect(key, CTX_A, blob[:-1])
    assert_rejected_safely(yielded, err, three_and_a_half)


def test_drop_final_chunk(key: bytes, three_and_a_half: bytes) -> None:
    blob = encrypt(key, CTX_A, three_and_a_half)
    truncated = blob[: chunk_offset(3)]  # ends exactly after the last full chunk
    yielded, err = decrypt_collect(key, CTX_A, truncated)
    assert_rejected_safely(yielded, err, three_and_a_half)


@pytest.mark.parametrize("n_chunks", [0, 1, 2, 3])
def test_truncate_at_chunk_boundary(key: bytes, three_and_a_half: bytes, n_chunks: int) -> None:
    blob = encrypt(key, CTX_A, three_and_a_half)
    yielded, err = decrypt_collect(key, CTX_A, blob[: chunk_offset(n_chunks)])
    assert_rejected_safely(yielded, err, three_and_a_half)


def test_full_size_multiple_truncated_to_full_chunks(key: bytes) -> None:
    """A message of exactly 2 chunks ends with an empty final chunk; dropping that
    final chunk must not pass as the complete message."""
    plaintext = os.urandom(2 * CHUNK_SIZE)
    blob = encrypt(key, CTX_A, plaintext)
    assert len(blob) == chunk_offset(2) + TAG_SIZE
    yielded, err = decrypt_collect(key, CTX_A, blob[: chunk_offset(2)])
    assert_rejected_safely(yielded, err, plaintext)


def test_every_sampled_truncation_is_caught(key: bytes) -> None:
    plaintext = os.urandom(2 * CHUNK_SIZE + 333)
    blob = encrypt(key, CTX_A, plaintext)
    for length in [*range(0, len(blob), 211), len(blob) - 1]:
        yielded, err = decrypt_collect(key, CTX_A, blob[:length], piece=4096)
        assert_rejected_safely(yielded, err, plaintext)


@pytest.mark.parametrize("size", [0, 5, CHUNK_SIZE])
def test_empty_and_header_only_inputs(key: bytes, size: int) -> None:
    blob = encrypt(key, CTX_A, os.urandom(size))
    for cut in [0, 1, HEADER_SIZE - 1, HEADER_SIZE, BODY - 1, BODY]:
        with pytest.raises(IntegrityError):
            decrypt(key, CTX_A, blob[:cut])
    with pytest.raises(IntegrityError):
        list(decrypt_stream(key, CTX_A, []))


@pytest.mark.parametrize("extra", [b"\x00", b"x" * 17, os.urandom(FULL)])
def test_append_bytes(key: bytes, three_and_a_half: bytes, extra: bytes) -> None:
    blob = encrypt(key, CTX_A, three_and_a_half)
    yielded, err = decrypt_collect(key, CTX_A, blob + extra)
    assert_rejected_safely(yielded, err, three_and_a_half)


def test_append_copy_of_a_chunk(key: bytes, three_and_a_half: bytes) -> None:
    blob = encrypt(key, CTX_A, three_and_a_half)
    yielded, err = decrypt_collect(key, CTX_A, blob + blob[chunk_offset(0) : chunk_offset(1)])
    assert_rejected_safely(yielded, err, three_and_a_half)


def test_append_whole_second_blob(key: bytes) -> None:
    plaintext = os.urandom(100)
    blob = encrypt(key, CTX_A, plaintext)
    yielded, err = decrypt_collect(key, CTX_A, blob + blob)
    assert_rejected_safely(yielded, err, plaintext)
    assert yielded == b""


def test_chunk_extension_of_full_size_message(key: bytes) -> None:
    """Insert a valid-looking full chunk before the (empty) final chunk."""
    plaintext = os.urandom(CHUNK_SIZE)
    blob = encrypt(key, CTX_A, plaintext)
    first = blob[chunk_offset(0) : chunk_offset(1)]
    forged = blob[: chunk_offset(1)] + first + blob[chunk_offset(1) :]
    yielded, err = decrypt_collect(key, CTX_A, forged)
    assert_rejected_safely(yielded, err, plaintext)


def test_swap_chunks(key: bytes, three_and_a_half: bytes) -> None:
    blob = encrypt(key, CTX_A, three_and_a_half)
    c0 = blob[chunk_offset(0) : chunk_offset(1)]
    c1 = blob[chunk_offset(1) : chunk_offset(2)]
    swapped = blob[: chunk_offset(0)] + c1 + c0 + blob[chunk_offset(2) :]
    yielded, err = decrypt_collect(key, CTX_A, swapped)
    assert_rejected_safely(yielded, err, three_and_a_half)
    assert yielded == b""


def test_swap_later_chunks(key: bytes, three_and_a_half: bytes) -> None:
    blob = encrypt(key, CTX_A, three_and_a_half)
    c1 = blob[chunk_offset(1) : chunk_offset(2)]
    c2 = blob[chunk_offset(2) : chunk_offset(3)]
    swapped = blob[: chunk_offset(1)] + c2 + c1 + blob[chunk_offset(3) :]
    yielded, err = decrypt_collect(key, CTX_A, swapped)
    assert_rejected_safely(yielded, err, three_and_a_half)
    assert yielded == three_and_a_half[:CHUNK_SIZE]


def test_chunk_from_another_blob(key: bytes, three_and_a_half: bytes) -> None:
    """Same key and context, different message: chunks are not interchangeable."""
    blob1 = encrypt(key, CTX_A, three_and_a_half)
    blob2 = encrypt(key, CTX_A, three_and_a_half)
    mixed = blob1[: chunk_offset(1)] + blob2[chunk_offset(1) :]
    yielded, err = decrypt_collect(key, CTX_A, mixed)
    assert_rejected_safely(yielded, err, three_and_a_half)
    assert len(yielded) <= CHUNK_SIZE


# -- wrong key / context ------------------------------------------------------------------


def test_blob_of_a_under_context_of_b(key: bytes, three_and_a_half: bytes) -> None:
    """A's blob copied over B's file: A's key, but decrypted as attachment B."""
    blob = encrypt(key, CTX_A, three_and_a_half)
    yielded, err = decrypt_collect(key, CTX_B, blob)
    assert_rejected_safely(yielded, err, three_and_a_half)
    assert yielded == b""


def test_swapped_blobs_between_attachments(three_and_a_half: bytes) -> None:
    key_a, key_b = new_data_key(), new_data_key()
    blob_a = encrypt(key_a, CTX_A, three_and_a_half)
    blob_b = encrypt(key_b, CTX_B, b"bee")
    for k, ctx, blob in [(key_a, CTX_A, blob_b), (key_b, CTX_B, blob_a)]:
        yielded, err = decrypt_collect(k, ctx, blob)
        assert isinstance(err, WrongKeyError) and yielded == b""
        assert str(err) == "blob was not encrypted with this attachment's key"


def test_wrong_key(three_and_a_half: bytes) -> None:
    blob = encrypt(new_data_key(), CTX_A, three_and_a_half)
    yielded, err = decrypt_collect(new_data_key(), CTX_A, blob)
    assert_rejected_safely(yielded, err, three_and_a_half)
    assert isinstance(err, WrongKeyError)
    assert yielded == b""


def test_wrong_key_is_reported_before_any_ciphertext_is_read(key: bytes) -> None:
    blob = encrypt(key, CTX_A, os.urandom(3 * CHUNK_SIZE))
    dec = StreamDecryptor(new_data_key(), CTX_A)
    assert dec.update(blob[:HEADER_SIZE - 1]) == b""
    with pytest.raises(WrongKeyError):
        dec.update(blob[HEADER_SIZE - 1:HEADER_SIZE])
    with pytest.raises(IntegrityError):
        dec.update(blob[HEADER_SIZE:])


# -- format version 1 (read only) ----------------------------------------------------

DATA = Path(__file__).parent / "data"
V1_KEY = bytes(range(32))
V1_CTX = "attachment:" + "0123456789abcdef" * 2


def _v1_plaintext(n: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(i.to_bytes(8, "big")).digest()
        i += 1
    return bytes(out[:n])


def encrypt_v1(key: bytes, ctx: str, plaintext: bytes) -> bytes:
    """A format-1 blob exactly as the version-1 code wrote it (kept here as the writer
    for compatibility tests; the app only writes v2)."""
    from cryptography.cobblestone import Cobblestone256Encryptor

    enc = Cobblestone256Encryptor(key, b"enclave/blob\x00\x01\x00" + ctx.encode())
    return b"ENCV\x01" + enc.update(plaintext) + enc.finalize()


@pytest.mark.parametrize("size", [0, 16385])
def test_v1_blobs_written_by_the_old_code_still_decrypt(size: int) -> None:
    """Golden files written by the version-1 module (before key ids)."""
    blob = (DATA / f"stream-v1-{size}.bin").read_bytes()
    assert blob[:5] == b"ENCV\x01" and blob_format_version(blob) == 1
    assert len(blob) == ciphertext_size(size, 1)
    assert plaintext_size_from_ciphertext(len(blob), 1) == size
    assert decrypt(V1_KEY, V1_CTX, blob, piece=3) == _v1_plaintext(size)
    assert encrypt_v1(V1_KEY, V1_CTX, _v1_plaintext(size))[:5] == blob[:5]
    dec = StreamDecryptor(V1_KEY, V1_CTX)
    dec.update(blob[:5])
    assert dec.version == 1


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * MIB + 7])
def test_v1_round_trip(size: int) -> None:
    key = new_data_key()
    plaintext = os.urandom(size)
    blob = encrypt_v1(key, CTX_A, plaintext)
    assert len(blob) == ciphertext_size(size, 1)
    assert decrypt(key, CTX_A, blob, piece=4096) == plaintext


def test_v1_tampering_and_wrong_key_still_refused(three_and_a_half: bytes) -> None:
    key = new_data_key()
    blob = encrypt_v1(key, CTX_A, three_and_a_half)
    for offset in (4, 5, 40, 70, len(blob) - 1):
        bad = bytearray(blob)
        bad[offset] ^= 1
        yielded, err = decrypt_collect(key, CTX_A, bytes(bad))
        assert_rejected_safely(yielded, err, three_and_a_half)
    yielded, err = decrypt_collect(new_data_key(), CTX_A, blob)
    assert err is not None and yielded == b""
    yielded, err = decrypt_collect(key, CTX_B, blob)
    assert err is not None and yielded == b""


def test_v1_blob_relabelled_v2_is_refused(key: bytes) -> None:
    blob = bytearray(encrypt_v1(key, CTX_A, b"x" * 5000))
    blob[4] = 2
    with pytest.raises(IntegrityError):
        decrypt(key, CTX_A, bytes(blob))


def test_decryptor_is_dead_after_failure(key: bytes) -> None:
    blob = encrypt(key, CTX_A, b"hello")
    dec = StreamDecryptor(key, CTX_B)
    with pytest.raises(IntegrityError):
        dec.update(blob)
    with pytest.raises(IntegrityError):
        dec.update(b"")
    with pytest.raises(IntegrityError):
        dec.finalize()


def test_decryptor_object_api(key: bytes) -> None:
    plaintext = os.urandom(CHUNK_SIZE + 10)
    blob = encrypt(key, CTX_A, plaintext)
    dec = StreamDecryptor(key, CTX_A)
    out = b"".join(dec.update(b) for b in pieces(blob, 3))
    assert out == plaintext[:CHUNK_SIZE]
    assert out + dec.finalize() == plaintext
    with pytest.raises(IntegrityError):
        dec.finalize()
    assert key.hex() not in repr(dec)


# -- memory -----------------------------------------------------------------------------


def test_bounded_memory_64_mib(key: bytes) -> None:
    """64 MiB generated on the fly, encrypted and decrypted through the generators;
    traced peak must stay far below the data size."""
    total_chunks = 64
    base = random.Random(1).randbytes(MIB)
    expected = hashlib.sha256()

    def source() -> Iterator[bytes]:
        for i in range(total_chunks):
            block = i.to_bytes(8, "big") + base[8:]
            expected.update(block)
            yield block

    got = hashlib.sha256()
    size = 0
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for part in decrypt_stream(key, CTX_A, encrypt_stream(key, CTX_A, source())):
            got.update(part)
            size += len(part)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == total_chunks * MIB
    assert got.hexdigest() == expected.hexdigest()
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB"
