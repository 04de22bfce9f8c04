"""The iptables resolver on every era's shapes (tests/fixtures/eras/, docs/eras.md) and the notes it writes.

The corpus test (test_corpus_answers.py) checks the answers; these check how they are reached and said: which
hash spelling found the chains, what is called stale, when "only the first rule is used" is true, and what an
empty or unseen chain is called.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.model import graph as g
from svctrace.model.graph import Hop
from svctrace.model.snapshot import Snapshot
from svctrace.parsers.iptables_save import parse
from svctrace.resolver import all_stale_chains, resolve
from svctrace.resolver.common import leaves
from tests.graphs import frontend

ERAS = Path(__file__).resolve().parents[1] / "fixtures" / "eras"


@pytest.fixture(scope="module", params=["v1.1", "v1.2", "v1.4", "v1.13", "v1.18", "v1.20", "v1.26", "v1.33"])
def era(request: pytest.FixtureRequest) -> tuple[str, Snapshot]:
    return request.param, load_snapshot(ERAS / request.param)


def test_an_unnamed_port_is_found_by_the_hash_of_its_era(era: tuple[str, Snapshot]) -> None:
    name, snapshot = era
    graph = resolve(snapshot, "demo", "hello")
    fe = frontend(graph.frontends, "ClusterIP")
    assert fe.verdict == g.FORWARDED
    colon = name in ("v1.1", "v1.2", "v1.4", "v1.13", "v1.18")
    assert any("'demo/hello:' (with the colon)" in n for n in fe.notes) == colon
    assert graph.stale_chains == ()
    assert all_stale_chains(snapshot) == ()  # no era's own chains are stale


def test_complementary_dispatch_rules_are_both_used(era: tuple[str, Snapshot]) -> None:
    name, snapshot = era
    fe = frontend(resolve(snapshot, "demo", "hello").frontends, "ExternalIP")
    assert not any("only the first" in n for n in fe.notes)
    if name in ("v1.26", "v1.33"):  # one rule to KUBE-EXT since v1.24
        assert len(fe.hops) == 1
    else:  # "-m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL" and "-m addrtype --dst-type LOCAL"
        assert len(fe.hops) == 2 and all(h.when for h in fe.hops)
        assert "physdev" in (fe.hops[0].when or "") and "--dst-type LOCAL" in (fe.hops[1].when or "")


def _with_rules(snapshot: Snapshot, nat_extra: str) -> Snapshot:
    dump = snapshot.iptables
    assert dump is not None
    text = (ERAS / "v1.26" / "node" / "iptables-save.txt").read_text()
    filt, _, nat = text.partition("*nat\n")
    head, _, tail = nat.partition("-A KUBE-SERVICES ")
    return replace(snapshot, iptables=parse(filt + "*nat\n" + head + nat_extra + "-A KUBE-SERVICES " + tail, "x", 4))


def test_a_duplicate_dispatch_rule_is_noted_as_never_used() -> None:
    snapshot = load_snapshot(ERAS / "v1.26")
    dup = ('-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment "demo/web:http cluster IP" -m tcp '
           "--dport 80 -j KUBE-SVC-XRY76EGRC3BSCIIJ\n")
    fe = frontend(resolve(_with_rules(snapshot, dup + dup), "demo", "web").frontends, "ClusterIP")
    assert any("3 rules in KUBE-SERVICES match this frontend; only the first is ever used" in n for n in fe.notes)
    assert len(fe.hops) == 1


def test_v1_1_masquerades_with_its_inline_mark() -> None:
    graph = resolve(load_snapshot(ERAS / "v1.1"), "demo", "shop")
    node_port = frontend(graph.frontends, "NodePort")
    assert node_port.hops[0].masquerade == "always"  # the MARK 0x4d415351 rule before the jump
    sep = node_port.hops[0].children[0]
    assert sep.masquerade is not None and sep.masquerade.startswith("hairpin")
    notes = [n for hop in node_port.hops for leaf in leaves(hop) for n in leaf.notes]
    assert not any("not one kube-proxy writes" in n for n in notes)


def test_an_empty_service_chain_is_untranslated_not_unprogrammed() -> None:
    fe = frontend(resolve(load_snapshot(ERAS / "v1.1"), "demo", "empty").frontends, "ClusterIP")
    assert fe.verdict == g.UNTRANSLATED
    assert any("no rule that translates it" in n for n in fe.notes)
    assert not any("has not programmed it" in n for n in fe.notes)


def test_a_reject_reached_from_output_only_leaves_pods_untranslated() -> None:
    fe = frontend(resolve(load_snapshot(ERAS / "v1.2"), "demo", "empty").frontends, "ClusterIP")
    assert fe.verdict == g.PARTIAL
    (chain, reject) = fe.hops
    assert chain.name == "KUBE-SVC-J4Q5CFPUYSDDRVFZ" and not chain.children  # v1.2 keeps the empty chain
    assert (reject.when, reject.verdict) == ("this node's own connections", "REJECT")


def _xlb(hops: tuple[Hop, ...]) -> Hop:
    return next(h for hop in hops for h in (hop, *hop.children) if h.name.startswith("KUBE-XLB-"))


def test_xlb_sends_external_clients_to_local_endpoints_and_pods_to_the_service() -> None:
    graph = resolve(load_snapshot(ERAS / "v1.4"), "demo", "lb-local")
    lb = frontend(graph.frontends, "LoadBalancer")
    (fw,) = lb.hops
    assert fw.kind == "firewall" and "no loadBalancerSourceRanges" in fw.explain
    xlb = _xlb(lb.hops)
    whens = {c.when: c for c in xlb.children}
    assert set(whens) == {"source in 10.244.0.0/16", "external clients"}
    assert [leaf.endpoint.address for leaf in leaves(whens["external clients"]) if leaf.endpoint] == \
        ["10.244.1.10:8080"]
    assert not any(c.verdict == "DROP" for c in fw.children)  # the KUBE-MARK-DROP after an unconditional jump


def test_xlb_without_local_endpoints_drops_through_kubelets_chains() -> None:
    snapshot = load_snapshot(ERAS / "v1.4")
    text = (ERAS / "v1.4" / "node" / "iptables-save.txt").read_text().replace(
        '-A KUBE-XLB-DTUPECSMBJIS333U -m comment --comment "Balancing rule 0 for demo/lb-local:http" '
        "-j KUBE-SEP-J4JWT7CP4OPJBU5G",
        '-A KUBE-XLB-DTUPECSMBJIS333U -m comment --comment "demo/lb-local:http has no local endpoints" '
        "-j KUBE-MARK-DROP")
    graph = resolve(replace(snapshot, iptables=parse(text, "x", 4)), "demo", "lb-local")
    drop = next(c for c in _xlb(frontend(graph.frontends, "NodePort").hops).children if c.verdict == "DROP")
    assert drop.when == "external clients" and not drop.notes  # kubelet's KUBE-FIREWALL is in this dump
    without = parse("\n".join(line for line in text.splitlines() if not line.startswith("-A KUBE-FIREWALL")), "x", 4)
    graph = resolve(replace(snapshot, iptables=without), "demo", "lb-local")
    drop = next(c for c in _xlb(frontend(graph.frontends, "NodePort").hops).children if c.verdict == "DROP")
    assert any("kubelet's usual chains" in n for n in drop.notes)
