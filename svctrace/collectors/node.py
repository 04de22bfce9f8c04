"""The live node collector: iptables rules of the backend kube uses, addresses, sysctls and kube-proxy's mode.

Read-only by construction: it runs only ``*-save`` commands (never ``-t TABLE`` on the legacy backend,
which would make the kernel create that table), ``nft list tables`` and ``nft -j list ruleset``, reads /proc
and asks netlink for addresses, IPVS services and ipsets (dump requests only); it never writes a rule.

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
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svctrace.collectors import _probe
from svctrace.collectors.conntrack import MISSING_CONNTRACK, collect_conntrack
from svctrace.collectors.ipvs import read_ipsets, read_ipvs
from svctrace.errors import CollectionError, InputError
from svctrace.model.conntrack import ConntrackEntry
from svctrace.model.dataplane import IptablesDump
from svctrace.model.ipvs import IpSets, IpvsTable
from svctrace.model.nft import NftRuleset
from svctrace.model.snapshot import HostAddress, NodeFacts
from svctrace.parsers import iptables_save
from svctrace.parsers.detect import (
    LEGACY,
    NFT,
    BackendDecision,
    ModeFacts,
    count_ipvs_services,
    decide_backend,
    decide_proxy_mode,
    parse_nft_list_tables,
)
from svctrace.parsers.nft_json import parse_nft_json

DEFAULT_PROXY_MODE_URL = "http://127.0.0.1:10249/proxyMode"
KUBE_IPVS0 = "kube-ipvs0"
SYSCTLS = _probe.SYSCTLS

NOT_ROOT_WARNING = ("not running as root: the node's rules cannot be read (iptables, nftables, IPVS); "
                    "addresses and sysctls are still shown. Next step: run it again with sudo, or run "
                    "`sudo svctrace capture` on the node and analyse the snapshot with --from")

# Save commands per backend and family.
SAVE_COMMANDS: dict[str, dict[int, str]] = {
    LEGACY: {4: "iptables-legacy-save", 6: "ip6tables-legacy-save"},
    NFT: {4: "iptables-nft-save", 6: "ip6tables-nft-save"},
}
MISSING_RULES = {4: "iptables rules (iptables-save)", 6: "IPv6 iptables rules (ip6tables-save)"}
MISSING_NFT = "nftables tables (nft list tables)"
MISSING_NFT_RULESET = "the nftables ruleset (nft -j list ruleset)"
MISSING_IPVS = "IPVS virtual servers (netlink; ipvsadm -Sn)"
MISSING_IPSETS = "ipsets (netlink; ipset save)"
MISSING_ADDRESSES = "the node's own addresses (netlink)"

# rtnetlink scopes as `ip` names them.
_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
_FAMILIES = {2: 4, 10: 6}  # AF_INET, AF_INET6


@dataclass(frozen=True)
class NodeCollection:
    """Everything collect_node read from the node, plus the raw text ``capture`` writes to a snapshot."""

    iptables: IptablesDump | None = None  # the IPv4 rules of the backend in use; None: not read
    ip6tables: IptablesDump | None = None
    iptables_text: str | None = None  # exactly what the save command printed (node/iptables-save.txt)
    ip6tables_text: str | None = None  # (node/ip6tables-save.txt)
    addresses: tuple[HostAddress, ...] | None = None  # None: not collected
    ip_addr_json: str | None = None  # the same addresses in `ip -j addr` shape (node/ip-addr.json)
    interfaces: tuple[str, ...] = ()  # every link's name
    kube_ipvs0: bool | None = None  # a kube-ipvs0 device exists (None: links not read)
    backend: str | None = None  # legacy | nf_tables | both | None (no KUBE-* chains, or not read)
    backend_reason: str = ""
    proxy_mode: str | None = None  # iptables | ipvs | nftables | None (unknown)
    proxy_mode_how: str = ""  # how proxy_mode was decided, in words
    ipvs_available: bool | None = None  # /proc/net/ip_vs exists
    ipvs_services: int | None = None
    nft_tables: tuple[str, ...] | None = None  # "ip kube-proxy", ... (None: not read)
    nft: NftRuleset | None = None  # the whole ruleset, parsed (None: not read, or unreadable)
    nft_json_text: str | None = None  # exactly what `nft -j list ruleset` printed (node/nft.json)
    ipvs: IpvsTable | None = None  # IPVS virtual servers over netlink (None: not read; IPVS absent)
    ipsets: IpSets | None = None  # ipsets over netlink, read beside IPVS (None: not read)
    # Sysctl name -> value; None when its file does not exist (the module behind it, e.g. br_netfilter
    # for net.bridge.*, is not loaded), which is a fact about the node rather than something missing.
    sysctls: Mapping[str, str | None] = field(default_factory=dict)
    node_name: str | None = None
    netns: str | None = None
    warnings: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()  # what could not be collected, in the user's words
    conntrack: tuple[ConntrackEntry, ...] | None = None  # UDP conntrack entries (None: not read)
    conntrack_text: str | None = None  # the same as `conntrack -L` text (node/conntrack.txt)

    def node_facts(self) -> NodeFacts:
        """The node facts a Snapshot carries (sysctls whose file is absent are left out)."""
        return NodeFacts(name=self.node_name, proxy_mode=self.proxy_mode, addresses=self.addresses,
                         sysctls={k: v for k, v in self.sysctls.items() if v is not None},
                         iptables_backend=self.backend, iptables_backend_reason=self.backend_reason)


@dataclass
class _Run:
    """What one command printed, or why it could not run."""

    stdout: str | None
    error: str | None = None


def _argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def _run(argv: Sequence[str], netns: str | None, timeout: float = 60.0,
         env: Mapping[str, str] | None = None) -> _Run:
    if shutil.which(argv[0]) is None:
        return _Run(None, f"{argv[0]} is not installed")
    if netns and shutil.which("ip") is None:
        return _Run(None, "ip (iproute2) is not installed")
    try:
        proc = subprocess.run(_argv(netns, argv), capture_output=True, text=True, timeout=timeout, check=False,
                              env=dict(env) if env is not None else None)
    except subprocess.TimeoutExpired:
        return _Run(None, f"{argv[0]} did not finish in {timeout:g} s")
    except OSError as exc:
        return _Run(None, f"{argv[0]} could not run: {exc.strerror or exc}")
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        return _Run(None, f"{argv[0]} failed (exit {proc.returncode}): {said[0] if said else 'no message'}")
    return _Run(proc.stdout)


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


def _links_and_addresses(netns: str | None) -> tuple[list[tuple[int, str, str]], list[dict[str, Any]]]:
    """(index, name, operstate) per link and one plain dict per address; netlink stays in here."""
    from pyroute2 import IPRoute  # imported late: a collector that is never used costs nothing

    with (IPRoute(netns=netns) if netns else IPRoute()) as ipr:
        links = [(int(m["index"]), str(m.get_attr("IFLA_IFNAME") or ""), str(m.get_attr("IFLA_OPERSTATE") or ""))
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


def addresses_from_netlink(links: list[tuple[int, str, str]], addrs: list[dict[str, Any]]
                           ) -> tuple[tuple[HostAddress, ...], str]:
    """HostAddresses and the same data as `ip -j addr` JSON (for a snapshot's node/ip-addr.json)."""
    names = {index: name for index, name, _ in links}
    out: list[HostAddress] = []
    doc: list[dict[str, Any]] = []
    by_index: dict[int, list[dict[str, Any]]] = {}
    for a in addrs:
        by_index.setdefault(a["index"], []).append(a)
    for index, name, operstate in sorted(links):
        infos = []
        for a in by_index.get(index, []):
            out.append(HostAddress(ifname=name, address=a["local"], prefixlen=a["prefixlen"], family=a["family"],
                                   scope=a["scope"]))
            info = {"family": "inet" if a["family"] == 4 else "inet6", "local": a["local"],
                    "prefixlen": a["prefixlen"], "scope": a["scope"]}
            if a.get("label"):
                info["label"] = a["label"]
            infos.append(info)
        doc.append({"ifindex": index, "ifname": names[index], "operstate": operstate or "UNKNOWN", "addr_info": infos})
    return tuple(out), json.dumps(doc, indent=1) + "\n"


def _save(backend: str, family: int, netns: str | None) -> _Run:
    return _run([SAVE_COMMANDS[backend][family]], netns)


def _joined(*runs: _Run) -> str | None:
    texts = [r.stdout for r in runs if r.stdout is not None]
    return "".join(texts) if texts else None


def _read_nft(netns: str | None, where: str, warnings: list[str], missing: list[str]
              ) -> tuple[NftRuleset | None, str | None]:
    """The whole nftables ruleset as `nft -j` JSON: parsed, and the raw text (kept even when unparsable)."""
    run = _run(["nft", "-j", "list", "ruleset"], netns, timeout=60.0)
    if run.stdout is None:
        warnings.append(f"cannot read the nftables ruleset{where}: {run.error}")
        missing.append(MISSING_NFT_RULESET)
        return None, None
    source = f"nft -j list ruleset{where}"
    try:
        return parse_nft_json(run.stdout, source), run.stdout
    except InputError as exc:
        # The raw text still goes into a capture, so the ruleset can be looked at (and reported) later.
        warnings.append(f"cannot parse what {source} printed: {exc.message}")
        missing.append(MISSING_NFT_RULESET)
        return None, run.stdout


def _read_ipvs(netns: str | None, where: str, warnings: list[str], missing: list[str]
               ) -> tuple[IpvsTable | None, IpSets | None]:
    """IPVS virtual servers and ipsets over netlink; an absent IPVS or ipset module is a warning."""
    table: IpvsTable | None = None
    sets: IpSets | None = None
    try:
        table = read_ipvs(netns)
    except CollectionError as exc:
        warnings.append(f"cannot read IPVS{where}: {exc.message}" + (f"; {exc.hint}" if exc.hint else ""))
        missing.append(MISSING_IPVS)
    try:
        sets = read_ipsets(netns)
    except CollectionError as exc:
        warnings.append(f"cannot read ipsets{where}: {exc.message}" + (f"; {exc.hint}" if exc.hint else ""))
        missing.append(MISSING_IPSETS)
    return table, sets


# ---------------------------------------------------------------------------------------------
# the collector


def collect_node(*, netns: str | None = None, node_name: str | None = None,
                 proxy_mode_url: str = DEFAULT_PROXY_MODE_URL, timeout: float = 1.0) -> NodeCollection:
    """Read this node (or network namespace ``netns``) without changing anything; problems become warnings."""
    warnings: list[str] = []
    missing: list[str] = []
    where = f" in network namespace {netns}" if netns else ""

    # Addresses work without root (outside a namespace); anything netlink says is a warning, not a crash.
    addresses: tuple[HostAddress, ...] | None = None
    ip_addr_json: str | None = None
    interfaces: tuple[str, ...] = ()
    kube_ipvs0: bool | None = None
    try:
        links, addrs = _links_and_addresses(netns)
    except Exception as exc:  # noqa: BLE001 - pyroute2 raises many kinds; every one means "not collected"
        warnings.append(f"cannot read the node's addresses{where}: {exc}; local addresses are unknown")
        missing.append(MISSING_ADDRESSES)
    else:
        addresses, ip_addr_json = addresses_from_netlink(links, addrs)
        interfaces = tuple(name for _, name, _ in sorted(links))
        kube_ipvs0 = KUBE_IPVS0 in interfaces

    facts, probe_error = _probe_facts(netns, proxy_mode_url, timeout)
    sysctls: dict[str, str | None] = {}
    ipvs_available: bool | None = None
    ipvs_services: int | None = None
    url_answer: str | None = None
    if facts is None:
        warnings.append(f"cannot read sysctls or ask kube-proxy{where}: {probe_error}")
        missing.append("sysctls and kube-proxy's /proxyMode")
    else:
        sysctls = dict(facts["sysctls"])
        ipvs_available = bool(facts["ip_vs_present"])
        if facts["ip_vs"] is not None:
            ipvs_services = count_ipvs_services(facts["ip_vs"])
        url_answer = facts["url_answer"]

    root = os.geteuid() == 0
    nft: NftRuleset | None = None
    nft_json_text: str | None = None
    ipvs_table: IpvsTable | None = None
    ipsets: IpSets | None = None
    decision: BackendDecision | None = None
    texts: dict[int, str | None] = {4: None, 6: None}
    nft_tables: tuple[str, ...] | None = None
    ct = None
    if not root:
        warnings.append(NOT_ROOT_WARNING)
        missing += [MISSING_RULES[4], MISSING_RULES[6], MISSING_NFT]
    else:
        runs = {(b, f): _save(b, f, netns) for b in (LEGACY, NFT) for f in (4, 6)}
        decision = decide_backend(_joined(runs[LEGACY, 4], runs[LEGACY, 6]), _joined(runs[NFT, 4], runs[NFT, 6]))
        warnings += decision.warnings
        for backend in (LEGACY, NFT):
            error = runs[backend, 4].error
            if decision.use is not None and backend != decision.use and error:
                warnings.append(f"cannot check the {backend} backend for KUBE-* chains{where}: {error}")
        for family in (4, 6):
            if decision.use is None:
                errors = "; ".join(e for e in (runs[LEGACY, family].error, runs[NFT, family].error) if e)
                warnings.append(f"cannot read the IPv{family} iptables rules{where}: {errors}")
                missing.append(MISSING_RULES[family])
                continue
            run = runs[decision.use, family]
            if run.stdout is None:
                warnings.append(f"cannot read the IPv{family} iptables rules of the {decision.use} backend{where}: "
                                f"{run.error}")
                missing.append(MISSING_RULES[family])
            texts[family] = run.stdout
        nft_run = _run(["nft", "list", "tables"], netns, timeout=30.0)
        if nft_run.stdout is None:
            missing.append(MISSING_NFT)
            if shutil.which("nft") is not None:
                warnings.append(f"cannot list nftables tables{where}: {nft_run.error}")
        else:
            nft_tables = parse_nft_list_tables(nft_run.stdout)
        if shutil.which("nft") is not None:
            nft, nft_json_text = _read_nft(netns, where, warnings, missing)
        ct = collect_conntrack(netns)
        if ct.error is not None:
            warnings.append(ct.error)
            missing.append(MISSING_CONNTRACK)

    # IPVS only where the node shows it (the module loaded, or kube-proxy's dummy device): asking netlink
    # on other nodes would only say that IPVS is absent. Without root netlink refuses; said above already.
    if root and (ipvs_available or kube_ipvs0):
        ipvs_table, ipsets = _read_ipvs(netns, where, warnings, missing)

    dumps: dict[int, IptablesDump | None] = {4: None, 6: None}
    for family, text in texts.items():
        if text is None:
            continue
        source = f"{SAVE_COMMANDS[decision.use][family]}{where}" if decision and decision.use else "iptables-save"
        try:
            dumps[family] = iptables_save.parse(text, source=source, family=family)
        except InputError as exc:
            # A rule our parser cannot read must not hide the rest of the node.
            warnings.append(f"cannot parse what {source} printed: {exc.message}")
            missing.append(MISSING_RULES[family])

    mode = decide_proxy_mode(ModeFacts(url_answer=url_answer, iptables=dumps[4], ip6tables=dumps[6],
                                       ipvs_available=ipvs_available, ipvs_services=ipvs_services,
                                       kube_ipvs0=kube_ipvs0, nft_tables=nft_tables))
    warnings += mode.warnings
    how = mode.how
    if mode.mode is None and not root and url_answer is None:
        how = "unknown: kube-proxy did not answer on /proxyMode and the rules cannot be read without root"

    return NodeCollection(
        iptables=dumps[4], ip6tables=dumps[6], iptables_text=texts[4], ip6tables_text=texts[6],
        addresses=addresses, ip_addr_json=ip_addr_json, interfaces=interfaces, kube_ipvs0=kube_ipvs0,
        backend=decision.backend if decision else None, backend_reason=decision.reason if decision else "",
        proxy_mode=mode.mode, proxy_mode_how=how, ipvs_available=ipvs_available, ipvs_services=ipvs_services,
        nft_tables=nft_tables, nft=nft, nft_json_text=nft_json_text, ipvs=ipvs_table, ipsets=ipsets,
        sysctls=sysctls, node_name=node_name, netns=netns,
        warnings=tuple(warnings), missing=tuple(missing),
        conntrack=ct.entries if ct is not None else None, conntrack_text=ct.text if ct is not None else None,
    )
