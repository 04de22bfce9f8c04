"""``svctrace svc NAME``: one Service's path through this node's dataplane."""

from __future__ import annotations

from typing import Annotated

import typer

from svctrace.cli.command import Run, command
from svctrace.cli.names import complete_service
from svctrace.cli.options import Explain, Output, OutputFormat
from svctrace.errors import UsageError


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


def _address(text: str) -> tuple[str, str | None] | None:
    """``10.96.0.10``, ``10.96.0.10:53``, ``fd00::10`` or ``[fd00::10]:53`` -> (address, port); None for a name."""
    from svctrace.diagnosis.target import parse_target

    try:
        target = parse_target(text, None)
    except UsageError:
        return None
    return (target.host, target.port) if target.kind == "address" and target.host else None


def svc_command(
    run: Run,
    name: Annotated[str, typer.Argument(help="The Service: NAME, NS/NAME, NAME:PORT, or its address (ClusterIP, "
                                             "externalIP or LB IP, optionally IP:PORT).", metavar="NAME",
                                        autocompletion=complete_service)],
    port: Annotated[str | None, typer.Option("--port", help="Only this port (name, number or NodePort).",
                                             metavar="PORT")] = None,
    output: Output = OutputFormat.tree,
    explain: Explain = False,
) -> None:
    """Show how traffic to one Service flows through this node: frontends, chains, endpoints, pods."""
    import json

    from svctrace.render.json import graph_to_dict
    from svctrace.render.tree import render_graph
    from svctrace.resolver import resolve, resolve_address
    from svctrace.sources import load_namespace, load_service

    address = _address(name)
    if address is not None:
        ip, name_port = address
        if port is not None and name_port is not None and port != name_port:
            raise UsageError(f"the address says port {name_port} but --port says {port}", "give one of them")
        # An address may be any namespace's Service: read every namespace (live), as why-unreachable does.
        loaded = load_namespace(run.source, run.namespace, every_namespace=True)
        graph = resolve_address(loaded.snapshot, ip, port or name_port)
    else:
        ns, svc_name, name_port = split_name(name, run.namespace)
        if port is not None and name_port is not None and port != name_port:
            raise UsageError(f"the name says port {name_port} but --port says {port}", "give one of them")
        loaded = load_service(run.source, ns, svc_name)
        graph = resolve(loaded.snapshot, loaded.namespace, svc_name, port or name_port)
    if output is OutputFormat.json:
        run.env.stdout.print_json(json.dumps(graph_to_dict(graph)))
    else:
        run.env.stdout.print(render_graph(graph, explain=explain))


def register(app: typer.Typer) -> None:
    command(app, "svc", kubectl=True, snapshot=True)(svc_command)
