"""``svctrace capture``: save the API objects and this node's dataplane as a snapshot for ``--from``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from svctrace.cli.command import Run, command
from svctrace.errors import UsageError


def default_destination(node: str | None) -> Path:
    return Path(f"svctrace-{node or 'node'}-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz")


def capture_command(
    run: Run,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="A folder, or FILE.tar.gz (default: svctrace-<node>-<time>.tar.gz).",
        metavar="DIR|FILE.tar.gz")] = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Every namespace (default).")]
    = False,
    redact: Annotated[bool, typer.Option(
        "--redact", help="Replace names and addresses consistently (the answer stays the same).")] = False,
) -> None:
    """Save the cluster's Service objects and this node's rules as a snapshot; analyse it anywhere with --from.

    With --all-nodes --collect: every node's rules, under nodes/<name>/ (analyse it with --node or --all-nodes).
    """
    from rich.text import Text

    from svctrace.cli.progress import node_progress, show_notes
    from svctrace.collectors.capture import write_snapshot
    from svctrace.redact import Redactor, redact_all
    from svctrace.sources import load_namespace

    env = run.env
    if run.namespace and all_namespaces:
        raise UsageError("give -n NAMESPACE or -A, not both", "capture one namespace or all of them")
    if run.source.nodes.every:
        _all_nodes(run, output, redact)
        return
    # Without -n, every namespace: a capture is for answering later questions about any Service.
    with node_progress(env, "the cluster and the node") as progress:
        collection = load_namespace(run.source, run.namespace, every_namespace=not run.namespace,
                                    progress=progress, documents=True).collection
    assert collection is not None  # a capture always reads live
    show_notes(env, collection.notes)
    api_docs = collection.api_documents()
    node_files = collection.node_files()
    meta = collection.meta()
    meta["capturedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if redact:
        api_docs, node_files, meta = redact_all(Redactor(), api_docs, node_files, meta)
    dest = output if output else default_destination(collection.snapshot.node.name)
    written = write_snapshot(dest, api_documents=api_docs, node_files=node_files, meta=meta)
    for warning in collection.snapshot.warnings:
        env.say(f"warning: {warning}", "note")
    for missing in collection.snapshot.missing:
        env.say(f"not captured: {missing}", "note")
    env.stdout.print(Text(f"wrote {written}" + (" (redacted)" if redact else "")), soft_wrap=True)
    env.stdout.print(Text(f"analyse it with: {env.prog} svc NAME -n NAMESPACE --from {written}"), soft_wrap=True)


def _all_nodes(run: Run, output: Path | None, redact: bool) -> None:
    """``capture --all-nodes``: the API once and each node's files under nodes/<name>/, written when all are read."""
    from typing import Any

    from rich.text import Text

    from svctrace.cli.errors import ExitStatus
    from svctrace.cli.progress import node_progress, show_notes
    from svctrace.collectors.capture import write_files
    from svctrace.collectors.live import LiveCollection
    from svctrace.collectors.snapshot_nodes import multi_node_files
    from svctrace.redact import Redactor, redact_all
    from svctrace.sources import each_node

    env = run.env
    redactor = Redactor() if redact else None
    captured = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    per_node: dict[str, tuple[dict[str, str], dict[str, Any]]] = {}
    failures: list[str] = []
    with node_progress(env) as progress, \
            each_node(run.source, run.namespace, every_namespace=not run.namespace, progress=progress,
                      documents=True) as nodes:
        assert nodes.api is not None  # a capture always reads live
        api_docs: dict[str, Any] = nodes.api.list_documents()
        redacted_api: dict[str, Any] | None = None
        for result in nodes:
            if result.error is not None or result.input is None:
                failures.append(f"{result.node}: {result.error.message if result.error else 'not read'}")
                continue
            collection = LiveCollection(result.snapshot(), nodes.api, result.input)
            node_files, meta = collection.node_files(), collection.meta()
            meta["capturedAt"] = captured
            if redactor is not None:
                redacted_api, node_files, meta = redact_all(redactor, api_docs, node_files, meta)
            per_node[str(meta.get("nodeName") or result.node)] = (node_files, meta)
        notes = list(nodes.notes)
    if redactor is not None:
        api_docs = redacted_api if redacted_api is not None else redactor.api_documents(api_docs)
    show_notes(env, notes)
    dest = output if output else Path(f"svctrace-all-nodes-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz")
    written = write_files(dest, multi_node_files(api_docs, per_node), {"capturedAt": captured})
    for line in failures:
        env.say(f"not captured: {line}", "note")
    env.stdout.print(Text(f"wrote {written}: {len(per_node)} nodes" + (" (redacted)" if redact else "")),
                     soft_wrap=True)
    env.stdout.print(Text(f"analyse it with: {env.prog} audit --all-nodes --from {written}"), soft_wrap=True)
    if failures:
        raise typer.Exit(int(ExitStatus.FINDINGS))


def register(app: typer.Typer) -> None:
    command(app, "capture", kubectl=True, collect=True, nodes=True)(capture_command)
