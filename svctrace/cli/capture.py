"""``svctrace capture``: save the API objects and this node's dataplane as a snapshot for ``--from``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from svctrace.cli.errors import env_of, handled
from svctrace.cli.options import Context, Kubeconfig, Namespace, Netns, NodeName, RequestTimeout
from svctrace.collectors.capture import write_snapshot
from svctrace.collectors.live import LiveOptions, live_all
from svctrace.errors import UsageError
from svctrace.redact import Redactor, redact_all


def default_destination(node: str | None) -> Path:
    return Path(f"svctrace-{node or 'node'}-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz")


@handled
def capture_command(
    ctx: typer.Context,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="A folder, or FILE.tar.gz (default: svctrace-<node>-<time>.tar.gz).",
        metavar="DIR|FILE.tar.gz")] = None,
    namespace: Namespace = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Every namespace (default).")]
    = False,
    redact: Annotated[bool, typer.Option(
        "--redact", help="Replace names and addresses consistently (the answer stays the same).")] = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    node: NodeName = None,
    request_timeout: RequestTimeout = 5.0,
    netns: Netns = None,
) -> None:
    """Save the cluster's Service objects and this node's rules as a snapshot; analyse it anywhere with --from."""
    env = env_of(ctx)
    if namespace and all_namespaces:
        raise UsageError("give -n NAMESPACE or -A, not both", "capture one namespace or all of them")
    live = LiveOptions(kubeconfig=kubeconfig, context=context, node_name=node, timeout=request_timeout,
                       netns=netns)
    collection = live_all(live, namespace if namespace else None)
    api_docs = collection.api_documents()
    node_files = collection.node_files()
    meta = collection.meta()
    meta["capturedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if redact:
        api_docs, node_files, meta = redact_all(Redactor(), api_docs, node_files, meta)
    dest = Path(output) if output else default_destination(collection.snapshot.node.name)
    written = write_snapshot(dest, api_documents=api_docs, node_files=node_files, meta=meta)
    for warning in collection.snapshot.warnings:
        env.stderr.print(Text(f"warning: {warning}", "note"), soft_wrap=True)
    for missing in collection.snapshot.missing:
        env.stderr.print(Text(f"not captured: {missing}", "note"), soft_wrap=True)
    env.stdout.print(Text(f"wrote {written}" + (" (redacted)" if redact else "")), soft_wrap=True)
    env.stdout.print(Text(f"analyse it with: svctrace svc NAME -n NAMESPACE --from {written}"), soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("capture")(capture_command)
