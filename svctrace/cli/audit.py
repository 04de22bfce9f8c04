"""``svctrace audit``: every Service's checks at once, for a health sweep of a namespace or the cluster."""

from __future__ import annotations

from typing import Annotated

import typer

from svctrace.cli.command import Run, command
from svctrace.cli.errors import ExitStatus
from svctrace.cli.options import TextOrJson, TextOutput
from svctrace.errors import UsageError


def audit_command(
    run: Run,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A",
                                                 help="Audit the Services of every namespace.")] = False,
    output: TextOutput = TextOrJson.text,
) -> None:
    """Run every check for every Service of a namespace (-n) or the cluster (-A) and summarise.

    With --all-nodes: each node's drifted, not programmed and stale Services, and the nodes whose kube-proxy
    is out of step.

    Exit status: 0 no errors or warnings, 1 some finding is an error or warning (with --all-nodes: a node out of
    step or not read), 2 a usage or collection error, or nothing could be checked (no Kubernetes objects).
    """

    from rich.progress import Progress

    from svctrace.cli.progress import node_progress, show_notes
    from svctrace.diagnosis.audit import audit
    from svctrace.render.audit import audit_to_dict, render_audit
    from svctrace.sources import load_namespace

    env = run.env
    if all_namespaces and run.namespace:
        raise UsageError("give -A or -n NAMESPACE, not both", "e.g. svctrace audit -A")
    if run.source.nodes.every:
        _all_nodes(run, all_namespaces, output)
        return
    with node_progress(env, "the cluster and the node") as progress:
        loaded = load_namespace(run.source, run.namespace, every_namespace=all_namespaces, progress=progress)
    show_notes(env, loaded.notes)
    run.warn_partial(loaded)
    with Progress(console=env.stderr, transient=True, disable=not env.stderr.is_terminal) as bar:
        task = bar.add_task("checking", total=None)
        # Like kubectl: without -A or -n, the context's namespace.
        scope = None if all_namespaces else loaded.namespace

        def step(done: int, total: int, ref: str) -> None:
            bar.update(task, completed=done, total=total, description=f"checking {ref}" if ref else "done")

        result = audit(loaded.snapshot, scope, progress=step)
    # The snapshot is done with: its rules' text and objects (100 MB and more at 10,000 Services) are let go
    # before the report is built, so that the report reuses their memory rather than adding to the peak.
    del loaded
    if output is TextOrJson.json:
        env.print_json(audit_to_dict(result))
    else:
        env.stdout.print(render_audit(result))
    if result.checked_nothing:  # e.g. a node-only snapshot: no Service to check
        raise typer.Exit(int(ExitStatus.ERROR))
    if result.has_problems:
        raise typer.Exit(int(ExitStatus.FINDINGS))


def _all_nodes(run: Run, all_namespaces: bool, output: TextOrJson) -> None:
    """``audit --all-nodes``: each node audited and reduced as it arrives (the same rules checked once)."""
    from svctrace.allnodes import AuditAcrossNodes, NodeFailure
    from svctrace.cli.progress import node_progress, show_notes
    from svctrace.render.nodes import audit_across_nodes_to_dict, render_audit_across_nodes
    from svctrace.sources import each_node

    with node_progress(run.env) as progress, \
            each_node(run.source, run.namespace, every_namespace=all_namespaces, progress=progress) as nodes:
        reducer = AuditAcrossNodes(nodes.services, None if all_namespaces else nodes.namespace, nodes.api_warnings)
        for result in nodes:
            if result.error is not None or result.input is None:
                message = result.error.message if result.error is not None else "not read"
                reducer.fail(NodeFailure(result.node, message, result.error.hint if result.error else None))
                continue
            reducer.add(result.node, result.input, result.snapshot)
        label, notes = nodes.label, list(nodes.notes)
    show_notes(run.env, notes)
    summary = reducer.result()
    if output is TextOrJson.json:
        run.env.print_json(audit_across_nodes_to_dict(summary))
    else:
        run.env.stdout.print(render_audit_across_nodes(summary, label))
    if summary.has_problems:
        raise typer.Exit(int(ExitStatus.FINDINGS))


def register(app: typer.Typer) -> None:
    command(app, "audit", kubectl=True, snapshot=True, collect=True, nodes=True)(audit_command)
