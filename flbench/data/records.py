"""The unit of victim and auxiliary data: a text and the PII spans it carries (exact character offsets)."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class PiiSpan:
    """One piece of personal data inside a record: `text[start:end] == value`."""

    kind: str  # name, email, phone, address, id_number, dob, diagnosis
    value: str
    start: int
    end: int


@dataclass(frozen=True)
class Record:
    """One text. `pii` is empty for auxiliary (public) corpora and for text without detected PII."""

    text: str
    pii: list[PiiSpan] = field(default_factory=list)

    def pii_values(self) -> list[str]:
        """Distinct PII values in order of first appearance."""
        return list(dict.fromkeys(s.value for s in self.pii))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        return cls(text=d["text"], pii=[PiiSpan(**s) for s in d.get("pii", [])])


def check_spans(record: Record) -> None:
    """Raise ValueError unless every span indexes exactly into the text."""
    for s in record.pii:
        if not (0 <= s.start <= s.end <= len(record.text)) or record.text[s.start : s.end] != s.value:
            raise ValueError(f"PII span {s} does not match the text {record.text!r}")


# Regex PII detection for real text, where nobody labelled the PII. It finds what has a fixed shape
# (e-mail addresses, North-American phone numbers); names and street addresses in free text are not found.
EMAIL_RE = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# 713-345-6687, (713) 345-6687, (713)345-6687, 713/345-6687, 713.345.6687, 713 345 6687, 1-800-345-6687,
# +1 713 345 6687. Digits around the match are excluded so longer numbers (accounts, ids) do not match.
PHONE_RE = re.compile(
    r"(?<![\w.+/-])(?:\+?1[ .-])?(?:\(\d{3}\) ?|\d{3}[ ./-])\d{3}[ .-]\d{4}(?![\d-])"
)


def find_pii(text: str) -> list[PiiSpan]:
    """E-mail addresses and phone numbers in `text`, as spans sorted by position."""
    spans = [PiiSpan("email", m.group(), m.start(), m.end()) for m in EMAIL_RE.finditer(text)]
    spans += [PiiSpan("phone", m.group(), m.start(), m.end()) for m in PHONE_RE.finditer(text)]
    return sorted(spans, key=lambda s: (s.start, s.end))


def detect(texts: Iterable[str]) -> list[Record]:
    return [Record(t, find_pii(t)) for t in texts]
