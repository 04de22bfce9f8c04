"""The corpus against the kernel: every dump that loads is loaded for real, and packets check the expectations.

For each era fixture (tests/fixtures/eras/) and each complete real-world dump (tests/fixtures/realworld/) the
rules are loaded into a throw-away network namespace standing in for the node (tests/integration/netns.py:
veth uplink, Calico-style pods with echo servers), and every *deterministic* trace of its expectations.yaml is
sent as real connections: the set of pods that answer, refusals (REJECT) and timeouts (DROP, or a packet that
leaves untranslated and finds nobody) must be the expected ones, and the source address a pod sees must say
whether the connection was masqueraded. Uncertain traces (the dump cannot tell) are not sent: their whole point
is that the answer depends on something outside the dump.

Real-world dumps that cannot be loaded are skipped by name with the reason (SKIPPED), nothing silently: a
folder in the corpus that is neither loaded nor listed fails the test.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.netns import Namespace, NetnsNode, Probe, probe_tcp

pytestmark = pytest.mark.netns

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ERAS = FIXTURES / "eras"
REALWORLD = FIXTURES / "realworld"
TRIES = 24  # a 2-way split shows only one side in 24 fresh connections with probability 2**-23

SKIPPED = {
    # real-world dumps: cut short by the poster or by the corpus excerpt (loading a prefix would test a ruleset
    # no node ever had)
    "realworld/k8s-18259-v1.1-flannel-2015": "cut short mid-rule in the nat table",
    "realworld/k8s-34321-v1.3-aws-2016": "a two-line fragment, cut mid-rule",
    "realworld/k8s-47533-flannel-2017": "fragment without table header, cut mid-rule",
    "realworld/weave-3222-unnamed-ports-2018": "fragment without table header, cut mid-rule",
    "realworld/weave-3452-filter-only-2018": "cut short mid-rule",
    "realworld/kops-6341-aws-vpc-cni-2019": "cut short mid-comment in the nat table",
    "realworld/k3s-800-restore-input-2019": "cut short mid-rule in the nat table",
    "realworld/kubeadm-1461-ipvs-calico-counters-2019": "fragment without table header, cut mid-comment",
    "realworld/k8s-110659-v1.24-svc-masq-2022": "fragment without table header, cut mid-rule",
    "realworld/kind-v1.23-blog-2022": "cut short mid-comment in the filter table",
    "realworld/k8s-43972-iptables-S-2017": "iptables -S fragment cut mid-rule (converted, but not loadable whole)",
    "realworld/charmed-489-xlb-no-local-endpoints-2018": "grep output: the chains it jumps to are not in it",
    "realworld/xczhw-cloudlab-notes-grep": "notes with elided rules ('...'): not a ruleset",
    "realworld/calico-8025-rke2-nft-ruleset-2023": "two fragments of an nft listing, both cut",
    # not rule text the kernel can load
    "realworld/k8s-36652-restore-log-2016": "a kube-proxy journal log of a restore that failed, not rules",
    "realworld/submariner-1091-iptables-L-2021": "iptables -L listing: matches are abbreviated, not loadable",
    "realworld/k8s-81477-ipvsadm-sctp-2019": "ipvsadm listing: this kernel has no IPVS",
    "realworld/calico-9045-ipvsadm-kubespray-2024": "ipvsadm listing: this kernel has no IPVS",
}


def expectations(folder: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((folder / "expectations.yaml").read_text())
    return doc


def backend_of(save: str) -> str:
    return "nft" if "(nf_tables)" in save.splitlines()[0] else "legacy"


def nft_loadable(doc: dict[str, Any]) -> dict[str, Any]:
    """`nft -j list ruleset` output in an order `nft -j -f` accepts: map elements after the chains they name."""
    head: list[Any] = []
    chains: list[Any] = []
    rules: list[Any] = []
    elements: list[Any] = []
    for item in doc["nftables"]:
        ((kind, obj),) = item.items()
        if kind in ("set", "map"):
            obj = dict(obj)
            elem = obj.pop("elem", None)
            head.append({kind: obj})
            if elem:
                elements.append({"element": {"family": obj["family"], "table": obj["table"], "name": obj["name"],
                                             "elem": elem}})
        elif kind == "chain":
            chains.append(item)
        elif kind == "rule":
            rules.append(item)
        elif kind == "table":
            head.insert(0, item)
    return {"nftables": head + chains + rules + elements}


def s_to_restore(tables: dict[str, str]) -> str:
    """`iptables -t TABLE -S` output per table -> iptables-restore input (-P policies, -N chains, -A rules)."""
    out = []
    for table, text in tables.items():
        policies, chains, rules = [], [], []
        for line in text.splitlines():
            words = shlex.split(line)
            if not words:
                continue
            if words[0] == "-P":
                policies.append(f":{words[1]} {words[2]} [0:0]")
            elif words[0] == "-N":
                chains.append(f":{words[1]} - [0:0]")
            elif words[0] == "-A":
                rules.append(line)
            else:
                raise ValueError(f"not iptables -S output: {line!r}")
        out += [f"*{table}", *policies, *chains, *rules, "COMMIT"]
    return "\n".join(out) + "\n"


def observe(probes: list[Probe]) -> tuple[set[str], dict[str, set[str | None]]]:
    kinds: set[str] = set()
    seen: dict[str, set[str | None]] = {}
    for p in probes:
        if p.answer is not None:
            kinds.add("DNAT:" + p.answer)
            seen.setdefault(p.answer, set()).add(p.seen_from)
        elif p.error == "refused":
            kinds.add("REJECT")
        elif p.error == "timeout":
            kinds.add("TIMEOUT")
        elif p.error == "No route to host":  # left untranslated towards an address nobody answers ARP for
            kinds.add("UNREACHABLE")
        else:
            kinds.add(f"ERROR:{p.error}")
    return kinds, seen


def matches(kinds: set[str], expected: set[str]) -> bool:
    """Observed outcomes against expected ones; an untranslated packet may time out or find no route."""
    silent = {"TIMEOUT", "UNREACHABLE"}
    if kinds - silent != expected - {"TIMEOUT", "UNANSWERED"}:
        return False
    if "UNANSWERED" in expected:
        return bool(kinds & silent)
    return (kinds & silent) == (expected & {"TIMEOUT"})


def run_traces(node: NetnsNode, doc: dict[str, Any], pods: dict[str, str], client_for: Callable[[str, str], Namespace],
               node_ip: str) -> int:
    """Send every deterministic trace of ``doc``; return how many were checked."""
    checked = 0
    for t in doc["trace"]:
        if t.get("uncertain"):
            continue
        p, outcomes = t["packet"], t["outcomes"]
        if any(o["destination"] == "unknown" for o in outcomes):
            continue
        expected: set[str] = set()
        masq: dict[str, bool | str] = {}
        for o in outcomes:
            if o["verdict"] == "DNAT":
                pod = pods[o["destination"].rsplit(":", 1)[0]]
                expected.add("DNAT:" + pod)
                masq[pod] = o["masquerade"]
            elif o["verdict"] == "REJECT":
                expected.add("REJECT")
            elif o["verdict"] == "DROP":
                expected.add("TIMEOUT")
            else:  # ACCEPT: leaves the rules untranslated, towards an address nobody here answers
                expected.add("UNANSWERED")
        sender = client_for(p["origin"], p["src"])
        tries = TRIES if len(expected) > 1 else (2 if expected & {"TIMEOUT", "UNANSWERED"} else 3)
        kinds, seen = observe(probe_tcp(sender, p["dst"], p["dport"], count=tries))
        where = f"{doc['fixture']}: {t['name']} ({p['src']} -> {p['dst']}:{p['dport']})"
        if "affinity" in t["name"]:
            # A real client is pinned after its first connection: every probe lands on one endpoint.
            assert len(kinds) == 1 and kinds <= expected, f"{where}: {kinds} not one of {expected}"
        else:
            assert matches(kinds, expected), f"{where}: kernel {sorted(kinds)}, expected {sorted(expected)}"
        if p["origin"] != "node":  # the node's own connections carry its address either way
            for pod, sources in seen.items():
                if masq[pod] != "unknown":
                    want = node_ip if masq[pod] else p["src"]
                    assert sources == {want}, f"{where}: {pod} saw {sources}, expected {want}"
        checked += 1
    return checked


# ------------------------------------------------------------------------------------------------
# era fixtures


ERA_FOLDERS = sorted(p for p in ERAS.iterdir() if p.is_dir() and p.name.startswith("v"))


@pytest.mark.parametrize("folder", ERA_FOLDERS, ids=lambda p: p.name)
def test_era_rules_behave_as_expected_in_the_kernel(folder: Path, netns_factory: Callable[..., NetnsNode]) -> None:
    key = f"eras/{folder.name}"
    if key in SKIPPED:
        pytest.skip(SKIPPED[key])
    doc = expectations(folder)
    save = (folder / "node" / "iptables-save.txt").read_text()
    node = netns_factory(backend=backend_of(save), node_ip="192.168.1.63", gateway="192.168.1.1",
                         client_ip="192.168.1.10", need=("nfacct", "nft", "ipset"))
    if doc["mode"] == "ipvs":
        # The ipsets and the iptables rules IPVS mode writes load; the virtual servers cannot (this kernel has
        # no ip_vs), so no packet is sent: the check is that the node's rules are real and complete.
        node.run("ipset", "restore", input=(folder / "node" / "ipset.txt").read_text())
        node.load_rules(save)
        saved = node.save_rules()
        assert "-m set --match-set KUBE-CLUSTER-IP dst,dst" in saved and "KUBE-LOOP-BACK dst,dst,src" in saved
        return
    node.load_rules(save)
    if doc["mode"] == "nftables":
        text = json.dumps(nft_loadable(json.loads((folder / "node" / "nft.json").read_text())))
        node.run("nft", "-j", "-f", "-", input=text)
    pods = {}
    for s in doc["svc"]:
        for fe in s["frontends"]:
            for ep in fe.get("endpoints", []):
                pods[ep["ip"]] = f"ep-{ep['ip'].replace('.', '-')}"
    for ip, name in pods.items():
        node.add_pod(name, ip, tcp_ports=(8080,))
    client_pod = node.add_pod("client-pod", "10.244.1.20", tcp_ports=(8080,))
    # The outside client reaches Service, external and LB addresses through the node.
    node.client.iproute("route", "add", "default", "via", "192.168.1.63")
    node.client.iproute("route", "add", "192.168.1.200/32", "via", "192.168.1.63")

    def client_for(origin: str, src: str) -> Namespace:
        if origin == "external":
            assert src == node.client_ip
            return node.client
        if origin == "node":
            return node
        return client_pod if src == client_pod.ip else node.pods[pods[src]]

    assert run_traces(node, doc, pods, client_for, node.node_ip) >= 8


# ------------------------------------------------------------------------------------------------
# real-world dumps


REAL_FOLDERS = sorted(p for p in REALWORLD.iterdir() if p.is_dir())

# kube-proxy ensures these jumps with `iptables -I` outside its restore data (kube-proxy-formats.md §1.2);
# a dump of restore input needs them to be reached from the built-in chains.
KUBE_PROXY_JUMPS = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate NEW -j KUBE-PROXY-FIREWALL
-A INPUT -j KUBE-NODEPORTS
-A INPUT -m conntrack --ctstate NEW -j KUBE-EXTERNAL-SERVICES
-A INPUT -j KUBE-FIREWALL
-A FORWARD -m conntrack --ctstate NEW -j KUBE-PROXY-FIREWALL
-A FORWARD -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -j KUBE-SERVICES
-A FORWARD -m conntrack --ctstate NEW -j KUBE-EXTERNAL-SERVICES
-A OUTPUT -m conntrack --ctstate NEW -j KUBE-PROXY-FIREWALL
-A OUTPUT -m conntrack --ctstate NEW -j KUBE-SERVICES
-A OUTPUT -j KUBE-FIREWALL
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -j KUBE-SERVICES
-A OUTPUT -j KUBE-SERVICES
-A POSTROUTING -j KUBE-POSTROUTING
COMMIT
"""


LOADED = {"realworld/kube-proxy-test-v1.28-overall"}  # the real-world dumps the tests below load


def test_every_real_world_dump_is_loaded_or_skipped_by_name() -> None:
    real = {f"realworld/{p.name}" for p in REAL_FOLDERS}
    names = real | {f"eras/{p.name}" for p in ERA_FOLDERS}  # every era is run (or skipped by name) above
    missing = real - LOADED - set(SKIPPED)
    assert not missing, f"neither loaded nor skipped by name: {sorted(missing)}"
    assert set(SKIPPED) <= names, f"SKIPPED names folders that do not exist: {sorted(set(SKIPPED) - names)}"
    assert not LOADED & set(SKIPPED)


def test_kube_proxy_test_dump_behaves_as_read(netns_factory: Callable[..., NetnsNode]) -> None:
    folder = REALWORLD / "kube-proxy-test-v1.28-overall"
    doc = expectations(folder)
    node = netns_factory(backend="nft", node_ip="192.168.0.2", gateway="192.168.0.1", client_ip="192.168.0.10")
    node.load_rules((folder / "dump.txt").read_text())
    node.load_rules(KUBE_PROXY_JUMPS, noflush=True)
    pods = {f"10.180.0.{i}": f"ep-{i}" for i in range(1, 6)}
    for ip, name in pods.items():
        node.add_pod(name, ip, tcp_ports=(80,))
    client_pod = node.add_pod("client-pod", "10.0.1.5", tcp_ports=(80,))
    node.client.iproute("route", "add", "default", "via", node.node_ip)
    # The outside clients of the LB source-range cases; replies to them go back through the client namespace.
    for src in ("203.0.113.2", "203.0.113.130"):
        node.client.iproute("addr", "add", f"{src}/32", "dev", "eth0")
    node.iproute("route", "add", "203.0.113.0/24", "via", node.client_ip)

    def client_for(origin: str, src: str) -> Namespace:
        if origin == "pod":
            return client_pod
        # Pick the client's source address for the LB IP with a route hint.
        node.client.iproute("route", "replace", "5.6.7.8/32", "via", node.node_ip, "src",
                            src if src.startswith("203.") else node.client_ip)
        return node.client

    assert run_traces(node, doc, pods, client_for, node.node_ip) == len(doc["trace"])


def test_iptables_s_text_converts_to_the_same_ruleset(netns_factory: Callable[..., NetnsNode]) -> None:
    """What users paste as `iptables -t nat -S` loads back (-P/-N/-A) into the same rules as the original."""
    save = (ERAS / "v1.33" / "node" / "iptables-save.txt").read_text()
    first = netns_factory(backend="nft", need=("nfacct",))
    first.load_rules(save)
    tables = {t: first.iptables("-t", t, "-S").stdout for t in ("filter", "nat", "mangle")}
    second = netns_factory(backend="nft", need=("nfacct",))
    second.load_rules(s_to_restore(tables))

    def rules(node: NetnsNode) -> list[str]:
        return [line for line in node.save_rules().splitlines() if not line.startswith("#")]

    assert rules(second) == rules(first)
    assert any("KUBE-SVC-" in line for line in rules(second))
