"""nftables mode for the tracer: kube-proxy's ``ip``/``ip6 kube-proxy`` table as the walker's ruleset.

Base chains run on their hooks in priority order (``filter-prerouting-pre-dnat`` -110, ``nat-prerouting``
-100, ``filter-input`` 0, ``nat-postrouting`` 100, ...); rules are the typed statements the parser made
(svctrace.parsers.nft_statements). ``numgen random mod N`` splits into the shares of its elements; a
dynamic set (session affinity) is followed both ways with the "already pinned" side at share 0.
Only kube-proxy's table is walked; other tables with base chains on the same hooks are named in a warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from svctrace.errors import SvctraceError
from svctrace.model.actions import Element, Statement
from svctrace.model.nft import NftRule, NftRuleset, NftTable
from svctrace.model.trace import Packet, TraceOptions, TraceResult, TraceStep
from svctrace.trace.engine import Matcher, NodeView
from svctrace.trace.walk import HookChain, Walker, kernel_path


class NftRulesetView:
    """One kube-proxy table, as the walker reads it."""

    def __init__(self, table: NftTable) -> None:
        self.table = table
        self.ref = table.ref
        self._hooks: dict[str, list[HookChain]] = {}

    def hook_chains(self, hook: str) -> Sequence[HookChain]:
        got = self._hooks.get(hook)
        if got is None:
            found = [c for c in self.table.base_chains() if c.hook == hook]
            found.sort(key=lambda c: (c.priority if c.priority is not None else 0, c.name))
            got = self._hooks[hook] = [HookChain(self.ref, c.name, c.priority or 0, c.type == "nat") for c in found]
        return got

    def rules(self, table: str, chain: str) -> Sequence[object] | None:
        c = self.table.chain(chain)
        return c.rules if c is not None else None

    def target_is_chain(self, table: str, name: str) -> bool:
        return self.table.chain(name) is not None

    def statements(self, table: str, chain: str, rule: object) -> Sequence[Statement]:
        assert isinstance(rule, NftRule)
        return rule.stmts

    def first_statement(self, table: str, chain: str, rule: object) -> Statement | None:
        assert isinstance(rule, NftRule)
        return rule.stmts[0] if rule.stmts else None

    def rule_step(self, table: str, chain: str, rule: object, action: str) -> TraceStep:
        assert isinstance(rule, NftRule)
        return TraceStep(self.ref, chain, rule.index, rule.shown_text(), action)  # (a step per branch)

    def policy(self, table: str, chain: str) -> tuple[str, TraceStep] | None:
        c = self.table.chain(chain)
        if c is None:
            return None
        policy = c.policy or "accept"
        if not c.rules and policy == "accept":
            return None
        return ("drop" if policy == "drop" else "accept",
                TraceStep(self.ref, chain, None, f"policy {policy}", f"policy {policy}"))

    def verdict_word(self, word: str) -> str:
        return word if word == "return" else word.upper()

    def element_verdicts(self, table: str, name: str) -> tuple[tuple[Element, ...], bool] | None:
        s = self.table.sets.get(name) or self.table.maps.get(name)
        if s is None:
            return None
        return tuple(e.typed for e in s.elements), ("dynamic" in s.flags or "timeout" in s.flags)


def _other_tables(ruleset: NftRuleset, table: NftTable, packet: Packet) -> list[str]:
    fams = ("ip", "inet") if packet.family == 4 else ("ip6", "inet")
    return [t.ref for t in ruleset.tables
            if t is not table and t.family in fams and t.base_chains()]


def trace_nftables(ruleset: NftRuleset, packet: Packet, *, local_ips: Iterable[str] = (),
                   options: TraceOptions | None = None,
                   bridge_ports: Mapping[str, str] | None = None) -> TraceResult:
    """Trace one new connection through kube-proxy's nftables table; ``local_ips`` are the node's addresses."""
    opts = options or TraceOptions()
    table = ruleset.kube_proxy(packet.family)
    if table is None:
        fam = "ip6" if packet.family == 6 else "ip"
        raise SvctraceError(f"no `{fam} kube-proxy` table in the nftables ruleset {ruleset.source}".rstrip(),
                            "capture `nft -j list table ip kube-proxy` on a node running kube-proxy in nftables "
                            "mode, or trace an address of the other family")
    view = NftRulesetView(table)
    node = NodeView(packet, opts, tuple(local_ips), None, bridge_ports, named_set=lambda name:
                    view.element_verdicts(view.ref, name))
    walker = Walker(view, node, Matcher(node), record_match=False, nft_words=True)
    others = _other_tables(ruleset, table, packet)
    if others:
        node.warn(f"only {table.ref} is traced; {', '.join(others)} also hook{'s' if len(others) == 1 else ''} "
                  "into netfilter and may change the answer")
    entry = "output" if packet.origin == "node" else "prerouting"
    if not any(hc.nat for hc in view.hook_chains(entry)):
        node.warn(f"{table.ref} has no nat base chain on the {entry} hook, so no Service rule is reached")
    return kernel_path(walker, packet, mode="nftables")
