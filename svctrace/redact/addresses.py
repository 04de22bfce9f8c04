"""Addresses anonymised prefix-preservingly (the Crypto-PAn principle), alone or wherever they sit in text.

Output bit i is input bit i XOR a keyed PRF (HMAC-SHA256) of the input's first i bits. Two addresses that
share a k-bit prefix still share one, so CIDR containment survives (pod IPs stay inside the pod CIDR).
Special addresses (0.0.0.0/8, 127/8, 169.254/16, multicast, 240/4 and the broadcast address, ::, ::1,
fe80::/10, ff00::/8) are kept as they are, and the private ranges (10/8, 172.16/12, 192.168/16,
100.64/10, fc00::/7) keep their prefix, so a private address stays private.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

IDENTITY_NETS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "fe80::/10", "ff00::/8",
))
PRESERVED_NETS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7",
))

# The lexical part: addresses inside free text (rules, comments, Corefiles). Only addresses are found here;
# what a rule means is read by the parsers.
_IPV4 = r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2}(?![\d.]))?(?![\w.])"
_IPV6 = r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:/\d{1,3}(?!\d))?(?![\w:.])"
_TEXT_RE = re.compile(f"(?P<v6>{_IPV6})|(?P<v4>{_IPV4})")
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}$")


def parse_ip(text: str) -> _Address | None:
    if "." not in text and ":" not in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _forced_prefixes() -> frozenset[tuple[int, int, int]]:
    """(version, length, prefix) on the path to a special or private network: never flipped.

    Walking the path to such a network without flips keeps it where it is, and keeps every other
    address out of it, so the anonymisation stays a bijection that leaves special addresses alone.
    """
    forced: set[tuple[int, int, int]] = set()
    for net in (*IDENTITY_NETS, *PRESERVED_NETS):
        bits = net.max_prefixlen
        value = int(net.network_address)
        for i in range(net.prefixlen):
            forced.add((net.version, i, value >> (bits - i) if i else 0))
    return frozenset(forced)


_FORCED = _forced_prefixes()


class AddressMap:
    """One key's anonymisation: the same address always maps to the same one."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.done: dict[str, str] = {}
        self._bit_cache: dict[tuple[int, int, int], int] = {}

    def address(self, text: str) -> str:
        """An address or CIDR, anonymised prefix-preservingly; special addresses unchanged."""
        done = self.done.get(text)
        if done is not None:
            return done
        out = self._address(text)
        if out != text:
            self.done[text] = out
        return out

    def _address(self, text: str) -> str:
        if "/" in text:
            addr_text, _, length_text = text.partition("/")
            addr = parse_ip(addr_text)
            if addr is None or not length_text.isdigit() or int(length_text) > addr.max_prefixlen:
                return text
            length = int(length_text)
            mapped = self._anonymise(addr)
            bits = addr.max_prefixlen
            masked = int(mapped) & (((1 << length) - 1) << (bits - length)) if length else 0
            # Keep a host address (10.1.2.3/24, as ip addr prints it) a host address; mask only networks.
            value = masked if int(addr) & ((1 << (bits - length)) - 1) == 0 else int(mapped)
            return f"{ipaddress.ip_address(value) if addr.version == 4 else ipaddress.IPv6Address(value)}/{length}"
        addr = parse_ip(text)
        if addr is None:
            return text
        return str(self._anonymise(addr))

    def _anonymise(self, addr: _Address) -> _Address:
        if any(addr in net for net in IDENTITY_NETS):
            return addr
        bits = addr.max_prefixlen
        value = int(addr)
        out = 0
        for i in range(bits):
            prefix = value >> (bits - i) if i else 0
            bit = (value >> (bits - 1 - i)) & 1
            out = (out << 1) | (bit ^ self._flip(addr.version, i, prefix))
        return ipaddress.IPv4Address(out) if addr.version == 4 else ipaddress.IPv6Address(out)

    def _flip(self, version: int, length: int, prefix: int) -> int:
        key = (version, length, prefix)
        if key in _FORCED:
            return 0
        cached = self._bit_cache.get(key)
        if cached is None:
            msg = f"{version}:{length}:{prefix:x}".encode()
            cached = hmac.new(self._key, msg, hashlib.sha256).digest()[0] & 1
            self._bit_cache[key] = cached
        return cached

    def mac(self, text: str) -> str:
        """A link-layer address replaced by a stable locally administered one (all-0 and all-1 kept)."""
        if text.lower() in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"):
            return text
        digest = bytearray(hmac.new(self._key, b"mac:" + text.lower().encode(), hashlib.sha256).digest()[:6])
        digest[0] = (digest[0] & 0xFC) | 0x02
        return ":".join(f"{b:02x}" for b in digest)

    def in_text(self, text: str) -> str:
        """Every address in free text anonymised (a dotted mask such as ``--mask 255.255.255.0`` is not one)."""
        def one(m: re.Match[str]) -> str:
            token = m.group(0)
            if m.group("v6"):
                return self.address(token) if parse_ip(token.split("/", 1)[0]) is not None else token
            before = text[max(0, m.start() - 7):m.start()]
            if before.endswith(("--mask ", "mask ")) or (m.start() >= 2 and text[m.start() - 1] == "/"
                                                         and text[m.start() - 2].isdigit()):
                return token
            return self.address(token)

        return _TEXT_RE.sub(one, text)
