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
    """Save the cluster's Service objects and this node's rules as a snapshot; analyse it anywhere with --from."""
    from rich.text import Text

    from svctrace.collectors.capture import write_snapshot
    from svctrace.redact import Redactor, redact_all
    from svctrace.sources import load_namespace

    env = run.env
    if run.namespace and all_namespaces:
        raise UsageError("give -n NAMESPACE or -A, not both", "capture one namespace or all of them")
    # Without -n, every namespace: a capture is for answering later questions about any Service.
    collection = load_namespace(run.source, run.namespace, every_namespace=not run.namespace).collection
    assert collection is not None  # a capture always reads live
    api_docs = collection.api_documents()
    node_files = collection.node_files()
    meta = collection.meta()
    meta["capturedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if redact:
        api_docs, node_files, meta = redact_all(Redactor(), api_docs, node_files, meta)
    dest = output if output else default_destination(collection.snapshot.node.name)
    written = write_snapshot(dest, api_documents=api_docs, node_files=node_files, meta=meta)
    for warning in collection.snapshot.warnings:
        env.stderr.print(Text(f"warning: {warning}", "note"), soft_wrap=True)
    for missing in collection.snapshot.missing:
        env.stderr.print(Text(f"not captured: {missing}", "note"), soft_wrap=True)
    env.stdout.print(Text(f"wrote {written}" + (" (redacted)" if redact else "")), soft_wrap=True)
    env.stdout.print(Text(f"analyse it with: {env.prog} svc NAME -n NAMESPACE --from {written}"), soft_wrap=True)


def register(app: typer.Typer) -> None:
    command(app, "capture", kubectl=True)(capture_command)
