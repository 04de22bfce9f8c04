"""The iptables tracer against every packet case kube-proxy's own tests state (../shared/conformance).

Two runs per case:

1. kube-proxy test semantics: svctrace must print exactly kube-proxy's ``output`` and ``masq``.
2. kernel semantics: the dump as a real node would hold it (the case's dump, its ``trace_prelude``, and
   the jump rules kube-proxy ensures in built-in chains outside its restore data, where missing), the
   packet entering where it really enters (pod, node or outside). The set of final destinations (or
   REJECT/DROP/no rewrite) and the masquerade decision must agree, except for the cases listed in
   ``KERNEL_DIVERGES`` with the reason and what the kernel gives instead (docs/tracer.md).

A third test shows why the completion matters: traced over the dump exactly as the test file gives it,
node-originated packets never reach kube-proxy's rules (the kernel sends them through nat OUTPUT, which
those dumps leave empty; kube-proxy's test tracer sends them through PREROUTING).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from svctrace.model.iptables import IptablesDump
from svctrace.model.trace import Packet, TraceOptions, TraceResult
from svctrace.parsers.iptables_save import parse
from svctrace.trace.iptables import kube_proxy_output, trace_iptables
from tests.shared_data import shared_dir

POD_CIDR = ipaddress.ip_network("10.0.0.0/8")  # the corpus' pod CIDR (README: test fixtures)

# The jump rules kube-proxy ensures in built-in chains (pkg/proxy/iptables/proxier.go iptablesJumpChains,
# v1.26+), in the order it ensures them. Each is *prepended* when missing, so on a fresh node the last one
# ends up first. KUBE-FIREWALL's jumps come from kubelet (and newer kube-proxy), also prepended, last.
KUBE_PROXY_JUMPS: tuple[tuple[str, str, str, str], ...] = (
    ("filter", "INPUT", "KUBE-EXTERNAL-SERVICES",
     '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals"'),
    ("filter", "FORWARD", "KUBE-EXTERNAL-SERVICES",
     '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals"'),
    ("filter", "INPUT", "KUBE-NODEPORTS", '-m comment --comment "kubernetes health check service ports"'),
    ("filter", "FORWARD", "KUBE-SERVICES",
     '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals"'),
    ("filter", "OUTPUT", "KUBE-SERVICES",
     '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals"'),
    ("filter", "FORWARD", "KUBE-FORWARD", '-m comment --comment "kubernetes forwarding rules"'),
    ("filter", "INPUT", "KUBE-PROXY-FIREWALL",
     '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall"'),
    ("filter", "OUTPUT", "KUBE-PROXY-FIREWALL",
     '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall"'),
    ("filter", "FORWARD", "KUBE-PROXY-FIREWALL",
     '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall"'),
    ("nat", "OUTPUT", "KUBE-SERVICES", '-m comment --comment "kubernetes service portals"'),
    ("nat", "PREROUTING", "KUBE-SERVICES", '-m comment --comment "kubernetes service portals"'),
    ("nat", "POSTROUTING", "KUBE-POSTROUTING", '-m comment --comment "kubernetes postrouting rules"'),
    ("filter", "INPUT", "KUBE-FIREWALL", ""),
    ("filter", "OUTPUT", "KUBE-FIREWALL", ""),
)

# Where a case's packet enters, when its source address alone does not say: these tests model a node
# whose LB IP is also one of its own addresses and that sends from it.
ORIGIN_OVERRIDES = {
    "TestLoadBalancer::same node to LB1, SNATted to LB1 (implicitly allowed)": "node",
    "TestLoadBalancer::same node to LB2, SNATted to LB2 (implicitly allowed)": "node",
    "TestLoadBalancer__openshift_06d263eb::same node to LB1, SNATted to LB1 (implicitly allowed)": "node",
    "TestLoadBalancer__openshift_06d263eb::same node to LB2, SNATted to LB2 (implicitly allowed)": "node",
}

_MARTIAN = ("kube-proxy's tracer runs no routing: it reports that no rule matched. In the kernel a packet "
            "from a pod to 127.0.0.1 is a martian destination and is dropped at the routing decision, "
            "because kube-proxy sets route_localnet=1 only when nodePortAddresses includes loopback, and "
            "this test sets nodePortAddresses to 192.168.0.0/24")
# case id -> (why the kernel cannot give kube-proxy's answer, what the kernel gives: {outcome: masq})
KERNEL_DIVERGES: dict[str, tuple[str, dict[str, bool]]] = {
    "TestOnlyLocalNodePorts::pod to localhost doesn't work because localhost is not in nodePortAddresses":
        (_MARTIAN, {"DROP": False}),
    "TestOnlyLocalNodePortsNoClusterCIDR::pod to localhost doesn't work because localhost is not in "
    "nodePortAddresses": (_MARTIAN, {"DROP": False}),
}

# Cases whose answer differs when the dump is traced exactly as given (plus trace_prelude, without the
# jumps a real node has): node-originated packets the kernel sends through nat OUTPUT, which these dumps
# leave without a jump to KUBE-SERVICES. kube-proxy's test tracer sends them through PREROUTING instead.
NODE_PACKETS_MISS_OUTPUT_JUMP = frozenset({
    "TestLoadBalancer::node to LB1 (allowed by LoadBalancerSourceRanges)",
    "TestLoadBalancer::node to LB2 (allowed by LoadBalancerSourceRanges)",
    "TestLoadBalancer::same node to LB1, SNATted to LB1 (implicitly allowed)",
    "TestLoadBalancer::same node to LB2, SNATted to LB2 (implicitly allowed)",
    "TestLoadBalancer__openshift_06d263eb::node to LB1 (allowed by LoadBalancerSourceRanges)",
    "TestLoadBalancer__openshift_06d263eb::node to LB2 (allowed by LoadBalancerSourceRanges)",
    "TestLoadBalancer__openshift_06d263eb::same node to LB1, SNATted to LB1 (implicitly allowed)",
    "TestLoadBalancer__openshift_06d263eb::same node to LB2, SNATted to LB2 (implicitly allowed)",
    "TestNodePort::node to nodePort",
    "TestNodePort::localhost to nodePort gets masqueraded",
})


@dataclass(frozen=True)
class Case:
    id: str
    file: Path
    data: dict[str, Any]
    packet: dict[str, Any]


def _shared_or_none() -> Path | None:
    try:
        return shared_dir()
    except (pytest.skip.Exception, pytest.fail.Exception):
        return None  # test_corpus_is_present reports it (a failure in CI)


def _cases() -> list[Case]:
    root = _shared_or_none()
    if root is None:
        return []
    out = []
    for folder in ("iptables", "iptables-older"):
        for path in sorted((root / "conformance" / folder).glob("*.json")):
            data = json.loads(path.read_text())
            for pkt in data.get("packets") or ():
                out.append(Case(f"{path.stem}::{pkt['name']}", path, data, pkt))
    return out


CASES = _cases()
_DUMPS: dict[tuple[Path, bool], IptablesDump] = {}


def test_corpus_is_present() -> None:
    root = shared_dir()  # fails in CI, skips elsewhere, when ../shared is missing
    assert (root / "conformance" / "iptables" / "TestTracePacket.json").is_file()
    # README: 7 cases in the newest test file plus 97 transcribed from older ones.
    assert len(CASES) == 104


def test_divergence_lists_name_real_cases() -> None:
    ids = {c.id for c in CASES}
    if not ids:
        pytest.skip("conformance corpus not present")
    for listed in (KERNEL_DIVERGES, NODE_PACKETS_MISS_OUTPUT_JUMP, ORIGIN_OVERRIDES):
        assert set(listed) <= ids


def _add_rules(text: str, table: str, chain: str, rules: list[str], *, prepend: bool) -> str:
    """Put rules into one chain of an iptables-save text, declaring the table/chain when missing."""
    lines = text.split("\n")
    if f"*{table}" not in lines:
        lines[-1:-1] = [f"*{table}", "COMMIT"]
    start = lines.index(f"*{table}")
    end = start + lines[start:].index("COMMIT")
    if not any(ln.startswith(f":{chain} ") for ln in lines[start:end]):
        lines.insert(start + 1, f":{chain} ACCEPT [0:0]")
        end += 1
    own = [i for i in range(start, end) if lines[i].startswith(f"-A {chain} ")]
    at = (own[0] if own else end) if prepend else (own[-1] + 1 if own else end)
    lines[at:at] = rules
    return "\n".join(lines)


def with_prelude(text: str, prelude: dict[str, Any] | None) -> str:
    """The dump plus the rules the fake iptables held when kube-proxy's test traced the packets."""
    for table, chains in (prelude or {}).items():
        if table == "what":
            continue
        for chain, rules in chains.items():
            text = _add_rules(text, table, chain, list(rules), prepend=True)
    return text


def with_kube_proxy_jumps(text: str) -> str:
    """The dump plus the built-in-chain jumps a running kube-proxy ensures, each only if missing."""
    dump = parse(text, "completion")
    for table, chain, target, args in KUBE_PROXY_JUMPS:
        if dump.chain(table, target) is None:
            continue
        existing = dump.chain(table, chain)
        if existing is not None and any(r.target == target for r in existing.rules):
            continue
        rule = " ".join(w for w in ("-A", chain, args, "-j", target) if w)
        text = _add_rules(text, table, chain, [rule], prepend=True)
        dump = parse(text, "completion")
    return text


def _dump(case: Case, complete: bool) -> IptablesDump:
    key = (case.file, complete)
    if key not in _DUMPS:
        text = with_prelude(case.data["iptables_save"], case.data.get("trace_prelude"))
        if complete:
            text = with_kube_proxy_jumps(text)
        _DUMPS[key] = parse(text, str(case.file))
    return _DUMPS[key]


def _origin(case: Case) -> str:
    if case.id in ORIGIN_OVERRIDES:
        return ORIGIN_OVERRIDES[case.id]
    src = case.packet["source_ip"]
    if src in case.data["tracer_local_ips"]:
        return "node"
    return "pod" if ipaddress.ip_address(src) in POD_CIDR else "external"


def _route_localnet(case: Case) -> bool:
    # kube-proxy sets route_localnet=1 when localhost NodePorts are on (all these tests) and the
    # nodePortAddresses (default: all) include IPv4 loopback.
    addrs = case.data.get("nodeport_addresses")
    if not addrs:
        return True
    return any(ipaddress.ip_address("127.0.0.1") in ipaddress.ip_network(a) for a in addrs)


def _packet(case: Case, origin: str = "pod") -> Packet:
    p = case.packet
    return Packet(p["source_ip"], p["dest_ip"], p["dest_port"], p["protocol"], origin=origin)


def _answer(result: TraceResult) -> dict[str, bool]:
    """{destination or verdict: masquerade} over the outcomes a new client can reach."""
    got: dict[str, bool] = {}
    for o in result.outcomes:
        if o.probability > 0:
            got[o.destination or o.verdict] = o.masquerade
    return got


def _expected(case: Case) -> dict[str, bool]:
    # kube-proxy's "" (no rule matched) is the kernel's ACCEPT without any rewrite.
    return {out: case.packet["masq"] for out in (case.packet["outputs"] or ["ACCEPT"])}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_kube_proxy_test_semantics(case: Case) -> None:
    result = trace_iptables(_dump(case, complete=False), _packet(case), local_ips=case.data["tracer_local_ips"],
                            options=TraceOptions(kube_proxy_test_semantics=True))
    assert kube_proxy_output(result) == (case.packet["output"], case.packet["masq"])
    assert result.semantics == "kube-proxy-test"
    dnat = [o.destination for o in result.outcomes if o.verdict == "DNAT"]
    assert dnat == [o for o in case.packet["outputs"] if o not in ("ACCEPT", "DROP", "REJECT")]
    assert sum(o.probability for o in result.outcomes) == pytest.approx(1.0)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_kernel_semantics(case: Case) -> None:
    result = trace_iptables(_dump(case, complete=True), _packet(case, _origin(case)),
                            local_ips=case.data["tracer_local_ips"],
                            options=TraceOptions(route_localnet=_route_localnet(case)))
    assert sum(o.probability for o in result.outcomes) == pytest.approx(1.0)
    assert not any(o.uncertain for o in result.outcomes)
    if case.id in KERNEL_DIVERGES:
        _, kernel = KERNEL_DIVERGES[case.id]
        assert _answer(result) == kernel
        assert _answer(result) != _expected(case)
        return
    assert _answer(result) == _expected(case)
    if case.packet["output"] == "ACCEPT":
        # An explicit ACCEPT rule (the health-check NodePort), not merely no rule at all.
        assert any(s.action == "ACCEPT" and s.table == "filter" for o in result.outcomes for s in o.path)
    fresh = [o for o in result.outcomes if o.affinity is None]
    if len(case.packet["outputs"]) > 1:
        # Every endpoint kube-proxy lists is reached by a real share of new connections.
        assert all(o.probability > 0.05 for o in fresh)
    for pinned in (o for o in result.outcomes if o.affinity is not None):
        # Session affinity: a pinned client lands on one of the same endpoints, at no share of new ones.
        assert pinned.probability == 0.0
        assert pinned.destination in case.packet["outputs"]
        assert any("already pinned" in n for n in pinned.notes)


@pytest.mark.parametrize("case", [c for c in CASES if _origin(c) == "node"],
                         ids=[c.id for c in CASES if _origin(c) == "node"])
def test_node_packets_over_the_dump_as_given(case: Case) -> None:
    result = trace_iptables(_dump(case, complete=False), _packet(case, "node"),
                            local_ips=case.data["tracer_local_ips"])
    if case.id in NODE_PACKETS_MISS_OUTPUT_JUMP:
        assert _answer(result) == {"ACCEPT": False}
        assert any("nat OUTPUT has no jump to KUBE-SERVICES" in w for w in result.warnings)
    else:
        # The dump carries its own nat OUTPUT jump (the hand-written TestTracePacket(s) literals) or the
        # case needs no nat rule at all.
        assert _answer(result) == _expected(case)
