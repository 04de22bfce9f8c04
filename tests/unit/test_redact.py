"""Redaction keeps a snapshot's meaning: every Service resolves the same, only names and addresses change."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svctrace.collectors.capture import write_snapshot
from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.kubeproxy import naming
from svctrace.model.graph import Hop, PathGraph
from svctrace.model.snapshot import Snapshot
from svctrace.parsers.k8s import decode_documents
from svctrace.redact import KEPT_NAMES, Redactor, redact_all
from svctrace.resolver import resolve

REPO = Path(__file__).resolve().parents[2]
SNAPSHOTS = {
    "demo": REPO / "svctrace" / "demo" / "tutorial",
    "overall": REPO / "tests" / "fixtures" / "overall",
}
SEED = b"svctrace-test-seed"
_SPECIAL = [ipaddress.ip_network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4",
                                              "240.0.0.0/4", "::/128", "::1/128", "fe80::/10", "ff00::/8")]
_PRIVATE_RANGES = {"10.0.0.0", "172.16.0.0", "192.168.0.0", "100.64.0.0"}
_IPV4_TOKEN = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w.])")


def read_parts(root: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, Any]]:
    """A snapshot folder as write_snapshot's inputs: API documents, node files, meta."""
    api: dict[str, dict[str, Any]] = {}
    for f in sorted((root / "api").iterdir()):
        docs = decode_documents(f.read_text(), str(f), "json" if f.suffix == ".json" else "yaml")
        api[f.stem] = {"apiVersion": "v1", "kind": "List", "items": [dict(d) for d in docs]}
    node = {f.name: f.read_text() for f in sorted((root / "node").iterdir()) if f.name != "meta.json"}
    meta = json.loads((root / "node" / "meta.json").read_text())
    return api, node, meta


def redacted_copy(root: Path, dest: Path) -> tuple[Redactor, Path]:
    redactor = Redactor(SEED)
    api, node, meta = redact_all(redactor, *read_parts(root))
    return redactor, write_snapshot(dest, api_documents=api, node_files=node, meta=meta)


def _same(text: str) -> str:
    return text


def hop_shape(hop: Hop, m: Callable[[str], str]) -> tuple[Any, ...]:
    ep = hop.endpoint
    return (hop.kind, m(hop.name), hop.table, hop.share, hop.probability, hop.masquerade is not None,
            hop.verdict, None if ep is None else (m(ep.ip), ep.port, ep.ready, ep.local, ep.in_dataplane),
            tuple(hop_shape(c, m) for c in hop.children))


def graph_shape(graph: PathGraph, m: Callable[[str], str] = _same,
                port: Callable[[str], str] = _same) -> tuple[Any, ...]:
    """What must survive redaction; ``m`` maps the original's names and addresses (Redactor.text), ``port``
    its port names."""
    fronts = tuple((f.type, f.ip if f.ip == "*" else m(f.ip), f.port, f.protocol,
                    port(f.port_name) if f.port_name else f.port_name, f.verdict,
                    tuple(hop_shape(h, m) for h in f.hops)) for f in graph.frontends)
    eps = sorted((m(e.ip), e.port, e.protocol, e.ready, e.local, e.in_api, e.in_dataplane) for e in graph.endpoints)
    return graph.mode, fronts, tuple(eps), len(graph.stale_chains), graph.service.type


def original_names(snap: Snapshot) -> set[str]:
    names: set[str] = {snap.node.name or ""}
    for group in (snap.services, snap.endpoint_slices, snap.pods, snap.network_policies):
        for obj in group:
            names |= {obj.namespace, obj.name}
    names |= {n.name for n in snap.nodes}
    return {n for n in names if n and n not in KEPT_NAMES}


def all_text(root: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(root.rglob("*")) if p.is_file())


@pytest.mark.parametrize("which", sorted(SNAPSHOTS))
def test_every_service_resolves_the_same_after_redaction(which: str, tmp_path: Path) -> None:
    root = SNAPSHOTS[which]
    r, out = redacted_copy(root, tmp_path / "redacted")
    before, after = load_snapshot(root), load_snapshot(out)
    assert len(before.services) == len(after.services) > 0
    checked_forwarded = 0
    for svc in before.services:
        g1 = resolve(before, svc.namespace, svc.name)
        g2 = resolve(after, r.name(svc.namespace), r.name(svc.name))
        assert graph_shape(g2) == graph_shape(g1, r.text, r.port_name), f"{svc.namespace}/{svc.name}"
        checked_forwarded += sum(f.verdict == "forwarded" for f in g1.frontends)
    assert checked_forwarded > 0  # the comparison covered real DNAT paths, not only empty graphs
    assert after.node.name == r.name(before.node.name or "")


@pytest.mark.parametrize("which", sorted(SNAPSHOTS))
def test_no_original_name_or_address_is_left(which: str, tmp_path: Path) -> None:
    root = SNAPSHOTS[which]
    _, out = redacted_copy(root, tmp_path / "redacted")
    text = all_text(out)
    for name in original_names(load_snapshot(root)):
        assert not re.search(rf"(?<![A-Za-z0-9-]){re.escape(name)}(?![A-Za-z0-9-])", text), name
    # The private ranges themselves (10.0.0.0/8) keep their place by design: they name no one.
    originals = {ip for ip in _IPV4_TOKEN.findall(all_text(root))
                 if not any(ipaddress.ip_address(ip) in n for n in _SPECIAL) and ip not in _PRIVATE_RANGES}
    assert originals  # the fixture has addresses to hide
    leaked = originals & set(_IPV4_TOKEN.findall(text))
    assert not leaked


def test_demo_redaction_keeps_chain_hashes_consistent(tmp_path: Path) -> None:
    r, out = redacted_copy(SNAPSHOTS["demo"], tmp_path / "redacted")
    after = load_snapshot(out)
    assert after.iptables is not None
    nat = after.iptables.table("nat")
    assert nat is not None
    chains = set(nat.chains)
    # Every Service port's chain carries the hash of its redacted name, so the resolver finds it.
    for svc in after.services:
        for p in svc.ports:
            chain = naming.ipt_service_chain(naming.service_port_name(svc.namespace, svc.name, p.name), p.protocol)
            if svc.cluster_ips:
                assert chain in chains, (svc.namespace, svc.name, p.name)
    # kube-dns keeps its names, so its KUBE-SVC chain keeps its hash; its endpoints' addresses changed.
    assert "KUBE-SVC-TCOU7JCQXEZGVUNU" in chains
    assert "KUBE-SEP-NYXGMYDKNYMGGSM5" not in chains


def test_special_addresses_masks_marks_and_probabilities_are_untouched() -> None:
    r = Redactor(SEED)
    line = ('-A KUBE-SVC-X ! -s 10.244.0.0/16 -d 127.0.0.1/32 -m statistic --mode random --probability 0.50000000000 '
            '-m mark --mark 0x4000/0x4000 -m recent --mask 255.255.255.255 -d 169.254.169.254 -s 0.0.0.0/0 '
            '# v1.8.9 on 09:31:07\n')
    out = r.text(line)
    for kept in ("127.0.0.1/32", "0.50000000000", "0x4000/0x4000", "--mask 255.255.255.255", "169.254.169.254",
                 "0.0.0.0/0", "v1.8.9", "09:31:07"):
        assert kept in out
    assert "10.244.0.0/16" not in out and re.search(r"! -s 10\.\d+\.0\.0/16 ", out)
    for v6 in ("::", "::1", "fe80::1", "ff02::1"):
        assert r.address(v6) == v6
    assert r.address("fd00:10:96::a") != "fd00:10:96::a"
    assert r.text("--to-destination [fd00:10:244::5]:8080") == f"--to-destination [{r.address('fd00:10:244::5')}]:8080"


def test_a_cidr_maps_to_a_network_that_holds_the_mapped_addresses() -> None:
    r = Redactor(SEED)
    net = ipaddress.ip_network(r.address("10.244.0.0/16"))
    assert net.prefixlen == 16 and net.network_address.packed[0] == 10  # private stays private
    assert ipaddress.ip_address(r.address("10.244.187.103")) in net
    assert r.address("10.244.187.103/32") == r.address("10.244.187.103") + "/32"
    # A host address with its prefix (as ip addr prints it) stays the same host.
    assert r.address("192.168.1.63/24") == r.address("192.168.1.63") + "/24"


def test_names_map_to_one_stable_token_and_well_known_names_stay() -> None:
    r = Redactor(SEED)
    assert r.name("shop", "Namespace") == "ns-1"
    assert r.name("web", "Service") == "svc-1"
    assert r.name("shop", "Service") == "ns-1"  # one table: the same original, the same token
    for kept in ("default", "kube-system", "kubernetes", "kube-dns", "coredns"):
        assert r.name(kept, "Service") == kept
    assert r.dns_name("web.shop.svc.cluster.local") == "svc-1.ns-1.svc.cluster.local"
    assert r.mapping()["web"] == "svc-1"


def test_the_same_seed_gives_the_same_redaction_and_another_seed_another() -> None:
    assert Redactor(b"a").address("10.1.2.3") == Redactor(b"a").address("10.1.2.3")
    samples = [f"10.{i}.{j}.7" for i in range(4) for j in range(4)]
    assert [Redactor(b"a").address(s) for s in samples] != [Redactor(b"b").address(s) for s in samples]
    assert Redactor().address("10.1.2.3") != "10.1.2.3" or Redactor().address("10.1.2.4") != "10.1.2.4"


def test_api_documents_drop_leaks_and_unread_kinds() -> None:
    r = Redactor(SEED)
    pod: dict[str, Any] = {"kind": "Pod", "apiVersion": "v1",
           "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"},
                        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                        "managedFields": [{}],
                        "ownerReferences": [{"kind": "ReplicaSet", "name": "web-rs", "uid": "u-2"}]},
           "spec": {"nodeName": "worker-1", "containers": [{"name": "app", "image": "registry.corp/web:1",
                                                            "env": [{"name": "PASSWORD", "value": "x"}],
                                                            "ports": [{"containerPort": 80, "name": "http"}]}]},
           "status": {"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}], "hostIP": "192.168.1.10"}}
    docs = {"objects": {"apiVersion": "v1", "kind": "List", "items": [
        pod, {"kind": "Secret", "metadata": {"name": "s", "namespace": "shop"}, "data": {"k": "c2VjcmV0"}},
        {"kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}},
        {"kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": "shop"}, "data": {"x": "y"}},
    ]}}
    out: dict[str, Any] = r.api_documents(docs)
    text = json.dumps(out)
    items = out["objects"]["items"]
    assert [i["kind"] for i in items] == ["Pod"]
    for leak in ("last-applied", "managedFields", "registry.corp", "PASSWORD", "c2VjcmV0", "web-1", "worker-1",
                 "10.244.1.5", "192.168.1.10", "shop", "u-1", "web-rs", "app-config"):
        assert leak not in text, leak
    p = items[0]
    assert p["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "name": "http"}]  # a generic port name
    assert p["status"]["podIPs"][0]["ip"] == p["status"]["podIP"] == r.address("10.244.1.5")
    assert p["metadata"]["labels"] == {"app": r.name("web")}
    assert pod["metadata"]["name"] == "web-1"  # the input is not modified


def test_meta_redacts_node_name_and_server_url() -> None:
    r = Redactor(SEED)
    meta = r.meta({"nodeName": "worker-1", "proxyMode": "iptables", "sysctls": {"net.ipv4.ip_forward": "1"},
                   "server": "https://10.0.0.1:6443", "capturedAt": "2025-05-13T09:31:07Z"})
    assert meta["nodeName"] == r.name("worker-1") and meta["nodeName"].startswith("node-")
    assert meta["server"] == f"https://{r.address('10.0.0.1')}:6443"
    assert meta["proxyMode"] == "iptables" and meta["sysctls"] == {"net.ipv4.ip_forward": "1"}
    assert meta["capturedAt"] == "2025-05-13T09:31:07Z"


def test_nft_chain_names_are_recomputed_from_redacted_names() -> None:
    r = Redactor(SEED)
    svc = naming.nft_service_chain("shop", "web", "tcp", "http")
    ep = naming.nft_endpoint_chain("shop", "web", "tcp", "http", "10.244.1.5", 8080)
    ruleset = {"nftables": [
        {"chain": {"family": "ip", "table": "kube-proxy", "name": svc}},
        {"rule": {"chain": svc, "comment": "shop/web:http cluster IP", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}},
            {"goto": {"target": ep}}]}},
    ]}
    out = json.loads(r.node_text("nft.json", json.dumps(ruleset)))
    new_svc = naming.nft_service_chain(r.name("shop"), r.name("web"), "tcp", "http")
    new_ep = naming.nft_endpoint_chain(r.name("shop"), r.name("web"), "tcp", "http", r.address("10.244.1.5"), 8080)
    rule = out["nftables"][1]["rule"]
    assert out["nftables"][0]["chain"]["name"] == new_svc == rule["chain"]
    assert rule["expr"][1]["goto"]["target"] == new_ep
    assert rule["comment"] == f"{r.name('shop')}/{r.name('web')}:http cluster IP"
    prefix = rule["expr"][0]["match"]["right"]["prefix"]
    assert f"{prefix['addr']}/16" == r.address("10.244.0.0/16")


def test_ip_addr_json_addresses_and_macs_are_redacted() -> None:
    r = Redactor(SEED)
    links = [{"ifname": "eth0", "address": "00:0c:29:87:60:d5", "broadcast": "ff:ff:ff:ff:ff:ff",
              "addr_info": [{"family": "inet", "local": "192.168.1.63", "prefixlen": 24, "broadcast": "192.168.1.255"},
                            {"family": "inet6", "local": "fe80::20c:29ff:fe87:60d5", "prefixlen": 64}]}]
    out = json.loads(r.node_text("ip-addr.json", json.dumps(links)))
    assert out[0]["address"] != "00:0c:29:87:60:d5" and out[0]["broadcast"] == "ff:ff:ff:ff:ff:ff"
    info = out[0]["addr_info"]
    assert info[0]["local"] == r.address("192.168.1.63") != "192.168.1.63"
    # The broadcast address stays inside the redacted /24, as the original did.
    net = ipaddress.ip_network(f"{info[0]['local']}/24", strict=False)
    assert ipaddress.ip_address(info[0]["broadcast"]) in net
    assert info[1]["local"] == "fe80::20c:29ff:fe87:60d5"


_v4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
_v6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.tuples(_v4, _v4, st.integers(0, 32)), st.tuples(_v6, _v6, st.integers(0, 128))))
def test_prefix_preservation_keeps_cidr_containment(case: tuple[Any, Any, int]) -> None:
    addr, base, length = case
    net = ipaddress.ip_network(f"{base}/{length}", strict=False)
    r = Redactor(SEED)
    mapped_net = ipaddress.ip_network(r.address(str(net)))
    mapped_addr = ipaddress.ip_address(r.address(str(addr)))
    assert mapped_net.prefixlen == length
    assert (addr in net) == (mapped_addr in mapped_net)
    # An address inside the network, by construction, stays inside.
    inside = type(addr)(int(net.network_address) | (int(addr) & int(net.hostmask)))
    assert ipaddress.ip_address(r.address(str(inside))) in mapped_net


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(_v4, _v6), min_size=2, max_size=60, unique=True))
def test_mapping_is_injective(addrs: list[Any]) -> None:
    r = Redactor(SEED)
    mapped = [ipaddress.ip_address(r.address(str(a))) for a in addrs]
    assert len(set(mapped)) == len(addrs)
    assert all(m.version == a.version for m, a in zip(mapped, addrs, strict=True))
