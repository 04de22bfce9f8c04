"""``svctrace why-unreachable TARGET``: the cause, the evidence and the next step, during an incident."""

from __future__ import annotations

from typing import Annotated

import typer

from svctrace.cli.command import Run, command
from svctrace.cli.errors import ExitStatus
from svctrace.cli.options import Explain, TextOrJson, TextOutput
from svctrace.errors import UsageError


def why_command(
    run: Run,
    target: Annotated[str, typer.Argument(help="NAME, NS/NAME, NAME:PORT, a DNS name, IP:PORT or a URL.",
                                          metavar="TARGET")],
    from_pod: Annotated[str | None, typer.Option("--from-pod", help="Ask for this client pod (NS/POD).",
                                                 metavar="NS/POD")] = None,
    src: Annotated[str | None, typer.Option("--src", help="Ask for this client address.", metavar="IP")] = None,
    output: TextOutput = TextOrJson.text,
    explain: Explain = False,
) -> None:
    """Why a Service (or address) is unreachable: ranked findings with evidence and the next step.

    With --collect and --from-pod, the rules of the node that pod runs on are read (where its packets are
    translated); with --all-nodes, the verdict on every node.

    Exit status: 0 reachable, 1 unreachable or degraded (on any node), 2 a usage or collection error.
    """

    from svctrace.cli.progress import node_progress, show_notes
    from svctrace.client import diagnosis_client
    from svctrace.diagnosis.diagnose import diagnose
    from svctrace.diagnosis.findings import REACHABLE
    from svctrace.diagnosis.target import parse_target
    from svctrace.render.findings import diagnosis_to_dict, render_diagnosis
    from svctrace.sources import load_namespace

    parsed = parse_target(target, run.namespace)
    if run.source.nodes.every:
        if from_pod is not None or src is not None:
            raise UsageError("--all-nodes asks for a client on each node: --from-pod and --src name one client",
                             "drop --all-nodes and give --collect: the client pod's node is read")
        _all_nodes(run, target, parsed.namespace, parsed.kind == "address", output)
        return
    # An address can belong to a Service in any namespace; a name only needs its own.
    with node_progress(run.env, "the cluster and the node") as progress:
        loaded = load_namespace(run.source, run.namespace, scope=parsed.namespace,
                                every_namespace=parsed.kind == "address", client_pod=from_pod, progress=progress)
    show_notes(run.env, loaded.notes)
    run.warn_partial(loaded)
    client = diagnosis_client(loaded.snapshot, namespace=loaded.namespace, from_pod=from_pod, src=src)
    diag = diagnose(loaded.snapshot, target, namespace=loaded.namespace, client=client)
    if output is TextOrJson.json:
        run.env.print_json(diagnosis_to_dict(diag))
    else:
        run.env.stdout.print(render_diagnosis(diag, explain=explain))
    if diag.verdict != REACHABLE:
        raise typer.Exit(int(ExitStatus.FINDINGS))


def _all_nodes(run: Run, target: str, scope: str | None, every_namespace: bool, output: TextOrJson) -> None:
    """``why-unreachable TARGET --all-nodes``: the verdict through each node's rules, grouped."""

    from svctrace.allnodes import NodeFailure, NodeVerdict, node_verdict, verdicts_across_nodes
    from svctrace.cli.progress import node_progress, show_notes
    from svctrace.diagnosis.diagnose import diagnose
    from svctrace.render.nodes import render_verdicts_across_nodes, verdicts_across_nodes_to_dict
    from svctrace.sources import each_node

    verdicts: list[NodeVerdict] = []
    failures: list[NodeFailure] = []
    with node_progress(run.env) as progress, \
            each_node(run.source, run.namespace, scope=scope, every_namespace=every_namespace,
                      progress=progress) as nodes:
        for result in nodes:
            if result.error is not None:
                failures.append(NodeFailure(result.node, result.error.message, result.error.hint))
                continue
            snapshot = result.snapshot()
            verdicts.append(node_verdict(result.node, snapshot, diagnose(snapshot, target, namespace=nodes.namespace)))
        notes = list(nodes.notes)
    show_notes(run.env, notes)
    across = verdicts_across_nodes(target, verdicts, failures)
    if output is TextOrJson.json:
        run.env.print_json(verdicts_across_nodes_to_dict(across))
    else:
        run.env.stdout.print(render_verdicts_across_nodes(across))
    if not across.all_reachable:
        raise typer.Exit(int(ExitStatus.FINDINGS))


def register(app: typer.Typer) -> None:
    command(app, "why-unreachable", kubectl=True, snapshot=True, collect=True, nodes=True)(why_command)
