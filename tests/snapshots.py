"""Build Snapshots for pure tests from YAML text and iptables-save text, without touching the disk."""

from __future__ import annotations

import textwrap

from svctrace.model.snapshot import HostAddress, NodeFacts, Snapshot
from svctrace.parsers.iptables_save import parse
from svctrace.parsers.k8s import decode_documents, parse_objects


def make_snapshot(api_yaml: str = "", iptables: str | None = None, *, ip6tables: str | None = None,
                  node: str | None = "node-a", node_ips: tuple[str, ...] = ("192.168.0.2",),
                  proxy_mode: str | None = "iptables") -> Snapshot:
    """A Snapshot from YAML objects and dumps given inline (dedented)."""
    docs = decode_documents(textwrap.dedent(api_yaml), "api.yaml", "yaml") if api_yaml.strip() else ()
    api = parse_objects(docs, "api.yaml")
    addrs = tuple(HostAddress("eth0", ip, 128 if ":" in ip else 24, 6 if ":" in ip else 4) for ip in node_ips)
    return Snapshot(
        services=api.services, endpoint_slices=api.endpoint_slices, legacy_endpoints=api.legacy_endpoints,
        pods=api.pods, nodes=api.nodes, config_maps=api.config_maps, network_policies=api.network_policies,
        iptables=parse(textwrap.dedent(iptables), "iptables-save.txt", 4) if iptables is not None else None,
        ip6tables=parse(textwrap.dedent(ip6tables), "ip6tables-save.txt", 6) if ip6tables is not None else None,
        node=NodeFacts(name=node, proxy_mode=proxy_mode, addresses=addrs),
        source="test", api_collected=bool(api.services),
    )
