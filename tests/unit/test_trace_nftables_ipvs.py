"""The nftables and IPVS tracers on small hand-made inputs: each construct they model, and what they refuse."""

from __future__ import annotations

import pytest

from svctrace.errors import SvctraceError
from svctrace.model.actions import MapLookup, MarkAction, Verdict
from svctrace.model.ipvs import IpvsTable, RealServer, VirtualServer
from svctrace.model.matches import MarkMatch
from svctrace.model.nft import NftChain, NftRule, NftRuleset, NftTable
from svctrace.model.snapshot import HostAddress, NodeFacts, Snapshot
from svctrace.model.trace import Packet, TraceOptions, TraceResult
from svctrace.parsers.nft_statements import parse_statements
from svctrace.parsers.nft_transaction import parse_nft_transaction
from svctrace.trace import node_local_ips, trace_packet
from svctrace.trace.ipvs import trace_ipvs
from svctrace.trace.nftables import trace_nftables

T = "ip kube-proxy"
BASE = f"""\
add table {T}
add chain {T} nat-prerouting {{ type nat hook prerouting priority -100 ; }}
add chain {T} nat-output {{ type nat hook output priority -100 ; }}
add chain {T} nat-postrouting {{ type nat hook postrouting priority 100 ; }}
add chain {T} filter-forward {{ type filter hook forward priority 0 ; }}
add chain {T} services
add chain {T} masquerading
add chain {T} mark-for-masquerade
add rule {T} nat-prerouting jump services
add rule {T} nat-output jump services
add rule {T} nat-postrouting jump masquerading
add rule {T} mark-for-masquerade mark set mark or 0x4000
add rule {T} masquerading mark and 0x4000 == 0 return
add rule {T} masquerading mark set mark xor 0x4000
add rule {T} masquerading masquerade fully-random
"""


def ruleset(extra: str) -> NftRuleset:
    return parse_nft_transaction(BASE + extra, "test.nft")


def answer(result: TraceResult) -> dict[str, tuple[float, bool]]:
    return {(o.destination or o.verdict): (round(o.probability, 6), o.masquerade) for o in result.outcomes}


THREE_WAY = f"""\
add chain {T} svc
add chain {T} ep-a
add chain {T} ep-b
add chain {T} ep-c
add rule {T} services ip daddr {{ 10.96.0.1, 10.96.0.2 }} tcp dport 80 jump svc
add rule {T} svc ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule {T} svc numgen random mod 3 vmap {{ 0 : goto ep-a , 1 : goto ep-b , 2 : goto ep-c }}
add rule {T} ep-a meta l4proto tcp dnat to 10.1.0.1:8080
add rule {T} ep-b meta l4proto tcp dnat ip to 10.1.0.2:8080
add rule {T} ep-c meta l4proto tcp dnat to 10.1.0.3
"""


def test_numgen_splits_evenly_and_masquerade_follows_the_mark() -> None:
    rs = ruleset(THREE_WAY)
    got = answer(trace_nftables(rs, Packet("10.0.0.5", "10.96.0.2", 80)))
    third = round(1 / 3, 6)
    assert got == {"10.1.0.1:8080": (third, False), "10.1.0.2:8080": (third, False), "10.1.0.3:80": (third, False)}
    outside = answer(trace_nftables(rs, Packet("192.168.5.5", "10.96.0.1", 80, origin="external")))
    assert all(masq for _, masq in outside.values()) and len(outside) == 3
    # udp does not match `tcp dport`, and a third address misses the anonymous set
    assert answer(trace_nftables(rs, Packet("10.0.0.5", "10.96.0.1", 80, "udp"))) == {"ACCEPT": (1.0, False)}
    assert answer(trace_nftables(rs, Packet("10.0.0.5", "10.96.0.3", 80))) == {"ACCEPT": (1.0, False)}


def test_node_traffic_takes_the_output_hook() -> None:
    rs = ruleset(THREE_WAY)
    result = trace_nftables(rs, Packet("192.168.1.1", "10.96.0.1", 80, origin="node"), local_ips=["192.168.1.1"])
    assert {s.chain for o in result.outcomes for s in o.path} >= {"nat-output", "masquerading"}
    assert all(o.masquerade for o in result.outcomes)


def test_the_json_spelling_of_marks_is_read_too() -> None:
    # `nft list` / the nft -j renderer print the masquerade rules this way.
    stmts = parse_statements("meta mark & 0x00004000 == 0x00000000 return")
    assert stmts == (MarkMatch("mark", 0, 0x4000), Verdict("return"))
    assert parse_statements("meta mark set meta mark | 0x00004000") == (MarkAction("mark", "or", 0x4000),)
    assert parse_statements("ip daddr . meta l4proto . th dport vmap @service-ips") == (
        MapLookup(("ip daddr", "meta l4proto", "th dport"), "service-ips"),)


def test_verdict_maps_reject_drop_and_goto_return_to_the_caller() -> None:
    rs = ruleset(f"""\
add map {T} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}
add chain {T} filter-input {{ type filter hook input priority 0 ; }}
add chain {T} reject-chain
add chain {T} ext
add rule {T} reject-chain reject
add rule {T} services ip daddr . meta l4proto . th dport vmap @service-ips
add rule {T} filter-forward ip daddr . meta l4proto . th dport vmap {{ 10.96.0.9 . tcp . 80 : goto reject-chain, \
10.96.0.8 . tcp . 80 : drop }}
add rule {T} ext fib saddr type local jump mark-for-masquerade
add element {T} service-ips {{ 10.96.0.7 . tcp . 80 : goto ext }}
""")
    assert answer(trace_nftables(rs, Packet("10.0.0.5", "10.96.0.9", 80))) == {"REJECT": (1.0, False)}
    assert answer(trace_nftables(rs, Packet("10.0.0.5", "10.96.0.8", 80))) == {"DROP": (1.0, False)}
    # goto ext falls off its end: back to nat-prerouting's caller level, policy accept; fib local is false
    assert answer(trace_nftables(rs, Packet("10.0.0.5", "10.96.0.7", 80))) == {"ACCEPT": (1.0, False)}


def test_affinity_sets_are_followed_both_ways() -> None:
    rs = ruleset(f"""\
add set {T} affinity-x {{ type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }}
add chain {T} svc
add chain {T} ep-a
add chain {T} ep-b
add rule {T} services ip daddr 10.96.0.1 jump svc
add rule {T} svc ip saddr @affinity-x goto ep-b
add rule {T} svc numgen random mod 2 vmap {{ 0 : goto ep-a , 1 : goto ep-b }}
add rule {T} ep-a meta l4proto tcp dnat to 10.1.0.1:80
add rule {T} ep-b update @affinity-x {{ ip saddr }}
add rule {T} ep-b meta l4proto tcp dnat to 10.1.0.2:80
""")
    result = trace_nftables(rs, Packet("10.0.0.5", "10.96.0.1", 80))
    fresh = {o.destination: o.probability for o in result.outcomes if o.affinity is None}
    pinned = [o for o in result.outcomes if o.affinity is not None]
    assert fresh == {"10.1.0.1:80": pytest.approx(0.5), "10.1.0.2:80": pytest.approx(0.5)}
    assert [(o.destination, o.probability, o.affinity) for o in pinned] == [("10.1.0.2:80", 0.0, "affinity-x")]
    assert any("already pinned" in n for n in pinned[0].notes)


def test_unknown_expressions_are_uncertain_both_ways() -> None:
    rs = ruleset(f"""\
add chain {T} svc
add rule {T} services iifname "eth0" meta l4proto tcp dnat to 10.1.0.1:80
""")
    result = trace_nftables(rs, Packet("10.0.0.5", "10.96.0.1", 80))
    got = {o.destination or o.verdict: (o.probability, o.conditional_probability, o.conditions)
           for o in result.outcomes}
    what = 'iifname "eth0" (the packet\'s interface is not known)'
    assert got == {"ACCEPT": (None, 1.0, (f"if it does not match: {what}",)),
                   "10.1.0.1:80": (None, 1.0, (f"if it matches: {what}",))}, got


def test_missing_table_is_a_clear_error() -> None:
    with pytest.raises(SvctraceError, match="no `ip6 kube-proxy` table"):
        trace_nftables(ruleset(""), Packet("fd00::1", "fd00::2", 80))


def test_other_tables_are_named_in_a_warning() -> None:
    other = NftTable("ip", "filter", {"INPUT": NftChain("INPUT", (NftRule("INPUT", 1, 1, "accept"),), "filter",
                                                        "input", 0, "accept")})
    rs = ruleset(THREE_WAY)
    result = trace_nftables(NftRuleset((*rs.tables, other)), Packet("10.0.0.5", "10.96.0.1", 80))
    assert any("ip filter" in w for w in result.warnings)


# --------------------------------------------------------------------------------------------------
# IPVS


def vs(address: str = "10.96.0.1", port: int = 80, scheduler: str = "rr", persistent: int | None = None,
       ) -> VirtualServer:
    return VirtualServer("TCP", address, port, scheduler, persistent)


def ipvs_answer(table: IpvsTable, dst: str = "10.96.0.1") -> TraceResult:
    return trace_ipvs(table, None, Packet("10.0.0.5", dst, 80), local_ips=["10.96.0.1", "192.168.1.1"], ipsets={})


def test_ipvs_shares_follow_the_weights_and_weight_zero_drains() -> None:
    table = IpvsTable(((vs(scheduler="wrr"), (RealServer("10.1.0.1", 80, 3), RealServer("10.1.0.2", 80, 1),
                                              RealServer("10.1.0.3", 80, 0))),))
    result = ipvs_answer(table)
    got = {o.destination: round(o.probability, 6) for o in result.outcomes}
    assert got == {"10.1.0.1:80": 0.75, "10.1.0.2:80": 0.25, "10.1.0.3:80": 0.0}
    drained = next(o for o in result.outcomes if o.destination == "10.1.0.3:80")
    assert any("weight 0" in n for n in drained.notes)
    assert result.mode == "ipvs"


def test_ipvs_other_schedulers_and_persistence_are_noted() -> None:
    table = IpvsTable(((vs(scheduler="wlc", persistent=10800), (RealServer("10.1.0.1", 80, 1),
                                                                 RealServer("10.1.0.2", 80, 1))),))
    result = ipvs_answer(table)
    notes = " ".join(n for o in result.outcomes for n in o.notes)
    assert "scheduler wlc" in notes and "persistent 10800s" in notes
    assert [round(o.probability, 6) for o in result.outcomes] == [0.5, 0.5]


def test_ipvs_without_real_servers_fails_the_connection() -> None:
    result = ipvs_answer(IpvsTable(((vs(), ()),)))
    assert [(o.verdict, o.probability) for o in result.outcomes] == [("REJECT", 1.0)]
    assert "connection fails" in " ".join(result.outcomes[0].notes)


def test_ipvs_miss_is_delivered_locally() -> None:
    result = ipvs_answer(IpvsTable(((vs(port=443), (RealServer("10.1.0.1", 80),)),)))
    assert [(o.verdict, o.destination) for o in result.outcomes] == [("ACCEPT", None)]


def test_kube_ipvs0_makes_virtual_addresses_local_and_modes_are_recognised() -> None:
    table = IpvsTable(((vs(), (RealServer("10.1.0.1", 80),)),))
    bare = Snapshot(ipvs=table, node=NodeFacts(addresses=(HostAddress("eth0", "192.168.1.1", 24, 4),),
                                               proxy_mode="ipvs"))
    ips, warnings = node_local_ips(bare)
    assert "10.96.0.1" in ips and any("kube-ipvs0" in w for w in warnings)
    with_dummy = Snapshot(ipvs=table, node=NodeFacts(addresses=(HostAddress("eth0", "192.168.1.1", 24, 4),
                                                                HostAddress("kube-ipvs0", "10.96.0.1", 32, 4))))
    assert node_local_ips(with_dummy) == (("192.168.1.1", "10.96.0.1"), ())
    assert trace_packet(bare, Packet("10.0.0.5", "10.96.0.1", 80)).mode == "ipvs"
    nft = Snapshot(nft=ruleset(THREE_WAY), node=NodeFacts(proxy_mode="nftables"))
    assert trace_packet(nft, Packet("10.0.0.5", "10.96.0.1", 80)).mode == "nftables"


def _many_way(n: int) -> str:
    chains = [f"endpoint-{i:04d}-ns1/web/tcp/http__10.1.{i // 250}.{i % 250 + 1}/8080" for i in range(n)]
    vmap = " , ".join(f"{i} : goto {c}" for i, c in enumerate(chains))
    return "".join([f"add chain {T} svc\n", *(f"add chain {T} {c}\n" for c in chains),
                    f"add rule {T} services ip daddr 10.96.0.1 tcp dport 80 jump svc\n",
                    f"add rule {T} svc numgen random mod {n} vmap {{ {vmap} }}\n",
                    *(f"add rule {T} {c} meta l4proto tcp dnat to 10.1.{i // 250}.{i % 250 + 1}:8080\n"
                      for i, c in enumerate(chains))])


def test_a_step_of_one_branch_shows_a_long_numgen_map_cut() -> None:
    # A Service of 5,000 endpoints has a 351 KB numgen map, and a trace step per endpoint showed it whole:
    # `trace -o json` wrote 1.7 GB. Each step shows the map cut to one element and how many more it has; every
    # endpoint is still an outcome, and the bounds grow with them (300 ways against 64 branches here).
    rs = ruleset(_many_way(300))
    result = trace_nftables(rs, Packet("10.0.0.5", "10.96.0.1", 80), options=TraceOptions(max_states=64))
    assert len(result.outcomes) == 300 and not result.warnings
    texts = {s.rule_text for o in result.outcomes for s in o.path if s.chain == "svc"}
    assert texts == {"numgen random mod 300 vmap { 0 : goto endpoint-0000-ns1/web/tcp/http__10.1.0.1/8080, "
                     "... 299 more }"}
    small = trace_nftables(ruleset(THREE_WAY), Packet("10.0.0.5", "10.96.0.2", 80))
    assert {s.rule_text for o in small.outcomes for s in o.path if s.chain == "svc" and "numgen" in s.rule_text} == \
        {"numgen random mod 3 vmap { 0 : goto ep-a, 1 : goto ep-b, 2 : goto ep-c }"}  # (a short one: whole)
