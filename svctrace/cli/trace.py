"""``svctrace trace``: simulate one new connection through this node's rules and show every outcome."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace
from typing import Annotated

import typer

from svctrace.cli.errors import env_of, handled
from svctrace.cli.options import (
    Context,
    Explain,
    FromSnapshot,
    Kubeconfig,
    Netns,
    NodeName,
    Output,
    OutputFormat,
)
from svctrace.cli.sources import node_snapshot
from svctrace.collectors.live import LiveOptions
from svctrace.errors import NotFoundError, UsageError
from svctrace.model.snapshot import Snapshot
from svctrace.render.trace_json import trace_to_dict
from svctrace.render.trace_tree import render_trace
from svctrace.trace import Packet, TraceOptions, node_local_ips, trace_packet

# Documentation ranges (RFC 5737, RFC 3849): an "external client" that is certainly nobody's real address.
EXTERNAL_CLIENT = {4: "203.0.113.10", 6: "2001:db8::10"}


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


def _family(ip: str) -> int:
    return 6 if ":" in ip else 4


def _node_ip(snapshot: Snapshot, family: int) -> str:
    local, _ = node_local_ips(snapshot)
    for ip in local:
        if _family(ip) == family and not ip.startswith(("127.", "::1")):
            return ip
    raise UsageError("this node's addresses are not known, so --from-node has no source address",
                     "add node/ip-addr.json to the snapshot, or give --src NODE_IP")


def choose_source(snapshot: Snapshot, family: int, *, src: str | None, from_pod: str | None, from_node: bool,
                  from_external: bool) -> tuple[str, str, str | None]:
    """The packet's source address, origin (pod|node|external) and a note on how it was chosen."""
    if sum(bool(x) for x in (from_pod, from_node, from_external)) > 1:
        raise UsageError("give only one of --from-pod, --from-node and --from-external", "pick where the client is")
    if from_pod:
        ns, _, name = from_pod.rpartition("/")
        pod = snapshot.pod(ns or "default", name)
        if pod is None:
            raise NotFoundError(f"pod {ns or 'default'}/{name} is not in {snapshot.source or 'the snapshot'}",
                                "give NS/POD of a pod the API lists, or --src POD_IP")
        ips = [ip for ip in pod.pod_ips if _family(ip) == family]
        if not ips:
            raise UsageError(f"pod {pod.ref} has no IPv{family} address", "trace an address of the pod's family")
        elsewhere = None
        if pod.node_name and snapshot.node.name and pod.node_name != snapshot.node.name:
            elsewhere = (f"pod {pod.ref} runs on {pod.node_name}, so its packets meet that node's rules; this is "
                         f"how node {snapshot.node.name} would treat them")
        return src or ips[0], ("node" if pod.host_network else "pod"), elsewhere
    if from_node:
        return src or _node_ip(snapshot, family), "node", None
    if from_external:
        return src or EXTERNAL_CLIENT[family], "external", None
    if src is None:
        return EXTERNAL_CLIENT[family], "external", (
            f"no client given: traced as an external client {EXTERNAL_CLIENT[family]} "
            "(use --from-pod NS/POD, --from-node or --src)")
    local, _ = node_local_ips(snapshot)
    if src in local:
        return src, "node", None
    pod = snapshot.pod_by_ip(src)
    if pod is not None:
        return src, "pod", None
    return src, "external", None


@handled
def trace_command(
    ctx: typer.Context,
    dst: Annotated[str, typer.Option("--dst", help="Destination IP:PORT (ClusterIP, NodeIP:NodePort, ...).")],
    proto: Annotated[str, typer.Option("--proto", help="tcp, udp or sctp.")] = "tcp",
    src: Annotated[str | None, typer.Option("--src", help="Source IP of the client.")] = None,
    from_pod: Annotated[str | None, typer.Option("--from-pod", help="The client is this pod (NS/POD).")] = None,
    from_node: Annotated[bool, typer.Option("--from-node", help="The client is the node itself.")] = False,
    from_external: Annotated[bool, typer.Option("--from-external", help="The client is outside the node.")] = False,
    in_interface: Annotated[str | None, typer.Option("--in-interface", help="Interface the packet arrives on.")]
    = None,
    from_: FromSnapshot = None,
    output: Output = OutputFormat.tree,
    explain: Explain = False,
    kube_proxy_test: Annotated[bool, typer.Option(
        "--kube-proxy-test", help="Use kube-proxy's unit-test tracer shortcuts (docs/tracer.md).")] = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    node: NodeName = None,
    netns: Netns = None,
) -> None:
    """Simulate one new connection through this node's rules: every outcome, its probability and its path."""
    env = env_of(ctx)
    ip, port = parse_destination(dst)
    live = LiveOptions(kubeconfig=kubeconfig, context=context, node_name=node, netns=netns)
    # The API is only needed live to find --from-pod's address; the node's rules are always read.
    pod_ns = (from_pod.rpartition("/")[0] or "default") if from_pod else None
    snapshot = node_snapshot(from_, live, with_api=from_pod is not None, with_api_namespace=pod_ns)
    source, origin, note = choose_source(snapshot, _family(ip), src=src, from_pod=from_pod, from_node=from_node,
                                         from_external=from_external)
    packet = Packet(src=source, dst=ip, dport=port, protocol=proto, origin=origin, in_interface=in_interface)
    result = trace_packet(snapshot, packet, TraceOptions(kube_proxy_test_semantics=kube_proxy_test))
    if note:
        result = replace(result, warnings=(note, *result.warnings))
    if output is OutputFormat.json:
        env.stdout.print_json(json.dumps(trace_to_dict(result)))
        return

    def describe(destination: str) -> str | None:
        host = destination.rsplit(":", 1)[0].strip("[]")
        pod = snapshot.pod_by_ip(host)
        if pod is None:
            return None
        return f"pod {pod.ref}" + (f"  {pod.node_name}" if pod.node_name else "")

    env.stdout.print(render_trace(result, explain=explain, node=snapshot.node.name, describe=describe))


def register(app: typer.Typer) -> None:
    app.command("trace")(trace_command)
