"""iptables rules as ``nft list`` shows them on an iptables-nft node, read back as iptables rules.

When kube-proxy runs in iptables mode on the nf_tables backend, ``nft list ruleset`` prints its chains in
``table ip nat`` / ``table ip filter`` in nft's words (``meta l4proto tcp ip daddr 10.96.0.1 tcp dport 443
counter jump KUBE-SVC-...``). Each rule is typed by the one nft rule parser (svctrace.parsers.nft_statements)
into the typed matches and actions both modes share, and becomes an iptables ``Rule`` with the target
iptables would name (``-j KUBE-SVC-...``, ``DNAT``, ``MASQUERADE``, ``MARK``), so the iptables resolver and
tracer read it as they read iptables-save. What nft shows of an xt match it cannot translate stays an
unknown match (the tracer then follows both ways).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from svctrace.model.actions import (
    Action,
    DnatAction,
    Jump,
    MarkAction,
    NotrackAction,
    RejectAction,
    SnatAction,
    UnknownStatement,
    Verdict,
)
from svctrace.model.iptables import BUILTIN_CHAINS, Chain, IptablesDump, Rule, Table
from svctrace.model.matches import Match, StatisticMatch, UnknownMatch
from svctrace.parsers.nft_statements import parse_statements

if TYPE_CHECKING:
    from svctrace.parsers.nft_text import _Block

_RANDOM = "meta random & 2147483647 < "  # iptables-nft's translation of -m statistic --mode random
_COMMENT = ' comment "'


def _comment(text: str) -> tuple[str, str | None]:
    head, sep, tail = text.rpartition(_COMMENT)
    if sep and tail.endswith('"'):
        return head.rstrip(), tail[:-1]
    return text, None


def _target(stmt: object) -> tuple[str | None, bool, Action | None]:
    """The iptables target a final nft statement stands for: (target, goto, action)."""
    if isinstance(stmt, Jump):
        return stmt.chain, stmt.goto, None
    if isinstance(stmt, Verdict):
        if stmt.word == "reject":
            return "REJECT", False, RejectAction(stmt.reject_with)
        return stmt.word.upper(), False, None
    if isinstance(stmt, DnatAction):
        return ("REDIRECT" if stmt.redirect else "DNAT"), False, stmt
    if isinstance(stmt, SnatAction):
        return ("MASQUERADE" if stmt.masquerade else "SNAT"), False, stmt
    if isinstance(stmt, MarkAction):
        return ("CONNMARK" if stmt.field == "ctmark" else "MARK"), False, stmt
    if isinstance(stmt, NotrackAction):
        return "NOTRACK", False, stmt
    return None, False, None


def xt_rule(table: str, chain: str, index: int, line: int, text: str) -> Rule:
    """One listed rule as the iptables rule it was written as."""
    body, comment = _comment(text)
    matches: list[Match] = []
    target: str | None = None
    goto = False
    action: Action | None = None
    for stmt in parse_statements(body):
        if isinstance(stmt, UnknownMatch) and stmt.text.startswith(_RANDOM):
            value = stmt.text[len(_RANDOM):].strip()
            if value.isdigit():
                p = int(value) / 2 ** 31
                matches.append(StatisticMatch(p, raw=f"{p:.11f}"))
                continue
        if isinstance(stmt, UnknownStatement):
            matches.append(UnknownMatch(stmt.text, "an nft expression svctrace does not read back as iptables"))
            if stmt.tail is not None:
                target, goto, action = _target(stmt.tail)
            continue
        got = _target(stmt)
        if got[0] is not None:
            target, goto, action = got
        else:
            matches.append(stmt)  # type: ignore[arg-type]
    return Rule(table, chain, index, line, text, tuple(matches), target, goto, action, comment)


def xt_dump(tables: list[_Block], source: str, *, partial: bool) -> tuple[IptablesDump, tuple[str, ...]]:
    """iptables-nft's tables of a listing as one IPv4 (or IPv6) dump, and what was said."""
    out: dict[str, Table] = {}
    family = 4
    for block in tables:
        family = 6 if block.family == "ip6" else 4
        chains: dict[str, Chain] = {}
        for c in block.children:
            if c.kind != "chain":
                continue
            policy = next((p.split()[1].upper() for p in c.spec if p.startswith("policy ")), None)
            if policy is None and c.name in BUILTIN_CHAINS:
                policy = "ACCEPT"
            rules = tuple(xt_rule(block.name, c.name, i, line, text) for i, (line, text) in enumerate(c.rules, 1))
            chains[c.name] = Chain(c.name, policy, rules=rules)
        out[block.name] = Table.of(block.name, chains)
    why = "an nft listing of the iptables-nft tables, not whole" if partial else None
    return IptablesDump(family, out, source, backend="nf_tables", partial=why), ()
