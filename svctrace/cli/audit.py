"""``svctrace audit``: every Service's checks at once, for a health sweep of a namespace or the cluster."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.progress import Progress

from svctrace.cli.errors import ExitStatus, env_of, handled
from svctrace.cli.options import Context, FromSnapshot, Kubeconfig, Namespace, Netns, NodeName, RequestTimeout
from svctrace.cli.why import TextOrJson
from svctrace.collectors.live import LiveOptions, live_all
from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.diagnosis.audit import audit
from svctrace.errors import UsageError
from svctrace.render.audit import audit_to_dict, render_audit


@handled
def audit_command(
    ctx: typer.Context,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A",
                                                 help="Audit the Services of every namespace.")] = False,
    namespace: Namespace = None,
    from_: FromSnapshot = None,
    output: Annotated[TextOrJson, typer.Option("--output", "-o", help="text or json.")] = TextOrJson.text,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    node: NodeName = None,
    request_timeout: RequestTimeout = 5.0,
    netns: Netns = None,
) -> None:
    """Run every check for every Service of a namespace (-n) or the cluster (-A) and summarise.

    Exit status: 0 no errors or warnings, 1 some finding is an error or warning, 2 a usage or collection error,
    or nothing could be checked (no Kubernetes objects).
    """
    env = env_of(ctx)
    if all_namespaces and namespace:
        raise UsageError("give -A or -n NAMESPACE, not both", "e.g. svctrace audit -A")
    with Progress(console=env.stderr, transient=True, disable=not env.stderr.is_terminal) as bar:
        task = bar.add_task("reading the cluster and this node", total=None)
        if from_ is not None:
            snapshot = load_snapshot(from_)
            scope = None if all_namespaces else (namespace or "default")
        else:
            live = LiveOptions(kubeconfig=kubeconfig, context=context, namespace=namespace, node_name=node,
                               timeout=request_timeout, netns=netns)
            wanted = None if all_namespaces else namespace
            collection = live_all(live, wanted)
            snapshot = collection.snapshot
            # Like kubectl: without -A or -n, the context's namespace.
            scope = None if all_namespaces else (namespace or collection.api.target.namespace)

        def step(done: int, total: int, ref: str) -> None:
            bar.update(task, completed=done, total=total, description=f"checking {ref}" if ref else "done")

        result = audit(snapshot, scope, progress=step)
    if output is TextOrJson.json:
        env.stdout.print_json(json.dumps(audit_to_dict(result)))
    else:
        env.stdout.print(render_audit(result))
    if result.checked_nothing:  # e.g. a node-only snapshot: no Service to check
        raise typer.Exit(int(ExitStatus.ERROR))
    if result.has_problems:
        raise typer.Exit(int(ExitStatus.FINDINGS))


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_command)
