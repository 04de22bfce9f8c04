"""``svctrace trace``: simulate one new connection through this node's rules and show every outcome."""

from __future__ import annotations

import enum
import ipaddress
from typing import Annotated

import typer

from svctrace.cli.command import Run, command
from svctrace.cli.options import Explain, Output, OutputFormat
from svctrace.errors import UsageError


class ProxyMode(str, enum.Enum):
    iptables = "iptables"
    ipvs = "ipvs"
    nftables = "nftables"


def parse_destination(text: str) -> tuple[str, int]:
    """``IP:PORT`` or ``[IPv6]:PORT``."""
    host, sep, port = text.rpartition(":")
    if text.startswith("["):
        host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--dst {text!r} is not IP:PORT", "e.g. --dst 10.96.0.10:53 or --dst [fd00::10]:80")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"--dst {text!r}: {host!r} is not an IP address",
                         "give the ClusterIP, node IP, externalIP or LB IP, e.g. --dst 10.96.0.10:53") from None
    return host, int(port)


def trace_command(
    run: Run,
    dst: Annotated[str, typer.Option("--dst", help="Destination IP:PORT (ClusterIP, NodeIP:NodePort, ...).",
                                     metavar="IP:PORT")],
    proto: Annotated[str, typer.Option("--proto", help="tcp, udp or sctp.", metavar="PROTOCOL")] = "tcp",
    src: Annotated[str | None, typer.Option("--src", help="Source IP of the client.", metavar="IP")] = None,
    from_pod: Annotated[str | None, typer.Option(
        "--from-pod", help="The client is this pod (NS/POD, or POD in -n's namespace).", metavar="NS/POD")] = None,
    from_node: Annotated[bool, typer.Option("--from-node", help="The client is the node itself.")] = False,
    from_external: Annotated[bool, typer.Option("--from-external", help="The client is outside the node.")] = False,
    in_interface: Annotated[str | None, typer.Option("--in-interface", help="Interface the packet arrives on.",
                                                     metavar="NAME")] = None,
    mode: Annotated[ProxyMode | None, typer.Option(
        "--mode", help="The proxy mode to trace, when the node's cannot be told from its rules.",
        metavar="MODE")] = None,
    output: Output = OutputFormat.tree,
    explain: Explain = False,
    kube_proxy_test: Annotated[bool, typer.Option(
        "--kube-proxy-test", help="Use kube-proxy's unit-test tracer shortcuts (docs/tracer.md).")] = False,
) -> None:
    """Simulate one new connection through this node's rules: every outcome, its probability and its path."""
    from svctrace.cli.progress import node_progress, show_notes
    from svctrace.sources import begin_load_node

    ip, port = parse_destination(dst)
    # The API is only needed live to find --from-pod's address; the node's rules are always read.
    with node_progress(run.env, "the node") as progress:
        loading = begin_load_node(run.source, run.namespace, with_api=from_pod is not None,
                                  scope=from_pod.rpartition("/")[0] or None if from_pod else None,
                                  client_pod=from_pod, progress=progress)
        # Imported while the node's saves run.
        from dataclasses import replace

        from svctrace.client import family_of, packet_source
        from svctrace.render.trace_json import trace_to_dict
        from svctrace.render.trace_tree import render_trace
        from svctrace.trace import Packet, TraceOptions, trace_packet

        loaded = loading()
    show_notes(run.env, loaded.notes)
    snapshot = loaded.snapshot
    run.warn_partial(loaded)
    source = packet_source(snapshot, family_of(ip), namespace=loaded.namespace, src=src, from_pod=from_pod,
                           from_node=from_node, from_external=from_external)
    packet = Packet(src=source.address, dst=ip, dport=port, protocol=proto, origin=source.origin,
                    in_interface=in_interface)
    options = TraceOptions(kube_proxy_test_semantics=kube_proxy_test, mode=mode.value if mode else None)
    result = trace_packet(snapshot, packet, options)
    if source.note:
        result = replace(result, warnings=(source.note, *result.warnings))
    if output is OutputFormat.json:
        run.env.print_json(trace_to_dict(result))
        return

    snapshot.expect_pod_ip_lookups(len({o.destination for o in result.outcomes if o.destination}))

    def describe(destination: str) -> str | None:
        host = destination.rsplit(":", 1)[0].strip("[]")
        pod = snapshot.pod_by_ip(host)
        if pod is None:
            return None
        return f"pod {pod.ref}" + (f"  {pod.node_name}" if pod.node_name else "")

    run.env.stdout.print(render_trace(result, explain=explain, node=snapshot.node.name, describe=describe))


def register(app: typer.Typer) -> None:
    command(app, "trace", kubectl=True, snapshot=True, collect=True)(trace_command)
