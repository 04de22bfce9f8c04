"""Readers for the values inside iptables options: NAT destinations, marks and port lists.

svctrace.parsers.iptables_typing calls these to type a rule's values once. Each raises ``ValueError``
with the offending text on bad input, so the caller can say which rule holds it.
"""

from __future__ import annotations

import ipaddress

from svctrace.model.actions import NatRange
from svctrace.model.addresses import ipv4_value
from svctrace.model.matches import MARK_FULL_MASK, PortRange

__all__ = ["MARK_FULL_MASK", "NatRange", "PortRange", "parse_dnat_destination", "parse_mark", "parse_nat_range",
           "parse_ports", "port_in"]


def _ip(text: str, whole: str) -> str:
    if ipv4_value(text) is not None:
        return text  # already canonical
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"not an IP address in NAT destination {whole!r}: {text!r}") from None


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"not a port in {whole!r}: {text!r}")
    return int(text)


def _split_host_port(text: str) -> tuple[str, str | None]:
    """``[v6]:p``, ``v4:p``, ``v4``, ``v6`` (ip6tables-save drops the brackets without a port)."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"unclosed '[' in NAT destination {text!r}")
        host, rest = text[1:close], text[close + 1:]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"unexpected text after ']' in NAT destination {text!r}")
        return host, rest[1:]
    if text.count(":") > 1:  # a bare IPv6 address (or range) without a port
        return text, None
    host, sep, port = text.partition(":")
    return host, port if sep else None


def parse_nat_range(text: str) -> NatRange:
    """Parse a DNAT/SNAT destination, ranges included (``a-b:p1-p2``, ``[v6]:p``, ``:p``)."""
    if not text:
        raise ValueError("empty NAT destination")
    host, colon, port_text = text.partition(":")
    if colon and port_text.isdigit() and len(port_text) <= 5 and ipv4_value(host) is not None \
            and int(port_text) <= 65535:  # kube-proxy's shape, IPv4: one address, one port
        return NatRange(host, host, int(port_text), int(port_text))
    host, port = _split_host_port(text)
    first_ip = last_ip = None
    if host:
        lo, sep, hi = host.partition("-")
        first_ip = _ip(lo.strip("[]"), text)
        last_ip = _ip(hi.strip("[]"), text) if sep else first_ip
    first_port = last_port = None
    if port is not None:
        plo, sep, phi = port.partition("-")
        first_port = _port(plo, text)
        last_port = _port(phi, text) if sep else first_port
    if first_ip is None and first_port is None:
        raise ValueError(f"NAT destination has neither address nor port: {text!r}")
    return NatRange(first_ip, last_ip, first_port, last_port)


def parse_dnat_destination(text: str) -> tuple[str, int | None]:
    """``"10.0.0.1:80"`` or ``"[fd00::1]:80"`` -> (address, port or None when no port is given).

    kube-proxy writes one address and one port. For a range (written by people, not kube-proxy)
    this returns its first address and port; call ``parse_nat_range`` to see the whole range.
    """
    r = parse_nat_range(text)
    if r.first_ip is None:
        raise ValueError(f"NAT destination has no address: {text!r}")
    return r.first_ip, r.first_port


def parse_mark(text: str) -> tuple[int, int]:
    """``"0x4000/0x4000"`` -> (0x4000, 0x4000); without ``/mask`` the mask is all ones, as iptables means."""
    value, sep, mask = text.partition("/")
    try:
        v = int(value, 0)
        m = int(mask, 0) if sep else MARK_FULL_MASK
    except ValueError:
        raise ValueError(f"not a mark (VALUE[/MASK], decimal or 0x hex): {text!r}") from None
    if not (0 <= v <= MARK_FULL_MASK and 0 <= m <= MARK_FULL_MASK):
        raise ValueError(f"mark out of 32-bit range: {text!r}")
    return v, m


def parse_ports(text: str) -> tuple[PortRange, ...]:
    """``"80"`` -> ((80, 80),); ``"80:90"`` -> ((80, 90),); ``"80,443"`` -> ((80, 80), (443, 443)).

    Open ends mean what iptables means: ``":90"`` is 0-90 and ``"80:"`` is 80-65535.
    """
    out: list[PortRange] = []
    for part in text.split(","):
        lo, sep, hi = part.partition(":")
        first = _port(lo, text) if lo or not sep else 0
        last = (_port(hi, text) if hi else 65535) if sep else first
        if first > last:
            raise ValueError(f"port range runs backwards in {text!r}")
        out.append((first, last))
    return tuple(out)


def port_in(ranges: tuple[PortRange, ...], port: int) -> bool:
    """Whether ``port`` is in any of the ranges ``parse_ports`` returned."""
    return any(lo <= port <= hi for lo, hi in ranges)
