"""iptables mode for the tracer: an iptables dump as the walker's ruleset (svctrace.trace.walk).

Each table's built-in chains run on their hooks at the table's priority (raw -300, mangle -150, nat -100
before routing and 100 after it, filter 0, security 50); a rule is its typed matches followed by what its
target does. ``kube_proxy_test_semantics`` swaps the kernel walk for a port of kube-proxy's unit-test
tracer (svctrace.trace.kubeproxy_test), a different algorithm kept apart.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from svctrace.model.actions import (
    DnatAction,
    Element,
    Jump,
    MarkAction,
    NotrackAction,
    OtherAction,
    RejectAction,
    SnatAction,
    Statement,
    Verdict,
)
from svctrace.model.iptables import BUILTIN_CHAINS, IptablesDump, Rule
from svctrace.model.trace import Packet, TraceOptions, TraceResult, TraceStep
from svctrace.trace.engine import Branch, Matcher, NodeView
from svctrace.trace.iptables_assumed import assumed_chains, unseen_endpoint
from svctrace.trace.kubeproxy_test import kube_proxy_output, trace_kube_proxy_test
from svctrace.trace.walk import HookChain, LocalIn, Walker, kernel_path

__all__ = ["Branch", "LocalIn", "kube_proxy_output", "trace_iptables"]

KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
_HOOKS: dict[str, tuple[tuple[str, int], ...]] = {
    "prerouting": (("raw", -300), ("mangle", -150), ("nat", -100)),
    "input": (("mangle", -150), ("filter", 0), ("security", 50), ("nat", 100)),
    "forward": (("mangle", -150), ("filter", 0), ("security", 50)),
    "output": (("raw", -300), ("mangle", -150), ("nat", -100), ("filter", 0), ("security", 50)),
    "postrouting": (("mangle", -150), ("nat", 100)),
}
_VERDICTS = {"ACCEPT": "accept", "DROP": "drop", "REJECT": "reject", "RETURN": "return"}


class IptablesRuleset:
    """One dump, as the walker reads it."""

    def __init__(self, dump: IptablesDump) -> None:
        self.dump = dump
        self._stmts: dict[tuple[str, str, int], tuple[Rule, tuple[Statement, ...]]] = {}
        # a partial dump: kube-proxy's chains it does not show, as kube-proxy writes them (said in each step)
        self.assumed = assumed_chains(dump)
        self._assumed_tables = {table for table, _ in self.assumed}

    def hook_chains(self, hook: str) -> Sequence[HookChain]:
        name = hook.upper()
        return [HookChain(table, name, prio, table == "nat") for table, prio in _HOOKS[hook]
                if self.dump.table(table) is not None or table in self._assumed_tables]

    def rules(self, table: str, chain: str) -> Sequence[object] | None:
        c = self.dump.chain(table, chain)
        if c is None and self.assumed:
            return self.assumed.get((table, chain))
        return c.rules if c is not None else None

    def target_is_chain(self, table: str, name: str) -> bool:
        t = self.dump.table(table)
        if name in BUILTIN_CHAINS:
            return False
        return (t is not None and t.has(name)) or (table, name) in self.assumed

    def first_statement(self, table: str, chain: str, rule: object) -> Statement | None:
        assert isinstance(rule, Rule)
        return rule.matches[0] if rule.matches else None  # (statements: the matches, then the target's)

    def statements(self, table: str, chain: str, rule: object) -> Sequence[Statement]:
        assert isinstance(rule, Rule)
        key = (table, chain, rule.index)
        got = self._stmts.get(key)
        if got is not None and got[0] is rule:
            return got[1]
        stmts = (*rule.matches, *self._target(table, rule))
        self._stmts[key] = (rule, stmts)
        return stmts

    def _target(self, table: str, rule: Rule) -> tuple[Statement, ...]:
        target = rule.target
        if target is None:
            return ()
        if self.target_is_chain(table, target) or unseen_endpoint(self.dump, target):
            return (Jump(target, rule.goto),)
        verdict = _VERDICTS.get(target)
        if verdict is not None:
            return (Verdict(verdict),)
        action = rule.action
        if isinstance(action, (DnatAction, SnatAction, NotrackAction, RejectAction)):
            return (action,)
        if isinstance(action, MarkAction) and target in ("MARK", "CONNMARK"):
            return (action,)
        return (OtherAction("CT" if target == "CT" else target),)

    def rule_step(self, table: str, chain: str, rule: object, action: str) -> TraceStep:
        assert isinstance(rule, Rule)
        return TraceStep(table, chain, rule.index, rule.text, action)

    def policy(self, table: str, chain: str) -> tuple[str, TraceStep] | None:
        c = self.dump.chain(table, chain)
        if c is None:
            return None
        policy = c.policy or "ACCEPT"
        if not c.rules and policy == "ACCEPT":
            return None
        shown = policy if c.policy else f"{policy} (no policy in the dump; kernel default)"
        return policy.lower(), TraceStep(table, chain, None, f":{chain} {c.policy or '-'}", f"policy {shown}")

    def verdict_word(self, word: str) -> str:
        return word.upper()

    def element_verdicts(self, table: str, name: str) -> tuple[tuple[Element, ...], bool] | None:
        return None


def _reachability_warnings(dump: IptablesDump, node: NodeView) -> None:
    if dump.partial is not None:
        node.warn(f"the dump is partial ({dump.partial}): kube-proxy's chains it does not show are assumed as "
                  "kube-proxy writes them, and a jump to a KUBE-SEP chain it does not show is a DNAT to an endpoint "
                  "whose address is not known")
        return
    nat = dump.table("nat")
    if nat is None or not nat.has("KUBE-SERVICES"):
        return
    name = "PREROUTING" if node.packet.origin != "node" else "OUTPUT"
    chain = nat.chain(name)
    if chain is None or not any(r.target == "KUBE-SERVICES" for r in chain.rules):
        node.warn(f"nat {name} has no jump to KUBE-SERVICES in this dump, so no Service rule is reached "
                  "(kube-proxy adds those jumps outside its restore data; was the dump complete?)")


def trace_iptables(dump: IptablesDump, packet: Packet, *, local_ips: Iterable[str] = (),
                   options: TraceOptions | None = None,
                   ipsets: Mapping[str, Collection[str]] | None = None,
                   local_in: LocalIn | None = None,
                   bridge_ports: Mapping[str, str] | None = None) -> TraceResult:
    """Trace one new connection through an iptables dump; ``local_ips`` are the node's addresses."""
    opts = options or TraceOptions()
    local = tuple(local_ips)
    if opts.kube_proxy_test_semantics:
        return trace_kube_proxy_test(dump, packet, local)
    node = NodeView(packet, opts, local, ipsets, bridge_ports)
    walker = Walker(IptablesRuleset(dump), node, Matcher(node), kube_mark_masq=KUBE_MARK_MASQ,
                    unseen_endpoint=(lambda chain: unseen_endpoint(dump, chain)) if dump.partial else None)
    _reachability_warnings(dump, node)
    names = {h: h.upper() for h in _HOOKS}
    return kernel_path(walker, packet, mode="iptables", local_in=local_in, hook_names=names)
