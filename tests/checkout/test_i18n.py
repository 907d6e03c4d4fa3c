"""The checkout's locale rules (api/checkout/i18n.py): which language a request asks for, amounts typed and shown
the locale's way, the page's direction, and a stylesheet that mirrors for right-to-left pages. No stack."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import write_po

from api.checkout import i18n
from payloop.money import currency_exponent

STYLESHEET = Path(i18n.__file__).parent / "static" / "checkout.css"


@pytest.mark.parametrize(("header", "locale"), [
    ("fi;q=0.5, de-AT;q=0.9, en;q=0.1", "de"),  # by q-value, not by position
    ("fi, de", "fi"),  # equal q-values: the header's order
    ("fr, *", None),  # `*` picks nothing: the caller's default applies
    ("de;q=abc, fi;q=0.5", "fi"),  # a malformed q-value drops its entry
    ("de;q=, es;q=0.2", "es"),
    ("es;q=0, fi;q=0.1", "fi"),  # q=0 is "not acceptable"
    ("DE-AT, fi;q=0.5", "de"),  # tags are case-insensitive
    ("en-GB,en;q=0.9", "en"),
    ("", None),
    (None, None),
])
def test_from_accept_language(header: str | None, locale: str | None) -> None:
    assert i18n.from_accept_language(header) == locale


def test_only_the_first_preferences_of_a_long_header_are_read() -> None:
    unsupported = ["fr"] * (i18n.MAX_LANGUAGE_PREFERENCES - 1)
    assert i18n.from_accept_language(", ".join([*unsupported, "de"])) == "de"
    assert i18n.from_accept_language(", ".join([*unsupported, "fr", "de"])) is None


@pytest.mark.parametrize(("tag", "locale"), [
    ("es-MX", "es"), ("de_AT", "de"), ("fi", "fi"), ("FI", "fi"), ("DE-CH", "de"), ("en-US", "en"),
    ("pt-BR", None), ("*", None), ("", None), (None, None),
])
def test_supported(tag: str | None, locale: str | None) -> None:
    assert i18n.supported(tag) == locale


@pytest.mark.parametrize("tag", ["FI", "De", "ES-mx"])
def test_a_tag_in_any_case_opens_its_catalog(tag: str) -> None:
    code = i18n.supported(tag)
    assert code is not None
    assert i18n.language(code).gettext("Payment declined") != "Payment declined"


@pytest.mark.parametrize(("header", "region"), [
    ("de-AT,de;q=0.9", "AT"), ("de, fi-fi;q=0.5", "FI"), ("de_CH", "CH"),
    ("en", None), ("es-419", None), ("", None), (None, None),
])
def test_region_of(header: str | None, region: str | None) -> None:
    assert i18n.region_of(header) == region


def test_region_of_reads_only_the_first_preferences() -> None:
    assert i18n.region_of(", ".join(["de"] * i18n.MAX_LANGUAGE_PREFERENCES + ["fi-FI"])) is None


@pytest.mark.parametrize(("locale", "text", "amount"), [
    ("de", "50,00", Decimal("50.00")),
    ("de", "1.234,50", Decimal("1234.50")),
    ("de", "50.00", Decimal("50.00")),  # not German notation: read with a point by the fallback
    ("de", " 50,00 ", Decimal("50.00")),
    ("fi", "50,00", Decimal("50.00")),
    ("es", "1.234,50", Decimal("1234.50")),
    ("en", "1,234.50", Decimal("1234.50")),
    ("en", "1" * 32, Decimal("1" * 32)),  # the longest text read
])
def test_parse_amount(locale: str, text: str, amount: Decimal) -> None:
    assert i18n.language(locale).parse_amount(text) == amount


@pytest.mark.parametrize("locale", i18n.LOCALES)
@pytest.mark.parametrize("text", ["abc", "", "   ", "NaN", "nan", "sNaN", "Infinity", "-Infinity", "1" * 33])
def test_parse_amount_refuses(locale: str, text: str) -> None:
    assert i18n.language(locale).parse_amount(text) is None


@pytest.mark.parametrize(("locale", "shown"), [
    ("en", "€50.00"), ("de", "50,00\u00a0€"), ("fi", "50,00\u00a0€"), ("es", "50,00\u00a0€"),
])
def test_money_in_euros(locale: str, shown: str) -> None:
    assert i18n.language(locale).money(5000, "EUR") == shown


def test_money_has_the_currency_s_decimal_places() -> None:
    assert i18n.language("en").money(5000, "JPY") == "¥5,000"
    assert i18n.language("de").money(5000, "JPY") == "5.000\u00a0¥"
    assert i18n.language("de").money(1234, "KWD") == "1,234\u00a0KWD"
    assert i18n.language("en").money(1234, "KWD").endswith("1.234")


@pytest.mark.parametrize(("locale", "minor", "currency", "typed"), [
    ("en", 5000, "EUR", "50.00"), ("de", 5000, "EUR", "50,00"), ("fi", 5000, "EUR", "50,00"),
    ("es", 5000, "EUR", "50,00"), ("de", 5000, "JPY", "5000"), ("de", 1234, "KWD", "1,234"),
    ("en", 1234, "KWD", "1.234"), ("de", 123456789, "EUR", "1234567,89"),  # no grouping
])
def test_decimal_input(locale: str, minor: int, currency: str, typed: str) -> None:
    assert i18n.language(locale).decimal_input(minor, currency) == typed


@pytest.mark.parametrize("locale", i18n.LOCALES)
@pytest.mark.parametrize(("minor", "currency"), [(5000, "EUR"), (1, "EUR"), (123456789, "EUR"), (5000, "JPY"),
                                                 (1234, "KWD")])
def test_an_amount_typed_as_the_hint_shows_it_reads_back(locale: str, minor: int, currency: str) -> None:
    # The form's hint ("For example 50,00") shows decimal_input's text, so the same text must be accepted.
    language = i18n.language(locale)
    typed = language.decimal_input(minor, currency)
    assert language.parse_amount(typed) == Decimal(minor).scaleb(-currency_exponent(currency))


@pytest.mark.parametrize("locale", i18n.LOCALES)
def test_the_checkout_languages_are_left_to_right(locale: str) -> None:
    assert i18n.language(locale).direction == "ltr"


def test_a_right_to_left_language_gets_rtl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No right-to-left catalog ships: an empty one in a temporary folder lets language() build Arabic.
    po = tmp_path / "ar" / "LC_MESSAGES" / "messages.po"
    po.parent.mkdir(parents=True)
    with po.open("wb") as out:
        write_po(out, Catalog(locale="ar"))
    monkeypatch.setattr(i18n, "CATALOGS", tmp_path)
    arabic = i18n.language.__wrapped__("ar")  # past the cache, so no Language outlives the patch
    assert arabic.direction == "rtl"
    assert arabic.gettext("Deposit") == "Deposit"  # untranslated texts stay English


# Physical sides: in a right-to-left page they stay where they are instead of mirroring.
PHYSICAL_PROPERTY = re.compile(
    r"(left|right|(margin|padding)-(left|right)|border-(left|right)(-[a-z]+)?|border-(top|bottom)-(left|right)-radius)")
SIDED_VALUE = re.compile(r"(text-align|float|clear)")
DECLARATION = re.compile(r"([-a-z]+)\s*:\s*([^;{}]+)")


def physical_declarations(css: str) -> list[str]:
    """The declarations of a stylesheet that name a physical left or right side."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)
    found = []
    for block in re.findall(r"\{([^{}]*)\}", css):
        for name, value in DECLARATION.findall(block):
            value = value.strip()
            if PHYSICAL_PROPERTY.fullmatch(name) or (SIDED_VALUE.fullmatch(name)
                                                     and re.search(r"\b(left|right)\b", value)):
                found.append(f"{name}: {value}")
    return found


def test_the_check_finds_physical_sides() -> None:
    css = """a:hover { color: red; margin-left: 1px; }  /* right: 0 in a comment counts for nothing */
             @media print { p { text-align: right; border-right-width: 2px; float: left; right: 0 } }
             q { text-align: start; margin-inline-start: 1px; inset-inline-end: 0; border-radius: 4px }"""
    assert physical_declarations(css) == ["margin-left: 1px", "text-align: right", "border-right-width: 2px",
                                          "float: left", "right: 0"]


def test_the_stylesheet_uses_logical_properties_only() -> None:
    css = STYLESHEET.read_text()
    assert DECLARATION.search(css)  # the file has declarations to check
    assert physical_declarations(css) == []
