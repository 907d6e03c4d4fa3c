"""Where a player connects from: public addresses only, and their country.

The address itself is the request's client as uvicorn settles it: X-Forwarded-For is believed only from
PAYLOOP_TRUSTED_PROXIES (entrypoints/server.py), walked right to left past them.
"""

from __future__ import annotations

import csv
import ipaddress
import re
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SHIPPED_IP_COUNTRY_FILE = "ip_countries.csv"  # inside the `risk` package
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
# "1.2.3.4:5678" and "[2001:db8::1]:443": some proxies append the client's port.
_WITH_PORT_RE = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<v4>[0-9.]+))(?::[0-9]{1,5})?$")


def parse_address(text: str | None) -> IPAddress | None:
    """An address, or None for anything else; an IPv4-mapped IPv6 address ("::ffff:1.2.3.4") as the IPv4 one."""
    if not text:
        return None
    text = text.strip()
    match = _WITH_PORT_RE.match(text)
    if match is not None:
        text = match.group("v6") or match.group("v4")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def public_address(address: str | None) -> str | None:
    """The address when it is a public one; None for loopback, private, link-local, reserved, multicast,
    unspecified or unparsable addresses (they say nothing about where a player is)."""
    parsed = parse_address(address)
    if parsed is None or not parsed.is_global or parsed.is_multicast or parsed.is_reserved:
        return None
    return str(parsed)


class IpCountryFileError(ValueError):
    """A `cidr,country` table that cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class _Table:
    """Disjoint address ranges of one IP version, sorted: `starts[i]`..`ends[i]` is in `countries[i]`."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    countries: tuple[str, ...]

    def country(self, address: int) -> str | None:
        i = bisect_right(self.starts, address) - 1
        return self.countries[i] if i >= 0 and address <= self.ends[i] else None


class IpCountries:
    """The country of an IP address, from a `cidr,country` table (the most specific range wins). The nested
    ranges are flattened at load into disjoint ones, so a look-up is one binary search."""

    def __init__(self, networks: Iterable[tuple[IPNetwork, str]]) -> None:
        by_version: dict[int, list[tuple[IPNetwork, str]]] = {4: [], 6: []}
        for network, country in networks:
            by_version[network.version].append((network, country))
        self._tables = {version: _flatten(entries) for version, entries in by_version.items()}

    @classmethod
    def load(cls, path: str | Path | None) -> IpCountries:
        """The table at `path` (PAYLOOP_IP_COUNTRY_FILE), else the shipped sandbox table risk/ip_countries.csv."""
        if path is None:
            path = Path(str(resources.files("risk").joinpath(SHIPPED_IP_COUNTRY_FILE)))
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise IpCountryFileError(f"{path}: cannot read the file: {err.strerror or err}") from None
        return cls(_parse_table(text, str(path)))

    def country(self, address: str | None) -> str | None:
        parsed = parse_address(address)
        if parsed is None:
            return None
        return self._tables[parsed.version].country(int(parsed))


def _parse_table(text: str, source: str) -> list[tuple[IPNetwork, str]]:
    """Rows `cidr,country`; blank lines, `#` comments and a `cidr,country` header row are skipped."""
    networks: list[tuple[IPNetwork, str]] = []
    seen: set[IPNetwork] = set()
    for line_number, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [cell.strip() for cell in row]
        if not cells or not cells[0] or cells[0].startswith("#") or cells[:2] == ["cidr", "country"]:
            continue
        if len(cells) != 2:
            raise IpCountryFileError(f"{source}:{line_number}: expected `cidr,country`")
        cidr, country = cells
        try:
            network = ipaddress.ip_network(cidr)
        except ValueError as err:
            raise IpCountryFileError(f"{source}:{line_number}: {err}") from None
        if not _COUNTRY_RE.match(country):
            raise IpCountryFileError(f"{source}:{line_number}: {country!r} is not a country (ISO 3166 alpha-2)")
        if network in seen:
            raise IpCountryFileError(f"{source}:{line_number}: {cidr} is listed twice")
        seen.add(network)
        networks.append((network, country))
    return networks


def _flatten(entries: list[tuple[IPNetwork, str]]) -> _Table:
    """CIDR ranges either nest or are disjoint: sweep them in address order (wider first at the same start) with a
    stack of the open ones; each stretch of addresses belongs to the innermost range covering it."""
    starts: list[int] = []
    ends: list[int] = []
    countries: list[str] = []

    def emit(start: int, end: int, country: str) -> None:
        if start <= end:
            starts.append(start)
            ends.append(end)
            countries.append(country)

    open_ranges: list[tuple[int, str]] = []  # (last address, country), innermost last
    cursor = 0  # the first address not yet emitted
    for network, country in sorted(entries, key=lambda e: (int(e[0].network_address), e[0].prefixlen)):
        start, end = int(network.network_address), int(network.broadcast_address)
        while open_ranges and open_ranges[-1][0] < start:
            last, outer_country = open_ranges.pop()
            emit(cursor, last, outer_country)
            cursor = max(cursor, last + 1)
        if open_ranges:
            emit(cursor, start - 1, open_ranges[-1][1])
        open_ranges.append((end, country))
        cursor = start
    while open_ranges:
        last, country = open_ranges.pop()
        emit(cursor, last, country)
        cursor = max(cursor, last + 1)
    return _Table(tuple(starts), tuple(ends), tuple(countries))
