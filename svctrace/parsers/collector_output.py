"""What a collector pod's read-only script printed, turned into the node/ files of a snapshot (pure).

The script (svctrace/collectors/node_script.py) frames each command's output as a record; this module
splits the records apart and hands the results to the same functions a local read uses
(svctrace.parsers.node_read), so a node read remotely gives the NodeInput a local read gives, which
svctrace.parsers.snapshot.build_snapshot turns into the Snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from svctrace.model.snapshot import Missing, NodeFile
from svctrace.parsers.commands import nft_source
from svctrace.parsers.detect import LEGACY, NFT, count_ipvs_services
from svctrace.parsers.ipvs import format_ipvsadm_save, parse_ipvsadm_save
from svctrace.parsers.node_read import (
    ALL_TABLES,
    NFT_FAMILIES,
    SAVE_COMMANDS,
    CommandRun,
    choose_iptables,
    joined,
    kube_proxy_nft,
    meta_json,
)
from svctrace.parsers.procfs import IPVS_INTERFACE, addresses_from_proc, parse_proc_ip_vs
from svctrace.parsers.snapshot import NodeInput, Probe
from svctrace.record import record

__all__ = ["IPVS_INTERFACE", "Records", "node_input", "parse_records"]

# Record names (the script writes them, this module reads them).
HOSTNAME = "hostname"
LINKS = "links"
IP_ADDR = "ip-addr"
FIB_TRIE = "fib_trie"
ROUTE = "route"
IF_INET6 = "if_inet6"
IPVSADM = "ipvsadm"
IP_VS = "ip_vs"
IPSET = "ipset"
NF_CONNTRACK = "nf_conntrack"
FACT_IP_VS = "ip_vs"  # /proc/net/ip_vs exists: the kernel has IPVS

_TOKEN = re.compile(r"@@svctrace-[0-9a-f]{8,32}")


def valid_token(token: str) -> bool:
    return bool(_TOKEN.fullmatch(token))


def sysctl_section(key: str) -> str:
    return f"sysctl:{key}"


def legacy_tables_section(family: int) -> str:
    return f"legacy-tables:{family}"


def save_section(backend: str, family: int, table: str) -> str:
    return f"save:{backend}:{family}:{table}"


def nft_section(family: str) -> str:
    return f"nft:{family}"


def conntrack_section(family: str) -> str:
    return f"conntrack:{family}"


@record
class Record:
    """One command's output, its exit status and what it printed on stderr."""

    text: str
    status: int
    stderr: str = ""


@dataclass
class Records:
    """Everything one run of the script printed."""

    records: dict[str, Record] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)  # programs the image does not have
    facts: set[str] = field(default_factory=set)
    complete: bool = False  # the script's end marker arrived
    stray: int = 0  # characters outside any record (a shell's own complaints)

    def text(self, name: str) -> str | None:
        record = self.records.get(name)
        return record.text if record is not None and record.status == 0 else None


def parse_records(text: str, token: str) -> Records:
    """Split the script's output into records (an output cut short keeps what arrived whole)."""
    found = Records()
    head = token + " "
    end_mark = "\n" + token + " E "
    pos, size = 0, len(text)
    while pos < size:
        if not text.startswith(head, pos):
            nxt = text.find("\n" + head, pos)
            found.stray += (nxt + 1 if nxt >= 0 else size) - pos
            if nxt < 0:
                break
            pos = nxt + 1
            continue
        eol = text.find("\n", pos)
        if eol < 0:
            break
        kind, _, name = text[pos + len(head):eol].partition(" ")
        if kind == "Z":
            found.complete = True
            pos = eol + 1
        elif kind in ("M", "F"):
            (found.absent if kind == "M" else found.facts).add(name)
            pos = eol + 1
        elif kind == "B":
            stop = text.find(end_mark, eol)
            if stop < 0:
                break  # cut short inside this record: it is incomplete, so it is not kept
            close = text.find("\n", stop + 1)
            close = size if close < 0 else close
            status_text, _, closed = text[stop + len(end_mark):close].partition(" ")
            body = text[eol + 1:stop]
            if name.endswith("!") and name[:-1] in found.records:
                kept = found.records[name[:-1]]
                found.records[name[:-1]] = Record(kept.text, kept.status, body)
            elif closed == name and status_text.lstrip("-").isdigit():
                found.records[name] = Record(body, int(status_text))
            pos = close + 1
        else:
            found.stray += eol + 1 - pos
            pos = eol + 1
    return found


def _run(records: Records, name: str, program: str) -> CommandRun:
    """A record as the command result a local run gives (the same error wording)."""
    if program in records.absent:
        return CommandRun(None, f"{program} is not in the collector's image")
    record = records.records.get(name)
    if record is None:
        return CommandRun(None, f"{program} did not run" + ("" if records.complete else
                                                             " (the read ended before it)"))
    if record.status != 0:
        said = (record.stderr.strip() or record.text.strip()).splitlines()
        return CommandRun(None, f"{program} failed (exit {record.status}): {said[0] if said else 'no message'}")
    return CommandRun(record.text)


def _saves(records: Records, backend: str, family: int, tables: tuple[str, ...]) -> CommandRun:
    command = SAVE_COMMANDS[backend][family]
    if backend == LEGACY:
        names = records.text(legacy_tables_section(family))
        have = names.split() if names is not None else []
        wanted = tables if tables == ALL_TABLES else tuple(t for t in tables if t in have)
        if not (have and wanted):
            return CommandRun(None, "the kernel holds no iptables-legacy table", skipped=True)
        tables = wanted
    runs = []
    for table in tables:
        runs.append(_run(records, save_section(backend, family, table), command))
        if runs[-1].stdout is None:
            break
    return joined(runs)


def _addresses(records: Records, node: NodeInput, where: str) -> tuple[str | None, bool]:
    """node/ip-addr.json (from ``ip -j addr``, else from /proc and /sys) and whether kube-ipvs0 exists."""
    links = records.text(LINKS) or ""
    kube_ipvs0 = any(line.split("\t")[1:2] == [IPVS_INTERFACE] for line in links.splitlines())
    text = records.text(IP_ADDR)
    if text is not None:
        node.where[NodeFile.IP_ADDR] = f"ip -j addr{where}"
        return text, kube_ipvs0
    fib_trie, route = records.text(FIB_TRIE), records.text(ROUTE)
    if fib_trie is None or route is None:
        why = _run(records, IP_ADDR, "ip").error or "not read"
        node.warnings.append(f"cannot read the node's addresses{where}: {why}; local addresses are unknown")
        node.missing.append(Missing(NodeFile.IP_ADDR, why))
        return None, kube_ipvs0
    node.where[NodeFile.IP_ADDR] = f"/proc/net/fib_trie, /proc/net/if_inet6 and /sys/class/net{where}"
    return addresses_from_proc(fib_trie=fib_trie, route=route, if_inet6=records.text(IF_INET6), links=links), \
        kube_ipvs0


def _ipvs(records: Records, node: NodeInput, where: str, ip_vs: bool) -> int | None:
    """node/ipvsadm.txt and ipset.txt; the number of IPVS virtual services, when known."""
    services: int | None = None
    if IPVSADM in records.records:
        run = _run(records, IPVSADM, "ipvsadm")
        if run.stdout is not None:
            node.files[NodeFile.IPVSADM] = run.stdout
            node.where[NodeFile.IPVSADM] = f"ipvsadm -Sn{where}"
            services = len(parse_ipvsadm_save(run.stdout, node.source(NodeFile.IPVSADM)).services)
        else:
            node.warnings.append(f"cannot read IPVS{where}: {run.error}")
            node.missing.append(Missing(NodeFile.IPVSADM, run.error or ""))
    elif (text := records.text(IP_VS)) is not None:
        source = f"/proc/net/ip_vs{where}"
        table = parse_proc_ip_vs(text, source)
        node.parsed[NodeFile.IPVSADM] = table
        node.files[NodeFile.IPVSADM] = format_ipvsadm_save(table)
        node.where[NodeFile.IPVSADM] = source
        services = count_ipvs_services(text)
    else:
        why = ("ipvsadm is not in the collector's image and /proc/net/ip_vs could not be read" if ip_vs else
               "IPVS is not available in this kernel (no /proc/net/ip_vs)")
        node.warnings.append(f"cannot read IPVS{where}: {why}")
        node.missing.append(Missing(NodeFile.IPVSADM, why))
    run = _run(records, IPSET, "ipset")
    if run.stdout is not None:
        node.files[NodeFile.IPSET] = run.stdout
        node.where[NodeFile.IPSET] = f"ipset save{where}"
    else:
        node.warnings.append(f"cannot read ipsets{where}: {run.error}")
        node.missing.append(Missing(NodeFile.IPSET, run.error or ""))
    return services


def _conntrack(records: Records, node: NodeInput, where: str) -> None:
    texts: list[str] = []
    if "conntrack" not in records.absent:
        for family in ("ipv4", "ipv6"):
            run = _run(records, conntrack_section(family), "conntrack")
            if run.stdout is None:
                node.warnings.append(f"cannot read conntrack entries{where}: {run.error}")
                node.missing.append(Missing(NodeFile.CONNTRACK, run.error or ""))
                return
            texts.append(run.stdout)
        node.where[NodeFile.CONNTRACK] = f"conntrack -L -p udp{where}"
    else:
        record = records.records.get(NF_CONNTRACK)
        if record is None or record.status not in (0, 1):  # grep: 1 is "no UDP entry"
            return  # optional: neither conntrack nor the kernel's /proc file (the check says it could not look)
        texts.append(record.text)
        node.where[NodeFile.CONNTRACK] = f"/proc/net/nf_conntrack{where}"
    node.files[NodeFile.CONNTRACK] = "".join(t if not t or t.endswith("\n") else t + "\n" for t in texts)


def node_input(records: Records, *, node_name: str, where: str, sysctls: Sequence[str],
               tables: tuple[str, ...] = ALL_TABLES) -> NodeInput:
    """The node/ files of one remote read, what could not be read and why, as collect_node would give them
    (``sysctls``: the keys the script read)."""
    node = NodeInput()
    if not records.complete:
        node.warnings.append(f"the read of node {node_name} ended early{where}: what arrived whole is used, "
                             "the rest is listed as not collected")
    addresses, kube_ipvs0 = _addresses(records, node, where)
    if addresses is not None:
        node.files[NodeFile.IP_ADDR] = addresses
    values: Mapping[str, str | None] = {key: (value.strip() if (value := records.text(sysctl_section(key)))
                                              is not None else None) for key in sysctls}
    runs = {(backend, family): _saves(records, backend, family, tables)
            for backend in (LEGACY, NFT) for family in (4, 6)}
    decision = choose_iptables(runs, node, where=where, tables=tables)
    nft_tables: tuple[str, ...] | None = None
    if "nft" in records.absent:
        node.missing.append(Missing(NodeFile.NFT, "nft is not in the collector's image"))
    else:
        nft_runs = [(family, _run(records, nft_section(family), "nft")) for family in NFT_FAMILIES]
        node.files[NodeFile.NFT], nft_tables = kube_proxy_nft(nft_runs, where=where, warnings=node.warnings)
        node.where[NodeFile.NFT] = nft_source(where)
    _conntrack(records, node, where)
    ip_vs = FACT_IP_VS in records.facts
    ipvs_services: int | None = None
    if ip_vs or kube_ipvs0:
        ipvs_services = _ipvs(records, node, where, ip_vs)
    else:
        node.missing.append(Missing(NodeFile.IPVSADM, "IPVS is not in use on this node"))
        node.missing.append(Missing(NodeFile.IPSET, "IPVS is not in use on this node"))
    node.files[NodeFile.META] = meta_json(node_name, values, decision)
    node.probe = Probe(ipvs_available=ip_vs, ipvs_services=ipvs_services, nft_tables=nft_tables)
    return node
