"""Checking what the clerk typed before anything is sent to a ministry.

Each check returns the cleaned value or ``None``; the page then says what is expected. The
ministries check again: this only spares the citizen a refused exchange for a typo.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

_NATIONAL_ID: Final = re.compile(r"[0-9]{9}")
_PHONE: Final = re.compile(r"\+?[0-9]{9,15}")
_REFERENCE: Final = re.compile(r"[A-Za-z0-9-]{1,64}")
_CARD: Final = re.compile(r"[A-Za-z0-9-]{4,40}")


def national_id(value: object) -> str | None:
    """Nine digits whose last is a Luhn check digit (as Interior issues them)."""
    text = str(value or "").strip()
    if _NATIONAL_ID.fullmatch(text) is None:
        return None
    total = 0
    for i, ch in enumerate(reversed(text)):
        digit = int(ch) * (2 if i % 2 else 1)
        total += digit - 9 if digit > 9 else digit
    return text if total % 10 == 0 else None


def name(value: object) -> str | None:
    text = " ".join(str(value or "").split())
    return text if 2 <= len(text) <= 100 else None


def birth_date(value: object, today: dt.date) -> str | None:
    try:
        day = dt.date.fromisoformat(str(value or "").strip())
    except ValueError:
        return None
    return day.isoformat() if dt.date(1880, 1, 1) <= day <= today else None


def phone(value: object) -> str | None:
    text = re.sub(r"[\s-]", "", str(value or ""))
    return text if _PHONE.fullmatch(text) else None


def reference(value: object) -> str | None:
    text = str(value or "").strip()
    return text if _REFERENCE.fullmatch(text) else None


def card_reference(value: object) -> str | None:
    text = str(value or "").strip()
    return text if _CARD.fullmatch(text) else None


def reason(value: object) -> str | None:
    text = " ".join(str(value or "").split())
    return text if 3 <= len(text) <= 300 else None


def choice(value: object, allowed: tuple[str, ...]) -> str | None:
    text = str(value or "")
    return text if text in allowed else None
