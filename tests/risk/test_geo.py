"""The client's address behind trusted proxies (and not behind anyone else's X-Forwarded-For), public addresses
only, and the longest-prefix country look-up."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from pydantic import ValidationError

from payloop.settings import Settings
from risk.geo import IpCountries, IpCountryFileError, client_address, public_address

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:ffff::/48"))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        # No proxy: the peer is the client, whatever the header says.
        ("217.0.0.5", None, "217.0.0.5"),
        ("217.0.0.5", "175.45.176.1", "217.0.0.5"),  # a spoofed XFF from an untrusted peer is ignored
        ("217.0.0.5", "garbage", "217.0.0.5"),
        # Behind our proxy: the rightmost address that is not one of ours.
        ("10.0.0.2", "217.0.0.5", "217.0.0.5"),
        ("10.0.0.2", "175.45.176.1, 217.0.0.5", "217.0.0.5"),  # the client wrote the left one itself
        ("10.0.0.2", "217.0.0.5, 10.1.1.1, 10.0.0.3", "217.0.0.5"),  # two proxy hops
        ("10.0.0.2", "217.0.0.5,,  ", "217.0.0.5"),
        ("10.0.0.2", "217.0.0.5:52100", "217.0.0.5"),
        ("2001:db8:ffff::1", "[2003::5]:443", "2003::5"),
        ("::ffff:10.0.0.2", "::ffff:217.0.0.5", "217.0.0.5"),
        # Cannot be told: garbage on the way (nothing left of it is believed), or a proxy that names no client.
        ("10.0.0.2", "217.0.0.5, unknown", None),
        ("10.0.0.2", "217.0.0.5, 10.0.0.3, not-an-ip", None),
        ("10.0.0.2", None, None),
        ("10.0.0.2", "10.0.0.3", None),
        (None, "217.0.0.5", None),
        ("garbage", "217.0.0.5", None),
    ],
)
def test_client_address(peer: str | None, forwarded_for: str | None, client: str | None) -> None:
    assert client_address(peer, forwarded_for, PROXIES) == client


def test_without_trusted_proxies_the_header_is_never_believed() -> None:
    assert client_address("10.0.0.2", "217.0.0.5", ()) == "10.0.0.2"


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("217.0.0.5", "217.0.0.5"),
        ("2003::5", "2003::5"),
        ("::ffff:217.0.0.5", "217.0.0.5"),
        ("127.0.0.1", None), ("::1", None),  # loopback
        ("10.1.2.3", None), ("172.16.0.1", None), ("192.168.1.1", None), ("fd00::1", None),  # private
        ("100.64.0.1", None),  # carrier-grade NAT
        ("169.254.1.1", None), ("fe80::1", None),  # link-local
        ("240.0.0.1", None),  # reserved
        ("224.0.0.1", None), ("ff02::1", None),  # multicast
        ("0.0.0.0", None), ("::", None),  # unspecified
        ("not-an-ip", None), ("", None), (None, None),
    ],
)
def test_public_address(address: str | None, public: str | None) -> None:
    assert public_address(address) == public


def test_longest_prefix_wins(tmp_path: Path) -> None:
    path = tmp_path / "ranges.csv"
    path.write_text("# a test table\ncidr,country\n"
                    "10.0.0.0/8,AA\n10.1.0.0/16,BB\n10.1.2.0/24,CC\n10.2.0.0/16,DD\n"
                    "11.0.0.0/8,EE\n2001:db8::/32,FF\n2001:db8:1::/48,GG\n")
    table = IpCountries.load(path)
    expected = {
        "9.255.255.255": None, "10.0.0.0": "AA", "10.0.255.255": "AA", "10.1.0.0": "BB", "10.1.1.255": "BB",
        "10.1.2.0": "CC", "10.1.2.255": "CC", "10.1.3.0": "BB", "10.1.255.255": "BB", "10.2.0.1": "DD",
        "10.3.0.0": "AA", "10.255.255.255": "AA", "11.0.0.1": "EE", "12.0.0.0": None,
        "2001:db8::1": "FF", "2001:db8:1::1": "GG", "2001:db8:2::1": "FF", "2001:db9::": None,
        "::ffff:10.1.2.3": "CC", "garbage": None,
    }
    assert {address: table.country(address) for address in expected} == expected


def test_the_shipped_sandbox_table() -> None:
    table = IpCountries.load(None)
    assert table.country("217.0.0.5") == "DE"
    assert table.country("2003::5") == "DE"
    assert table.country("86.130.0.1") == "GB"
    assert table.country("175.45.176.1") == "KP"
    assert table.country("2.176.0.1") == "IR"
    assert table.country("8.8.8.8") == "US"
    assert table.country("1.1.1.1") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [("cidr,country\n10.0.0.0/8\n", ":2: expected `cidr,country`"),
     ("10.0.0.1/8,DE\n", ":1: 10.0.0.1/8 has host bits set"),
     ("10.0.0.0/8,de\n", ":1: 'de' is not a country"),
     ("10.0.0.0/8,DE\n# again\n10.0.0.0/8,AT\n", ":3: 10.0.0.0/8 is listed twice")],
)
def test_a_broken_table_is_refused_with_its_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "ranges.csv"
    path.write_text(text)
    with pytest.raises(IpCountryFileError, match=message):
        IpCountries.load(path)


def test_trusted_proxies_setting() -> None:
    settings = Settings(trusted_proxies=" 10.0.0.0/8, 2001:db8:ffff::/48 ,")
    assert settings.trusted_proxy_networks == PROXIES
    assert Settings().trusted_proxy_networks == ()
    for bad in ("10.0.0.0/33", "10.0.0.1/8", "proxy.internal"):
        with pytest.raises(ValidationError, match="trusted_proxies"):
            Settings(trusted_proxies=bad)
