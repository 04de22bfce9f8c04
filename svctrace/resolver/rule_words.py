"""iptables rules in words, for the two modes that write them: iptables, and IPVS (its masquerade and filter
rules). Kept apart from both mode files so that neither leans on the other."""

from __future__ import annotations

from svctrace.model.iptables import Rule
from svctrace.model.matches import SRC, AddrMatch, AddrTypeMatch, Match


def describe_source(rule: Rule) -> str | None:
    """The source condition of a rule in words, or None when it matches any source."""
    return source_words(rule.matches)


def source_words(matches: tuple[Match, ...]) -> str | None:
    """The source conditions among ``matches`` in words (address first, then address type)."""
    parts = []
    for m in matches:
        if isinstance(m, AddrMatch) and m.field == SRC:
            cidr = ",".join(map(str, m.prefixes))
            parts.append(f"source not in {cidr}" if m.negated else f"source in {cidr}")
            break
    for m in matches:
        if isinstance(m, AddrTypeMatch) and m.field == SRC:
            value = ",".join(sorted(m.types))
            what = "a local address of this node" if value == "LOCAL" else f"of type {value}"
            parts.append(f"source is not {what}" if m.negated else f"source is {what}")
    return ", ".join(parts) or None
