"""format_ipvsadm_save / format_ipset_save: what a live capture writes for IPVS reads back as the same table."""

from __future__ import annotations

from svctrace.demo import demo_path
from svctrace.model.ipvs import FORWARD_LOCAL, FORWARD_MASQ, IpSet, IpSets, IpvsTable, RealServer, VirtualServer
from svctrace.parsers.ipvs import format_ipset_save, format_ipvsadm_save, parse_ipset_save, parse_ipvsadm_save

NODE = demo_path("ipvs") / "node"


def test_demo_ipvsadm_round_trips_to_the_same_text_and_table() -> None:
    text = (NODE / "ipvsadm.txt").read_text()
    table = parse_ipvsadm_save(text, "ipvsadm.txt")
    assert len(table.services) > 5
    assert format_ipvsadm_save(table) == text
    assert parse_ipvsadm_save(format_ipvsadm_save(table), "again").services == table.services


def test_demo_ipset_round_trips_to_the_same_text_and_sets() -> None:
    text = (NODE / "ipset.txt").read_text()
    sets = parse_ipset_save(text, "ipset.txt")
    assert format_ipset_save(sets) == text
    assert parse_ipset_save(format_ipset_save(sets), "again").sets == sets.sets


def test_what_netlink_gives_round_trips() -> None:
    """Persistence, IPv6, firewall marks, flags and thresholds as read_ipvs builds them."""
    table = IpvsTable(services=(
        (VirtualServer("TCP", "10.96.0.10", 53, "rr", persistent_timeout=10800, flags=("-b sh-port",)),
         (RealServer("10.244.1.2", 53, 1, FORWARD_MASQ, active_conns=3, options=("-x 10", "-y 2")),)),
        (VirtualServer("UDP", "fd00::a", 53, "wrr"), (RealServer("fd00:244::5", 5353, 3, FORWARD_MASQ),)),
        (VirtualServer("", "", 0, "sh", fwmark=7), (RealServer("10.244.1.3", 0, 0, FORWARD_MASQ),)),
    ), source="netlink")
    text = format_ipvsadm_save(table)
    assert text.splitlines()[:3] == [
        "-A -t 10.96.0.10:53 -s rr -p 10800 -b sh-port",
        "-a -t 10.96.0.10:53 -r 10.244.1.2:53 -m -w 1 -x 10 -y 2",
        "-A -u [fd00::a]:53 -s wrr",
    ]
    back = parse_ipvsadm_save(text, "capture")
    # ipvsadm -S does not print connection counters: the only thing the text form cannot carry.
    assert back.services[0][1][0] == RealServer("10.244.1.2", 53, 1, FORWARD_MASQ, options=("-x 10", "-y 2"))
    assert back.services[1:] == table.services[1:]
    assert back.services[0][0] == table.services[0][0]


def test_the_kernels_local_method_is_written_as_direct_routing() -> None:
    table = IpvsTable(((VirtualServer("TCP", "10.0.0.1", 80, "rr"), (RealServer("127.0.0.1", 80, 1, FORWARD_LOCAL),)),))
    assert format_ipvsadm_save(table).splitlines()[1] == "-a -t 10.0.0.1:80 -r 127.0.0.1:80 -g -w 1"


def test_ipset_comments_and_member_options_round_trip() -> None:
    sets = IpSets((
        IpSet("KUBE-CLUSTER-IP", "hash:ip,port", ("10.96.0.1,tcp:443", "10.96.0.10,udp:53"),
              ("family", "inet", "hashsize", "1024", "maxelem", "65536", "comment"),
              comments=(("10.96.0.10,udp:53", 'kube-system/kube-dns:"dns"'),),
              member_options=(("10.96.0.1,tcp:443", ("timeout", "30")),)),
        IpSet("KUBE-NODE-PORT-TCP", "bitmap:port", ("30380",), ("range", "0-65535")),
        IpSet("EMPTY", "hash:ip", (), ("family", "inet6")),
    ))
    text = format_ipset_save(sets)
    assert 'add KUBE-CLUSTER-IP 10.96.0.10,udp:53 comment "kube-system/kube-dns:\\"dns\\""' in text.splitlines()
    assert parse_ipset_save(text, "capture").sets == sets.sets
