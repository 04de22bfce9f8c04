"""The nftables demo is a real ruleset, and svctrace reads nftables (and IPVS, where absent) live.

The demo's kube-proxy transaction (tests/fixtures/demo_build/demo-nftables.nft, what
gen_demo_nftables.py turned into svctrace/demo/tutorial-nftables/node/nft.json) is loaded with `nft -f`
into a throw-away node namespace; real connections reach the pods the demo names. Then collect_node reads it
back with `nft -j list ruleset`, `svctrace svc` live against the fake apiserver says nftables mode and
matches `--from` a capture of the same node, and on this kernel (no IPVS) a node that looks like IPVS mode
gets a warning, not a traceback.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from svctrace.cli.app import app
from svctrace.collectors.node import collect_node
from svctrace.collectors.spawn import start_node
from svctrace.demo import demo_path
from svctrace.model.nft import NftRuleset
from svctrace.model.snapshot import NodeFile
from svctrace.parsers.nft_json import parse_nft_json
from svctrace.parsers.snapshot import build_snapshot
from tests.harness.apiserver import FakeApiServer
from tests.integration.netns import NetnsNode, probe_tcp

pytestmark = pytest.mark.netns

RULESET = Path(__file__).resolve().parents[1] / "fixtures" / "demo_build" / "demo-nftables.nft"
DEMO = demo_path()
NODE_IP = "192.168.1.63"
NGINX = {"10.244.187.102": "my-nginx-5b56ccd65f-7xzr4", "10.244.209.149": "my-nginx-5b56ccd65f-95n7p"}
NODEPORT = {"10.244.121.23": "my-nginx-nodeport-649c945f85-l2hj6",
            "10.244.102.90": "my-nginx-nodeport-649c945f85-zr47r"}
TRIES = 24  # a 2-endpoint Service shows one pod only, in 24 fresh connections, with probability 2**-23


@pytest.fixture
def node(netns_factory: Callable[..., NetnsNode]) -> NetnsNode:
    node = netns_factory(backend="nft", node_ip=NODE_IP, need=("nft",))
    node.run("nft", "-f", "-", input=RULESET.read_text())
    for ip, name in {**NGINX, **NODEPORT}.items():
        node.add_pod(name, ip, tcp_ports=(80,))
    return node


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    with FakeApiServer.from_manifests(sorted((DEMO / "api").iterdir())) as server:
        yield server.write_kubeconfig(tmp_path / "kubeconfig", namespace="default")


def _svc_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["svc", *args, "-o", "json"])
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output)
    return doc


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("warnings", "missing")}


def _endpoints(doc: dict[str, Any], frontend_type: str) -> set[str]:
    out: set[str] = set()

    def walk(hop: dict[str, Any]) -> None:
        if hop["endpoint"] is not None and hop["verdict"] == "DNAT":
            out.add(hop["endpoint"]["ip"])
        for child in hop["hops"]:
            walk(child)

    for fe in doc["frontends"]:
        if fe["type"] == frontend_type:
            for hop in fe["hops"]:
                walk(hop)
    return out


def test_demo_ruleset_carries_traffic_to_the_demos_pods(node: NetnsNode) -> None:
    demo = _svc_json("my-nginx-nodeport", "--from", "demo:nftables")
    assert _endpoints(demo, "NodePort") == set(NODEPORT)
    answers = {p.answer for p in probe_tcp(node.client, NODE_IP, 30380, count=TRIES)}
    assert answers == set(NODEPORT.values())
    # ClusterIPs from a pod (forward hook); from the client the one-link harness would send ICMP redirects
    # (see test_trace_ground_truth.py), so the client is not used for ClusterIPs here.
    pod = node.pods[NODEPORT["10.244.121.23"]]
    assert _endpoints(_svc_json("my-nginx", "--from", "demo:nftables"), "ClusterIP") == set(NGINX)
    assert {p.answer for p in probe_tcp(pod, "10.99.198.177", 80, count=TRIES)} == set(NGINX.values())
    assert {p.answer for p in probe_tcp(pod, "10.104.251.190", 80, count=TRIES)} == set(NODEPORT.values())
    # and from the node itself (output hook)
    assert {p.answer for p in probe_tcp(node, "10.99.198.177", 80, count=8)} == set(NGINX.values())


def test_collect_node_reads_the_ruleset_and_the_mode(node: NetnsNode) -> None:
    read = collect_node(netns=node.name, proxy_mode_url="http://127.0.0.1:1/proxyMode")
    collected = build_snapshot(None, read, source="live")
    assert collected.nft is not None and NodeFile.NFT in read.files
    for family in ("ip", "ip6"):  # kube-proxy's tables, read by name (never the whole ruleset)
        printed = node.run("nft", "-j", "list", "table", family, "kube-proxy").stdout
        assert collected.nft.table(family) == parse_nft_json(printed, "here").table(family)
    assert collected.nft.tables == parse_nft_json(read.files[NodeFile.NFT], "kept").tables
    assert collected.node.proxy_mode == "nftables"
    assert collected.ipvs is None and collected.ipsets is None  # no IPVS signs: not asked
    table = collected.nft.kube_proxy(4)
    assert table is not None and "nodeport-ips" in table.sets


def test_a_read_without_the_text_keeps_the_same_ruleset_read_as_it_was_written(node: NetnsNode) -> None:
    """svc, trace and audit do not keep `nft -j`'s text (a 91 MB document at 10k Services): it is read as it is
    written, and the ruleset is the one the text gives."""
    kept = collect_node(netns=node.name, proxy_mode_url="http://127.0.0.1:1/proxyMode")
    streamed = start_node(netns=node.name, proxy_mode_url="http://127.0.0.1:1/proxyMode",
                          nft_text=False).finish(None)
    assert NodeFile.NFT not in streamed.files and NodeFile.NFT in kept.files
    ruleset = streamed.parsed[NodeFile.NFT]
    assert isinstance(ruleset, NftRuleset)
    whole = parse_nft_json(kept.files[NodeFile.NFT], "kept")
    assert [t.ref for t in ruleset.tables] == ["ip kube-proxy", "ip6 kube-proxy"] == [t.ref for t in whole.tables]
    for mine, theirs in zip(ruleset.tables, whole.tables, strict=True):
        assert mine == theirs
        assert {n: c.rules for n, c in mine.chains.items()} == {n: c.rules for n, c in theirs.chains.items()}
    assert streamed.probe.nft_tables == kept.probe.nft_tables == ("ip kube-proxy", "ip6 kube-proxy")
    assert streamed.warnings == kept.warnings
    collected = build_snapshot(None, streamed, source="live")
    assert collected.node.proxy_mode == "nftables" and collected.nft is ruleset
    assert not any(m.what == NodeFile.NFT for m in collected.missing)


def test_live_svc_is_nftables_and_equals_a_capture(node: NetnsNode, kubeconfig: Path, tmp_path: Path) -> None:
    before = node.run("nft", "list", "ruleset").stdout
    live = _svc_json("my-nginx-nodeport", "--kubeconfig", str(kubeconfig), "--netns", node.name,
                     "--node", "xianchaomaster1")
    assert live["mode"] == "nftables"
    assert {f["type"]: f["verdict"] for f in live["frontends"]} == {"ClusterIP": "forwarded", "NodePort": "forwarded"}
    assert _endpoints(live, "NodePort") == set(NODEPORT)
    capture = CliRunner().invoke(app, ["capture", "-o", str(tmp_path / "cap.tar.gz"), "--kubeconfig",
                                       str(kubeconfig), "--netns", node.name])
    assert capture.exit_code == 0, capture.output
    with tarfile.open(tmp_path / "cap.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert "nft.json" in names and "ipvsadm.txt" not in names
    replay = _svc_json("my-nginx-nodeport", "--from", str(tmp_path / "cap.tar.gz"))
    assert _comparable(replay) == _comparable(live)
    assert node.run("nft", "list", "ruleset").stdout == before  # read only


def test_ipvs_on_this_kernel_is_a_warning(node: NetnsNode, kubeconfig: Path) -> None:
    # kube-proxy's IPVS device (a veth stands in: this kernel has no dummy links) makes the collector ask IPVS.
    node.iproute("link", "add", "kube-ipvs0", "type", "veth", "peer", "name", "kipvs-peer")
    read = collect_node(netns=node.name, proxy_mode_url="http://127.0.0.1:1/proxyMode")
    collected = build_snapshot(None, read, source="live")
    assert "kube-ipvs0" in read.files[NodeFile.IP_ADDR]
    if collected.ipvs is not None:  # pragma: no cover - only on a kernel with IPVS
        pytest.skip("this kernel has IPVS")
    assert any("IPVS is not available in this kernel" in w for w in read.warnings), read.warnings
    assert NodeFile.IPVSADM in {m.what for m in read.missing}
    assert collected.nft is not None and collected.node.addresses  # the rest was still read
    result = CliRunner().invoke(app, ["svc", "my-nginx-nodeport", "--kubeconfig", str(kubeconfig), "--netns",
                                      node.name, "--node", "xianchaomaster1", "-o", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert "Traceback" not in result.output
    assert any("IPVS is not available in this kernel" in w for w in doc["warnings"])
    assert doc["frontends"] and doc["service"]["name"] == "my-nginx-nodeport"



def _doc_nft_line() -> str:
    """docs/snapshot.md's nftables line (the marked extras block), exactly as written."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "snapshot.md").read_text()
    m = re.search(r"<!-- snapshot-extras:[^>]*-->\n```sh\n(.+?)\n```", text, re.DOTALL)
    assert m, "docs/snapshot.md lost its marked extras block"
    line = next(x for x in m.group(1).splitlines() if "nft -j" in x)
    return line.split("   # ")[0]


def test_the_documented_nft_line_reads_both_tables_and_loads(node: NetnsNode, tmp_path: Path) -> None:
    # As the user runs it: sudo is the identity here (root already), $d the snapshot folder.
    (tmp_path / "snap" / "node").mkdir(parents=True)
    script = f'sudo() {{ "$@"; }}\nd={tmp_path / "snap"}\n{_doc_nft_line()}\n'
    subprocess.run(["ip", "netns", "exec", node.name, "bash", "-c", script], check=True, timeout=60)
    written = (tmp_path / "snap" / "node" / "nft.json").read_text()
    assert written.count('{"nftables"') == 2  # the ip and the ip6 table, one document each
    got = parse_nft_json(written, "nft.json")
    for family in ("ip", "ip6"):
        printed = node.run("nft", "-j", "list", "table", family, "kube-proxy").stdout
        assert got.table(family) == parse_nft_json(printed, "here").table(family)
    # on a node without kube-proxy's tables the line leaves no file (not an empty one)
    node.run("nft", "delete", "table", "ip", "kube-proxy")
    node.run("nft", "delete", "table", "ip6", "kube-proxy")
    subprocess.run(["ip", "netns", "exec", node.name, "bash", "-c", script], check=True, timeout=60)
    assert not (tmp_path / "snap" / "node" / "nft.json").exists()
