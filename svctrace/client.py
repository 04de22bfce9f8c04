"""Who the client is: the source address and origin of a traced packet, or the client a diagnosis is asked for.

Shared by ``trace`` (``--src``, ``--from-pod``, ``--from-node``, ``--from-external``) and ``why-unreachable``
(``--src``, ``--from-pod``), so both read a pod, a node address or an outside client the same way.
"""

from __future__ import annotations

from svctrace.diagnosis.registry import Client
from svctrace.errors import NotFoundError, UsageError
from svctrace.model.k8s import Pod
from svctrace.model.snapshot import Snapshot
from svctrace.record import record
from svctrace.trace import node_local_ips

# Documentation ranges (RFC 5737, RFC 3849): an "external client" that is certainly nobody's real address.
EXTERNAL_CLIENT = {4: "203.0.113.10", 6: "2001:db8::10"}


@record
class PacketSource:
    """The packet's source address, where it comes from (pod | node | external) and how it was chosen."""

    address: str
    origin: str
    note: str | None = None


def family_of(ip: str) -> int:
    return 6 if ":" in ip else 4


def find_pod(snapshot: Snapshot, ref: str, namespace: str) -> Pod:
    """The pod ``NS/POD`` (or ``POD`` in ``namespace``), or a NotFoundError naming where it was looked for."""
    ns, _, name = ref.rpartition("/")
    pod = snapshot.pod(ns or namespace, name)
    if pod is None:
        raise NotFoundError(f"pod {ns or namespace}/{name} is not in {snapshot.source or 'the snapshot'}",
                            "give NS/POD of a pod the API lists, or --src POD_IP")
    return pod


def _node_ip(snapshot: Snapshot, family: int) -> str:
    local, _ = node_local_ips(snapshot)
    for ip in local:
        if family_of(ip) == family and not ip.startswith(("127.", "::1")):
            return ip
    raise UsageError("this node's addresses are not known, so --from-node has no source address",
                     "add node/ip-addr.json to the snapshot, or give --src NODE_IP")


def packet_source(snapshot: Snapshot, family: int, *, namespace: str, src: str | None = None,
                  from_pod: str | None = None, from_node: bool = False,
                  from_external: bool = False) -> PacketSource:
    """Where a traced packet comes from; ``namespace`` is the one ``--from-pod POD`` (without NS/) is in."""
    if sum(bool(x) for x in (from_pod, from_node, from_external)) > 1:
        raise UsageError("give only one of --from-pod, --from-node and --from-external", "pick where the client is")
    if from_pod:
        pod = find_pod(snapshot, from_pod, namespace)
        ips = [ip for ip in pod.pod_ips if family_of(ip) == family]
        if not ips:
            raise UsageError(f"pod {pod.ref} has no IPv{family} address", "trace an address of the pod's family")
        elsewhere = None
        if pod.node_name and snapshot.node.name and pod.node_name != snapshot.node.name:
            elsewhere = (f"pod {pod.ref} runs on {pod.node_name}, so its packets meet that node's rules; this is "
                         f"how node {snapshot.node.name} would treat them")
        return PacketSource(src or ips[0], "node" if pod.host_network else "pod", elsewhere)
    if from_node:
        return PacketSource(src or _node_ip(snapshot, family), "node")
    if from_external:
        return PacketSource(src or EXTERNAL_CLIENT[family], "external")
    if src is None:
        return PacketSource(EXTERNAL_CLIENT[family], "external",
                            f"no client given: traced as an external client {EXTERNAL_CLIENT[family]} "
                            "(use --from-pod NS/POD, --from-node or --src)")
    local, _ = node_local_ips(snapshot)
    if src in local:
        return PacketSource(src, "node")
    if snapshot.pod_by_ip(src) is not None:
        return PacketSource(src, "pod")
    return PacketSource(src, "external")


def diagnosis_client(snapshot: Snapshot, *, namespace: str, from_pod: str | None, src: str | None) -> Client:
    """The client a diagnosis is asked for; unknown when neither ``--from-pod`` nor ``--src`` is given."""
    if from_pod is None and src is None:
        return Client()
    family = 6 if src is not None and ":" in src else 4
    chosen = packet_source(snapshot, family, namespace=namespace, src=src, from_pod=from_pod)
    pod = find_pod(snapshot, from_pod, namespace) if from_pod is not None else None
    return Client(src=chosen.address, pod=pod, origin=chosen.origin)
