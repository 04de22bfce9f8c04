"""One function builds every Snapshot: from the API objects and the node's files, however they were read.

A live run on the node, a collector pod on another node, and a snapshot folder or tarball all end in
``build_snapshot``: the same node files (docs/snapshot.md) parsed the same way, the proxy mode and the
node's name decided once by the same rules. Nothing downstream can tell the sources apart, and a
capture read back with ``--from`` gives the live answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from svctrace.errors import InputError
from svctrace.model.iptables import IptablesDump
from svctrace.model.k8s import Node
from svctrace.model.mode import ProxyMode
from svctrace.model.snapshot import API, HostAddress, Missing, NodeFacts, NodeFile, Snapshot
from svctrace.parsers import iptables_save
from svctrace.parsers.detect import ModeFacts, decide_proxy_mode
from svctrace.parsers.k8s import ApiObjects
from svctrace.parsers.node import NodeMeta, parse_ip_addr_json, parse_links, parse_meta_json
from svctrace.record import record

if TYPE_CHECKING:
    from svctrace.model.nft import NftRuleset

# Dumps up to this size are parsed whole (every line checked before anything is answered); bigger ones
# are indexed and their chains parsed as they are needed.
EAGER_BYTES = 4 << 20
# Read when present, not listed as missing when absent: captures before it never had one, and only the
# stale-udp-conntrack check uses it (and says itself that it could not look).
OPTIONAL_NODE_FILES = frozenset({NodeFile.CONNTRACK})


@record
class Probe:
    """What a live read saw besides the files: kube-proxy's own answer and the kernel's IPVS state."""

    url_answer: str | None = None  # the body of kube-proxy's /proxyMode
    ipvs_available: bool | None = None  # /proc/net/ip_vs exists
    ipvs_services: int | None = None  # virtual services in /proc/net/ip_vs
    nft_tables: tuple[str, ...] | None = None  # "ip kube-proxy", ... as `nft list tables` says


@dataclass
class NodeInput:
    """One read of a node: its node/ files as text, what could not be read and why, and what else it saw."""

    files: dict[str, str] = field(default_factory=dict)  # NodeFile value -> text
    where: dict[str, str] = field(default_factory=dict)  # NodeFile value -> where it came from, for messages
    missing: list[Missing] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    probe: Probe = field(default_factory=Probe)
    netns: str | None = None
    # Values read in their parsed form (IPVS and ipsets over netlink); used instead of parsing the file.
    parsed: dict[str, object] = field(default_factory=dict)

    def source(self, name: str) -> str:
        return self.where.get(name, f"node/{name}")


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


def read_dumps(node: NodeInput) -> None:
    """Parse the node's rule dumps (iptables, IPVS and its sets, nftables) not parsed yet into ``node.parsed``:
    ``build_snapshot`` does, or a loader sooner (while another process indexes the big api/ files, say)."""
    files, parsed = node.files, node.parsed
    for name, family in ((NodeFile.IPTABLES, 4), (NodeFile.IP6TABLES, 6)):
        dump = _dump(node, name, family)
        if dump is not None:
            parsed[name] = dump
    if parsed.get(NodeFile.IPVSADM) is None and files.get(NodeFile.IPVSADM) is not None:
        from svctrace.parsers import ipvs  # each mode's parser only when its files are there (start-up)

        parsed[NodeFile.IPVSADM] = ipvs.parse_ipvsadm_save(files[NodeFile.IPVSADM], node.source(NodeFile.IPVSADM))
    if parsed.get(NodeFile.IPSET) is None and files.get(NodeFile.IPSET) is not None:
        from svctrace.parsers import ipvs

        parsed[NodeFile.IPSET] = ipvs.parse_ipset_save(files[NodeFile.IPSET], node.source(NodeFile.IPSET))
    if parsed.get(NodeFile.NFT) is None and files.get(NodeFile.NFT) is not None:
        from svctrace.parsers.nft_json import parse_nft_json

        parsed[NodeFile.NFT] = parse_nft_json(files[NodeFile.NFT], node.source(NodeFile.NFT))


def _dump(node: NodeInput, name: str, family: int) -> IptablesDump | None:
    parsed = node.parsed.get(name)
    if isinstance(parsed, IptablesDump):  # read already (a pasted dump: svctrace.parsers.pasted)
        return parsed
    text = node.files.get(name)
    if text is None:
        return None
    return iptables_save.parse(text, source=node.source(name), family=family, eager=len(text) <= EAGER_BYTES)


def decide_mode(meta: NodeMeta, probe: Probe, iptables: IptablesDump | None, ip6tables: IptablesDump | None,
                interfaces: tuple[str, ...] | None,
                nft_tables: tuple[str, ...] | None, ipvs_services: int | None) -> tuple[ProxyMode | None, str,
                                                                                           tuple[str, ...]]:
    """kube-proxy's mode: as recorded or answered, else what the dataplane shows (svctrace.parsers.detect)."""
    recorded = ProxyMode.parse(meta.proxy_mode)
    if recorded is not None and probe.url_answer is None:
        return recorded, meta.proxy_mode_how or "recorded in the snapshot (node/meta.json)", ()
    decision = decide_proxy_mode(ModeFacts(
        url_answer=probe.url_answer, iptables=iptables, ip6tables=ip6tables,
        ipvs_available=probe.ipvs_available,
        ipvs_services=probe.ipvs_services if probe.ipvs_services is not None else ipvs_services,
        kube_ipvs0=("kube-ipvs0" in interfaces) if interfaces is not None else None,
        nft_tables=probe.nft_tables if probe.nft_tables is not None else nft_tables))
    return ProxyMode.parse(decision.mode), decision.how, decision.warnings


def build_snapshot(api: ApiObjects | None, node: NodeInput, *, source: str,
                   api_missing: tuple[Missing, ...] = (), api_warnings: tuple[str, ...] = (),
                   explicit_node: str | None = None, hostname: str | None = None,
                   api_collected: bool | None = None) -> Snapshot:
    """The Snapshot of what the API and the node gave; every node file is optional."""
    warnings: list[str] = list(node.warnings)
    files = node.files

    def text(name: str) -> str | None:
        return files.get(name)

    read_dumps(node)
    iptables: IptablesDump | None = node.parsed.get(NodeFile.IPTABLES)  # type: ignore[assignment]
    ip6tables: IptablesDump | None = node.parsed.get(NodeFile.IP6TABLES)  # type: ignore[assignment]
    ipvs_table = node.parsed.get(NodeFile.IPVSADM)
    ipsets = node.parsed.get(NodeFile.IPSET)
    nft: NftRuleset | None = node.parsed.get(NodeFile.NFT)  # type: ignore[assignment]
    conntrack = None
    if text(NodeFile.CONNTRACK) is not None:
        from svctrace.parsers.conntrack import parse_conntrack

        conntrack = parse_conntrack(files[NodeFile.CONNTRACK], node.source(NodeFile.CONNTRACK))
    addresses: tuple[HostAddress, ...] | None = None
    bridges: dict[str, str] | None = None
    interfaces: tuple[str, ...] | None = None
    if text(NodeFile.IP_ADDR) is not None:
        addresses = parse_ip_addr_json(files[NodeFile.IP_ADDR], node.source(NodeFile.IP_ADDR))
        bridges, interfaces = parse_links(files[NodeFile.IP_ADDR], node.source(NodeFile.IP_ADDR))
    meta = NodeMeta()
    if text(NodeFile.META) is not None:
        where = node.source(NodeFile.META)
        meta = parse_meta_json(files[NodeFile.META], where)
        warnings += [w.replace(where, f"node/{NodeFile.META}") for w in meta.warnings]

    nft_tables = tuple(t.ref for t in nft.tables) if nft is not None else None
    ipvs_services = len(ipvs_table.services) if ipvs_table is not None else None  # type: ignore[attr-defined]
    mode, how, mode_warnings = decide_mode(meta, node.probe, iptables, ip6tables, interfaces, nft_tables,
                                           ipvs_services)
    warnings += mode_warnings

    objects = api if api is not None else ApiObjects()
    if api_collected is None:
        api_collected = api is not None and api.objects_seen > 0
    name = node_name_for(objects.nodes, addresses, explicit=explicit_node or meta.name, hostname=hostname)

    missing: list[Missing] = list(api_missing)
    if not api_collected and not any(m.what == API for m in missing):
        missing.append(Missing(API))
    reported = {m.what for m in node.missing}
    missing += node.missing
    missing += [Missing(f) for f in NodeFile
                if f not in files and f not in node.parsed and f not in OPTIONAL_NODE_FILES and f not in reported]

    return Snapshot(
        services=objects.services, endpoint_slices=objects.endpoint_slices,
        legacy_endpoints=objects.legacy_endpoints, pods=objects.pods, nodes=objects.nodes,
        lazy_api=objects.lazy, config_maps=objects.config_maps, network_policies=objects.network_policies,
        iptables=iptables, ip6tables=ip6tables,
        node=NodeFacts(name=name, proxy_mode=mode, proxy_mode_how=how, addresses=addresses, sysctls=meta.sysctls,
                       iptables_backend=meta.iptables_backend, iptables_backend_reason=meta.iptables_backend_reason,
                       bridge_ports=bridges),
        source=source, api_collected=api_collected,
        missing=tuple(dict.fromkeys(missing)),
        warnings=tuple(dict.fromkeys((*api_warnings, *objects.warnings, *warnings))),
        ipvs=ipvs_table, ipsets=ipsets, nft=nft, conntrack=conntrack,  # type: ignore[arg-type]
    )


def check_text(data: bytes, where: str) -> str:
    """A node or API file's bytes as text, or a clear error (UTF-16 from PowerShell, not UTF-8)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"{where}: the file is UTF-16, not UTF-8",
                         "PowerShell's `>` writes UTF-16; save it with `| Out-File -Encoding utf8` "
                         "or make it on the node with a POSIX shell")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(f"not UTF-8 text (column {column})",
                         "svctrace reads the text kubectl, iptables-save and ip print; copy the file again "
                         "without converting it", path=where, line=line) from None


