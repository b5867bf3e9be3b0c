"""Text on pictures is drawn one thread at a time (FreeType faces are not thread-safe and
a CI run crashed in ImageDraw.text while several page requests stamped at once)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"
TEXT_CALLS = {"text", "textlength", "textbbox", "multiline_text",
              "multiline_textbbox", "getbbox", "getlength", "getmask", "getmask2"}


def _pillow_text_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    imports_pillow_drawing = any(
        isinstance(node, ast.ImportFrom) and node.module == "PIL"
        and any(alias.name in ("ImageDraw", "ImageFont") for alias in node.names)
        for node in ast.walk(tree))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "PIL" and any(
                alias.name == "ImageFont" for alias in node.names):
            found.append(f"{path.name}:{node.lineno} imports ImageFont")
        if (imports_pillow_drawing and isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute) and node.func.attr in TEXT_CALLS):
            found.append(f"{path.name}:{node.lineno} calls .{node.func.attr}()")
    return found


def test_only_the_lettering_module_draws_or_measures_text() -> None:
    offenders = [use for path in sorted(APP.rglob("*.py"))
                 if path.name != "lettering.py" for use in _pillow_text_uses(path)]
    assert offenders == []


def test_the_lettering_module_is_what_the_scan_looks_for() -> None:
    # the scan above would find the lettering module's own calls (so it is not blind)
    assert _pillow_text_uses(APP / "traceability" / "lettering.py")


STRESS = r"""
import concurrent.futures, hashlib, io, sys
from datetime import datetime, timezone
from PIL import Image
from app.traceability import image as images
from app.traceability.marks import Mark

def stamp(i):
    mark = Mark(copy_id=f"copy{i}", code="ABCD-EFGH", reader=f"Reader Número {i}",
                org="Ørg Example", at=datetime(2026, 1, 2, tzinfo=timezone.utc),
                level_label="Confidential")
    picture = images.stamped_picture(Image.new("RGB", (300 + 40 * (i % 7), 200)), mark)
    out = io.BytesIO()
    picture.save(out, "PNG")
    return hashlib.sha256(out.getvalue()).hexdigest()

serial = [stamp(i) for i in range(48)]
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    for _ in range(4):
        assert list(pool.map(stamp, range(48))) == serial, "threads drew different pixels"
print("same")
"""


def test_stamping_in_many_threads_draws_what_one_thread_draws() -> None:
    done = subprocess.run([sys.executable, "-c", STRESS], capture_output=True, text=True,
                          timeout=600, cwd=APP.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "same"
