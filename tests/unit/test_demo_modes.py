"""The demo cluster answers the same in all three proxy modes: same frontends, same verdicts, same endpoint shares.

The three node folders (svctrace/demo/tutorial, tutorial-ipvs, tutorial-nftables) were each written the way
that mode's kube-proxy programs the same API objects, so `svctrace svc` must tell one story for every Service.

One legitimate difference: in IPVS mode kube-proxy makes a NodePort virtual server on every address of the
node (here ens33's 192.168.1.63 and Calico's tunl0 10.244.123.128), while iptables mode matches any local
address with one rule (shown at the Node's InternalIP) and nftables mode matches its nodeport-ips set, which
holds the Node's primary IP (nodePortAddresses' nftables-mode default). IPVS's extra NodePort frontends must
lead to the same endpoints with the same shares.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from svctrace.cli.app import app
from svctrace.collectors.snapshot_dir import load_snapshot

MODES = {"demo": "iptables", "demo:ipvs": "ipvs", "demo:nftables": "nftables"}
SERVICES = [(s.namespace, s.name) for s in load_snapshot("demo").services]
Key = tuple[str, str, int, str, str]  # (type, ip, port, protocol, verdict)


def answer(spec: str, namespace: str, name: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["svc", name, "-n", namespace, "--from", spec, "-o", "json"])
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output)
    return doc


def shares(frontend: dict[str, Any]) -> dict[tuple[str, int], float]:
    """Each DNAT endpoint's share of the frontend's new connections (the product of the shares on its path)."""
    out: dict[tuple[str, int], float] = {}

    def walk(hop: dict[str, Any], share: float) -> None:
        share *= hop["share"] if hop["share"] is not None else 1.0
        if hop["verdict"] == "DNAT" and hop["endpoint"] is not None:
            key = (hop["endpoint"]["ip"], hop["endpoint"]["port"])
            out[key] = out.get(key, 0.0) + share
        for child in hop["hops"]:
            walk(child, share)

    for hop in frontend["hops"]:
        walk(hop, 1.0)
    return {k: round(v, 6) for k, v in out.items()}


def frontends(doc: dict[str, Any]) -> dict[Key, dict[tuple[str, int], float]]:
    return {(f["type"], f["ip"], f["port"], f["protocol"], f["verdict"]): shares(f) for f in doc["frontends"]}


@pytest.mark.parametrize(("namespace", "name"), SERVICES, ids=[f"{ns}/{n}" for ns, n in SERVICES])
def test_every_mode_tells_the_same_story(namespace: str, name: str) -> None:
    docs = {spec: answer(spec, namespace, name) for spec in MODES}
    assert {spec: d["mode"] for spec, d in docs.items()} == MODES
    ipt, ipvs, nft = (frontends(docs[s]) for s in MODES)
    assert nft == ipt
    assert {k: v for k, v in ipvs.items() if k in ipt} == ipt
    node_addresses = {a.address for a in load_snapshot("demo:ipvs").node.addresses or ()}
    for key, split in ipvs.items():
        if key in ipt:
            continue
        # Only NodePorts on the node's other addresses, each split like the NodePort iptables mode shows.
        assert key[0] == "NodePort" and key[1] in node_addresses, key
        same = [v for k, v in ipt.items() if k[0] == "NodePort" and k[2:] == key[2:]]
        assert same == [split], key
    for doc in docs.values():
        assert not doc["warnings"] and not doc["missing"] and not doc["staleChains"]


def test_the_comparison_sees_endpoints() -> None:
    """Guard against comparing empty answers: the NodePort Service splits evenly over its two pods."""
    fes = frontends(answer("demo:nftables", "default", "my-nginx-nodeport"))
    even = {("10.244.121.23", 80): 0.5, ("10.244.102.90", 80): 0.5}
    assert fes == {("ClusterIP", "10.104.251.190", 80, "TCP", "forwarded"): even,
                   ("NodePort", "192.168.1.63", 30380, "TCP", "forwarded"): even}
    ipvs = frontends(answer("demo:ipvs", "default", "my-nginx-nodeport"))
    assert ("NodePort", "10.244.123.128", 30380, "TCP", "forwarded") in ipvs


def test_nftables_demo_node_files() -> None:
    snap = load_snapshot("demo:nftables")
    assert snap.node.proxy_mode == "nftables" and snap.node.name == "xianchaomaster1"
    assert snap.nft is not None and snap.ipvs is None
    table = snap.nft.kube_proxy(4)
    assert table is not None and snap.nft.kube_proxy(6) is not None
    assert [e.text for e in table.sets["nodeport-ips"].elements] == ["192.168.1.63"]
    # A node in nftables mode keeps kubelet's iptables chains but none of kube-proxy's.
    assert snap.iptables is not None
    chains = {c for t in snap.iptables.tables.values() for c in t.chains}
    assert "KUBE-FIREWALL" in chains and not any(c.startswith(("KUBE-SVC-", "KUBE-SEP-", "KUBE-SERVICES"))
                                                 for c in chains)


def test_ruleset_fixture_is_what_the_generator_writes() -> None:
    """The committed transaction is the generator's current output (regenerate it with the demo files)."""
    from tests.fixtures.demo_build.gen_demo_nftables import TRANSACTION, transaction

    assert transaction() == TRANSACTION.read_text()
