"""The dataplane and node checks of why-unreachable, from snapshots (no root, no network)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.diagnosis.checks import dataplane as dataplane_checks
from svctrace.diagnosis.checks import node as node_checks
from svctrace.diagnosis.diagnose import diagnose
from svctrace.diagnosis.findings import ERROR, INFO, WARNING, Finding
from svctrace.diagnosis.registry import CATALOG, Client
from svctrace.errors import InputError
from svctrace.model.conntrack import ConntrackEntry
from svctrace.model.snapshot import HostAddress, Snapshot
from svctrace.parsers import iptables_save
from svctrace.parsers.conntrack import parse_conntrack
from svctrace.parsers.node import parse_meta_json

OVERALL = Path(__file__).resolve().parents[1] / "fixtures" / "overall"
RULES = (OVERALL / "node" / "iptables-save.txt").read_text()
FWD = "net.ipv4.ip_forward"
BRIDGE = "net.bridge.bridge-nf-call-iptables"
MINE = ("dataplane-missing-service", "nodeport-not-programmed", "source-range-blocks-client",
        "dataplane-stale-endpoints", "stale-udp-conntrack", "iptables-backend-split", "proxy-mode-leftovers",
        "ip-forward-disabled", "bridge-nf-call-iptables-disabled", "route-localnet-disabled")


@pytest.fixture(scope="module")
def overall() -> Snapshot:
    return load_snapshot(OVERALL)


@pytest.fixture(scope="module")
def demo() -> Snapshot:
    return load_snapshot("demo")


def with_rules(snap: Snapshot, text: str) -> Snapshot:
    return replace(snap, iptables=iptables_save.parse(text, source="test", family=4))


def with_sysctls(snap: Snapshot, values: dict[str, str]) -> Snapshot:
    return replace(snap, node=replace(snap.node, sysctls={**snap.node.sysctls, **values}))


def found(snap: Snapshot, target: str, code: str, client: Client | None = None) -> list[Finding]:
    return [f for f in diagnose(snap, target, client=client).findings if f.code == code]


def test_every_code_is_registered_once() -> None:
    assert set(MINE) <= set(CATALOG)
    assert dataplane_checks.cite.__doc__ and node_checks.IP_FORWARD == "net.ipv4.ip_forward"


@pytest.mark.parametrize("svc", ["default/client-svc", "default/kubernetes", "default/my-nginx",
                                 "default/my-nginx-nodeport", "default/mysql", "kube-system/kube-dns",
                                 "nginx-ns/nginx-svc"])
def test_healthy_demo_raises_no_error_or_warning(demo: Snapshot, svc: str) -> None:
    assert demo.service(*svc.split("/")) is not None
    bad = [f for f in diagnose(demo, svc).findings if f.code in MINE and f.severity in (ERROR, WARNING)]
    assert bad == []


def test_every_demo_service_is_covered(demo: Snapshot) -> None:
    assert len(demo.services) == 7


# ---- dataplane-missing-service / nodeport-not-programmed


def test_flushed_service_is_missing(overall: Snapshot) -> None:
    text = "\n".join(line for line in RULES.splitlines() if "172.30.0.41/32" not in line or "KUBE-SVC" not in line
                     or not line.startswith("-A KUBE-SERVICES")) + "\n"
    [f] = found(with_rules(overall, text), "ns1/svc1", "dataplane-missing-service")
    assert f.severity == ERROR and "172.30.0.41:80/TCP" in f.title
    assert any("no rule in nat KUBE-SERVICES" in e and "-d 172.30.0.41/32 -p tcp --dport 80" in e for e in f.evidence)
    assert any("1 ready endpoint(s)" in e and "10.180.0.1:80" in e for e in f.evidence)
    assert f.hops == ("172.30.0.41:80",)
    assert not found(overall, "ns1/svc1", "dataplane-missing-service")


def test_nodeport_not_programmed(overall: Snapshot) -> None:
    text = "\n".join(line for line in RULES.splitlines() if "--dport 3003" not in line) + "\n"
    snap = with_rules(overall, text)
    [f] = found(snap, "ns3/svc3", "nodeport-not-programmed")
    assert f.severity == ERROR and "NodePort 3003" in f.title
    assert any("no rule in nat KUBE-NODEPORTS matches -p tcp --dport 3003" in e for e in f.evidence)
    assert not found(snap, "ns3/svc3", "dataplane-missing-service")  # the ClusterIP is still programmed
    assert not found(overall, "ns3/svc3", "nodeport-not-programmed")


# ---- source-range-blocks-client


def test_client_outside_source_ranges(overall: Snapshot) -> None:
    [f] = found(overall, "5.6.7.8:80", "source-range-blocks-client", Client(src="192.168.0.10", origin="external"))
    assert f.severity == ERROR
    assert "filter KUBE-PROXY-FIREWALL #1: -A KUBE-PROXY-FIREWALL -d 5.6.7.8/32" in "\n".join(f.evidence)
    assert any(e.startswith("nat KUBE-FW-NUKIZ6OKUXPJNT4C #1: ") and "203.0.113.0/25" in e for e in f.evidence)
    assert "trace 192.168.0.10 -> 5.6.7.8:80/TCP: DROP" in f.evidence
    assert '"203.0.113.0/25","192.168.0.10/32"' in f.hint
    assert "KUBE-FW-NUKIZ6OKUXPJNT4C" in f.hops


def test_client_inside_source_ranges_and_unknown_client(overall: Snapshot) -> None:
    assert not found(overall, "5.6.7.8:80", "source-range-blocks-client", Client(src="203.0.113.7", origin="external"))
    [info] = found(overall, "ns5/svc5", "source-range-blocks-client")
    assert info.severity == INFO and "203.0.113.0/25" in info.title


# ---- dataplane-stale-endpoints


def test_rules_point_at_a_gone_pod(overall: Snapshot) -> None:
    snap = with_rules(overall, RULES.replace("--to-destination 10.180.0.1:80", "--to-destination 10.180.0.9:80"))
    [f] = found(snap, "ns1/svc1", "dataplane-stale-endpoints")
    assert f.severity == ERROR  # nothing current behind the rules
    text = "\n".join(f.evidence)
    assert "missing: 10.180.0.1:80 is ready in the API" in text
    assert "extra: 10.180.0.9:80 is in no EndpointSlice of ns1/svc1" in text
    assert "-j DNAT --to-destination 10.180.0.9:80" in text
    assert set(f.hops) == {"10.180.0.9:80", "10.180.0.1:80"}


def test_one_missing_endpoint_among_good_ones_is_a_warning(overall: Snapshot) -> None:
    lines = [line for line in RULES.splitlines() if "-> 10.180.0.5:80" not in line]
    # the remaining rule of the random split becomes unconditional
    text = "\n".join(lines).replace("-m statistic --mode random --probability 0.50000000000 ", "") + "\n"
    [f] = found(with_rules(overall, text), "ns4/svc4", "dataplane-stale-endpoints")
    assert f.severity == WARNING and "1 ready endpoint(s) without rules" in f.title
    assert not found(overall, "ns4/svc4", "dataplane-stale-endpoints")


# ---- stale-udp-conntrack


def _dns_entry(reply_src: str, src: str = "10.244.1.5") -> ConntrackEntry:
    return ConntrackEntry("udp", src, "10.96.0.10", 40053, 53, reply_src, src, 53, 40053, timeout=25)


def test_stale_udp_conntrack(demo: Snapshot) -> None:
    snap = replace(demo, conntrack=(_dns_entry("10.244.123.99"), _dns_entry("10.244.123.129")))
    [f] = found(snap, "kube-system/kube-dns", "stale-udp-conntrack")
    assert f.severity == WARNING and "10.244.123.99" in f.title
    assert "conntrack -D -p udp --orig-dst 10.96.0.10 --reply-src 10.244.123.99" in f.hint
    assert any(e.startswith("conntrack: udp") and "src=10.244.123.99" in e for e in f.evidence)
    [mine] = found(snap, "kube-system/kube-dns", "stale-udp-conntrack", Client(src="10.244.1.5", origin="pod"))
    assert mine.severity == ERROR
    fresh = replace(demo, conntrack=(_dns_entry("10.244.123.129"),))
    assert not found(fresh, "kube-system/kube-dns", "stale-udp-conntrack")
    assert not found(demo, "kube-system/kube-dns", "stale-udp-conntrack")  # not collected: nothing said


def test_conntrack_text_round_trips() -> None:
    entries = (_dns_entry("10.244.123.99"),
               ConntrackEntry("tcp", "10.0.0.1", "10.96.0.1", 5, 443, "192.168.1.63", "10.0.0.1", 6443, 5,
                              timeout=300, state="ESTABLISHED", flags=("ASSURED",), mark=0))
    text = "".join(e.text() + "\n" for e in entries) + "conntrack v1.4.7 (conntrack-tools): 2 flow entries\n"
    got = parse_conntrack(text, "t")
    assert [(e.reply_src, e.dport, e.state, e.flags) for e in got] == [
        ("10.244.123.99", 53, None, ()), ("192.168.1.63", 443, "ESTABLISHED", ("ASSURED",))]
    with pytest.raises(InputError, match="not a `conntrack -L` line"):
        parse_conntrack("udp 17 29 src=1.2.3.4\n", "t")


def test_snapshot_reads_conntrack_and_backend(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(OVERALL, tmp_path / "snap")
    (tmp_path / "snap" / "node" / "conntrack.txt").write_text(_dns_entry("10.1.1.1").text() + "\n")
    (tmp_path / "snap" / "node" / "meta.json").write_text(
        '{"nodeName": "test-node", "proxyMode": "iptables", "iptablesBackend": "both"}')
    snap = load_snapshot(tmp_path / "snap")
    assert snap.conntrack is not None and snap.conntrack[0].reply_src == "10.1.1.1"
    assert snap.node.iptables_backend == "both"
    assert not any("conntrack" in m for m in load_snapshot(OVERALL).missing_words)  # optional file
    assert parse_meta_json('{"iptablesBackend": "weird"}', "m").warnings


# ---- node checks


def test_iptables_backend_split(overall: Snapshot) -> None:
    snap = replace(overall, node=replace(overall.node, iptables_backend="both",
                                         iptables_backend_reason="KUBE-* chains in both backends (3 in legacy)"))
    [f] = found(snap, "ns1/svc1", "iptables-backend-split")
    assert f.severity == ERROR and "3 in legacy" in f.evidence[0]
    assert not found(overall, "ns1/svc1", "iptables-backend-split")


def test_proxy_mode_leftovers(overall: Snapshot) -> None:
    snap = replace(overall, node=replace(overall.node, proxy_mode="nftables"))
    [f] = found(snap, "ns1/svc1", "proxy-mode-leftovers")
    assert f.severity == WARNING and "16 iptables-mode chains in nat, e.g. KUBE-SVC-4SW47YFZTEDKD3PK" in f.evidence[1]
    assert not found(overall, "ns1/svc1", "proxy-mode-leftovers")


def test_ip_forward_disabled(overall: Snapshot) -> None:
    snap = with_sysctls(overall, {FWD: "0"})
    assert "net.ipv4.ip_forward" in snap.node.sysctls
    [f] = found(snap, "ns3/svc3", "ip-forward-disabled")
    assert f.severity == ERROR and f.evidence[0] == "sysctl net.ipv4.ip_forward = 0" and "10.180.0.3:80" in f.hops
    assert not found(snap, "ns3/svc3", "ip-forward-disabled", Client(src="192.168.0.2", origin="node"))
    assert not found(with_sysctls(overall, {FWD: "1"}), "ns3/svc3", "ip-forward-disabled")


def _bridged(snap: Snapshot) -> Snapshot:
    addrs = (*(snap.node.addresses or ()), HostAddress("cni0", "10.244.0.1", 24, 4))
    return replace(snap, node=replace(snap.node, addresses=addrs))


def test_bridge_nf_call_absent_module_with_a_pod_bridge(overall: Snapshot) -> None:
    snap = _bridged(with_sysctls(overall, {FWD: "1"}))
    [f] = found(snap, "ns1/svc1", "bridge-nf-call-iptables-disabled")
    assert f.severity == WARNING and "br_netfilter module is not loaded" in f.evidence[0]
    assert "pod bridge: cni0 10.244.0.1/24" in f.evidence and "modprobe br_netfilter" in f.hint
    # sysctls not collected at all: absence says nothing
    assert not found(_bridged(overall), "ns1/svc1", "bridge-nf-call-iptables-disabled")
    # routed CNI (no bridge), module absent: nothing to say
    assert not found(with_sysctls(overall, {FWD: "1"}), "ns1/svc1", "bridge-nf-call-iptables-disabled")


def test_bridge_nf_call_zero() -> None:
    snap = with_sysctls(load_snapshot(OVERALL), {FWD: "1", BRIDGE: "0"})
    assert snap.node.sysctls["net.bridge.bridge-nf-call-iptables"] == "0"
    [info] = found(snap, "ns1/svc1", "bridge-nf-call-iptables-disabled")
    assert info.severity == INFO
    [f] = found(_bridged(snap), "ns1/svc1", "bridge-nf-call-iptables-disabled", Client(src="10.244.0.5", origin="pod"))
    assert f.severity == ERROR


def test_route_localnet_disabled(overall: Snapshot) -> None:
    snap = with_sysctls(overall, {"net.ipv4.conf.all.route_localnet": "0"})
    [f] = found(snap, "127.0.0.1:3003", "route-localnet-disabled")
    assert f.severity == ERROR
    assert any(e.startswith("nat KUBE-NODEPORTS #3: -A KUBE-NODEPORTS -d 127.0.0.0/8") for e in f.evidence)
    [info] = found(snap, "ns3/svc3", "route-localnet-disabled")
    assert info.severity == INFO
    assert not found(snap, "ns1/svc1", "route-localnet-disabled")  # no NodePort
    assert not found(overall, "127.0.0.1:3003", "route-localnet-disabled")
