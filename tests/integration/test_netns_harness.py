"""The netns harness does what later dataplane tests rely on: real traffic, clear failures, no leftovers."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration import netns
from tests.integration.netns import NetnsError, NetnsNode, connect_tcp, probe_tcp, probe_udp, send_udp

RULE_DNAT_80_TO_POD = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A OUTPUT -d 10.96.0.50/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.244.1.5:8080
COMMIT
"""


def _existing_namespaces() -> set[str]:
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split())


@pytest.mark.netns
def test_pod_answers_with_its_name_and_sees_the_source(netns_node: NetnsNode) -> None:
    netns_node.add_pod("web-1", "10.244.1.5", tcp_ports=(80,), udp_ports=(53,))
    tcp = probe_tcp(netns_node, "10.244.1.5", 80, count=3)
    assert [(p.answer, p.error, p.seen_from) for p in tcp] == [("web-1", None, "192.168.1.63")] * 3
    assert send_udp(netns_node, "10.244.1.5", 53) == "web-1"


@pytest.mark.netns
def test_failures_carry_a_reason_within_the_timeout(netns_node: NetnsNode) -> None:
    netns_node.add_pod("web-1", "10.244.1.5", tcp_ports=(80,))
    assert probe_tcp(netns_node, "10.244.1.5", 81)[0].error == "refused"
    assert probe_udp(netns_node, "10.244.1.5", 54)[0].error == "refused"  # ICMP port unreachable
    # No such pod: the node routes 10.99.0.0/16 to its (absent) gateway, so nobody ever answers.
    assert probe_tcp(netns_node, "10.99.1.1", 80, timeout=0.5)[0] == netns.Probe(None, "timeout")
    # The external client only knows its own subnet: pod addresses are not routed to it.
    assert connect_tcp(netns_node.client, "10.244.1.5", 80) is None


@pytest.mark.netns
@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_loaded_rules_steer_real_traffic(netns_factory: Callable[..., NetnsNode], backend: str) -> None:
    node = netns_factory(backend=backend)
    node.add_pod("web-1", "10.244.1.5", tcp_ports=(8080,))
    assert connect_tcp(node, "10.96.0.50", 80, timeout=0.5) is None
    node.load_rules(RULE_DNAT_80_TO_POD)
    assert connect_tcp(node, "10.96.0.50", 80) == "web-1"
    assert "--to-destination 10.244.1.5:8080" in node.save_rules()


@pytest.mark.netns
def test_nfacct_counters_are_created_before_restore(netns_node: NetnsNode) -> None:
    rules = """*filter
:KUBE-FORWARD - [0:0]
-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP
COMMIT
"""
    netns_node.load_rules(rules)
    assert "ct_state_invalid_dropped_pkts" in netns_node.run("nfacct", "list").stdout
    netns_node.load_rules(rules)  # counters that already exist are reused, not an error


@pytest.mark.netns
def test_bad_rules_fail_with_the_tools_message(netns_node: NetnsNode) -> None:
    with pytest.raises(NetnsError, match="iptables-nft-restore"):
        netns_node.load_rules("*nat\n-A NO-SUCH-CHAIN -j ACCEPT\nCOMMIT\n")


@pytest.mark.netns
def test_everything_is_removed_even_when_the_test_fails() -> None:
    netns.require_netns()
    node = NetnsNode()
    with pytest.raises(RuntimeError, match="boom"), node:
        pod = node.add_pod("web-1", "10.244.1.5")
        server = node._procs[0]
        created = list(node.namespaces)
        assert {node.name, node.client.name, pod.name} <= _existing_namespaces()
        raise RuntimeError("boom")
    assert server.poll() is not None, "the pod's echo server is still running"
    assert not set(created) & _existing_namespaces()
    assert all(ns.startswith(netns.PREFIX) for ns in created)
    assert node not in netns._LIVE
    node.close()  # a second close is harmless


@pytest.mark.netns
def test_a_failed_setup_cleans_up_what_it_made() -> None:
    netns.require_netns()
    node = NetnsNode(node_ip="not-an-address")
    with pytest.raises(NetnsError, match="not-an-address"):
        node.open()
    assert node.namespaces and not set(node.namespaces) & _existing_namespaces()


def test_require_netns_skips_unless_ci_requires_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv(netns.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="need root"):
        netns.require_netns()
    monkeypatch.setenv(netns.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="need root.*SVCTRACE_REQUIRE_NETNS=1"):
        netns.require_netns()


def test_require_netns_names_missing_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "nfacct" else f"/usr/sbin/{tool}")
    assert netns.netns_unavailable_reason("legacy", need=("nfacct",)) == \
        "missing tools for network-namespace tests: nfacct"
    assert netns.netns_unavailable_reason("nft") is None
    assert "unknown iptables backend" in str(netns.netns_unavailable_reason("xdp"))


def test_nfacct_counters_are_found_in_a_dump() -> None:
    dump = Path(__file__).resolve().parents[2] / "svctrace" / "demo" / "tutorial" / "node" / "iptables-save.txt"
    assert netns.nfacct_counters(dump.read_text()) == ["ct_state_invalid_dropped_pkts",
                                                       "localhost_nps_accepted_pkts"]
