"""A Snapshot from live sources: the Kubernetes API and this node, assembled the way a snapshot folder is.

Whatever a live run reads is also what ``capture`` writes, so ``--from`` a capture gives the live answer.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from svctrace import __version__
from svctrace.model.k8s import Node
from svctrace.model.snapshot import HostAddress, NodeFacts, Snapshot
from svctrace.parsers.ipvs import format_ipset_save, format_ipvsadm_save

if TYPE_CHECKING:
    from svctrace.collectors.kube import ApiCollection
    from svctrace.collectors.node import NodeCollection

# The Kubernetes client (~200 ms to import) and the node collector are imported by the functions that read the
# live cluster and node, so that LiveOptions, and every command that reads only a snapshot, cost nothing of them.


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """How to reach the live sources (kubectl's flags, plus the node's network namespace for tests)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    node_name: str | None = None
    netns: str | None = None
    timeout: float = 5.0
    proxy_mode_url: str | None = None


@dataclass(frozen=True, slots=True)
class LiveCollection:
    """Everything one live run read: the Snapshot, and the raw documents and texts ``capture`` writes."""

    snapshot: Snapshot
    api: ApiCollection
    node: NodeCollection

    def api_documents(self) -> dict[str, dict[str, Any]]:
        return self.api.list_documents()

    def node_files(self) -> dict[str, str]:
        files = {"iptables-save.txt": self.node.iptables_text, "ip6tables-save.txt": self.node.ip6tables_text,
                 "ip-addr.json": self.node.ip_addr_json, "conntrack.txt": self.node.conntrack_text,
                 "nft.json": self.node.nft_json_text}
        # IPVS and ipsets were read over netlink; the same data in the save formats reads back identically.
        if self.node.ipvs is not None:
            files["ipvsadm.txt"] = format_ipvsadm_save(self.node.ipvs)
        if self.node.ipsets is not None:
            files["ipset.txt"] = format_ipset_save(self.node.ipsets)
        return {name: text for name, text in files.items() if text is not None}

    def meta(self) -> dict[str, Any]:
        facts = self.snapshot.node
        return {"nodeName": facts.name, "proxyMode": facts.proxy_mode, "sysctls": dict(facts.sysctls),
                "iptablesBackend": facts.iptables_backend, "iptablesBackendReason": facts.iptables_backend_reason,
                "server": self.api.target.server, "context": self.api.target.context,
                "svctraceVersion": __version__}


def node_name_for(nodes: tuple[Node, ...], addresses: tuple[HostAddress, ...] | None, *,
                  explicit: str | None, hostname: str | None) -> str | None:
    """This node's name: ``--node``; else the Node whose address is configured here; else the hostname,
    if a Node has that name; else None (local endpoints then cannot be told apart)."""
    if explicit:
        return explicit
    local = {a.address for a in addresses or ()}
    for node in nodes:
        if local.intersection(node.ips):
            return node.name
    if hostname and any(n.name == hostname for n in nodes):
        return hostname
    return None


def _node(opts: LiveOptions) -> NodeCollection:
    from svctrace.collectors.node import collect_node

    kwargs: dict[str, Any] = {"netns": opts.netns, "node_name": opts.node_name}
    if opts.proxy_mode_url is not None:
        kwargs["proxy_mode_url"] = opts.proxy_mode_url
    return collect_node(**kwargs)


def assemble(api: ApiCollection, node: NodeCollection, *, explicit: str | None, hostname: str | None,
             source: str) -> Snapshot:
    """One Snapshot from what the API and the node collectors read."""
    objs = api.objects
    name = node_name_for(objs.nodes, node.addresses, explicit=explicit or node.node_name, hostname=hostname)
    sysctls: Mapping[str, str] = {k: v for k, v in node.sysctls.items() if v is not None}
    return Snapshot(
        services=objs.services, endpoint_slices=objs.endpoint_slices, legacy_endpoints=objs.legacy_endpoints,
        pods=objs.pods, nodes=objs.nodes, config_maps=objs.config_maps, network_policies=objs.network_policies,
        iptables=node.iptables, ip6tables=node.ip6tables,
        node=NodeFacts(name=name, proxy_mode=node.proxy_mode, addresses=node.addresses, sysctls=sysctls,
                       iptables_backend=node.backend, iptables_backend_reason=node.backend_reason),
        source=source, api_collected=True, conntrack=node.conntrack, nft=node.nft, ipvs=node.ipvs,
        ipsets=node.ipsets,
        missing=tuple(dict.fromkeys((*api.missing, *node.missing))),
        warnings=tuple(dict.fromkeys((*api.warnings, *objs.warnings, *node.warnings))),
    )


def live_service(opts: LiveOptions, namespace: str | None, name: str) -> LiveCollection:
    """What ``svctrace svc NAME`` needs, read live: a fixed number of API requests and this node's rules."""
    from svctrace.collectors.kube import KubeCollector

    hostname = socket.gethostname().split(".")[0]
    with KubeCollector(opts.kubeconfig, opts.context, opts.namespace, opts.timeout) as kube:
        _ = kube.target  # a missing or broken kubeconfig fails here, before the node is read
        node = _node(opts)
        api = kube.collect_service(namespace, name, node_name=opts.node_name or node.node_name or hostname)
    source = f"live: {api.target.server}"
    snap = assemble(api, node, explicit=opts.node_name, hostname=hostname, source=source)
    return LiveCollection(snap, api, node)


def live_all(opts: LiveOptions, namespace: str | None) -> LiveCollection:
    """Every Service in one namespace (or all) and this node's rules: what ``capture`` and ``audit`` read."""
    from svctrace.collectors.kube import KubeCollector

    with KubeCollector(opts.kubeconfig, opts.context, opts.namespace, opts.timeout) as kube:
        _ = kube.target
        node = _node(opts)
        api = kube.collect_all(namespace)
    source = f"live: {api.target.server}"
    snap = assemble(api, node, explicit=opts.node_name, hostname=socket.gethostname().split(".")[0], source=source)
    return LiveCollection(snap, api, node)


def default_namespace(opts: LiveOptions) -> str:
    """The namespace kubectl would use: -n, else the context's, else "default"."""
    from svctrace.collectors.kube import KubeCollector

    with KubeCollector(opts.kubeconfig, opts.context, opts.namespace, opts.timeout) as kube:
        return kube.target.namespace
