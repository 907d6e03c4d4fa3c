"""Public addresses only, the longest-prefix country look-up, and the proxies whose X-Forwarded-For uvicorn
believes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from entrypoints.server import api_server_options
from payloop.settings import Settings
from risk.geo import IpCountries, IpCountryFileError, public_address

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
    assert api_server_options(settings)["forwarded_allow_ips"] == ["10.0.0.0/8", "2001:db8:ffff::/48"]
    assert api_server_options(Settings())["forwarded_allow_ips"] == ["127.0.0.1/32", "::1/128"]  # uvicorn's default
    assert api_server_options(Settings(trusted_proxies=""))["forwarded_allow_ips"] == []
    for bad in ("10.0.0.0/33", "10.0.0.1/8", "proxy.internal"):
        with pytest.raises(ValidationError, match="trusted_proxies"):
            Settings(trusted_proxies=bad)
