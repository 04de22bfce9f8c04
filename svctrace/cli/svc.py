"""``svctrace svc NAME``: one Service's path through this node's dataplane."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from svctrace.cli.errors import env_of, handled
from svctrace.cli.names import complete_service
from svctrace.cli.options import (
    Context,
    Explain,
    FromSnapshot,
    Kubeconfig,
    Namespace,
    Netns,
    NodeName,
    Output,
    OutputFormat,
    RequestTimeout,
)
from svctrace.cli.sources import service_snapshot
from svctrace.collectors.live import LiveOptions
from svctrace.errors import UsageError
from svctrace.render.json import graph_to_dict
from svctrace.render.tree import render_graph
from svctrace.resolver import resolve


def split_name(name: str, namespace: str | None) -> tuple[str | None, str, str | None]:
    """``name``, ``ns/name``, ``name:port`` or ``ns/name:port`` -> (namespace or None, name, port)."""
    port = None
    if ":" in name:
        name, port = name.rsplit(":", 1)
    if "/" in name:
        ns, name = name.split("/", 1)
        if namespace is not None and namespace != ns:
            raise UsageError(f"the name says namespace {ns} but -n says {namespace}", "give one of them")
        namespace = ns
    if not name:
        raise UsageError("no Service name given", "svctrace svc NAME [-n NAMESPACE]")
    return namespace, name, port


@handled
def svc_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The Service: NAME, NS/NAME, or NAME:PORT.", metavar="NAME",
                                        autocompletion=complete_service)],
    namespace: Namespace = None,
    port: Annotated[str | None, typer.Option("--port", help="Only this port (name, number or NodePort).")] = None,
    from_: FromSnapshot = None,
    output: Output = OutputFormat.tree,
    explain: Explain = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    node: NodeName = None,
    request_timeout: RequestTimeout = 5.0,
    netns: Netns = None,
) -> None:
    """Show how traffic to one Service flows through this node: frontends, chains, endpoints, pods."""
    env = env_of(ctx)
    ns, svc_name, name_port = split_name(name, namespace)
    if port is not None and name_port is not None and port != name_port:
        raise UsageError(f"the name says port {name_port} but --port says {port}", "give one of them")
    live = LiveOptions(kubeconfig=kubeconfig, context=context, namespace=ns, node_name=node,
                       timeout=request_timeout, netns=netns)
    snapshot, ns = service_snapshot(from_, live, ns, svc_name)
    graph = resolve(snapshot, ns, svc_name, port or name_port)
    if output is OutputFormat.json:
        env.stdout.print_json(json.dumps(graph_to_dict(graph)))
    else:
        env.stdout.print(render_graph(graph, explain=explain))


def register(app: typer.Typer) -> None:
    app.command("svc")(svc_command)
