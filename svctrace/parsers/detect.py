"""Decide, from what a node shows, which iptables backend and which kube-proxy mode are in use (pure).

The collector gathers raw facts (save-command output, ``/proxyMode``'s answer, device names, whether
``/proc/net/ip_vs`` exists, nft table names); these functions turn them into one decision plus the
reason, so the decisions are unit-tested without root.

Backend: kubernetes-sigs/iptables-wrappers (``pkg/xtables/detect.go``) picks the backend holding the
kubelet's ``KUBE-IPTABLES-HINT`` / ``KUBE-KUBELET-CANARY`` chains, nft first, and its older shell version
picked the one printing more lines. We look for kube-proxy's chains, not only kubelet's: a backend is
kube's when its dump declares ``KUBE-*`` chains. Both having them is the known split-brain outage (two
components on different backends, both tables evaluated by the kernel), so it is said loudly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from svctrace.errors import InputError
from svctrace.model.iptables import IptablesDump
from svctrace.model.matches import IpsetMatch
from svctrace.parsers.commands import LEGACY as LEGACY
from svctrace.parsers.commands import NFT as NFT
from svctrace.parsers.node import normalise_proxy_mode
from svctrace.record import record

BOTH = "both"

# Chains kubelet creates on startup (Kubernetes >= 1.17) so that other components can find its backend.
KUBELET_HINT_CHAINS = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")

BOTH_BACKENDS_WARNING = (
    "KUBE-* chains in both iptables-legacy and iptables-nft: kube-proxy and another component use different "
    "backends; a known outage cause (the kernel runs both rule sets, so Services half-work or break after a "
    "restart). Next step: find the component on the other backend (compare `iptables-legacy-save | grep KUBE-` "
    "with `iptables-nft-save | grep KUBE-`; often an old CNI, kubelet or kube-proxy image), run it with the "
    "node's backend, then delete the stale chains"
)

IPVS_ABSENT_WARNING = (
    "IPVS is not available in this kernel (no /proc/net/ip_vs), yet this node looks set up for kube-proxy's "
    "IPVS mode: its Services cannot work here. Next step: `modprobe ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh` (and "
    "restart kube-proxy), or run kube-proxy in iptables or nftables mode"
)


@record
class BackendCount:
    """What one backend's save output holds, as far as the decision cares."""

    kube_chains: int  # declared KUBE-* chains (":KUBE-..." lines)
    kubelet_hints: int | None  # of which kubelet's hint chains (None: not counted, the decision needs no more)
    rules: int | None  # "-A" lines (None: not counted)
    available: bool  # False: the save command was missing or failed


@record
class BackendDecision:
    """Which iptables backend holds kube's rules: ``legacy``, ``nf_tables``, ``both`` or None (neither)."""

    backend: str | None
    use: str | None  # the backend whose dump svctrace reads (legacy | nf_tables), None if neither can be read
    reason: str
    legacy: BackendCount
    nft: BackendCount
    warnings: tuple[str, ...] = ()


class CountedSave(NamedTuple):
    """A save's text whose ``:KUBE-`` lines were counted as it was read (svctrace.parsers.iptables_save.Stream)."""

    text: str
    kube_chains: int


SaveText = str | CountedSave


def count_backend(text: SaveText | Sequence[SaveText] | None, *, full: bool = True) -> BackendCount:
    """Count KUBE-* chain declarations and rules in one backend's save output (None: not available); several
    texts (IPv4 and IPv6) are counted as one, without joining them. ``full=False`` counts only KUBE-* chains
    (one pass over each text: ~15-35 ms for a 10,000-Service dump's 48 MB, none for a text counted as it was
    read), what most decisions need."""
    if text is None:
        return BackendCount(0, 0, 0, available=False)
    given = (text,) if isinstance(text, (str, CountedSave)) else tuple(text)

    # Counted by the C string methods, without a copy.
    def lines(t: str, prefix: str) -> int:
        return t.count("\n" + prefix) + t.startswith(prefix)

    kube = sum(t.kube_chains if isinstance(t, CountedSave) else lines(t, ":KUBE-") for t in given)
    if not full:
        return BackendCount(kube, None, None, available=True)
    texts = [t.text if isinstance(t, CountedSave) else t for t in given]
    rules = sum(lines(t, "-A ") for t in texts)
    hints = sum(_declared(t, chain) for t in texts for chain in KUBELET_HINT_CHAINS) if kube else 0
    return BackendCount(kube, hints, rules, available=True)


def _declared(text: str, chain: str) -> int:
    """How many ``:CHAIN`` declaration lines name exactly ``chain`` (a find per candidate, not a pass each)."""
    head, found = ":" + chain, 0
    at = text.find(head)
    while at >= 0:
        end = at + len(head)
        if (at == 0 or text[at - 1] == "\n") and (end == len(text) or text[end] in " \n\r"):
            found += 1
        at = text.find(head, end)
    return found


def decide_backend(legacy_text: SaveText | Sequence[SaveText] | None,
                   nft_text: SaveText | Sequence[SaveText] | None) -> BackendDecision:
    """Pick the backend from both backends' save output (IPv4 and IPv6 together); None means not available."""
    legacy, nft = count_backend(legacy_text, full=False), count_backend(nft_text, full=False)
    if legacy.kube_chains and nft.kube_chains or not legacy.kube_chains and not nft.kube_chains:
        # a tie-break may compare their rules
        legacy, nft = count_backend(legacy_text), count_backend(nft_text)
    if legacy.kube_chains and nft.kube_chains:
        # Read the one holding more of kube's chains: that is where kube-proxy's Service chains are.
        if legacy.kube_chains != nft.kube_chains:
            use = LEGACY if legacy.kube_chains > nft.kube_chains else NFT
            why = "which holds more of them"
        elif (legacy.rules or 0) != (nft.rules or 0):
            use = LEGACY if (legacy.rules or 0) > (nft.rules or 0) else NFT
            why = "which holds more rules"
        else:
            use, why = NFT, "today's default, as both hold the same"
        reason = (f"KUBE-* chains in both backends ({legacy.kube_chains} in legacy, {nft.kube_chains} in nf_tables); "
                  f"reading {use}, {why}")
        return BackendDecision(BOTH, use, reason, legacy, nft, (BOTH_BACKENDS_WARNING,))
    if legacy.kube_chains:
        return BackendDecision(LEGACY, LEGACY, f"{legacy.kube_chains} KUBE-* chains in iptables-legacy, none in "
                               "iptables-nft", legacy, nft)
    if nft.kube_chains:
        return BackendDecision(NFT, NFT, f"{nft.kube_chains} KUBE-* chains in iptables-nft, none in iptables-legacy",
                               legacy, nft)
    # No kube chains anywhere: like the wrapper's old shell version, read whichever prints more rules,
    # nf_tables on a tie (today's default); the backend stays unknown.
    if not legacy.available and not nft.available:
        return BackendDecision(None, None, "neither iptables-legacy-save nor iptables-nft-save could be run",
                               legacy, nft)
    use = LEGACY if legacy.available and (not nft.available or (legacy.rules or 0) > (nft.rules or 0)) else NFT
    return BackendDecision(None, use, "no KUBE-* chains in either iptables backend (kube-proxy has written no "
                           "iptables rules here)", legacy, nft)


# ---------------------------------------------------------------------------------------------
# proxy mode


@record
class ModeFacts:
    """What the collector saw that tells kube-proxy's mode; every field optional (None: not looked at)."""

    url_answer: str | None = None  # the body kube-proxy's /proxyMode returned
    iptables: IptablesDump | None = None  # the dump of the backend in use (IPv4 or IPv6)
    ip6tables: IptablesDump | None = None
    ipvs_available: bool | None = None  # /proc/net/ip_vs exists (the ip_vs module is loaded)
    ipvs_services: int | None = None  # virtual services listed in /proc/net/ip_vs
    kube_ipvs0: bool | None = None  # a kube-ipvs0 device exists
    nft_tables: tuple[str, ...] | None = None  # "family name" per nftables table, as `nft list tables` says


@record
class ModeDecision:
    """kube-proxy's mode (iptables | ipvs | nftables | None) and how it was decided."""

    mode: str | None
    how: str
    warnings: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()  # every mode the dataplane suggested


_SERVICE_CHAINS = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-XLB-")
# nat chains only kube-proxy's IPVS mode writes
_IPVS_CHAINS = ("KUBE-LOAD-BALANCER", "KUBE-NODE-PORT", "KUBE-LOOP-BACK")


def _jumps_to_services(dumps: Iterable[IptablesDump | None]) -> bool:
    """kube-proxy's iptables mode: KUBE-SERVICES (nat) jumps to per-Service chains; in a partial dump (a pasted
    fragment, which may not hold KUBE-SERVICES) per-Service chains are enough."""
    for dump in dumps:
        chain = dump.chain("nat", "KUBE-SERVICES") if dump is not None else None
        if chain is not None and any((r.target or "").startswith(_SERVICE_CHAINS) for r in chain.rules):
            return True
        if dump is None or dump.partial is None:
            continue
        nat, filt = dump.table("nat"), dump.table("filter")
        if nat is not None and any(name.startswith(_SERVICE_CHAINS) for name in nat.heads):
            return True
        if filt is not None and filt.has("KUBE-SERVICES"):  # iptables mode's filter chain (REJECTs)
            return True
    return False


def _ipvs_ipsets(dumps: Iterable[IptablesDump | None]) -> bool:
    """kube-proxy's IPVS mode leaves KUBE-SERVICES matching its KUBE-CLUSTER-IP ipset."""
    for dump in dumps:
        nat = dump.table("nat") if dump is not None and dump.partial is not None else None
        if nat is not None and any(name in nat.heads for name in _IPVS_CHAINS):
            return True
        chain = dump.chain("nat", "KUBE-SERVICES") if dump is not None else None
        if chain is None:
            continue
        for rule in chain.rules:
            m = rule.first(IpsetMatch)
            if m is not None and m.name.startswith("KUBE-"):
                return True
    return False


def _kube_proxy_nft_tables(tables: tuple[str, ...] | None) -> tuple[str, ...]:
    return tuple(t for t in tables or () if t.split()[-1:] == ["kube-proxy"] and t.split()[0] in ("ip", "ip6"))


def decide_proxy_mode(facts: ModeFacts) -> ModeDecision:
    """kube-proxy's own answer when it gave one, else what the dataplane shows; ambiguity is said, not guessed."""
    warnings: list[str] = []
    if facts.url_answer is not None and facts.url_answer.strip():
        try:
            mode = normalise_proxy_mode(facts.url_answer, "/proxyMode")
        except InputError:
            warnings.append(f"kube-proxy's /proxyMode answered {facts.url_answer.strip()[:40]!r}, not a mode svctrace "
                            "reads; deciding from the dataplane instead")
        else:
            if mode is not None:
                return ModeDecision(mode, "kube-proxy's /proxyMode endpoint", candidates=(mode,))

    dumps = (facts.iptables, facts.ip6tables)
    evidence: dict[str, str] = {}
    if _jumps_to_services(dumps):
        evidence["iptables"] = "KUBE-SERVICES jumps to KUBE-SVC-* chains"
    ipvs_signs = []
    if facts.kube_ipvs0:
        ipvs_signs.append("a kube-ipvs0 device")
    if facts.ipvs_services:
        ipvs_signs.append(f"{facts.ipvs_services} IPVS virtual services")
    if _ipvs_ipsets(dumps):
        ipvs_signs.append("KUBE-SERVICES matches KUBE-* ipsets (or IPVS mode's nat chains are there)")
    if ipvs_signs:
        evidence["ipvs"] = " and ".join(ipvs_signs)
    nft = _kube_proxy_nft_tables(facts.nft_tables)
    if nft:
        evidence["nftables"] = "nftables table " + ", ".join(f"`{t}`" for t in nft)

    if "ipvs" in evidence and facts.ipvs_available is False:
        warnings.append(IPVS_ABSENT_WARNING)
    candidates = tuple(evidence)
    if len(evidence) == 1:
        mode = candidates[0]
        return ModeDecision(mode, f"from the dataplane: {evidence[mode]}", tuple(warnings), candidates)
    if not evidence:
        return ModeDecision(None, "kube-proxy did not answer on /proxyMode and no kube-proxy rules were found "
                            "(iptables, IPVS or nftables)", tuple(warnings))
    # Rules of several modes: kube-proxy switched modes and left the old rules, or two proxies run.
    # The kernel applies them all, so guessing one would hide half the picture.
    listed = "; ".join(f"{m}: {why}" for m, why in evidence.items())
    warnings.append(f"rules of more than one kube-proxy mode on this node ({listed}); kube-proxy's mode is unknown. "
                    "Next step: check its --proxy-mode (`kubectl -n kube-system get cm kube-proxy -o yaml`), and "
                    "remove the stale rules with `kube-proxy --cleanup`")
    return ModeDecision(None, "ambiguous: the dataplane holds rules of " + ", ".join(candidates), tuple(warnings),
                        candidates)


def parse_nft_list_tables(text: str) -> tuple[str, ...]:
    """``nft list tables`` output (``table ip kube-proxy`` per line) -> ``("ip kube-proxy", ...)``."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "table":
            out.append(f"{words[1]} {words[2]}")
    return tuple(out)


def count_ipvs_services(text: str) -> int:
    """Virtual services in ``/proc/net/ip_vs`` (``TCP  0A60000A:0050 rr`` lines; real servers start with ``->``)."""
    return sum(1 for line in text.splitlines() if line.split()[:1] and line.split()[0] in ("TCP", "UDP", "SCTP", "FWM"))
