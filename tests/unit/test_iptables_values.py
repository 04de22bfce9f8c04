"""svctrace.parsers.iptables_values: the readers the resolver and tracer use on option values."""

from __future__ import annotations

import pytest

from svctrace.parsers.iptables_values import (
    NatRange,
    parse_dnat_destination,
    parse_mark,
    parse_nat_range,
    parse_ports,
    port_in,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("10.0.0.1:80", ("10.0.0.1", 80)),
    ("10.180.0.3:80", ("10.180.0.3", 80)),
    ("[fd00::1]:80", ("fd00::1", 80)),
    ("[fd00:10:244::5]:8080", ("fd00:10:244::5", 8080)),
    ("10.0.0.1", ("10.0.0.1", None)),  # no port: the packet's port is kept
    ("fd00::1", ("fd00::1", None)),  # ip6tables-save drops the brackets when there is no port
    ("[fd00::1]", ("fd00::1", None)),
    ("[FD00:0::01]:443", ("fd00::1", 443)),  # addresses come back canonical
])
def test_dnat_destination(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_dnat_destination(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("10.0.0.1:80", NatRange("10.0.0.1", "10.0.0.1", 80, 80)),
    ("1.2.3.4-1.2.3.9", NatRange("1.2.3.4", "1.2.3.9", None, None)),
    ("172.17.0.3:80-90", NatRange("172.17.0.3", "172.17.0.3", 80, 90)),
    ("[fd00::1-fd00::5]:80-90", NatRange("fd00::1", "fd00::5", 80, 90)),
    ("fd00::1-fd00::3", NatRange("fd00::1", "fd00::3", None, None)),
    (":80", NatRange(None, None, 80, 80)),
])
def test_nat_range(text: str, expected: NatRange) -> None:
    r = parse_nat_range(text)
    assert r == expected
    assert r.is_single == (expected.first_ip == expected.last_ip and expected.first_port == expected.last_port)


def test_a_range_reads_as_its_first_address_and_port() -> None:
    assert parse_dnat_destination("10.0.0.1-10.0.0.9:80-90") == ("10.0.0.1", 80)


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty NAT destination"),
    ("10.0.0.300:80", "not an IP address"),
    ("10.0.0.1:http", "not a port"),
    ("10.0.0.1:70000", "not a port"),
    ("[fd00::1:80", "unclosed '\\['"),
    ("[fd00::1]80", "unexpected text after"),
    (":80", "has no address"),
    (":", "not a port"),
])
def test_bad_dnat_destination(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_dnat_destination(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("0x4000/0x4000", (0x4000, 0x4000)),
    ("0x4000/0x0", (0x4000, 0)),
    ("0x4000", (0x4000, 0xFFFFFFFF)),
    ("16/255", (16, 255)),
    ("0xffffffff/0xffffffff", (0xFFFFFFFF, 0xFFFFFFFF)),
])
def test_mark(text: str, expected: tuple[int, int]) -> None:
    assert parse_mark(text) == expected


@pytest.mark.parametrize("text", ["", "0x", "0x4000/", "mark", "0x100000000", "-1"])
def test_bad_mark(text: str) -> None:
    with pytest.raises(ValueError, match="mark"):
        parse_mark(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("80", ((80, 80),)),
    ("80:90", ((80, 90),)),
    ("80,443", ((80, 80), (443, 443))),
    ("80:90,443,8000:8080", ((80, 90), (443, 443), (8000, 8080))),
    (":1023", ((0, 1023),)),
    ("1024:", ((1024, 65535),)),
])
def test_ports(text: str, expected: tuple[tuple[int, int], ...]) -> None:
    assert parse_ports(text) == expected


@pytest.mark.parametrize("text", ["", "http", "90:80", "80,", "70000", "1-2"])
def test_bad_ports(text: str) -> None:
    with pytest.raises(ValueError, match="port"):
        parse_ports(text)


def test_port_in() -> None:
    ranges = parse_ports("80:90,443")
    assert [p for p in (79, 80, 85, 90, 91, 443, 444) if port_in(ranges, p)] == [80, 85, 90, 443]
