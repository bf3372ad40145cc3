"""Arabic and English: the translations, and dates, times and amounts as a clerk in Palestine
reads them.

English is the source language; Arabic comes from ``locale/ar/LC_MESSAGES/window.po``, read
with Babel when the app starts. Digits are Latin (0-9) in both languages: national IDs,
receipt numbers and phone numbers are typed back into systems and read over the phone, and
Palestinian ID cards, receipts and the ministries' e-services print them so; Babel formats
numbers with Latin digits unless told otherwise. Dates are day first (03/12/2026); Arabic month
names are the Levantine ones of the ``ar_PS`` locale (كانون الأول); times are in Palestine's
time zone. Amounts are exact decimals with their currency (₪ for ILS).
"""

from __future__ import annotations

import datetime as dt
import gettext
import io
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Final
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal
from babel.support import Translations

DOMAIN: Final = "window"


def N_(message: str) -> str:
    """Marks a message for translation where it is defined; it is translated where shown."""
    return message


@dataclass(frozen=True, slots=True)
class Language:
    code: str
    name: str
    direction: str
    locale: Locale
    translations: gettext.NullTranslations

    def gettext(self, message: str) -> str:
        return self.translations.gettext(message)


def load_languages() -> dict[str, Language]:
    """English and Arabic; a broken ``.po`` file fails the start."""
    catalog_file = resources.files("examples.window") / "locale" / "ar" / "LC_MESSAGES"
    with (catalog_file / f"{DOMAIN}.po").open("rb") as fh:
        catalog = read_po(fh, locale="ar_PS", domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return {
        "en": Language("en", "English", "ltr", Locale.parse("en_GB"), gettext.NullTranslations()),
        "ar": Language("ar", "العربية", "rtl", Locale.parse("ar_PS"), Translations(buffer)),
    }


def choose(cookie: str | None, accept_language: str, languages: dict[str, Language]) -> str:
    """The clerk's choice (cookie), else the browser's first known language, else English."""
    if cookie in languages:
        return str(cookie)
    for part in accept_language.split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in languages:
            return code
    return "en"


@dataclass(frozen=True, slots=True)
class Formatter:
    """What templates call to show dates, times and amounts in one language."""

    language: Language
    zone: ZoneInfo

    def date(self, value: str | None) -> str:
        """An ISO date (``2026-12-03``) as ``03/12/2026``; anything else shown as it came."""
        if not value:
            return ""
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            return value
        return format_date(day, "dd/MM/yyyy", locale=self.language.locale)

    def long_date(self, value: dt.date) -> str:
        return format_date(value, "d MMMM y", locale=self.language.locale)

    def moment(self, value: str | float | None) -> str:
        """An ISO timestamp or epoch seconds as local date and time, ``03/12/2026 14:05``."""
        when = _instant(value)
        if when is None:
            return "" if value is None else str(value)
        return format_datetime(
            when, "dd/MM/yyyy HH:mm", tzinfo=self.zone, locale=self.language.locale
        )

    def time(self, value: float) -> str:
        when = _instant(value)
        assert when is not None
        return format_datetime(when, "HH:mm:ss", tzinfo=self.zone, locale=self.language.locale)

    def amount(self, value: str | None, currency: str | None) -> str:
        """An exact decimal string with its currency (``25.00`` ILS as ``₪25.00``)."""
        if value is None:
            return ""
        try:
            number = Decimal(value)
        except InvalidOperation:
            return f"{value} {currency or ''}".strip()
        if currency:
            return format_currency(
                number, currency, locale=self.language.locale, currency_digits=False,
                decimal_quantization=False,
            )  # fmt: skip
        return format_decimal(number, locale=self.language.locale, decimal_quantization=False)


def _instant(value: str | float | None) -> dt.datetime | None:
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


Gettext = Callable[[str], str]
