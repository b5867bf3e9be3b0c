"""Blob storage (app.storage)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from app.crypto.stream import decrypt_stream, encrypt_stream, new_data_key
from app.storage import (
    BlobNotFoundError,
    BlobStore,
    FileSystemBlobStore,
    new_blob_id,
    read_chunks,
    validate_blob_id,
)

HOUR = 3600.0


@pytest.fixture
def store(tmp_path: Path) -> FileSystemBlobStore:
    return FileSystemBlobStore(tmp_path / "blobs")


def put(store: FileSystemBlobStore, data: bytes, blob_id: str | None = None) -> str:
    blob_id = blob_id or new_blob_id()
    with store.open_writer(blob_id) as w:
        w.write(data)
        w.commit()
    return blob_id


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def read(store: FileSystemBlobStore, blob_id: str) -> bytes:
    with store.open_reader(blob_id) as f:
        return f.read()


def temp_files(store: FileSystemBlobStore) -> list[Path]:
    return sorted(store.tmp_dir.iterdir())


def test_satisfies_protocol(store: FileSystemBlobStore) -> None:
    s: BlobStore = store  # static check; also used at runtime below
    assert s.exists(new_blob_id()) is False


def test_new_blob_id() -> None:
    ids = {new_blob_id() for _ in range(100)}
    assert len(ids) == 100
    for blob_id in ids:
        assert validate_blob_id(blob_id) == blob_id and len(blob_id) == 32


def test_write_commit_read(store: FileSystemBlobStore) -> None:
    data = os.urandom(300_000)
    blob_id = new_blob_id()
    with store.open_writer(blob_id) as w:
        for i in range(0, len(data), 65536):
            w.write(data[i : i + 65536])
        assert w.bytes_written == len(data)
        w.commit()
    assert store.exists(blob_id)
    assert store.size(blob_id) == len(data)
    with store.open_reader(blob_id) as f:
        assert f.read() == data
    path = store.root / blob_id[:2] / blob_id[2:4] / blob_id
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(store.iter_blob_ids()) == [blob_id]
    assert temp_files(store) == []


def test_invisible_until_commit(store: FileSystemBlobStore) -> None:
    blob_id = new_blob_id()
    with store.open_writer(blob_id) as w:
        w.write(b"partial")
        assert not store.exists(blob_id)
        assert list(store.iter_blob_ids()) == []
        with pytest.raises(BlobNotFoundError):
            store.open_reader(blob_id)
        assert temp_files(store) == [w.temp_path]
        w.commit()
        assert store.exists(blob_id)
    assert temp_files(store) == []


def test_abandoned_writer_leaves_nothing(store: FileSystemBlobStore) -> None:
    blob_id = new_blob_id()
    with store.open_writer(blob_id) as w:
        w.write(b"never committed")
    assert not store.exists(blob_id)
    assert list(store.iter_blob_ids()) == []
    assert temp_files(store) == []


def test_exception_in_writer_discards_and_propagates(store: FileSystemBlobStore) -> None:
    blob_id = new_blob_id()
    with pytest.raises(RuntimeError, match="upload failed"), store.open_writer(blob_id) as w:
        w.write(b"x" * 1000)
        raise RuntimeError("upload failed")
    assert not store.exists(blob_id)
    assert temp_files(store) == []


def test_writer_state_rules(store: FileSystemBlobStore) -> None:
    w = store.open_writer(new_blob_id())
    w.write(b"a")
    w.commit()
    with pytest.raises(ValueError):
        w.write(b"b")
    with pytest.raises(ValueError):
        w.commit()
    w.abort()  # no-op after commit
    assert store.exists(w.blob_id)

    w2 = store.open_writer(new_blob_id())
    w2.abort()
    with pytest.raises(ValueError):
        w2.write(b"x")
    with pytest.raises(ValueError):
        w2.commit()


def test_commit_never_replaces_existing_blob(store: FileSystemBlobStore) -> None:
    blob_id = put(store, b"original")
    with pytest.raises(FileExistsError), store.open_writer(blob_id) as w:
        w.write(b"impostor")
        w.commit()
    with store.open_reader(blob_id) as f:
        assert f.read() == b"original"
    assert temp_files(store) == []


def test_concurrent_writers_do_not_share_temp_files(store: FileSystemBlobStore) -> None:
    a, b = new_blob_id(), new_blob_id()
    with store.open_writer(a) as wa, store.open_writer(b) as wb:
        assert wa.temp_path != wb.temp_path
        wa.write(b"A")
        wb.write(b"B")
        wb.commit()
        wa.commit()
    assert read(store, a) == b"A"
    assert read(store, b) == b"B"


def test_delete_is_idempotent(store: FileSystemBlobStore) -> None:
    blob_id = put(store, b"bye")
    store.delete(blob_id)
    assert not store.exists(blob_id)
    store.delete(blob_id)
    store.delete(new_blob_id())


def test_size_and_reader_of_missing_blob(store: FileSystemBlobStore) -> None:
    with pytest.raises(BlobNotFoundError):
        store.size(new_blob_id())
    with pytest.raises(FileNotFoundError):  # BlobNotFoundError is one
        store.open_reader(new_blob_id())


def test_empty_blob(store: FileSystemBlobStore) -> None:
    blob_id = put(store, b"")
    assert store.size(blob_id) == 0
    assert store.exists(blob_id)


def test_encrypted_round_trip_through_store(store: FileSystemBlobStore) -> None:
    key, ctx = new_data_key(), "enclave-attachment:v1:42"
    plaintext = os.urandom(200_000)
    blob_id = new_blob_id()
    with store.open_writer(blob_id) as w:
        for part in encrypt_stream(key, ctx, [plaintext]):
            w.write(part)
        w.commit()
    with store.open_reader(blob_id) as f:
        assert b"".join(decrypt_stream(key, ctx, read_chunks(f, 10_000))) == plaintext


def test_iter_blob_ids_ignores_junk(store: FileSystemBlobStore) -> None:
    ids = sorted(put(store, b"x") for _ in range(5))
    good = ids[0]
    shard = store.root / good[:2] / good[2:4]
    (shard / "README").write_text("junk")
    (shard / (good[:-1] + "Z")).write_text("junk")
    misplaced = "ff" * 16 if not good.startswith("ff") else "ee" * 16
    (shard / misplaced).write_text("wrong shard")  # valid name, wrong directory
    (store.root / "zz").mkdir()
    (store.root / "zz" / "00").mkdir()
    assert list(store.iter_blob_ids()) == ids


# -- blob id validation -------------------------------------------------------------------

BAD_IDS = [
    "",
    "../../etc/passwd",
    "..",
    "/etc/passwd",
    "a" * 31,
    "a" * 65,
    "A" * 32,
    "g" * 32,
    "a" * 32 + "\n",
    "a" * 31 + "/",
    "aa/bb/" + "a" * 32,
    "a" * 16 + "\x00" + "a" * 15,
    " " + "a" * 32,
    "tmp",
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_blob_ids_refused_everywhere(store: FileSystemBlobStore, bad: str) -> None:
    for call in (
        lambda: store.open_writer(bad),
        lambda: store.open_reader(bad),
        lambda: store.exists(bad),
        lambda: store.delete(bad),
        lambda: store.size(bad),
        lambda: validate_blob_id(bad),
    ):
        with pytest.raises(ValueError):
            call()
    assert temp_files(store) == []


@pytest.mark.parametrize("bad", [None, 123, b"a" * 32])
def test_non_string_blob_ids_refused(store: FileSystemBlobStore, bad: object) -> None:
    with pytest.raises(ValueError):
        validate_blob_id(bad)
    with pytest.raises(ValueError):
        store.exists(bad)  # type: ignore[arg-type]


def test_sha256_length_ids_allowed(store: FileSystemBlobStore) -> None:
    blob_id = "ab" * 32
    put(store, b"64 hex chars", blob_id)
    assert list(store.iter_blob_ids()) == [blob_id]


# -- garbage collection ---------------------------------------------------------------------


def test_gc(store: FileSystemBlobStore) -> None:
    referenced_old = put(store, b"keep me")
    orphan_old = put(store, b"delete me")
    orphan_young = put(store, b"just committed, row not inserted yet")
    for blob_id in (referenced_old, orphan_old):
        age(store._path(blob_id), 2 * HOUR)

    stale = store.open_writer(new_blob_id())
    stale.write(b"abandoned upload")
    stale._file.flush()
    age(stale.temp_path, 2 * HOUR)
    in_progress = store.open_writer(new_blob_id())
    in_progress.write(b"uploading")

    assert list(store.iter_stale_temp(HOUR)) == [stale.temp_path]

    report = store.gc({referenced_old}, min_age_seconds=HOUR)

    assert report.deleted_blobs == [orphan_old]
    assert report.deleted_temp == [stale.temp_path.name]
    assert report.kept_referenced == 1
    assert report.skipped_recent == 1
    assert report.errors == []
    assert store.exists(referenced_old)
    assert store.exists(orphan_young)
    assert not store.exists(orphan_old)
    assert in_progress.temp_path.exists()

    # the upload that was in progress during gc still commits fine
    in_progress.write(b" more")
    in_progress.commit()
    assert read(store, in_progress.blob_id) == b"uploading more"
    stale.abort()  # its temp file is already gone; abort copes


def test_gc_with_predicate(store: FileSystemBlobStore) -> None:
    keep = put(store, b"1")
    drop = put(store, b"2")
    for blob_id in (keep, drop):
        age(store._path(blob_id), 10)
    seen: list[str] = []

    def is_referenced(blob_id: str) -> bool:
        seen.append(blob_id)
        return blob_id == keep

    report = store.gc(is_referenced, min_age_seconds=5)
    assert sorted(seen) == sorted([keep, drop])
    assert report.deleted_blobs == [drop]
    assert store.exists(keep) and not store.exists(drop)


def test_gc_dry_run_deletes_nothing(store: FileSystemBlobStore) -> None:
    orphan = put(store, b"orphan")
    age(store._path(orphan), 2 * HOUR)
    w = store.open_writer(new_blob_id())
    w._file.flush()
    age(w.temp_path, 2 * HOUR)
    report = store.gc(set(), min_age_seconds=HOUR, dry_run=True)
    assert report.dry_run
    assert report.deleted_blobs == [orphan]
    assert report.deleted_temp == [w.temp_path.name]
    assert store.exists(orphan)
    assert w.temp_path.exists()
    w.abort()


def test_gc_min_age_zero_sweeps_all_unreferenced(store: FileSystemBlobStore) -> None:
    a = put(store, b"a")
    b = put(store, b"b")
    age(store._path(a), 1)
    age(store._path(b), 1)
    report = store.gc({a}, min_age_seconds=0)
    assert report.deleted_blobs == [b]
    assert store.exists(a)


def test_store_reopens_existing_root(tmp_path: Path) -> None:
    first = FileSystemBlobStore(tmp_path / "blobs")
    blob_id = put(first, b"persisted")
    second = FileSystemBlobStore(tmp_path / "blobs")
    assert read(second, blob_id) == b"persisted"
