"""kube-proxy's unit-test packet tracer (pkg/proxy/iptables/proxier_test.go tracePacket), ported.

Not the kernel: kube-proxy's tests walk nat PREROUTING, then filter's Service chains, with shortcuts of
their own (kube-proxy-formats.md §4). svctrace reproduces them to check itself against kube-proxy's
expected outputs (``--kube-proxy-test``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from svctrace.model.actions import DnatAction
from svctrace.model.addresses import ip_value
from svctrace.model.iptables import IptablesDump, Rule
from svctrace.model.matches import SRC, AddrMatch, AddrTypeMatch, CtStateMatch, MarkMatch, RecentMatch
from svctrace.model.trace import KubeProxyTestView, Outcome, Packet, TraceResult, TraceStep

_KP_FILTER_CHAINS = ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL")
_VERDICTS = ("ACCEPT", "DROP", "REJECT")
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"


@dataclass
class _KubeProxyTracer:
    dump: IptablesDump
    local: frozenset[str]
    protocol: str
    src: str
    dst: str
    dport: int
    outputs: list[str] = field(default_factory=list)
    found: list[tuple[str, float, tuple[TraceStep, ...], bool]] = field(default_factory=list)
    masq: bool = False
    share: float = 1.0
    depth: int = 0

    @staticmethod
    def _address(m: AddrMatch, value: str) -> bool:
        v = ip_value(value)
        if v is None:
            return False
        return any(p.contains(*v) for p in m.prefixes) != m.negated

    def _addrtype(self, m: AddrTypeMatch | None, value: str) -> bool:
        if m is None:
            return True
        actual = "LOCAL" if value in self.local else "not-matched"
        return (actual in m.types) != m.negated

    def matches(self, rule: Rule) -> bool:
        src, dst = rule.source, rule.destination
        if src is not None and not self._address(src, self.src):
            return False
        types = rule.all(AddrTypeMatch)
        if not self._addrtype(next((t for t in types if t.field == SRC), None), self.src):
            return False
        proto = rule.protocol
        if proto is not None and (proto.protocol == self.protocol) == proto.negated:
            return False
        if dst is not None and not self._address(dst, self.dst):
            return False
        if not self._addrtype(next((t for t in types if t.field != SRC), None), self.dst):
            return False
        dport = rule.dport
        if dport is not None and dport.hits(self.dport) == dport.negated:
            return False
        # Rules that look at history (affinity, mark, conntrack state) never match a first packet.
        return not any(isinstance(m, (MarkMatch, CtStateMatch)) or (isinstance(m, RecentMatch) and m.op == "rcheck")
                       for m in rule.matches)

    def run(self, table: str, name: str, path: tuple[TraceStep, ...]) -> bool:
        """Walk a chain; True when it hit a terminal target (kube-proxy's ``runChain``)."""
        chain = self.dump.chain(table, name)
        if chain is None or self.depth > 64:
            return False
        self.depth += 1
        try:
            for rule in chain.rules:
                target = rule.target
                if target is None or not self.matches(rule):
                    continue
                here = TraceStep(table, name, rule.index, rule.text, target)
                if target == KUBE_MARK_MASQ:
                    self.masq = True
                    path = (*path, replace(here, action="mark for masquerade"))
                    continue
                if target in _VERDICTS or target == "DNAT":
                    value = target
                    if target == "DNAT":
                        first = rule.action.first if isinstance(rule.action, DnatAction) else None
                        value = str(first) if first is not None else ""
                        here = replace(here, action=f"DNAT to {value}")
                    self.outputs.append(value)
                    self.found.append((value, self.share, (*path, here), self.masq))
                    return True
                p = rule.probability
                kind = "goto" if rule.goto else "jump"
                before = self.share
                if p is not None:
                    self.share = before * p
                terminated = self.run(table, target, (*path, replace(here, action=kind)))
                if terminated and p is None:
                    return True
                # A probabilistic jump that ended: the rest of the chain sees the other 1-p.
                self.share = before * (1 - p) if terminated and p is not None else before
            return False
        finally:
            self.depth -= 1


def _dest_ip(output: str) -> str:
    if output.startswith("["):
        return output[1:output.find("]")]
    return output.split(":", 1)[0]


def trace_kube_proxy_test(dump: IptablesDump, packet: Packet, local_ips: Iterable[str]) -> TraceResult:
    local = frozenset({"127.0.0.1", "::1", *local_ips})
    tracer = _KubeProxyTracer(dump, local, packet.protocol, packet.src, packet.dst, packet.dport)
    tracer.run("nat", "PREROUTING", ())
    nat_found = list(tracer.found)
    if tracer.outputs:
        tracer.dst = _dest_ip(tracer.outputs[0])
    rest = 1.0 - sum(share for _, share, _, _ in nat_found)
    tracer.found = []
    for name in _KP_FILTER_CHAINS:
        tracer.share = max(rest, 0.0)
        tracer.run("filter", name, ())
        if any(share > 0 for _, share, _, _ in tracer.found):
            rest = 0.0
    filter_found = tracer.found
    outcomes: list[Outcome] = []
    for value, share, path, masq in nat_found:
        outcomes.append(Outcome(verdict="DNAT", destination=value, probability=share, masquerade=masq, path=path))
    first_filter = True
    for value, share, path, masq in filter_found:
        outcomes.append(Outcome(verdict=value, destination=None, probability=share if first_filter else 0.0,
                                masquerade=masq, path=path))
        first_filter = False
    if not filter_found and rest > 1e-12:
        outcomes.append(Outcome(verdict="ACCEPT", destination=None, probability=rest, masquerade=tracer.masq,
                                notes=("no rule matched",)))
    view = KubeProxyTestView(outputs=tuple(tracer.outputs), masq=tracer.masq)
    return TraceResult(packet=packet, mode="iptables", outcomes=tuple(outcomes), semantics="kube-proxy-test",
                       kube_proxy_test=view)


def kube_proxy_output(result: TraceResult) -> tuple[str, bool]:
    """kube-proxy's test-tracer answer for a result traced with kube-proxy test semantics: (output, masq)."""
    if result.kube_proxy_test is None:
        raise ValueError("the result was not traced with kube_proxy_test_semantics=True")
    return result.kube_proxy_test.output, result.kube_proxy_test.masq
