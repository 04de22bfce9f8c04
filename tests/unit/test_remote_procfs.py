"""The kernel's own files read where kube-proxy's image has no tool: /proc/net/ip_vs, addresses and links.

The IPVS text is the kernel's format (net/netfilter/ipvs/ip_vs_ctl.c ip_vs_info_seq_show); this project's
test kernel has no ip_vs, so no live read exercises it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from svctrace.errors import InputError
from svctrace.model.ipvs import FORWARD_LOCAL, FORWARD_MASQ, RealServer, VirtualServer
from svctrace.parsers.ipvs import format_ipvsadm_save, parse_ipvsadm_save
from svctrace.parsers.procfs import addresses_from_proc, parse_proc_ip_vs

IP_VS = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0A600001:01BB rr
  -> C0A80165:192B      Masq    1      3          7
  -> C0A80166:192B      Masq    1      0          0
UDP  0A60000A:0035 rr
  -> 0AF40002:0035      Masq    1      0          4
TCP  0A606414:1F90 sh persistent 10800 FFFFFFFF
  -> 0AF40006:1F90      Local   1      0          0
TCP  [fd00:0000:0000:0000:0000:0000:0000:0010]:0050 rr
  -> [fd00:0000:0000:0000:0000:0000:0001:0005]:1F90      Masq    1      0          0
FWM  00000004 wlc
"""


def test_the_kernels_ipvs_table_reads_as_ipvsadm_would_list_it() -> None:
    table = parse_proc_ip_vs(IP_VS, "/proc/net/ip_vs")
    first_vs, first_reals = table.services[0]
    assert first_vs == VirtualServer("TCP", "10.96.0.1", 443, "rr")
    assert first_reals == (RealServer("192.168.1.101", 6443, 1, FORWARD_MASQ, 3, 7),
                           RealServer("192.168.1.102", 6443, 1, FORWARD_MASQ, 0, 0))
    persistent, reals = table.services[2]
    assert (persistent.scheduler, persistent.persistent_timeout) == ("sh", 10800)
    assert reals[0].forward == FORWARD_LOCAL
    six, reals = table.services[3]
    assert (six.address, six.port, reals[0].endpoint) == ("fd00::10", 80, "[fd00::1:5]:8080")
    assert table.services[4][0].fwmark == 4 and table.services[4][1] == ()
    # what svctrace keeps as node/ipvsadm.txt reads back to the same services
    again = parse_ipvsadm_save(format_ipvsadm_save(table), "ipvsadm.txt")
    assert [vs.key for vs, _ in again.services] == [vs.key for vs, _ in table.services]


@pytest.mark.parametrize("bad", ["TCP  nothex:01BB rr\n", "  -> C0A80165:192B Masq 1 0 0\n", "WAT  1 2 3\n"])
def test_a_line_the_kernel_does_not_write_is_an_error_with_its_line(bad: str) -> None:
    with pytest.raises(InputError) as err:
        parse_proc_ip_vs("IP Virtual Server version 1.2.1 (size=4096)\n" + bad, "/proc/net/ip_vs")
    assert err.value.line == 2


FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 192.168.1.0/24 2 0 2
        |-- 192.168.1.101
           /32 host LOCAL
     |-- 10.96.0.10
        /32 host LOCAL
     |-- 10.244.1.1
        /32 host LOCAL
"""
LITTLE_ENDIAN_ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
ens33\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
ens33\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
cni0\t0001F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""
IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000000000000000001 02 40 20 80    ens33
fd000000000000000000000000000065 02 40 00 80    ens33
"""
LINKS = "1\tlo\tunknown\t772\t\n2\tens33\tup\t1\t\n3\tcni0\tup\t1\t\n4\tveth1a2b\tup\t1\tcni0\n" \
        "5\tkube-ipvs0\tdown\t1\t\n"


def _by_name(doc: list[dict[str, Any]]) -> dict[str, list[tuple[str, int, str]]]:
    return {link["ifname"]: [(a["local"], a["prefixlen"], a["scope"]) for a in link["addr_info"]] for link in doc}


def test_addresses_and_links_read_as_ip_j_addr_would_print_them() -> None:
    doc = json.loads(addresses_from_proc(fib_trie=FIB_TRIE, route=LITTLE_ENDIAN_ROUTE, if_inet6=IF_INET6, links=LINKS))
    assert _by_name(doc) == {
        "lo": [("127.0.0.1", 8, "host"), ("::1", 128, "host")],
        "ens33": [("192.168.1.101", 24, "global"), ("fe80::1", 64, "link"), ("fd00::65", 64, "global")],
        "cni0": [("10.244.1.1", 24, "global")],
        "veth1a2b": [],
        # a /32 without a connected route: IPVS mode binds every Service address on kube-ipvs0
        "kube-ipvs0": [("10.96.0.10", 32, "global")],
    }
    veth = next(link for link in doc if link["ifname"] == "veth1a2b")
    assert veth["master"] == "cni0" and veth["operstate"] == "UP" and doc[0]["link_type"] == "loopback"


def test_a_big_endian_node_reads_the_same() -> None:
    big = LITTLE_ENDIAN_ROUTE.replace("0001A8C0", "C0A80100").replace("0001F40A", "0AF40100") \
        .replace("0101A8C0", "C0A80101").replace("00FFFFFF", "FFFFFF00")
    little = json.loads(addresses_from_proc(fib_trie=FIB_TRIE, route=LITTLE_ENDIAN_ROUTE, if_inet6=None, links=LINKS))
    assert json.loads(addresses_from_proc(fib_trie=FIB_TRIE, route=big, if_inet6=None, links=LINKS)) == little


def test_without_kube_ipvs0_an_unrouted_address_has_no_interface() -> None:
    links = "\n".join(line for line in LINKS.splitlines() if "kube-ipvs0" not in line)
    doc = json.loads(addresses_from_proc(fib_trie=FIB_TRIE, route=LITTLE_ENDIAN_ROUTE, if_inet6=None, links=links))
    assert _by_name(doc)[""] == [("10.96.0.10", 32, "global")]
