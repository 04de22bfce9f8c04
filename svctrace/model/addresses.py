"""Addresses and networks as integers: what rules and the tracer compare (pure).

A 10,000-Service table holds hundreds of thousands of addresses; they are parsed once into ``Prefix``
values (the version, the network as an integer, the length) and compared as integers.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

from svctrace.record import record

# ---------------------------------------------------------------------------------------------------
# Addresses


@record
class Prefix:
    """An address or a network: the IP version, the network as an integer and its length in bits."""

    version: int  # 4 or 6
    net: int
    length: int

    @property
    def width(self) -> int:
        return 32 if self.version == 4 else 128

    @property
    def mask(self) -> int:
        width = self.width
        return ((1 << width) - 1) ^ ((1 << (width - self.length)) - 1)

    @property
    def is_host(self) -> bool:
        return self.length == self.width

    def contains(self, version: int, value: int) -> bool:
        return version == self.version and value & self.mask == self.net

    @property
    def address(self) -> str:
        """The network address alone ("10.0.0.0", "fd00::1")."""
        return _address_text(self.version, self.net)

    def __str__(self) -> str:
        """Canonical text: a host without its /32 or /128, a network as address/length."""
        return _prefix_text(self)


# The texts of the addresses in use lately (a Service's rules print each a few times): at 65,536 the two caches
# held 27 MB of a 10,000-Service audit, in every worker.
_TEXTS = 1 << 12


@lru_cache(maxsize=_TEXTS)
def _address_text(version: int, net: int) -> str:
    if version == 4:
        return f"{net >> 24}.{(net >> 16) & 255}.{(net >> 8) & 255}.{net & 255}"
    return str(ipaddress.IPv6Address(net))


@lru_cache(maxsize=_TEXTS)
def _prefix_text(p: Prefix) -> str:
    text = _address_text(p.version, p.net)
    return text if p.is_host else f"{text}/{p.length}"


_OCTET = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


def ipv4_value(text: str) -> int | None:
    """A dotted IPv4 address as an int (no leading zeros, as iptables and Go print them); else None.

    Read with one regular expression: the stdlib costs twice as much, and a 10,000-Service table holds
    hundreds of thousands of addresses.
    """
    m = _IPV4.fullmatch(text)
    if m is None:
        return None
    a, b, c, d = m.groups()
    return (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)


@lru_cache(maxsize=1 << 16)
def parse_prefix(text: str) -> Prefix | None:
    """``10.0.0.1``, ``10.0.0.0/8``, ``fd00::/64`` -> Prefix (host bits cleared); None if it is neither."""
    host, sep, bits = text.partition("/")
    value = ipv4_value(host)
    if value is not None:
        version, width = 4, 32
    else:
        if host.count(".") == 3 and ":" not in host:
            return None  # zero-padded or out of range: not an address iptables prints
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        value, version, width = int(ip), ip.version, ip.max_prefixlen
    if sep:
        if bits.isdigit() and int(bits) <= width:
            length = int(bits)
        else:
            got = _netmask_length(bits, version)
            if got is None:
                return None
            length = got
    else:
        length = width
    mask = ((1 << width) - 1) ^ ((1 << (width - length)) - 1)
    return Prefix(version, value & mask, length)


def _netmask_length(text: str, version: int) -> int | None:
    """A dotted netmask (``255.0.0.0``) as a prefix length; None unless it is a contiguous mask."""
    if version != 4:
        return None
    try:
        mask = int(ipaddress.IPv4Address(text))
    except ValueError:
        return None
    length = bin(mask).count("1")
    return length if mask == (0xFFFFFFFF ^ ((1 << (32 - length)) - 1)) else None


@lru_cache(maxsize=1 << 16)
def ip_value(text: str) -> tuple[int, int] | None:
    """(version, address as int) of a single address; None when ``text`` is not one."""
    p = parse_prefix(text)
    if p is None or "/" in text:
        return None
    return p.version, p.net


def canonical_ip(text: str) -> str:
    """An address or network in canonical form (the text back when it is neither)."""
    if _IPV4.fullmatch(text):
        return text
    p = parse_prefix(text)
    return str(p) if p is not None else text
