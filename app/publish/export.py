"""``enclave export``: the released findings as a static site with a signed manifest, and
``enclave export verify``.

Layout of an export folder::

    index.html                      the list of released items
    findings/<id>.html              one page per released item
    feed.atom                       Atom feed
    findings.json                   the same records as the public JSON API
    files/<id>/<file id>-<name>     approved attachments, decrypted
    style.css
    public-key.txt                  the Ed25519 public key (base64 of the 32 raw bytes)
    manifest.json                   every other file with its SHA-256 and size
    manifest.sig                    base64 Ed25519 signature of manifest.json's bytes

Deterministic: the same released items give the same bytes (sorted keys, times taken from
the releases, nothing like "generated at"). Incremental: a file whose bytes are already
right is not rewritten (attachments are compared by their pinned SHA-256 and not even
decrypted again), and files a previous export listed that are no longer part of it are
removed. A non-empty folder that holds no manifest of ours is refused.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flask import current_app

from app import audit, state
from app.db import db
from app.errors import ServiceError
from app.publish import service as public
from app.publish.service import PublicFile, PublicRecord

FORMAT = "enclave-export/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PUBLIC_KEY = "public-key.txt"
UNLISTED = frozenset({MANIFEST, SIGNATURE})
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
CSS = """body{font:16px/1.5 system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;
color:#1b1f24}a{color:#1f4e8c}pre{background:#f0f2f5;padding:.75rem;overflow-x:auto}
.meta{color:#59636e;font-size:.9rem}footer{margin-top:3rem;color:#59636e;font-size:.85rem}
"""


class ExportError(ServiceError):
    code = "export_refused"


# ---------------------------------------------------------------- paths


def item_page(rec_id: int) -> str:
    return f"findings/{rec_id}.html"


def file_path(rec_id: int, f: PublicFile) -> str:
    name = _SAFE_NAME.sub("_", f.filename).strip("._") or "file"
    return f"files/{rec_id}/{f.id}-{name}"


def _safe_relative(name: str) -> bool:
    p = PurePosixPath(name)
    return (bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name
            and not name.startswith("/") and all(part not in ("", ".") for part in p.parts))


def _files_under(root: Path) -> set[str]:
    found = set()
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            found.add((Path(dirpath) / name).relative_to(root).as_posix())
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- writing


@dataclass
class ExportReport:
    out_dir: Path
    items: int = 0
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # files we did not write, left alone
    manifest_sha256: str = ""


def _atomic_write_chunks(path: Path, chunks: Iterator[bytes],
                         expect_sha256: str | None = None) -> tuple[str, int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        if expect_sha256 is not None and digest.hexdigest() != expect_sha256:
            raise ExportError(f"{path.name}: the decrypted file does not match the SHA-256 "
                              "that was approved; nothing was written for it.")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return digest.hexdigest(), size


def _is_previous_export(out_dir: Path) -> bool:
    try:
        doc = json.loads((out_dir / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def _previous_files(out_dir: Path) -> set[str]:
    try:
        doc = json.loads((out_dir / MANIFEST).read_text("utf-8"))
        return {name for name in doc.get("files", {}) if _safe_relative(name)}
    except (OSError, ValueError, AttributeError):
        return set()


def _render(template: str, **context: Any) -> bytes:
    html = current_app.jinja_env.get_template(template).render(**context)
    return html.encode("utf-8")


def _json_bytes(doc: Any) -> bytes:
    return (json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def build_documents(records: list[PublicRecord], base_url: str) -> dict[str, bytes]:
    """Every generated (non-attachment) file of the site, by relative path."""
    base = base_url.rstrip("/")

    def rel_file_url(rec: PublicRecord) -> Callable[[PublicFile], str]:
        return lambda f: file_path(rec.id, f)

    docs: dict[str, bytes] = {"style.css": CSS.encode()}
    docs["index.html"] = _render("publish/export_index.html", records=records,
                                 item_page=item_page, iso=public.iso)
    for rec in records:
        docs[item_page(rec.id)] = _render(
            "publish/export_item.html", rec=rec, iso=public.iso,
            file_href=lambda f, rec=rec: "../" + file_path(rec.id, f))
    docs["findings.json"] = _json_bytes({
        "format": FORMAT,
        "items": [public.record_json(r, page_url=item_page(r.id),
                                     file_url=rel_file_url(r)) for r in records],
    })
    docs["feed.atom"] = public.atom_feed(
        records, feed_id=f"{base}/feed.atom", self_url=f"{base}/feed.atom",
        site_url=f"{base}/index.html", entry_url=lambda r: f"{base}/{item_page(r.id)}")
    return docs


def export_site(out_dir: Path | str, *, base_url: str | None = None,
                actor: Any = "cli") -> ExportReport:
    """Write (or bring up to date) the static export in ``out_dir``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder.")
    if out.is_dir() and any(out.iterdir()) and not _is_previous_export(out):
        raise ExportError(f"{out} is not empty and is not a previous Enclave export (it has "
                          f"no {MANIFEST} of ours); choose an empty or new folder.")
    base = base_url or state.settings().base_url.rstrip("/") + "/public"
    # newest release first, ties by id (as the public pages list them)
    records = [public.public_record(r) for r in public.all_released()]
    out.mkdir(parents=True, exist_ok=True)
    report = ExportReport(out_dir=out, items=len(records))
    previous = _previous_files(out)
    listed: dict[str, dict[str, Any]] = {}

    def put(name: str, data: bytes) -> None:
        target = out / name
        digest = hashlib.sha256(data).hexdigest()
        if target.is_file() and target.stat().st_size == len(data) \
                and sha256_file(target) == digest:
            report.unchanged.append(name)
        else:
            _atomic_write_chunks(target, iter([data]))
            report.written.append(name)
        listed[name] = {"sha256": digest, "size": len(data)}

    for name, data in sorted(build_documents(records, base).items()):
        put(name, data)
    for rec in records:
        for f in rec.files:
            name = file_path(rec.id, f)
            target = out / name
            listed[name] = {"sha256": f.sha256, "size": f.size}
            if target.is_file() and target.stat().st_size == f.size \
                    and sha256_file(target) == f.sha256:
                report.unchanged.append(name)
                continue
            _, att = public.public_file(rec.id, f.id)
            _atomic_write_chunks(target, public.open_public_file(att), expect_sha256=f.sha256)
            report.written.append(name)

    keyring = state.keyring()
    put(PUBLIC_KEY, (keyring.signing_public_key_b64() + "\n").encode())
    manifest = {
        "format": FORMAT,
        "items": len(records),
        "latest_release": public.iso(records[0].released_at) if records else None,
        "files": dict(sorted(listed.items())),
    }
    manifest_bytes = _json_bytes(manifest)
    signature = base64.b64encode(keyring.signing_key().sign(manifest_bytes)) + b"\n"
    for name, data in ((MANIFEST, manifest_bytes), (SIGNATURE, signature)):
        target = out / name
        if target.is_file() and target.read_bytes() == data:
            report.unchanged.append(name)
        else:
            _atomic_write_chunks(target, iter([data]))
            report.written.append(name)
    report.manifest_sha256 = hashlib.sha256(manifest_bytes).hexdigest()

    for name in sorted(previous - set(listed) - UNLISTED):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
            report.removed.append(name)
    _prune_empty_dirs(out)
    report.foreign = sorted(_files_under(out) - set(listed) - UNLISTED)

    audit.record("public_export", actor=actor, target_type="export", target_id=str(out),
                 items=len(records), files=len(listed), written=len(report.written),
                 removed=len(report.removed), manifest_sha256=report.manifest_sha256)
    db.commit()
    return report


def _prune_empty_dirs(root: Path) -> None:
    for dirpath, dirs, names in os.walk(root, topdown=False):
        path = Path(dirpath)
        if path != root and not dirs and not names:
            with contextlib.suppress(OSError):
                path.rmdir()


# ---------------------------------------------------------------- verifying


@dataclass
class VerifyReport:
    ok: bool = False
    key_source: str = ""
    signature_ok: bool = False
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


def _load_key(value: str) -> Ed25519PublicKey:
    text = value.strip()
    candidate = Path(text)
    with contextlib.suppress(OSError, ValueError):
        if candidate.is_file():
            text = candidate.read_text("utf-8").strip()
    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise ExportError("The public key is not a base64 Ed25519 key (32 bytes) nor a file "
                          "holding one.", code="bad_public_key") from None


def verify_export(out_dir: Path | str, public_key: str | None = None) -> VerifyReport:
    """Check the manifest's signature and every file it lists; name what is wrong."""
    out = Path(out_dir)
    report = VerifyReport()
    if not out.is_dir():
        raise ExportError(f"{out} is not a folder.", code="not_a_folder")
    try:
        manifest_bytes = (out / MANIFEST).read_bytes()
    except OSError:
        raise ExportError(f"{out} has no {MANIFEST}: it is not an Enclave export.",
                          code="no_manifest") from None
    if public_key:
        key = _load_key(public_key)
        report.key_source = "given"
    else:
        try:
            key = _load_key((out / PUBLIC_KEY).read_text("utf-8"))
        except OSError:
            raise ExportError(f"{out} has no {PUBLIC_KEY}; pass --public-key.",
                              code="no_public_key") from None
        report.key_source = "folder"
    try:
        signature = base64.b64decode((out / SIGNATURE).read_bytes().strip(), validate=True)
        key.verify(signature, manifest_bytes)
        report.signature_ok = True
    except OSError:
        report.problems.append(f"{SIGNATURE}: missing")
    except (binascii.Error, ValueError, InvalidSignature):
        report.problems.append(f"{SIGNATURE}: the signature does not match {MANIFEST} and "
                               "this public key")
    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
        files = manifest["files"]
        assert manifest.get("format") == FORMAT and isinstance(files, dict)
    except (ValueError, KeyError, TypeError, AssertionError):
        report.problems.append(f"{MANIFEST}: not a manifest of format {FORMAT}")
        return report
    for name, facts in sorted(files.items()):
        if not _safe_relative(name) or not isinstance(facts, dict):
            report.problems.append(f"{MANIFEST}: bad entry {name!r}")
            continue
        path = out / name
        if not path.is_file():
            report.missing.append(name)
            continue
        report.checked += 1
        if path.stat().st_size != facts.get("size") or sha256_file(path) != facts.get("sha256"):
            report.mismatched.append(name)
    report.extra = sorted(_files_under(out) - set(files) - UNLISTED)
    report.ok = (report.signature_ok and not report.problems and not report.mismatched
                 and not report.missing and not report.extra)
    return report
