"""Recorded netlink messages -> the IPVS model (the conversion at the collectors' edge).

IPVS replies were built with pyroute2's own message classes in the kernel's layout, ipset replies were
recorded from a real kernel; both by tests/fixtures/ipvs/gen_netlink_fixtures.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyroute2.netlink.generic.ipvs import ipvsmsg
from pyroute2.netlink.nfnetlink.ipset import ipset_msg

from svctrace.collectors.ipvs import (
    ipset_from_message,
    merge_ipsets,
    real_server_from_message,
    virtual_server_from_message,
)
from svctrace.errors import CollectionError
from svctrace.parsers.ipvs import parse_ipset_save

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ipvs"


def _messages(name: str) -> list[bytes]:
    lines = (FIXTURES / name).read_text().splitlines()
    return [bytes.fromhex(line) for line in lines if line and not line.startswith("#")]


def _ipvs(index: int) -> ipvsmsg:
    msg = ipvsmsg(_messages("ipvs_messages.hex")[index])
    msg.decode()
    return msg


def test_ipv4_service_and_dest() -> None:
    vs = virtual_server_from_message(_ipvs(0))
    assert (vs.label, vs.persistent_timeout, vs.flags, vs.fwmark) == ("TCP 10.96.0.1:443 rr", None, (), None)
    rs = real_server_from_message(_ipvs(1), 2)
    assert (rs.endpoint, rs.weight, rs.forward, rs.active_conns, rs.inactive_conns) == \
        ("192.168.1.63:6443", 1, "masq", 3, 7)


def test_persistent_udp_service_and_draining_dest_without_address_family() -> None:
    vs = virtual_server_from_message(_ipvs(2))
    assert (vs.label, vs.persistent_timeout) == ("UDP 10.96.0.10:53 rr", 10800)
    # Kernels before 4.15 send no IPVS_DEST_ATTR_ADDR_FAMILY; the 16-byte address must still decode.
    for family in (None, 2):
        rs = real_server_from_message(_ipvs(3), family)
        assert (rs.endpoint, rs.weight, rs.inactive_conns) == ("10.244.123.129:53", 0, 2)


def test_ipv6_service_with_scheduler_flag() -> None:
    vs = virtual_server_from_message(_ipvs(4))
    assert (vs.label, vs.family, vs.persistent_timeout, vs.flags) == \
        ("TCP [fd00:10:96::1]:443 sh", 6, 60, ("-b sh-port",))
    rs = real_server_from_message(_ipvs(5), 10)
    assert (rs.endpoint, rs.weight, rs.forward) == ("[fd00:10:244::5]:6443", 2, "masq")


def test_sctp_route_and_fwmark() -> None:
    assert virtual_server_from_message(_ipvs(6)).label == "SCTP 10.96.0.50:9000 wlc"
    assert real_server_from_message(_ipvs(7), 2).forward == "route"
    fw = virtual_server_from_message(_ipvs(8))
    assert (fw.fwmark, fw.label) == (7, "FWM 7 wrr")


def test_a_reply_of_the_wrong_kind_is_a_clear_error() -> None:
    with pytest.raises(CollectionError, match="without a destination"):
        real_server_from_message(_ipvs(0))
    with pytest.raises(CollectionError, match="without a service"):
        virtual_server_from_message(_ipvs(1))


def test_recorded_ipset_replies_equal_ipset_save() -> None:
    parts = []
    for data in _messages("ipset_messages.hex"):
        msg = ipset_msg(data)
        msg.decode()
        parts.append(ipset_from_message(msg))
    live = merge_ipsets(parts, "netlink")
    saved = parse_ipset_save((FIXTURES / "ipset_commands.txt").read_text(), "ipset_commands.txt")
    assert [s.name for s in live.sets] == [s.name for s in saved.sets]
    for got, want in zip(live.sets, saved.sets, strict=True):
        assert got.type == want.type, got.name
        # The kernel lists hash members in hash order, not insertion order.
        assert sorted(got.members) == sorted(want.members), got.name
        assert got.family == want.family, got.name
    cip = live.get("KUBE-CLUSTER-IP")
    assert cip is not None and cip.comments == (("10.96.0.1,tcp:443", "default/kubernetes:https"),)
    assert "comment" in cip.options
    nodeport = live.get("KUBE-NODE-PORT-TCP")
    assert nodeport is not None and nodeport.options == ("range", "0-65535")


def test_split_ipset_replies_are_merged() -> None:
    msg = ipset_msg(_messages("ipset_messages.hex")[0])
    msg.decode()
    part = ipset_from_message(msg)
    merged = merge_ipsets([part, part], "netlink")
    (only,) = merged.sets
    assert only.members == part.members + part.members
