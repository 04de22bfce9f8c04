"""The live node collector: the node's files of a snapshot (docs/snapshot.md), read from the kernel.

Read-only by construction: it runs only ``*-save`` commands (``-t TABLE`` on the legacy backend only for a
table /proc/net/ip_tables_names lists, since asking for another would make the kernel create it) and
``nft -j list table ip|ip6 kube-proxy``, reads /proc and asks netlink for addresses, IPVS services, ipsets
and conntrack entries (dump requests only); it never writes a rule. It reads cheaply first: the legacy
backend's save runs only when the kernel holds legacy tables, and nftables is asked for kube-proxy's tables
by name, never for the whole ruleset (listing every table takes minutes on a node with 100,000
iptables-nft chains). What it read is turned into a Snapshot by svctrace.parsers.snapshot, exactly as a
snapshot folder is.

Why ``iptables-legacy-save`` and not python-iptables for the legacy backend: bench/bench_node_collect.py
measured, for 1,000 Services x 10 endpoints (32k rules), 0.15 s for ``iptables-legacy-save`` plus 0.34 s
for our parser, against 11.7 s for python-iptables decoding the nat table, and 0.31 s for iptc reading
only one Service's chains (it still scans KUBE-SERVICES, so it grows with the Service count); at 10,000
Services (320k rules): 2.2 s + 7.2 s, against 111 s, and 2.4 s for one Service. A node collection needs
every table, so the save command wins by 10-20x, and it reads both backends alike (iptc is legacy-only).

Everything netlink or subprocess stays here: callers get model values and text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from svctrace.collectors import _probe
from svctrace.collectors.ipvs import read_ipsets, read_ipvs
from svctrace.collectors.spawn import DEFAULT_PROXY_MODE_URL as DEFAULT_PROXY_MODE_URL
from svctrace.collectors.spawn import Started, StartedNode, start_node
from svctrace.errors import CollectionError, InputError
from svctrace.model.snapshot import Missing, NodeFile
from svctrace.parsers.commands import nft_source
from svctrace.parsers.detect import BackendDecision, count_ipvs_services
from svctrace.parsers.ipvs import format_ipset_save, format_ipvsadm_save
from svctrace.parsers.node import parse_ip_addr_json, parse_links
from svctrace.parsers.node_read import ALL_TABLES, choose_iptables, kube_proxy_nft, kube_proxy_nft_read, meta_json
from svctrace.parsers.snapshot import NodeInput, Probe

KUBE_IPVS0 = "kube-ipvs0"
SYSCTLS = _probe.SYSCTLS

NOT_ROOT_WARNING = ("not running as root: the node's rules cannot be read (iptables, nftables, IPVS); "
                    "addresses and sysctls are still shown. Next step: run it again with sudo, or run "
                    "`sudo svctrace capture` on the node and analyse the snapshot with --from")

# rtnetlink scopes as `ip` names them.
_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
_FAMILIES = {2: 4, 10: 6}  # AF_INET, AF_INET6


# ---------------------------------------------------------------------------------------------
# pieces


def _probe_facts(started: Started | None, netns: str | None, url: str | None,
                 timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    if started is None:
        return _probe.probe(url, timeout), None
    run = started.result()
    if run.stdout is None:
        return None, run.error
    try:
        facts: dict[str, Any] = json.loads(run.stdout)
    except json.JSONDecodeError:
        return None, f"the probe in network namespace {netns} printed something else than JSON"
    return facts, None


Link = tuple[int, str, str, "int | None"]  # index, name, operstate, the index of its master (bridge)


def _links_and_addresses(netns: str | None) -> tuple[list[Link], list[dict[str, Any]]]:
    """(index, name, operstate, master) per link and one plain dict per address; netlink stays in here."""
    from pyroute2 import IPRoute  # imported late: a collector that is never used costs nothing

    # flags=0: a namespace that is not there is an error, not created (pyroute2's default is O_CREAT).
    with (IPRoute(netns=netns, flags=0) if netns else IPRoute()) as ipr:
        links = [(int(m["index"]), str(m.get_attr("IFLA_IFNAME") or ""), str(m.get_attr("IFLA_OPERSTATE") or ""),
                  m.get_attr("IFLA_MASTER"))
                 for m in ipr.get_links()]
        addrs = []
        for m in ipr.get_addr():
            family = _FAMILIES.get(int(m["family"]))
            local = m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS")
            if family is None or not local:
                continue
            addrs.append({"index": int(m["index"]), "family": family, "local": str(local),
                          "prefixlen": int(m["prefixlen"]), "scope": _SCOPES.get(int(m["scope"]), str(m["scope"])),
                          "label": m.get_attr("IFA_LABEL")})
    return links, addrs


def _addresses(started: StartedNode, node: NodeInput, where: str) -> bool | None:
    """node/ip-addr.json as `ip -j addr` printed it, else from netlink (no iproute2, or one without -j);
    whether kube-proxy's kube-ipvs0 device is there (None: unknown). Addresses work without root (outside a
    namespace); what netlink says is a warning, not a crash."""
    text = started.addresses.result().stdout if started.addresses is not None else None
    if text is not None:
        try:
            parse_ip_addr_json(text, "ip -j addr")  # what a snapshot's file must be, or netlink is asked
            _bridges, interfaces = parse_links(text, "ip -j addr")
        except InputError:
            pass
        else:
            node.files[NodeFile.IP_ADDR] = text
            node.where[NodeFile.IP_ADDR] = f"ip -j addr{where}"
            return KUBE_IPVS0 in interfaces
    try:
        links_, addrs = _links_and_addresses(started.netns)
    except Exception as exc:  # noqa: BLE001 - pyroute2 raises many kinds; every one means "not collected"
        node.warnings.append(f"cannot read the node's addresses{where}: {exc}; local addresses are unknown")
        node.missing.append(Missing(NodeFile.IP_ADDR, f"netlink: {exc}"))
        return None
    node.files[NodeFile.IP_ADDR] = addresses_from_netlink(links_, addrs)
    return any(link[1] == KUBE_IPVS0 for link in links_)


def addresses_from_netlink(links: list[Link], addrs: list[dict[str, Any]]) -> str:
    """The links and addresses as `ip -j addr` JSON (a snapshot's node/ip-addr.json), with each bridge
    port's master and a link_type, as `ip -j addr` writes them."""
    names = {link[0]: link[1] for link in links}
    doc: list[dict[str, Any]] = []
    by_index: dict[int, list[dict[str, Any]]] = {}
    for a in addrs:
        by_index.setdefault(a["index"], []).append(a)
    for index, name, operstate, master in sorted(links, key=lambda link: link[0]):
        infos = []
        for a in by_index.get(index, []):
            info = {"family": "inet" if a["family"] == 4 else "inet6", "local": a["local"],
                    "prefixlen": a["prefixlen"], "scope": a["scope"]}
            if a.get("label"):
                info["label"] = a["label"]
            infos.append(info)
        entry: dict[str, Any] = {"ifindex": index, "ifname": names[index], "operstate": operstate or "UNKNOWN",
                                 "link_type": "loopback" if name == "lo" else "ether"}
        if master is not None and master in names:
            entry["master"] = names[master]
        entry["addr_info"] = infos
        doc.append(entry)
    return json.dumps(doc, indent=1) + "\n"


# ---------------------------------------------------------------------------------------------
# the collector



def collect_node(*, netns: str | None = None, node_name: str | None = None,
                 proxy_mode_url: str = DEFAULT_PROXY_MODE_URL, timeout: float = 1.0,
                 tables: tuple[str, ...] = ALL_TABLES, deadline: float | None = None) -> NodeInput:
    """Read this node (or network namespace ``netns``) without changing anything: its node/ files, as a
    snapshot holds them (docs/snapshot.md), and what could not be read; problems become warnings. Commands
    still running at ``deadline`` (time.monotonic()) are stopped and their files reported missing."""
    return start_node(netns=netns, proxy_mode_url=proxy_mode_url, timeout=timeout, tables=tables,
                      deadline=deadline).finish(node_name)


def gather(started: StartedNode, node_name: str | None) -> NodeInput:
    """The node/ files of a started read (StartedNode.finish), waiting for what still runs."""
    netns = started.netns
    node = NodeInput(netns=netns)
    warnings, missing, files = node.warnings, node.missing, node.files
    where = f" in network namespace {netns}" if netns else ""

    kube_ipvs0 = _addresses(started, node, where)

    # The rules are read before /proxyMode is asked (its packet would be in their counters); the probe asks
    # while the saves' output is sorted out here.
    runs = {key: save.result() for key, save in started.saves.items()} if started.root else {}
    if started.probe is not None:
        started.probe.release()
    probe_said = len(warnings)  # where the probe's warning goes: before the backend's
    decision: BackendDecision | None = None
    if started.root:
        decision = choose_iptables(runs, node, where=where, tables=started.tables)
        del runs
    facts, probe_error = _probe_facts(started.probe, netns, started.proxy_mode_url, started.timeout)
    sysctls: dict[str, str | None] = {}
    ipvs_available: bool | None = None
    ipvs_services: int | None = None
    url_answer: str | None = None
    if facts is None:
        warnings.insert(probe_said, f"cannot read sysctls or ask kube-proxy{where}: {probe_error}")
    else:
        sysctls = dict(facts["sysctls"])
        ipvs_available = bool(facts["ip_vs_present"])
        if facts["ip_vs"] is not None:
            ipvs_services = count_ipvs_services(facts["ip_vs"])
        url_answer = facts["url_answer"]

    nft_tables: tuple[str, ...] | None = None
    if not started.root:
        warnings.append(NOT_ROOT_WARNING)
        for f in (NodeFile.IPTABLES, NodeFile.IP6TABLES, NodeFile.NFT):
            missing.append(Missing(f, "not root"))
    else:
        if started.nft is not None:
            node.where[NodeFile.NFT] = nft_source(where)
            listed = [(r, r.run.result()) for r in started.nft]
            if any(run.followed for _r, run in listed):  # read as written: the ruleset is kept, not the text
                node.parsed[NodeFile.NFT], nft_tables = kube_proxy_nft_read(
                    [(r.family, run, r.ruleset) for r, run in listed], where=where, warnings=warnings,
                    source=node.source(NodeFile.NFT))
            else:
                files[NodeFile.NFT], nft_tables = kube_proxy_nft([(r.family, run) for r, run in listed],
                                                                 where=where, warnings=warnings)
            del listed
        else:
            missing.append(Missing(NodeFile.NFT, "nft is not installed"))
        if started.conntrack is not None:  # not asked for (svc, trace): neither read nor missing
            ct = started.conntrack.result()
            if ct.error is not None:
                warnings.append(ct.error)
                missing.append(Missing(NodeFile.CONNTRACK, ct.error))
            elif ct.text is not None:
                files[NodeFile.CONNTRACK] = ct.text
                if ct.entries is not None:
                    node.parsed[NodeFile.CONNTRACK] = ct.entries
        # IPVS only where the node shows it (the module loaded, or kube-proxy's dummy device): asking netlink
        # on other nodes would only say that IPVS is absent.
        if ipvs_available or kube_ipvs0:
            _read_ipvs(netns, where, node)
    if started.root and not (ipvs_available or kube_ipvs0):
        missing.append(Missing(NodeFile.IPVSADM, "IPVS is not in use on this node"))
        missing.append(Missing(NodeFile.IPSET, "IPVS is not in use on this node"))
    files[NodeFile.META] = meta_json(node_name, sysctls, decision)
    node.probe = Probe(url_answer=url_answer, ipvs_available=ipvs_available, ipvs_services=ipvs_services,
                       nft_tables=nft_tables)
    return node


def _read_ipvs(netns: str | None, where: str, node: NodeInput) -> None:
    """IPVS virtual servers and ipsets over netlink, kept parsed and in their save formats."""
    readers: tuple[tuple[str, NodeFile, Callable[[str | None], Any], Callable[[Any], str]], ...] = (
        ("IPVS", NodeFile.IPVSADM, read_ipvs, format_ipvsadm_save),
        ("ipsets", NodeFile.IPSET, read_ipsets, format_ipset_save))
    for what, name, read, save_format in readers:
        try:
            value = read(netns)
        except CollectionError as exc:
            node.warnings.append(f"cannot read {what}{where}: {exc.message}" + (f"; {exc.hint}" if exc.hint else ""))
            node.missing.append(Missing(name, exc.message))
        else:
            node.parsed[name] = value
            node.files[name] = save_format(value)
