"""The iptables tracer, one match or target at a time, on small hand-written dumps."""

from __future__ import annotations

import textwrap

import pytest

from svctrace.errors import SvctraceError, UsageError
from svctrace.model.iptables import IptablesDump
from svctrace.model.snapshot import NodeFacts, Snapshot
from svctrace.model.trace import Outcome, Packet, TraceOptions, TraceResult
from svctrace.parsers.iptables_save import parse
from svctrace.render.trace_json import trace_to_dict
from svctrace.trace import trace_packet
from svctrace.trace.iptables import kube_proxy_output, trace_iptables

NODE_IP = "192.168.0.2"


def dump(text: str, family: int | None = None) -> IptablesDump:
    return parse(textwrap.dedent(text).lstrip("\n"), "test.rules", family)


def nat(*rules: str, chains: tuple[str, ...] = (), post: tuple[str, ...] = ()) -> str:
    """A nat table with the given PREROUTING rules (and extra chains / POSTROUTING rules)."""
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]", *(f":{c} - [0:0]" for c in chains),
             *(f"-A PREROUTING {r}" for r in rules), *(f"-A POSTROUTING {r}" for r in post), "COMMIT"]
    return "\n".join(lines) + "\n"


def trace(text: str, src: str = "10.0.0.2", dst: str = "172.30.0.1", dport: int = 80, *,
          origin: str = "pod", protocol: str = "tcp", sport: int = 40000, iface: str | None = None,
          local: tuple[str, ...] = (NODE_IP,), ipsets: dict[str, list[str]] | None = None,
          **options: object) -> TraceResult:
    packet = Packet(src, dst, dport, protocol, sport, origin, iface)
    return trace_iptables(dump(text), packet, local_ips=local, options=TraceOptions(**options),  # type: ignore[arg-type]
                          ipsets=ipsets)


def answer(result: TraceResult) -> dict[str, float]:
    """{destination or verdict: probability} over the outcomes (all of them known)."""
    assert all(o.probability is not None for o in result.outcomes), result.outcomes
    return {o.destination or o.verdict: round(o.probability or 0.0, 9) for o in result.outcomes}


def both_ways(result: TraceResult, what: str) -> dict[str, tuple[str, ...]]:
    """An undecidable match split in two: {destination or verdict: its conditions}; each outcome rests on
    ``what`` (matched or not), keeps its whole share given that, and has no known probability."""
    out = {}
    for o in result.outcomes:
        assert o.probability is None and o.conditional_probability == 1.0 and o.uncertain, o
        assert all(what in c for c in o.conditions), o.conditions
        out[o.destination or o.verdict] = o.conditions
    assert not result.certain
    return out


def only(result: TraceResult) -> Outcome:
    assert len(result.outcomes) == 1, result.outcomes
    return result.outcomes[0]


DNAT_A = "-j DNAT --to-destination 10.1.0.1:8080"


# -- addresses, protocols, ports ------------------------------------------------------------------


def test_destination_prefix_matches_inside_and_not_outside() -> None:
    rules = nat(f"-d 172.30.0.0/16 -p tcp {DNAT_A}")
    assert only(trace(rules, dst="172.30.9.9")).destination == "10.1.0.1:8080"
    outside = only(trace(rules, dst="172.31.0.1"))
    assert (outside.verdict, outside.destination) == ("ACCEPT", None)


def test_negated_source_matches_only_outside_the_prefix() -> None:
    rules = nat(f"! -s 10.0.0.0/8 -d 172.30.0.1/32 {DNAT_A}")
    assert only(trace(rules, src="10.9.9.9")).verdict == "ACCEPT"
    assert only(trace(rules, src="203.0.113.2", origin="external")).verdict == "DNAT"


def test_ipv6_prefixes_and_bracketed_dnat() -> None:
    rules = nat("-d fd00:30::/64 -p tcp -m tcp --dport 80 -j DNAT --to-destination [fd00:1::5]:8080")
    result = trace(rules, src="fd00:10::2", dst="fd00:30::a", local=("2001:db8::1",))
    assert only(result).destination == "[fd00:1::5]:8080"
    assert only(trace(rules, src="fd00:10::2", dst="fd00:31::a")).verdict == "ACCEPT"


def test_ipv4_rule_never_matches_an_ipv6_packet() -> None:
    rules = nat(f"-s 0.0.0.0/0 {DNAT_A}")
    assert only(trace(rules, src="fd00::2", dst="fd00::3")).verdict == "ACCEPT"
    assert only(trace(rules)).verdict == "DNAT"


def test_unreadable_address_is_uncertain_not_a_silent_miss() -> None:
    result = trace(nat(f"-d cluster.local {DNAT_A}"))
    assert both_ways(result, "-d cluster.local") == {
        "ACCEPT": ("if it does not match: -d cluster.local (address 'cluster.local' not understood)",),
        "10.1.0.1:8080": ("if it matches: -d cluster.local (address 'cluster.local' not understood)",)}


def test_protocol_and_numeric_protocol() -> None:
    rules = nat(f"-p udp {DNAT_A}")
    assert only(trace(rules)).verdict == "ACCEPT"
    assert only(trace(rules, protocol="udp")).verdict == "DNAT"
    assert only(trace(nat(f"-p 132 {DNAT_A}"), protocol="sctp")).verdict == "DNAT"
    assert only(trace(nat(f"! -p tcp {DNAT_A}"))).verdict == "ACCEPT"


def test_dport_range_and_negation() -> None:
    rules = nat(f"-p tcp -m tcp --dport 30000:32767 {DNAT_A}")
    assert only(trace(rules, dport=31000)).verdict == "DNAT"
    assert only(trace(rules, dport=80)).verdict == "ACCEPT"
    assert only(trace(nat(f"-p tcp -m tcp ! --dport 80 {DNAT_A}"), dport=80)).verdict == "ACCEPT"


def test_sport_is_the_packets_source_port() -> None:
    rules = nat(f"-p tcp -m tcp --sport 1024: {DNAT_A}")
    assert only(trace(rules, sport=40000)).verdict == "DNAT"
    assert only(trace(rules, sport=53)).verdict == "ACCEPT"


def test_multiport_lists_and_ranges() -> None:
    rules = nat(f"-p tcp -m multiport --dports 80,443,8000:8100 {DNAT_A}")
    assert only(trace(rules, dport=443)).verdict == "DNAT"
    assert only(trace(rules, dport=8050)).verdict == "DNAT"
    assert only(trace(rules, dport=8443)).verdict == "ACCEPT"
    negated = nat(f"-p tcp -m multiport ! --dports 80,443 {DNAT_A}")
    assert only(trace(negated, dport=443)).verdict == "ACCEPT"
    either = nat(f"-p tcp -m multiport --ports 53 {DNAT_A}")
    assert only(trace(either, dport=80, sport=53)).verdict == "DNAT"


def test_interface_wildcard_when_the_interface_is_known() -> None:
    rules = nat(f"-i cali+ {DNAT_A}")
    assert only(trace(rules, iface="cali12ab")).verdict == "DNAT"
    assert only(trace(rules, iface="eth0")).verdict == "ACCEPT"


def test_unknown_interface_follows_both_ways() -> None:
    result = trace(nat(f"-i eth0 {DNAT_A}"))
    assert set(both_ways(result, "-i eth0 (the packet's interface is not known)")) == {"ACCEPT", "10.1.0.1:8080"}


# -- addrtype, conntrack, marks -------------------------------------------------------------------


def test_addrtype_local_uses_the_node_addresses_and_loopback() -> None:
    rules = nat(f"-m addrtype --dst-type LOCAL {DNAT_A}")
    assert only(trace(rules, dst=NODE_IP, origin="external", src="203.0.113.2")).verdict == "DNAT"
    assert only(trace(rules, dst="192.168.0.3", origin="external", src="203.0.113.2")).verdict == "ACCEPT"
    assert only(trace(rules, dst="127.0.0.5", src="127.0.0.1", origin="external",
                      route_localnet=True)).verdict == "DNAT"
    negated = nat(f"-m addrtype ! --src-type LOCAL {DNAT_A}")
    assert only(trace(negated, src="203.0.113.2", origin="external")).verdict == "DNAT"


def test_addrtype_limit_iface_is_uncertain() -> None:
    result = trace(nat(f"-m addrtype --dst-type LOCAL --limit-iface-in {DNAT_A}"), dst=NODE_IP)
    assert set(both_ways(result, "--limit-iface-in (per-interface route types are not modelled)")) == {
        "ACCEPT", "10.1.0.1:8080"}


FILTER_DNAT_CHECK = """
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 172.30.0.1/32 -j DNAT --to-destination 10.1.0.1:80
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j DROP
-A FORWARD -m conntrack ! --ctstate NEW -j DROP
-A FORWARD -m conntrack --ctstate DNAT -j REJECT
COMMIT
"""


def test_ctstate_new_and_dnat_for_a_first_packet() -> None:
    # ESTABLISHED never holds and NEW always does; DNAT only after a DNAT rule rewrote it.
    assert only(trace(FILTER_DNAT_CHECK, dst="172.30.0.1")).verdict == "REJECT"
    assert only(trace(FILTER_DNAT_CHECK, dst="172.30.0.2")).verdict == "ACCEPT"


def test_kube_firewall_spares_dnated_localhost_traffic() -> None:
    rules = """
    *nat
    :OUTPUT ACCEPT [0:0]
    :POSTROUTING ACCEPT [0:0]
    -A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 30080 -j DNAT --to-destination 127.0.0.1:8080
    COMMIT
    *filter
    :INPUT ACCEPT [0:0]
    :OUTPUT ACCEPT [0:0]
    -A INPUT -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
    COMMIT
    """
    # From the node to a local address the packet loops back through lo and filter INPUT.
    assert only(trace(rules, src=NODE_IP, dst="127.0.0.1", dport=30080, origin="node")).verdict == "DNAT"
    dropped = only(trace(rules, src=NODE_IP, dst="127.0.0.1", dport=22, origin="node"))
    assert dropped.verdict == "DROP"
    assert [(s.table, s.chain) for s in dropped.path][-1] == ("filter", "INPUT")


def test_mark_targets_and_match() -> None:
    rules = nat("-j MARK --set-xmark 0x10/0xff", "-j MARK --or-mark 0x4000", "-j MARK --and-mark 0x40ff",
                "-j MARK --xor-mark 0x1", f"-m mark --mark 0x4011/0xffff {DNAT_A}")
    result = only(trace(rules))
    assert result.destination == "10.1.0.1:8080"
    assert [s.action for s in result.path][:4] == ["mark set to 0x10", "mark |= 0x4000", "mark &= 0x40ff",
                                                   "mark ^= 0x1"]
    assert only(trace(nat(f"-m mark ! --mark 0x0/0xffffffff {DNAT_A}"))).verdict == "ACCEPT"


KUBE_POSTROUTING = """
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -d 172.30.0.1/32 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A PREROUTING -d 172.30.0.1/32 -j DNAT --to-destination 10.1.0.1:80
-A POSTROUTING -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
COMMIT
"""


def test_masquerade_is_decided_by_running_kube_postrouting() -> None:
    outside = only(trace(KUBE_POSTROUTING, src="203.0.113.2", dst="172.30.0.1", origin="external"))
    assert (outside.destination, outside.masquerade) == ("10.1.0.1:80", True)
    assert outside.path[-1].action == "MASQUERADE"
    pod = only(trace(KUBE_POSTROUTING, src="10.0.0.2", dst="172.30.0.1"))
    assert (pod.destination, pod.masquerade) == ("10.1.0.1:80", False)


def test_missing_kube_mark_masq_chain_is_assumed_to_set_the_mark() -> None:
    rules = KUBE_POSTROUTING.replace(":KUBE-MARK-MASQ - [0:0]\n", "").replace(
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n", "")
    outcome = only(trace(rules, src="203.0.113.2", dst="172.30.0.1", origin="external"))
    assert outcome.masquerade is True
    assert any("KUBE-MARK-MASQ is not in the dump" in n for n in outcome.notes)


# -- chains, jumps and policies -------------------------------------------------------------------


def test_goto_then_return_goes_back_to_the_caller_of_the_goto_chain() -> None:
    rules = nat("-j A", "-j DNAT --to-destination 10.1.0.9:80", chains=("A", "B")).replace(
        "COMMIT", "-A A -g B\n-A A -j DNAT --to-destination 10.6.6.6:80\n-A B -j RETURN\nCOMMIT")
    outcome = only(trace(rules))
    assert outcome.destination == "10.1.0.9:80"
    assert [s.action for s in outcome.path][:3] == ["jump", "goto", "RETURN"]


def test_plain_jump_returns_to_the_next_rule_of_the_caller() -> None:
    rules = nat("-j A", "-j DNAT --to-destination 10.1.0.9:80", chains=("A",)).replace(
        "COMMIT", "-A A -j RETURN\n-A A -j DNAT --to-destination 10.6.6.6:80\nCOMMIT")
    assert only(trace(rules)).destination == "10.1.0.9:80"


def test_return_in_a_builtin_chain_applies_its_policy() -> None:
    rules = """
    *filter
    :INPUT ACCEPT [0:0]
    :FORWARD DROP [0:0]
    :OUTPUT ACCEPT [0:0]
    -A FORWARD -j RETURN
    -A FORWARD -j ACCEPT
    COMMIT
    """
    outcome = only(trace(rules))
    assert outcome.verdict == "DROP"
    assert outcome.path[-1].action == "policy DROP"


def test_input_policy_applies_to_local_destinations_and_forward_to_others() -> None:
    rules = """
    *filter
    :INPUT DROP [0:0]
    :FORWARD ACCEPT [0:0]
    :OUTPUT ACCEPT [0:0]
    COMMIT
    """
    assert only(trace(rules, dst=NODE_IP)).verdict == "DROP"
    assert only(trace(rules, dst="10.1.0.1")).verdict == "ACCEPT"


def test_accept_ends_only_its_own_table() -> None:
    rules = """
    *mangle
    :PREROUTING ACCEPT [0:0]
    -A PREROUTING -j ACCEPT
    COMMIT
    *nat
    :PREROUTING ACCEPT [0:0]
    -A PREROUTING -j DNAT --to-destination 10.1.0.1:80
    COMMIT
    """
    assert only(trace(rules)).destination == "10.1.0.1:80"


def test_node_packets_use_nat_output_not_prerouting() -> None:
    rules = """
    *nat
    :PREROUTING ACCEPT [0:0]
    :OUTPUT ACCEPT [0:0]
    -A PREROUTING -j DNAT --to-destination 10.9.9.9:80
    -A OUTPUT -j DNAT --to-destination 10.1.0.1:80
    COMMIT
    """
    assert only(trace(rules, src=NODE_IP, origin="node")).destination == "10.1.0.1:80"
    assert only(trace(rules, src="10.0.0.2", origin="pod")).destination == "10.9.9.9:80"


def test_notrack_skips_the_nat_table() -> None:
    rules = "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j NOTRACK\nCOMMIT\n" + nat(DNAT_A)
    outcome = only(trace(rules))
    assert (outcome.verdict, outcome.destination) == ("ACCEPT", None)


def test_loop_is_cut_with_a_warning() -> None:
    rules = nat("-j A", chains=("A", "B")).replace("COMMIT", "-A A -j B\n-A B -j A\nCOMMIT")
    result = trace(rules)
    assert any("jumps back into itself" in w for w in result.warnings)
    assert only(result).uncertain is True


def test_depth_guard() -> None:
    names = [f"C{i}" for i in range(10)]
    chain_rules = "".join(f"-A {a} -j {b}\n" for a, b in zip(names, names[1:], strict=False))
    rules = nat("-j C0", chains=tuple(names)).replace("COMMIT", chain_rules + "COMMIT")
    result = trace(rules, max_depth=4)
    assert any("deeper than 4" in w for w in result.warnings)
    assert trace(rules).warnings == ()


def test_rule_without_target_only_counts() -> None:
    outcome = only(trace(nat("-d 172.30.0.1/32", DNAT_A)))
    assert outcome.destination == "10.1.0.1:8080"
    assert outcome.path[0].action == "matched"


def test_log_continues_and_unknown_targets_are_flagged() -> None:
    assert only(trace(nat("-j LOG --log-prefix x", DNAT_A))).verdict == "DNAT"
    queued = only(trace(nat("-j NFQUEUE --queue-num 1", DNAT_A)))
    assert (queued.verdict, queued.uncertain) == ("ACCEPT", True)
    result = trace(nat("-j CILIUM_PRE_nat", DNAT_A))
    assert only(result).uncertain is True
    assert any("CILIUM_PRE_nat" in w for w in result.warnings)


# -- branching ------------------------------------------------------------------------------------


KUBE_SVC = """
*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SVC-X - [0:0]
:KUBE-SEP-A - [0:0]
:KUBE-SEP-B - [0:0]
:KUBE-SEP-C - [0:0]
-A PREROUTING -d 172.30.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-X
{affinity}-A KUBE-SVC-X -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-A
-A KUBE-SVC-X -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-B
-A KUBE-SVC-X -j KUBE-SEP-C
-A KUBE-SEP-A -p tcp -m recent --set --name KUBE-SEP-A --rsource -m tcp -j DNAT --to-destination 10.1.0.1:80
-A KUBE-SEP-B -p tcp -m recent --set --name KUBE-SEP-B --rsource -m tcp -j DNAT --to-destination 10.1.0.2:80
-A KUBE-SEP-C -p tcp -m tcp -j DNAT --to-destination 10.1.0.3:80
COMMIT
"""
AFFINITY = "".join(
    f"-A KUBE-SVC-X -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-{x} --mask 255.255.255.255 "
    f"--rsource -j KUBE-SEP-{x}\n" for x in "AB")


def test_statistic_splits_and_probabilities_sum_to_one() -> None:
    result = trace(KUBE_SVC.format(affinity=""))
    assert answer(result) == {"10.1.0.1:80": pytest.approx(1 / 3), "10.1.0.2:80": pytest.approx(1 / 3),
                              "10.1.0.3:80": pytest.approx(1 / 3)}
    assert result.total_probability == pytest.approx(1.0)
    first = next(o for o in result.outcomes if o.destination == "10.1.0.1:80")
    assert "branch: probability 0.3333333333 taken" in [s.action for s in first.path]


def test_affinity_pinned_branches_carry_no_share_of_new_clients() -> None:
    result = trace(KUBE_SVC.format(affinity=AFFINITY))
    fresh = [o for o in result.outcomes if o.affinity is None]
    pinned = {o.affinity: o for o in result.outcomes if o.affinity is not None}
    assert sum(o.probability for o in fresh) == pytest.approx(1.0)
    assert {o.destination for o in fresh} == {"10.1.0.1:80", "10.1.0.2:80", "10.1.0.3:80"}
    assert set(pinned) == {"KUBE-SEP-A", "KUBE-SEP-B"}
    assert pinned["KUBE-SEP-A"].destination == "10.1.0.1:80"
    assert pinned["KUBE-SEP-B"].destination == "10.1.0.2:80"
    assert all(o.probability == 0.0 for o in pinned.values())
    assert "only for a client already pinned to KUBE-SEP-B (session affinity)" in pinned["KUBE-SEP-B"].notes


def test_identical_outcomes_merge_keeping_the_most_likely_path() -> None:
    rules = KUBE_SVC.format(affinity="").replace("10.1.0.2:80", "10.1.0.1:80")
    result = trace(rules)
    assert answer(result) == {"10.1.0.1:80": pytest.approx(2 / 3), "10.1.0.3:80": pytest.approx(1 / 3)}


def test_unknown_module_follows_both_branches_and_flags_them() -> None:
    result = trace(nat(f"-m cgroup --path /kube {DNAT_A}"))
    assert set(both_ways(result, "-m cgroup --path /kube (module cgroup not modelled)")) == {"ACCEPT", "10.1.0.1:8080"}
    dnat = next(o for o in result.outcomes if o.verdict == "DNAT")
    assert any("module cgroup not modelled" in s.action for s in dnat.path)


def test_physdev_is_decided_where_the_snapshot_tells_and_split_where_it_cannot() -> None:
    rules = nat(f"-m physdev --physdev-is-in {DNAT_A}")
    # A pod's packet: whether it entered through a bridge port depends on the CNI, which a dump does not say.
    assert set(both_ways(trace(rules), "--physdev-is-in")) == {"ACCEPT", "10.1.0.1:8080"}
    # From the node itself there is no physdev; a routed packet from outside does not come in on a bridge port.
    assert only(trace(rules, origin="node", src=NODE_IP)).verdict == "ACCEPT"
    assert only(trace(rules, origin="external", src="203.0.113.2")).verdict == "ACCEPT"
    # With the node's bridge ports known, the packet's interface decides.
    packet = Packet("10.0.0.2", "172.30.0.1", 80, "tcp", 40000, "pod", "veth1")
    bridged = trace_iptables(dump(rules), packet, local_ips=(NODE_IP,), bridge_ports={"veth1": "cni0"})
    assert only(bridged).verdict == "DNAT"
    routed = trace_iptables(dump(rules), packet, local_ips=(NODE_IP,), bridge_ports={})
    assert only(routed).verdict == "ACCEPT"


def test_a_condition_that_changes_nothing_is_dropped() -> None:
    """Both sides of an undecidable match end alike: the answer is certain, not split."""
    result = trace(nat("-m cgroup --path /kube -j LOG", DNAT_A))
    assert answer(result) == {"10.1.0.1:8080": 1.0} and not only(result).conditions


def test_ipset_is_uncertain_without_members_and_decided_with_them() -> None:
    rules = nat(f"-m set --match-set KUBE-CLUSTER-IP dst,dst {DNAT_A}")
    assert set(both_ways(trace(rules), "ipset members not known")) == {"ACCEPT", "10.1.0.1:8080"}
    members = {"KUBE-CLUSTER-IP": ["172.30.0.1,tcp:80"]}
    assert only(trace(rules, ipsets=members)).verdict == "DNAT"
    assert only(trace(rules, ipsets=members, dport=81)).verdict == "ACCEPT"
    assert only(trace(rules, ipsets=members, protocol="udp")).verdict == "ACCEPT"
    nets = nat(f"-m set --match-set NETS src {DNAT_A}")
    assert only(trace(nets, ipsets={"NETS": ["10.0.0.0/8"]})).verdict == "DNAT"


def test_branch_cap_warns_and_keeps_the_likeliest() -> None:
    rules = nat(*(f"-m statistic --mode random --probability 0.5 -j MARK --or-mark {1 << i:#x}"
                  for i in range(6)), DNAT_A)
    result = trace(rules, max_states=8)
    assert any("too many branches" in w for w in result.warnings)
    assert only(result).probability < 1.0
    assert only(trace(rules)).probability == pytest.approx(1.0)


def _service_of(n: int) -> str:
    """A ClusterIP Service of ``n`` endpoints, as kube-proxy writes it: one statistic rule per endpoint."""
    seps = [f"SEP{i}" for i in range(n)]
    rules = [f"-A SVC -m statistic --mode random --probability {1 / (n - i):.11f} -j {sep}" for i, sep in
             enumerate(seps[:-1])] + [f"-A SVC -j {seps[-1]}"]
    rules += [f"-A {sep} -p tcp -j DNAT --to-destination 10.1.{i // 250}.{i % 250 + 1}:8080"
              for i, sep in enumerate(seps)]
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]", ":SVC - [0:0]", *(f":{sep} - [0:0]" for sep in seps),
             "-A PREROUTING -d 172.30.0.1/32 -p tcp --dport 80 -j SVC", *rules, "-A POSTROUTING -j RETURN", "COMMIT"]
    return "\n".join(lines) + "\n"


def test_the_bounds_grow_with_the_ways_the_rules_split_a_connection() -> None:
    # A Service of more endpoints than the bounds allow branches and rule evaluations (here bounds of 64 and
    # 500, as 4,096 and 50,000 are for a Service of 5,000 endpoints): every endpoint is still an outcome with its
    # share, fully traced, and nothing is said to be cut. (With fixed bounds, a 5,000-endpoint Service lost 18% of
    # its outcomes and the rest were uncertain.)
    result = trace(_service_of(300), max_states=64, max_steps=500)
    assert len(result.outcomes) == 300 and not result.warnings, result.warnings
    assert all(o.verdict == "DNAT" and not o.uncertain for o in result.outcomes)
    assert sum(o.probability or 0.0 for o in result.outcomes) == pytest.approx(1.0)
    assert {o.destination for o in result.outcomes} == {f"10.1.{i // 250}.{i % 250 + 1}:8080" for i in range(300)}


def test_a_blow_up_stays_bounded_however_the_bounds_grow() -> None:
    # Each of 12 statistic rules doubles every branch, which all go on in the chain (4,096 ways in all): such
    # splits do not grow the bound, which stays at 8 branches from the 4th rule on (16 -> 8, each time).
    rules = nat(*(f"-m statistic --mode random --probability 0.5 -j MARK --or-mark {1 << i:#x}"
                  for i in range(12)), DNAT_A)
    result = trace(rules, max_states=8, max_steps=100_000)
    cuts = [w for w in result.warnings if w.startswith("too many branches")]
    assert [w.split(":")[0] for w in cuts] == [f"too many branches at nat PREROUTING rule {i}" for i in range(4, 13)]
    assert all(": 8 least likely ones " in w for w in cuts)
    assert only(result).probability < 1.0


# -- routing --------------------------------------------------------------------------------------


def test_loopback_from_outside_is_a_martian_unless_route_localnet() -> None:
    rules = nat()
    dropped = only(trace(rules, dst="127.0.0.1", route_localnet=False))
    assert dropped.verdict == "DROP"
    assert dropped.path[-1].table == "routing"
    assumed = trace(rules, dst="127.0.0.1")
    assert only(assumed).verdict == "ACCEPT"
    assert any("route_localnet" in w for w in assumed.warnings)


def test_unreachable_kube_services_is_warned() -> None:
    rules = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\nCOMMIT\n"
    assert any("nat PREROUTING has no jump to KUBE-SERVICES" in w for w in trace(rules).warnings)


# -- kube-proxy test semantics, JSON, dispatch, input errors ---------------------------------------


def test_kube_proxy_semantics_list_every_endpoint_and_ignore_affinity() -> None:
    result = trace(KUBE_SVC.format(affinity=AFFINITY), kube_proxy_test_semantics=True)
    assert kube_proxy_output(result) == ("10.1.0.1:80, 10.1.0.2:80, 10.1.0.3:80", False)
    assert [round(o.probability, 6) for o in result.outcomes] == [0.333333, 0.333333, 0.333333]


def test_kube_proxy_output_needs_kube_proxy_semantics() -> None:
    with pytest.raises(ValueError, match="kube_proxy_test_semantics"):
        kube_proxy_output(trace(nat()))


def test_trace_json_shape() -> None:
    data = trace_to_dict(trace(KUBE_SVC.format(affinity="")))
    assert data["packet"] == {"src": "10.0.0.2", "dst": "172.30.0.1", "dport": 80, "sport": 40000,
                              "protocol": "tcp", "origin": "pod", "inInterface": None}
    first = data["outcomes"][0]
    assert {k: first[k] for k in ("verdict", "destination", "probability", "masquerade", "uncertain")} == {
        "verdict": "DNAT", "destination": "10.1.0.1:80", "probability": 0.3333333333, "masquerade": False,
        "uncertain": False}
    assert first["path"][0] == {"table": "nat", "chain": "PREROUTING", "index": 1, "action": "jump",
                                "rule": "-A PREROUTING -d 172.30.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-X",
                                "target": "KUBE-SVC-X"}
    assert (first["conditions"], first["conditionalProbability"]) == ([], None)


def test_trace_packet_dispatches_on_the_snapshot() -> None:
    snap = Snapshot(iptables=dump(nat(f"-d 172.30.0.1/32 {DNAT_A}")), node=NodeFacts(name="n", proxy_mode="iptables",
                                                                 sysctls={"net.ipv4.conf.all.route_localnet": "0"}))
    pkt = Packet("10.0.0.2", "172.30.0.1", 80)
    assert only(trace_packet(snap, pkt)).destination == "10.1.0.1:8080"
    # The sysctl from the snapshot decides the martian case.
    assert only(trace_packet(snap, Packet("10.0.0.2", "127.0.0.1", 80))).verdict == "DROP"
    assert any("addresses are not known" in w for w in trace_packet(snap, pkt).warnings)
    with pytest.raises(SvctraceError, match="no IPv6 iptables rules"):
        trace_packet(snap, Packet("fd00::2", "fd00::3", 80))
    with pytest.raises(SvctraceError, match="no nftables ruleset in"):
        trace_packet(snap, pkt, TraceOptions(mode="nftables"))
    with pytest.raises(SvctraceError, match="unknown proxy mode 'ebpf'"):
        trace_packet(snap, pkt, TraceOptions(mode="ebpf"))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"src": "10.0.0.300"}, "source '10.0.0.300' is not an IP address"),
    ({"dst": "fd00::1"}, "different IP families"),
    ({"dport": 0}, "destination port 0 is out of range"),
    ({"protocol": "icmp"}, "protocol 'icmp' is not supported"),
    ({"origin": "mars"}, "packet origin 'mars' is not known"),
])
def test_bad_packets_are_usage_errors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"src": "10.0.0.2", "dst": "10.0.0.3", "dport": 80, **kwargs}
    with pytest.raises(UsageError, match=message):
        Packet(**args)  # type: ignore[arg-type]
