"""The checkout's translation catalogs: current with the English sources, complete in every locale, and read
back by i18n as the pages use them. Fast, no stack: a new text without its translations fails here, named."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from api.checkout import i18n, messages
from psp.routing import default_routing_path, load_routing_file

CHECKOUT = Path(i18n.__file__).parent
TRANSLATED = [code for code in i18n.LOCALES if code != i18n.DEFAULT_LOCALE]
PLACEHOLDER = re.compile(r"%\((\w+)\)[a-z]")


@cache
def source_texts() -> frozenset[str]:
    """What `pybabel extract -F babel.cfg -k N_` finds in the sources now."""
    with (CHECKOUT / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg, "babel.cfg")
    found = extract_from_dir(str(CHECKOUT), method_map, options_map, keywords={**DEFAULT_KEYWORDS, "N_": None})
    return frozenset(message if isinstance(message, str) else message[0] for _, _, message, _, _ in found)


def template() -> Catalog:
    with (i18n.CATALOGS / "messages.pot").open("rb") as pot:
        return read_po(pot)


def catalog(locale: str) -> Catalog:
    with (i18n.CATALOGS / locale / "LC_MESSAGES" / "messages.po").open("rb") as po:
        return read_po(po, locale=locale)


def msgids(entries: Catalog) -> set[str]:
    return {message.id for message in entries if message.id}


def test_the_sources_have_texts_to_translate() -> None:
    # The extraction below must see both kinds of source, or every comparison with it passes on nothing.
    texts = source_texts()
    assert "Deposit successful" in texts  # N_ in messages.py
    assert "Skip to content" in texts  # _() in templates/base.html
    assert "This link has expired" in texts  # N_ in rendering.py


def test_every_supported_locale_has_a_catalog_and_no_other_does() -> None:
    assert sorted(path.name for path in i18n.CATALOGS.iterdir() if path.is_dir()) == sorted(TRANSLATED)


def test_the_template_is_current_with_the_sources() -> None:
    texts, pot = source_texts(), msgids(template())
    assert not texts - pot, f"not in messages.pot (run the pybabel commands of babel.cfg): {sorted(texts - pot)}"
    assert not pot - texts, f"in messages.pot but no longer in the sources: {sorted(pot - texts)}"


@pytest.mark.parametrize("locale", TRANSLATED)
def test_every_source_text_is_translated(locale: str) -> None:
    entries = catalog(locale)
    untranslated = [text for text in sorted(source_texts())
                    if text not in entries or not entries[text].string or entries[text].fuzzy]
    assert not untranslated, f"{locale}: missing, empty or fuzzy msgstr for " + "; ".join(map(repr, untranslated))


@pytest.mark.parametrize("locale", TRANSLATED)
def test_no_obsolete_entries(locale: str) -> None:
    entries = catalog(locale)
    assert not entries.obsolete, f"{locale}: obsolete entries {sorted(entries.obsolete)}"
    assert msgids(entries) == msgids(template())


@pytest.mark.parametrize("locale", TRANSLATED)
def test_the_header_names_the_language(locale: str) -> None:
    with (i18n.CATALOGS / locale / "LC_MESSAGES" / "messages.po").open("rb") as po:
        header = read_po(po)  # no locale given: what the file itself says
    headers = dict(header.mime_headers)
    assert headers["Language"] == locale
    assert headers["Language-Team"] == "payloop"
    assert headers["Plural-Forms"] == Catalog(locale=locale).plural_forms  # Babel's rule for the language
    assert not header.fuzzy


@pytest.mark.parametrize("locale", TRANSLATED)
def test_translations_keep_the_placeholders(locale: str) -> None:
    wrong = []
    for message in catalog(locale):
        if not message.id or not message.string:
            continue
        # Jinja's newstyle gettext applies `%` to every text, so a % that is no placeholder garbles the page.
        stray_percent = "%" in PLACEHOLDER.sub("", message.string).replace("%%", "")
        if stray_percent or set(PLACEHOLDER.findall(message.string)) != set(PLACEHOLDER.findall(message.id)):
            wrong.append(f"{message.id!r} → {message.string!r}")
    assert not wrong, f"{locale}: " + "; ".join(wrong)


def test_every_eta_and_method_of_the_routing_file_has_a_text_to_translate() -> None:
    routing = load_routing_file(default_routing_path())
    etas = {eta for psp in routing.psps for eta in (psp.eta, psp.payout_eta) if eta}
    methods = {method for psp in routing.psps for method in (*psp.methods, *psp.payout_methods)}
    assert etas and methods
    unmarked_etas, unnamed_methods = etas - set(messages.ETA_TEXTS), methods - set(messages.METHOD_NAMES)
    assert not unmarked_etas, f"add to messages.ETA_TEXTS: {sorted(unmarked_etas)}"
    assert not unnamed_methods, f"add to messages.METHOD_NAMES: {sorted(unnamed_methods)}"


@pytest.mark.parametrize("locale", TRANSLATED)
def test_the_compiled_catalog_gives_every_translation(locale: str) -> None:
    language = i18n.language(locale)
    assert language.gettext("Payment declined") not in ("", "Payment declined")
    for message in catalog(locale):
        if message.id:
            assert language.gettext(message.id) == message.string, message.id


@pytest.mark.parametrize("locale", TRANSLATED)
def test_templates_render_in_the_locale(locale: str) -> None:
    page = i18n.environment(locale).from_string('{{ _("Deposit %(amount)s", amount="5") }}').render()
    assert page == catalog(locale)["Deposit %(amount)s"].string % {"amount": "5"}


def test_english_is_the_source_text() -> None:
    assert i18n.language("en").gettext("Payment declined") == "Payment declined"
