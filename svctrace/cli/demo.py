"""``svctrace demo``: every Service of the bundled tutorial cluster, no cluster or root needed."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from svctrace.cli.command import Run, command
from svctrace.cli.options import Explain, Output, OutputFormat


class DemoMode(str, enum.Enum):
    iptables = "iptables"
    ipvs = "ipvs"
    nftables = "nftables"


def demo_command(
    run: Run,
    output: Output = OutputFormat.tree,
    explain: Explain = False,
    mode: Annotated[DemoMode, typer.Option("--mode", help="The proxy mode whose rules the demo node shows.",
                                           metavar="MODE")]
    = DemoMode.iptables,
) -> None:
    """Explain every Service of the bundled demo cluster (the k8s Service tutorial's)."""

    from rich.console import Group, RenderableType
    from rich.rule import Rule
    from rich.text import Text

    from svctrace.collectors.snapshot_dir import load_demo
    from svctrace.render.json import SCHEMA_VERSION, graph_to_dict
    from svctrace.render.tree import render_graph
    from svctrace.resolver import all_stale_chains, resolve

    env = run.env
    snapshot = load_demo(mode.value)
    services = sorted(snapshot.services, key=lambda s: (s.namespace != "default", s.namespace, s.name))
    graphs = [resolve(snapshot, s.namespace, s.name) for s in services]
    if output is OutputFormat.json:
        doc = {"schemaVersion": SCHEMA_VERSION, "kind": "ServicePathList",
               "items": [graph_to_dict(gr) for gr in graphs],
               "staleChains": [{"table": c.table, "chain": c.chain, "comment": c.comment, "rules": c.rule_count}
                               for c in all_stale_chains(snapshot)]}
        env.print_json(doc)
        return
    source = "demo" if mode is DemoMode.iptables else f"demo:{mode.value}"
    intro = Text(f"Demo snapshot: the tutorial cluster in {mode.value} mode, seen from node {snapshot.node.name} "
                 f"({len(services)} Services).")
    # The command is one unbroken line, so it can be copied whatever the terminal's width.
    try_line = Text(f"Try: {env.prog} svc my-nginx-nodeport --from {source} --explain", no_wrap=True,
                    overflow="ignore")
    parts: list[RenderableType] = [intro, try_line]
    for gr in graphs:
        parts += [Rule(style="rule"), render_graph(gr, explain=explain)]
    env.stdout.print(Group(*parts))


def register(app: typer.Typer) -> None:
    command(app, "demo")(demo_command)
