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

import contextvars
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from svctrace.collectors import _probe
from svctrace.collectors.conntrack import collect_conntrack
from svctrace.collectors.ipvs import read_ipsets, read_ipvs
from svctrace.errors import CollectionError
from svctrace.model.snapshot import Missing, NodeFile
from svctrace.parsers.detect import LEGACY, NFT, BackendDecision, count_ipvs_services
from svctrace.parsers.ipvs import format_ipset_save, format_ipvsadm_save
from svctrace.parsers.node_read import (
    ALL_TABLES,
    NFT_FAMILIES,
    SAVE_COMMANDS,
    choose_iptables,
    joined,
    kube_proxy_nft,
    meta_json,
    only_tables,
)
from svctrace.parsers.node_read import CommandRun as _Run
from svctrace.parsers.snapshot import NodeInput, Probe

DEFAULT_PROXY_MODE_URL = "http://127.0.0.1:10249/proxyMode"
KUBE_IPVS0 = "kube-ipvs0"
SYSCTLS = _probe.SYSCTLS

NOT_ROOT_WARNING = ("not running as root: the node's rules cannot be read (iptables, nftables, IPVS); "
                    "addresses and sysctls are still shown. Next step: run it again with sudo, or run "
                    "`sudo svctrace capture` on the node and analyse the snapshot with --from")

T = TypeVar("T")

# rtnetlink scopes as `ip` names them.
_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
_FAMILIES = {2: 4, 10: 6}  # AF_INET, AF_INET6


def _argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


# The end of the command's --timeout (time.monotonic()), set by collect_node for the commands it runs.
_DEADLINE: ContextVar[float | None] = ContextVar("svctrace_node_deadline", default=None)


def _run(argv: Sequence[str], netns: str | None, timeout: float = 60.0,
         env: Mapping[str, str] | None = None) -> _Run:
    end = _DEADLINE.get()
    if end is not None:
        if end - time.monotonic() <= 0:
            return _Run(None, f"{argv[0]} not run: the --timeout for the collection had passed")
        timeout = min(timeout, end - time.monotonic())
    if shutil.which(argv[0]) is None:
        return _Run(None, f"{argv[0]} is not installed")
    if netns and shutil.which("ip") is None:
        return _Run(None, "ip (iproute2) is not installed")
    # The output goes to a file, not a pipe: a 10k-Service save is 48 MB, which a pipe would hold three times
    # over (the pieces read, them joined, the text) before it is decoded once here.
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.run(_argv(netns, argv), stdout=out, stderr=subprocess.PIPE, timeout=timeout,
                                  check=False, env=dict(env) if env is not None else None)
        except subprocess.TimeoutExpired:
            return _Run(None, f"{argv[0]} did not finish in {timeout:g} s")
        except OSError as exc:
            return _Run(None, f"{argv[0]} could not run: {exc.strerror or exc}")
        out.seek(0)
        stdout = out.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        said = (proc.stderr.decode("utf-8", "replace").strip() or stdout.strip()).splitlines()
        return _Run(None, f"{argv[0]} failed (exit {proc.returncode}): {said[0] if said else 'no message'}")
    return _Run(stdout)


# ---------------------------------------------------------------------------------------------
# pieces


def _probe_facts(netns: str | None, url: str | None, timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    """Sysctls, /proc/net/ip_vs and /proxyMode, read in the right namespace."""
    if netns is None:
        return _probe.probe(url, timeout), None
    # The child imports svctrace from wherever this copy lives, installed or a checkout.
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    run = _run([sys.executable, "-m", "svctrace.collectors._probe", url or "", str(timeout)], netns,
               timeout=timeout + 10.0, env=env)
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

    with (IPRoute(netns=netns) if netns else IPRoute()) as ipr:
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



def _at_once(jobs: Sequence[Callable[[], T]]) -> list[T]:
    """Each job's result, the jobs run at the same time (each waits on its own save process, so the kernel's
    reads of several tables overlap instead of adding up), each with this thread's context (the deadline)."""
    if len(jobs) < 2:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="svctrace-save") as pool:
        futures = [pool.submit(contextvars.copy_context().run, job) for job in jobs]
        return [f.result() for f in futures]


def _save(backend: str, family: int, tables: tuple[str, ...], netns: str | None) -> _Run:
    """One backend's rules, only ``tables`` (each its own -t run, all at once), as one iptables-save text."""
    command = SAVE_COMMANDS[backend][family]
    if tables == ALL_TABLES:
        return _run([command], netns)
    if backend == NFT:  # it reads every table whatever -t says: one run, cut to the tables asked for
        return only_tables(_run([command], netns), tables)
    runs = _at_once([functools.partial(_run, [command, "-t", table], netns) for table in tables])
    failed = next((i for i, r in enumerate(runs) if r.stdout is None), None)
    return joined(runs if failed is None else runs[:failed + 1])


def _kube_proxy_nft(netns: str | None, where: str, warnings: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """kube-proxy's nftables tables as one `nft -j` document, read by name (never the whole ruleset:
    listing every table costs minutes on a node with 100,000 iptables-nft chains); and which exist."""
    runs = list(zip(NFT_FAMILIES, _at_once([functools.partial(
        _run, ["nft", "-j", "list", "table", family, "kube-proxy"], netns, timeout=60.0) for family in NFT_FAMILIES]),
        strict=True))
    return kube_proxy_nft(runs, where=where, warnings=warnings)


def collect_node(*, netns: str | None = None, node_name: str | None = None,
                 proxy_mode_url: str = DEFAULT_PROXY_MODE_URL, timeout: float = 1.0,
                 tables: tuple[str, ...] = ALL_TABLES, deadline: float | None = None) -> NodeInput:
    """Read this node (or network namespace ``netns``) without changing anything: its node/ files, as a
    snapshot holds them (docs/snapshot.md), and what could not be read; problems become warnings. Commands
    still running at ``deadline`` (time.monotonic()) are stopped and their files reported missing."""
    token = _DEADLINE.set(deadline)
    try:
        return _collect_node(netns, node_name, proxy_mode_url, timeout, tables)
    finally:
        _DEADLINE.reset(token)


def _collect_node(netns: str | None, node_name: str | None, proxy_mode_url: str, timeout: float,
                  tables: tuple[str, ...]) -> NodeInput:
    node = NodeInput(netns=netns)
    warnings, missing, files = node.warnings, node.missing, node.files
    where = f" in network namespace {netns}" if netns else ""

    # Addresses work without root (outside a namespace); anything netlink says is a warning, not a crash.
    try:
        links, addrs = _links_and_addresses(netns)
    except Exception as exc:  # noqa: BLE001 - pyroute2 raises many kinds; every one means "not collected"
        warnings.append(f"cannot read the node's addresses{where}: {exc}; local addresses are unknown")
        missing.append(Missing(NodeFile.IP_ADDR, f"netlink: {exc}"))
        kube_ipvs0 = None
    else:
        files[NodeFile.IP_ADDR] = addresses_from_netlink(links, addrs)
        kube_ipvs0 = any(link[1] == KUBE_IPVS0 for link in links)

    facts, probe_error = _probe_facts(netns, proxy_mode_url, timeout)
    sysctls: dict[str, str | None] = {}
    ipvs_available: bool | None = None
    ipvs_services: int | None = None
    url_answer: str | None = None
    legacy_tables: dict[str, list[str] | None] = {}
    if facts is None:
        warnings.append(f"cannot read sysctls or ask kube-proxy{where}: {probe_error}")
    else:
        sysctls = dict(facts["sysctls"])
        ipvs_available = bool(facts["ip_vs_present"])
        if facts["ip_vs"] is not None:
            ipvs_services = count_ipvs_services(facts["ip_vs"])
        url_answer = facts["url_answer"]
        legacy_tables = facts.get("legacy_tables") or {}

    decision: BackendDecision | None = None
    nft_tables: tuple[str, ...] | None = None
    if os.geteuid() != 0:
        warnings.append(NOT_ROOT_WARNING)
        for f in (NodeFile.IPTABLES, NodeFile.IP6TABLES, NodeFile.NFT):
            missing.append(Missing(f, "not root"))
    else:
        nft_warnings: list[str] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="svctrace-nft") as pool:
            # kube-proxy's nftables tables are asked for while the iptables saves run
            nft_read = pool.submit(contextvars.copy_context().run, _kube_proxy_nft, netns, where, nft_warnings) \
                if shutil.which("nft") is not None else None
            decision = _read_iptables(netns, where, tables, legacy_tables, node)
            nft_text, nft_tables = nft_read.result() if nft_read is not None else (None, None)
        warnings += nft_warnings
        if nft_read is not None:
            if nft_text is not None:
                files[NodeFile.NFT] = nft_text
            node.where[NodeFile.NFT] = f"nft -j list table ip/ip6 kube-proxy{where}"
        else:
            missing.append(Missing(NodeFile.NFT, "nft is not installed"))
        ct = collect_conntrack(netns)
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
    if os.geteuid() == 0 and not (ipvs_available or kube_ipvs0):
        missing.append(Missing(NodeFile.IPVSADM, "IPVS is not in use on this node"))
        missing.append(Missing(NodeFile.IPSET, "IPVS is not in use on this node"))
    files[NodeFile.META] = meta_json(node_name, sysctls, decision)
    node.probe = Probe(url_answer=url_answer, ipvs_available=ipvs_available, ipvs_services=ipvs_services,
                       nft_tables=nft_tables)
    return node


def _read_iptables(netns: str | None, where: str, tables: tuple[str, ...],
                   legacy_tables: Mapping[str, list[str] | None], node: NodeInput) -> BackendDecision:
    """The iptables rules of the backend that holds kube's chains (both read only where both have tables)."""
    jobs: dict[tuple[str, int], Callable[[], _Run]] = {}
    for family in (4, 6):
        # The legacy backend has nothing when the kernel holds no x_tables table: its save is not even run.
        # It is asked for a table (-t) only when the table exists: -t would make the kernel create it.
        if legacy_tables:
            have = legacy_tables.get(str(family)) or []
            wanted = tables if tables == ALL_TABLES else tuple(t for t in tables if t in have)
            jobs[LEGACY, family] = functools.partial(_save, LEGACY, family, wanted, netns) if have and wanted \
                else functools.partial(_Run, None, "the kernel holds no iptables-legacy table", skipped=True)
        else:
            jobs[LEGACY, family] = functools.partial(_save, LEGACY, family, ALL_TABLES, netns)
        jobs[NFT, family] = functools.partial(_save, NFT, family, tables, netns)
    runs = dict(zip(jobs, _at_once(list(jobs.values())), strict=True))
    return choose_iptables(runs, node, where=where, tables=tables)


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
