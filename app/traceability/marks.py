"""What a stamped copy carries: the copy id (embedded), the copy code (printed), and the
visible line naming the reader, their organization and the time."""

from __future__ import annotations

import base64
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime

#: a printed copy code: ten characters of base32 (50 random bits) in two groups
CODE_RE = re.compile(r"\b([A-Z2-7]{5})-([A-Z2-7]{5})\b")
#: an embedded copy id: 128 random bits, hex
COPY_ID_RE = re.compile(r"\b[0-9a-f]{32}\b")


def new_copy_id() -> str:
    return secrets.token_hex(16)


def new_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(10)).decode()[:10]
    return f"{raw[:5]}-{raw[5:]}"


def codes_in(text: str) -> list[str]:
    """Every copy code in ``text``, in order, without repeats."""
    seen: list[str] = []
    for match in CODE_RE.finditer(text):
        code = f"{match[1]}-{match[2]}"
        if code not in seen:
            seen.append(code)
    return seen


@dataclass(frozen=True)
class Mark:
    copy_id: str
    code: str
    reader: str  # display name
    org: str  # organization name
    at: datetime
    level_label: str

    @property
    def when(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} UTC"

    @property
    def headline(self) -> str:
        """The first line of a stamp."""
        return (f"{self.level_label.upper()} - copy for {self.reader} ({self.org}), "
                f"{self.when}")

    @property
    def footline(self) -> str:
        return (f"Copy code {self.code} - Enclave. This copy is traceable to its reader; "
                f"do not share it.")

    @property
    def one_line(self) -> str:
        """The header line of a text file (without comment syntax)."""
        return (f"Enclave {self.level_label} copy {self.code} for {self.reader} "
                f"({self.org}), {self.when}. Traceable to its reader; do not share.")

    @property
    def qr_text(self) -> str:
        """The QR code says the copy code alone (alphanumeric: the smallest symbol, so
        the largest modules for the space)."""
        return self.code


def latin1_safe(text: str) -> str:
    """Text for a PDF standard font (WinAnsi): accents folded away where they must be,
    anything else as '?'. The copy code is ASCII, so it always survives."""
    out = []
    for ch in text:
        try:
            ch.encode("cp1252")
            out.append(ch)
        except UnicodeEncodeError:
            folded = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
            out.append(folded or "?")
    return "".join(out)
