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

    Exit status: 0 no errors or warnings, 1 some finding is an error or warning, 2 a usage or collection error,
    or nothing could be checked (no Kubernetes objects).
    """
    import json

    from rich.progress import Progress

    from svctrace.diagnosis.audit import audit
    from svctrace.render.audit import audit_to_dict, render_audit
    from svctrace.sources import load_namespace

    env = run.env
    if all_namespaces and run.namespace:
        raise UsageError("give -A or -n NAMESPACE, not both", "e.g. svctrace audit -A")
    with Progress(console=env.stderr, transient=True, disable=not env.stderr.is_terminal) as bar:
        task = bar.add_task("reading the cluster and this node", total=None)
        loaded = load_namespace(run.source, run.namespace, every_namespace=all_namespaces)
        run.warn_partial(loaded)
        # Like kubectl: without -A or -n, the context's namespace.
        scope = None if all_namespaces else loaded.namespace

        def step(done: int, total: int, ref: str) -> None:
            bar.update(task, completed=done, total=total, description=f"checking {ref}" if ref else "done")

        result = audit(loaded.snapshot, scope, progress=step)
    if output is TextOrJson.json:
        env.stdout.print_json(json.dumps(audit_to_dict(result)))
    else:
        env.stdout.print(render_audit(result))
    if result.checked_nothing:  # e.g. a node-only snapshot: no Service to check
        raise typer.Exit(int(ExitStatus.ERROR))
    if result.has_problems:
        raise typer.Exit(int(ExitStatus.FINDINGS))


def register(app: typer.Typer) -> None:
    command(app, "audit", kubectl=True, snapshot=True)(audit_command)
