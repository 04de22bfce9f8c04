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
    if "." not in text and ":" not in text:
        return None  # every address (and URL) has one: a plain name needs no parser
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
    """Show how traffic to one Service flows through this node: frontends, chains, endpoints, pods.

    With --all-nodes: how every node programs it, identical nodes grouped (exit status 1 if a node fails).
    """
    from svctrace.cli.progress import node_progress, show_notes
    from svctrace.sources import begin_load_service, load_namespace

    address = _address(name)
    if address is not None:
        ip, name_port = address
        if port is not None and name_port is not None and port != name_port:
            raise UsageError(f"the address says port {name_port} but --port says {port}", "give one of them")
        if run.source.nodes.every:
            raise UsageError("--all-nodes compares a Service by its name", "give NAME (or NS/NAME) instead of "
                             "the address, or drop --all-nodes")
        # An address may be any namespace's Service: read every namespace (live), as why-unreachable does.
        with node_progress(run.env, "the cluster and the node") as progress:
            loaded = load_namespace(run.source, run.namespace, every_namespace=True, progress=progress)
        show_notes(run.env, loaded.notes)
        from svctrace.render.json import graph_to_dict
        from svctrace.render.tree import render_graph
        from svctrace.resolver import resolve_address

        graph = resolve_address(loaded.snapshot, ip, port or name_port)
    else:
        ns, svc_name, name_port = split_name(name, run.namespace)
        if port is not None and name_port is not None and port != name_port:
            raise UsageError(f"the name says port {name_port} but --port says {port}", "give one of them")
        if run.source.nodes.every:
            _all_nodes(run, ns, svc_name, port or name_port, output)
            return
        with node_progress(run.env, "the cluster and the node") as progress:
            loading = begin_load_service(run.source, ns, svc_name, progress=progress)
            # Imported while the node's saves run.
            from svctrace.render.json import graph_to_dict
            from svctrace.render.tree import render_graph
            from svctrace.resolver import resolve

            loaded = loading()
        show_notes(run.env, loaded.notes)
        graph = resolve(loaded.snapshot, loaded.namespace, svc_name, port or name_port)
    if output is OutputFormat.json:
        run.env.print_json(graph_to_dict(graph))
    else:
        run.env.stdout.print(render_graph(graph, explain=explain))


def _all_nodes(run: Run, namespace: str | None, name: str, port: str | None, output: OutputFormat) -> None:
    """``svc NAME --all-nodes``: each node's view of the Service, reduced as it arrives, then grouped."""

    from svctrace.allnodes import NodeFailure, ServiceOnNode, service_across_nodes, service_on_node
    from svctrace.cli.errors import ExitStatus
    from svctrace.cli.progress import node_progress, show_notes
    from svctrace.collectors.live import SERVICE_TABLES
    from svctrace.render.nodes import render_service_across_nodes, service_across_nodes_to_dict
    from svctrace.resolver import resolve
    from svctrace.sources import each_node

    views: list[ServiceOnNode] = []
    failures: list[NodeFailure] = []
    with node_progress(run.env) as progress, \
            each_node(run.source, namespace, service=name, tables=SERVICE_TABLES, progress=progress) as nodes:
        for result in nodes:
            if result.error is not None:
                failures.append(NodeFailure(result.node, result.error.message, result.error.hint))
                continue
            snapshot = result.snapshot()
            views.append(service_on_node(result.node, snapshot, resolve(snapshot, nodes.namespace, name, port)))
        scope, label, notes = nodes.namespace, nodes.label, list(nodes.notes)
    show_notes(run.env, notes)
    across = service_across_nodes(scope, name, views, failures)
    if output is OutputFormat.json:
        run.env.print_json(service_across_nodes_to_dict(across))
    else:
        run.env.stdout.print(render_service_across_nodes(across, label))
    if failures:
        raise typer.Exit(int(ExitStatus.FINDINGS))


def register(app: typer.Typer) -> None:
    command(app, "svc", kubectl=True, snapshot=True, collect=True, nodes=True)(svc_command)
