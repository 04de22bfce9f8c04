"""The IPVS-mode resolver: the demo cluster in IPVS mode against iptables mode, and hand-made edge cases."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.model import graph as g
from svctrace.model.graph import Frontend, Hop
from svctrace.model.k8s import Service
from svctrace.model.snapshot import Snapshot
from svctrace.parsers.ipvs import parse_ipset_save, parse_ipvsadm_save
from svctrace.resolver import iptables as ipt_resolver
from svctrace.resolver import ipvs as ipvs_resolver
from svctrace.resolver.common import family_of

DEMO = Path(__file__).resolve().parents[2] / "svctrace" / "demo"


@pytest.fixture(scope="module")
def demo_ipvs(tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    """The demo's shared api/ with tutorial-ipvs/node/ (the snapshot `svctrace demo --mode ipvs` would load)."""
    root = tmp_path_factory.mktemp("ipvs") / "snap"
    shutil.copytree(DEMO / "tutorial" / "api", root / "api")
    shutil.copytree(DEMO / "tutorial-ipvs" / "node", root / "node")
    return load_snapshot(root)


@pytest.fixture(scope="module")
def demo_iptables() -> Snapshot:
    return load_snapshot("demo")


def _leaves(hop: Hop) -> list[Hop]:
    return [hop] if not hop.children else [leaf for c in hop.children for leaf in _leaves(c)]


def _shares(fe: Frontend) -> dict[str, float]:
    return {leaf.endpoint.address: round(leaf.share or 0, 4) for hop in fe.hops for leaf in _leaves(hop)
            if leaf.endpoint is not None}


def _resolve(snap: Snapshot, svc: Service, mode: str) -> list[Frontend]:
    out: list[Frontend] = []
    for sp in svc.ports:
        for family in sorted({family_of(ip) for ip in svc.virtual_ips}):
            if mode == "ipvs":
                assert snap.ipvs is not None
                fronts, _, _ = ipvs_resolver.resolve_port(snap, svc, sp, family, snap.ipvs, snap.ipsets,
                                                          snap.dump(family))
            else:
                dump = snap.dump(family)
                assert dump is not None
                fronts, _, _ = ipt_resolver.resolve_port(snap, svc, sp, family, dump)
            out += fronts
    return out


def test_demo_loads_in_ipvs_mode(demo_ipvs: Snapshot) -> None:
    assert demo_ipvs.node.proxy_mode == "ipvs"
    assert demo_ipvs.ipvs is not None and demo_ipvs.ipsets is not None
    assert not [w for w in demo_ipvs.warnings if "does not read" in w]


def test_every_demo_service_has_the_same_endpoints_and_shares_in_both_modes(
        demo_ipvs: Snapshot, demo_iptables: Snapshot) -> None:
    compared = 0
    for svc in demo_iptables.services:
        if svc.is_headless or svc.is_external_name:
            continue
        ipt = {(f.type, f.port, f.protocol): (f.verdict, _shares(f)) for f in _resolve(demo_iptables, svc, "iptables")}
        vs_fronts = _resolve(demo_ipvs, svc, "ipvs")
        assert vs_fronts, svc.ref
        for fe in vs_fronts:
            assert (fe.verdict, _shares(fe)) == ipt[(fe.type, fe.port, fe.protocol)], (svc.ref, fe.address)
            compared += 1
    assert compared == 10  # 7 ClusterIPs + 1 for the other ports of kube-dns + 2 NodePort addresses


def test_cluster_ip_hops_name_the_virtual_and_real_servers(demo_ipvs: Snapshot) -> None:
    svc = demo_ipvs.service("kube-system", "kube-dns")
    assert svc is not None
    fe = next(f for f in _resolve(demo_ipvs, svc, "ipvs") if f.protocol == "UDP")
    (vs,) = fe.hops
    assert (vs.kind, vs.name, vs.table, vs.affinity) == ("virtual-server", "UDP 10.96.0.10:53 rr", "ipvs", None)
    assert vs.masquerade == "source not in 10.244.0.0/16"
    assert [r.chain for r in vs.rules] == ["UDP 10.96.0.10:53 rr", "KUBE-SERVICES"]
    assert [c.kind for c in vs.children] == ["real-server", "real-server"]
    assert all(c.endpoint is not None and c.endpoint.in_api and c.endpoint.in_dataplane for c in vs.children)
    # Both CoreDNS pods run on this node, so kube-proxy lists them in KUBE-LOOP-BACK for hairpin SNAT.
    assert all((c.masquerade or "").startswith("hairpin") for c in vs.children)


def test_nodeport_masquerades_and_has_a_frontend_per_node_address(demo_ipvs: Snapshot) -> None:
    svc = demo_ipvs.service("default", "my-nginx-nodeport")
    assert svc is not None
    nodeports = [f for f in _resolve(demo_ipvs, svc, "ipvs") if f.type == "NodePort"]
    assert [f.ip for f in nodeports] == ["192.168.1.63", "10.244.123.128"]
    assert all(f.verdict == g.FORWARDED and f.hops[0].masquerade == "always" for f in nodeports)
    assert nodeports[0].hops[0].rules[1].chain == "KUBE-NODE-PORT"



def _with(snap: Snapshot, ipvsadm: str, ipset: str | None = None) -> Snapshot:
    return replace(snap, ipvs=parse_ipvsadm_save(ipvsadm, "ipvsadm.txt"),
                   ipsets=parse_ipset_save(ipset, "ipset.txt") if ipset is not None else snap.ipsets)


def _one(snap: Snapshot, ns: str, name: str) -> Frontend:
    svc = snap.service(ns, name)
    assert svc is not None
    (fe,) = _resolve(snap, svc, "ipvs")
    return fe


def test_weight_zero_is_draining_and_other_schedulers_say_so(demo_ipvs: Snapshot) -> None:
    snap = _with(demo_ipvs, "-A -t 10.99.198.177:80 -s lc -p 10800\n"
                            "-a -t 10.99.198.177:80 -r 10.244.187.102:80 -m -w 1\n"
                            "-a -t 10.99.198.177:80 -r 10.244.209.149:80 -m -w 0\n")
    fe = _one(snap, "default", "my-nginx")
    assert fe.verdict == g.FORWARDED
    (vs,) = fe.hops
    assert vs.affinity == "ClientIP, 10800s" and vs.name == "TCP 10.99.198.177:80 lc"
    live, draining = vs.children
    assert live.share == 1.0 and "depends on the scheduler" in live.explain
    assert draining.share == 0.0 and draining.verdict is None and "draining" in draining.explain
    assert "draining (weight 0): no new connections" in draining.notes


def test_drift_both_ways(demo_ipvs: Snapshot) -> None:
    snap = _with(demo_ipvs, "-A -t 10.99.198.177:80 -s rr\n"
                            "-a -t 10.99.198.177:80 -r 10.244.187.102:80 -m -w 1\n"
                            "-a -t 10.99.198.177:80 -r 10.244.99.99:80 -m -w 1\n")
    fe = _one(snap, "default", "my-nginx")
    stale = next(c for c in fe.hops[0].children if c.name == "10.244.99.99:80")
    assert stale.endpoint is not None and not stale.endpoint.in_api and stale.endpoint.in_dataplane
    assert any("no EndpointSlice lists" in n for n in stale.notes)
    assert any(n.startswith("endpoint 10.244.209.149:80 is ready in the API but IPVS has no real server")
               for n in fe.notes)


def test_missing_virtual_server_is_not_programmed(demo_ipvs: Snapshot) -> None:
    fe = _one(_with(demo_ipvs, "-A -t 10.96.0.1:443 -s rr\n"), "default", "my-nginx")
    assert fe.verdict == g.NOT_PROGRAMMED and fe.hops == ()
    assert any("no IPVS virtual server TCP 10.99.198.177:80" in n for n in fe.notes)


def test_virtual_server_without_real_servers_fails_connections(demo_ipvs: Snapshot) -> None:
    fe = _one(_with(demo_ipvs, "-A -t 10.99.198.177:80 -s rr\n"), "default", "my-nginx")
    assert fe.verdict == g.REJECTED
    assert "connection fails" in fe.hops[0].explain and fe.hops[0].verdict == "REJECT"


def test_missing_cluster_ip_set_member_is_rejected_by_ipvs_filter(demo_ipvs: Snapshot) -> None:
    assert demo_ipvs.ipsets is not None
    text = "".join(f"create {s.name} {s.type} {' '.join(s.options)}\n"
                   + "".join(f"add {s.name} {m}\n" for m in s.members if m != "10.99.198.177,tcp:80")
                   for s in demo_ipvs.ipsets.sets)
    snap = _with(demo_ipvs, "-A -t 10.99.198.177:80 -s rr\n-a -t 10.99.198.177:80 -r 10.244.187.102:80 -m -w 1\n",
                 text)
    fe = _one(snap, "default", "my-nginx")
    assert fe.verdict == g.REJECTED
    (hop,) = fe.hops
    assert (hop.kind, hop.table, hop.rules[0].chain) == ("verdict", "filter", "KUBE-IPVS-FILTER")
    assert any("ipset KUBE-CLUSTER-IP lacks 10.99.198.177,tcp:80" in n for n in fe.notes)


def test_ipv6_virtual_server(demo_ipvs: Snapshot) -> None:
    base = demo_ipvs.service("default", "my-nginx")
    assert base is not None
    svc = replace(base, cluster_ips=("fd00:10:96::5",), ip_families=("IPv6",))
    snap = _with(replace(demo_ipvs, services=(svc,), endpoint_slices=()),
                 "-A -t [fd00:10:96::5]:80 -s rr\n-a -t [fd00:10:96::5]:80 -r [fd00:10:244::7]:80 -m -w 1\n",
                 "create KUBE-6-CLUSTER-IP hash:ip,port family inet6\nadd KUBE-6-CLUSTER-IP fd00:10:96::5,tcp:80\n")
    (fe,) = _resolve(snap, svc, "ipvs")
    assert fe.address == "[fd00:10:96::5]:80/TCP" and fe.verdict == g.FORWARDED
    (rs,) = fe.hops[0].children
    assert rs.name == "[fd00:10:244::7]:80" and rs.share == 1.0
    assert rs.endpoint is not None and not rs.endpoint.in_api
    assert not [n for n in fe.notes if "ipset" in n]  # the member is found in the KUBE-6- set
