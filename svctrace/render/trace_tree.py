"""A packet trace as a rich Tree: one branch per possible outcome, the rules it passed as its children."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.segment import Segment
from rich.text import Text
from rich.tree import Tree

from svctrace.model.trace import Outcome, TraceResult

ORIGIN_WORDS = {"pod": "from a pod", "node": "from the node itself", "external": "from outside the node"}
VERDICT_STYLE = {"DNAT": "verdict.ok", "ACCEPT": "verdict.ok", "REJECT": "verdict.reject", "DROP": "verdict.drop"}
VERDICT_WORDS = {
    "ACCEPT": "ACCEPT, not rewritten (no Service rule matched: the packet is routed to its own destination)",
    "REJECT": "REJECT (the client sees 'connection refused' / ICMP unreachable)",
    "DROP": "DROP (the client sees a timeout)",
}


def _pct(p: float) -> str:
    pct = p * 100
    return f"{pct:.0f}%" if pct == 0 or pct >= 1 else f"{pct:.2g}%"


def _outcome_label(o: Outcome, describe: Callable[[str], str | None]) -> Text:
    text = Text()
    if o.affinity is not None:
        share = "  --  "
    elif o.probability is None:
        share = "   ?  "  # rests on a condition the snapshot cannot decide: how often is unknown
    else:
        share = f"{_pct(o.probability):>4}  "
    text.append(share, "hop.share")
    style = VERDICT_STYLE.get(o.verdict, "note")
    if o.verdict == "DNAT" and o.destination:
        text.append("DNAT -> ", style)
        text.append(o.destination, "hop.address")
        who = describe(o.destination)
        if who:
            text.append(f"  {who}", "ep.pod")
    elif o.verdict == "DNAT" and o.via:
        text.append("DNAT -> ", style)
        text.append(f"an endpoint of {o.via} (not in the dump)", "hop.address")
    else:
        text.append(VERDICT_WORDS.get(o.verdict, o.verdict), style)
    if o.masquerade:
        text.append("  (")
        text.append("masqueraded", "hop.masq")
        text.append(")")
    if o.affinity:
        text.append("  (")
        text.append(f"only for a client already pinned by {o.affinity}", "hop.affinity")
        text.append(")")
    if o.conditions:
        text.append("  (share unknown: it rests on what the snapshot cannot tell)", "note")
    elif o.uncertain:
        text.append("  (uncertain)", "note")
    return text


class Indented:
    """Text indented as a block: a line wrapped to the terminal's width goes on under its own start (rich's
    Padding would also fill every line with spaces to the edge)."""

    def __init__(self, text: Text, indent: int) -> None:
        self.text = text
        self.indent = indent

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(1, options.max_width - self.indent)
        for line in console.render_lines(self.text, options.update_width(width), pad=False):
            while line and not line[-1].text.strip():  # the space a line was wrapped at
                line = line[:-1]
            if line:
                line = [*line[:-1], Segment(line[-1].text.rstrip(), line[-1].style, line[-1].control)]
            yield Segment(" " * self.indent)
            yield from line
            yield Segment.line()


def journey(o: Outcome) -> str:
    """The chains an outcome entered, in order, grouped by table: "nat: PREROUTING > KUBE-SERVICES | routing: ..."."""
    groups: list[tuple[str, list[str]]] = []
    for step in o.path:
        if step.table == "routing":
            groups.append(("routing", [step.action.removeprefix("route: ")]))
            continue
        if not groups or groups[-1][0] != step.table:
            groups.append((step.table, []))
        chains = groups[-1][1]
        if step.chain not in chains:  # returning to a caller is not a new stop
            chains.append(step.chain)
    return " | ".join(f"{table}: {' > '.join(chains)}" for table, chains in groups)


def render_trace(result: TraceResult, *, explain: bool = False, node: str | None = None,
                 describe: Callable[[str], str | None] = lambda _dest: None) -> RenderableType:
    """The trace: the packet, then every outcome with its probability and the rules that decided it."""
    p = result.packet
    title = Text()
    title.append(f"Packet {p.src} -> {p.destination}/{p.protocol.upper()}", "svc.title")
    title.append(f"  new connection {ORIGIN_WORDS.get(p.origin, p.origin)}")
    if p.in_interface:
        title.append(f" (in on {p.in_interface})")
    title.append("  ")
    title.append(result.mode, "svc.mode")
    if node:
        title.append("  ")
        title.append(f"node {node}", "svc.node")
    if result.semantics != "kernel":
        title.append(f"  [{result.semantics} semantics]", "note")
    tree = Tree(title)
    for outcome in result.outcomes:
        lines: list[RenderableType] = [_outcome_label(outcome, describe)]
        # Indented as a block, so that a line wrapped to the terminal's width goes on under its own start.
        lines += [Indented(Text(f"only {c}", "note"), 6) for c in outcome.conditions]
        if outcome.path:
            lines.append(Indented(Text(journey(outcome), "rule"), 6))
        lines += [Text(f"! {n}", "note") for n in outcome.notes]
        branch = tree.add(Group(*lines) if len(lines) > 1 else lines[0])
        for step in outcome.path:
            label = Text()
            where = f"{step.table} {step.chain}"
            label.append(where, "hop.chain")
            if step.rule_index is not None:
                label.append(f" #{step.rule_index}", "rule")
            label.append(f"  {step.action}")
            if step.target and step.action in ("jump", "goto"):
                label.append(" -> ")
                label.append(step.target, "hop.chain")
            if explain and step.rule_text:
                branch.add(Group(label, Text(step.rule_text, "rule")))
            else:
                branch.add(label)
    if not result.outcomes:
        tree.add(Text("no outcome: every branch was abandoned (see warnings)", "note"))
    parts: list[RenderableType] = [tree]
    parts += [Text(f"warning: {w}", "note") for w in result.warnings]
    return Group(*parts)
