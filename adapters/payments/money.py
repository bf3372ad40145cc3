"""Exact amounts of money: integer minor units of an ISO 4217 currency, never a float.

``Money.parse("25.00", "ILS")`` is 2500 agorot; ``Money.parse("25.001", "ILS")`` is refused
rather than rounded (a clerk who typed a third decimal made a mistake, not a rounding). The
text form always has the currency's number of decimals (``"25.00"``, ``"1.500"`` for JOD).
No IO.
"""

from __future__ import annotations

import decimal
import re
from dataclasses import dataclass
from typing import Final

MINOR_UNITS: Final = {"ILS": 2, "JOD": 3, "USD": 2}
"""ISO 4217 minor units of the currencies Palestinian ministries collect fees in."""
MAX_MINOR: Final = 10**12
_TEXT: Final = re.compile(r"[0-9]{1,13}(\.[0-9]{1,18})?")


class MoneyError(ValueError):
    """An amount that is not an exact, positive amount of the currency."""


@dataclass(frozen=True, slots=True, order=True)
class Money:
    """``minor`` units (agorot, fils, cents) of ``currency``."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        if self.currency not in MINOR_UNITS:
            raise MoneyError(f"unknown currency {self.currency!r}")
        if isinstance(self.minor, bool) or not isinstance(self.minor, int):
            raise MoneyError("an amount is a whole number of minor units")
        if not 0 <= self.minor <= MAX_MINOR:
            raise MoneyError("the amount is out of range")

    @classmethod
    def parse(cls, amount: str | decimal.Decimal, currency: str) -> Money:
        """The exact amount ``amount`` (text or Decimal) of ``currency``; refuses more decimals
        than the currency has, negatives, exponents and anything that is not a plain number."""
        if currency not in MINOR_UNITS:
            raise MoneyError(f"unknown currency {currency!r}")
        text = str(amount)
        if _TEXT.fullmatch(text) is None:
            raise MoneyError(f"{text[:32]!r} is not an amount written like 25.00")
        value = decimal.Decimal(text)
        places = MINOR_UNITS[currency]
        scaled = value.scaleb(places)
        if scaled != scaled.to_integral_value():
            raise MoneyError(f"{currency} amounts have at most {places} decimals, not {text}")
        return cls(int(scaled), currency)

    @property
    def decimal(self) -> decimal.Decimal:
        """The amount as a Decimal quantized to the currency's minor unit."""
        return decimal.Decimal(self.minor).scaleb(-MINOR_UNITS[self.currency])

    def text(self) -> str:
        """``"25.00"``: the amount with exactly the currency's decimals."""
        places = MINOR_UNITS[self.currency]
        return f"{self.decimal:.{places}f}"

    def __add__(self, other: Money) -> Money:
        return Money(self.minor + self._same(other).minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        return Money(self.minor - self._same(other).minor, self.currency)

    def _same(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise MoneyError(f"cannot mix {self.currency} and {other.currency}")
        return other

    def __str__(self) -> str:
        return f"{self.text()} {self.currency}"
