"""The checkout's languages: which locale a page is in, its translated texts (Babel catalogs under locales/, read
and compiled at start-up) and money, numbers and dates formatted the locale's way (Babel's CLDR data).

The source texts are English in the templates and in messages.py; `pybabel` keeps the catalogs in step with them
(README: Checkout, "Languages").
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path

import jinja2
from babel import Locale
from babel.core import negotiate_locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import NumberFormatError, format_currency, parse_decimal
from babel.support import NullTranslations, Translations

from payloop.money import currency_exponent

LOCALES = ("en", "de", "fi", "es")
DEFAULT_LOCALE = "en"
CATALOGS = Path(__file__).parent / "locales"
TEMPLATES = Path(__file__).parent / "templates"
# More preferences than this in one Accept-Language header are not read (a header is the client's to make long).
MAX_LANGUAGE_PREFERENCES = 20
MAX_TYPED_CHARS = 32  # an amount the player typed; longer is not an amount


def supported(tag: str | None) -> str | None:
    """The supported locale a language tag (de, de-AT, es_MX) asks for, or None."""
    if not tag:
        return None
    match = negotiate_locale([tag.replace("-", "_")], list(LOCALES), sep="_")
    # negotiate_locale answers in the tag's own case (FI, DE-AT → DE); the catalogs are named in lower case.
    return match.lower() if match else None


def from_accept_language(header: str | None) -> str | None:
    """The first supported locale of an Accept-Language header, by its q-values; None when it names none."""
    preferences: list[tuple[float, int, str]] = []
    for position, part in enumerate((header or "").split(",")[:MAX_LANGUAGE_PREFERENCES]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        if tag and tag != "*" and quality > 0:
            preferences.append((-quality, position, tag))
    for _, _, tag in sorted(preferences):
        if locale := supported(tag):
            return locale
    return None


def region_of(header: str | None) -> str | None:
    """The country of the browser's first preferred language with a region (de-AT → AT), to preselect methods."""
    for part in (header or "").split(",")[:MAX_LANGUAGE_PREFERENCES]:
        tag = part.strip().partition(";")[0]
        _, _, region = tag.replace("_", "-").partition("-")
        if len(region) == 2 and region.isascii() and region.isalpha():
            return region.upper()
    return None


@dataclass(frozen=True)
class Language:
    """A page's locale and what renders in it."""

    code: str
    direction: str  # ltr | rtl: the <html dir>; the stylesheet uses logical properties only, so rtl needs nothing else
    translations: NullTranslations

    def gettext(self, text: str) -> str:
        return self.translations.ugettext(text)

    def money(self, minor: int, currency: str) -> str:
        exponent = currency_exponent(currency)
        return format_currency(Decimal(minor).scaleb(-exponent), currency, locale=self.code,
                               currency_digits=True, format_type="standard")

    def decimal_input(self, minor: int, currency: str) -> str:
        """An amount as the player would type it in this locale (no currency sign, no grouping)."""
        exponent = currency_exponent(currency)
        value = f"{Decimal(minor).scaleb(-exponent):.{exponent}f}"
        return value.replace(".", Locale.parse(self.code).number_symbols["latn"]["decimal"])

    def moment(self, when: datetime) -> str:
        """A moment in this locale's way, in UTC and saying so (the player's own time zone is not known)."""
        return f"{format_datetime(when, format='medium', tzinfo=timezone.utc, locale=self.code)} UTC"

    def parse_amount(self, text: str) -> Decimal | None:
        """A typed amount, in this locale's notation (50,00 in German) or with a point; None when it is neither."""
        text = text.strip().replace("\u00a0", " ")
        if not text or len(text) > MAX_TYPED_CHARS:
            return None
        try:
            value = parse_decimal(text, locale=self.code, strict=True)
        except NumberFormatError:
            try:
                value = Decimal(text)
            except InvalidOperation:
                return None
        # Both parsers take NaN (which no comparison takes) and exponents: 1e999999999 would be a gigabyte of
        # digits once written out. A typed amount of at most 32 characters has fewer than 33 digits either side.
        return value if value.is_finite() and abs(value.adjusted()) <= MAX_TYPED_CHARS else None


@cache
def language(code: str) -> Language:
    if code == DEFAULT_LOCALE:
        translations: NullTranslations = NullTranslations()
    else:
        with (CATALOGS / code / "LC_MESSAGES" / "messages.po").open("rb") as po:
            catalog = read_po(po, locale=code)
        compiled = io.BytesIO()
        write_mo(compiled, catalog)  # fuzzy entries are left out: an unchecked translation shows English
        compiled.seek(0)
        translations = Translations(compiled)
    return Language(code, "rtl" if Locale.parse(code).character_order == "right-to-left" else "ltr", translations)


@cache
def environment(code: str) -> jinja2.Environment:
    """The templates in one locale: Jinja2's i18n extension with that locale's catalog (one environment per
    locale, so concurrent pages never share an installed catalog)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             extensions=["jinja2.ext.i18n"])
    env.install_gettext_translations(language(code).translations, newstyle=True)  # type: ignore[attr-defined]
    return env
