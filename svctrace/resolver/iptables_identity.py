"""iptables mode: the Services a node's rules show, when no API object says which exist (node-only answers).

Every rule that dispatches a frontend to a Service chain (nat KUBE-SERVICES, KUBE-NODEPORTS), every Service
chain's own ClusterIP rule (v1.24+ masquerades in KUBE-SVC) and every filter "has no endpoints" rule gives a
Service port: its addresses and ports, and the chain suffix its chains share. Its name comes from the
comments kube-proxy writes, checked against the chain's hash; where no comment names it (large-cluster mode,
the v1.13 copy, a grep) from the hash alone, tried over every Service name the dump's comments mention in
either era's spelling (docs/eras.md §1). A comment whose name does not hash to its chain is believed with a
note (a pasted dump can be edited).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from svctrace.kubeproxy import naming
from svctrace.model.iptables import IptablesDump, Rule
from svctrace.model.matches import DST, AddrTypeMatch
from svctrace.resolver.contract import RuleService
from svctrace.resolver.iptables_rules import is_masq

_KIND_WORDS = (("cluster IP", "ClusterIP"), ("external IP", "ExternalIP"), ("loadbalancer IP", "LoadBalancer"))
_PROTOCOLS = ("tcp", "udp", "sctp")
# Services nearly every cluster has, for chains no comment in the dump names.
WELL_KNOWN = ("default/kubernetes:https", "default/kubernetes:", "default/kubernetes",
              "kube-system/kube-dns:dns", "kube-system/kube-dns:dns-tcp", "kube-system/kube-dns:metrics")


@dataclass
class _Port:
    suffix: str | None
    protocol: str | None = None
    port: int | None = None
    node_port: int | None = None
    cluster_ips: list[str] = field(default_factory=list)
    external_ips: list[str] = field(default_factory=list)
    lb_ips: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # the ServicePortNames its comments give
    entry: bool = False
    local: bool = False


def _spn(comment: str | None) -> str | None:
    """The ServicePortName a kube-proxy comment starts with ("ns/name:port cluster IP" -> "ns/name:port")."""
    if not comment:
        return None
    first = comment.split(" ", 1)[0]
    return first if "/" in first and not first.startswith("/") else None


def _frontend_kind(rule: Rule, target: str) -> str:
    comment = rule.comment or ""
    for words, kind in _KIND_WORDS:
        if comment.endswith(words):
            return kind
    if target.startswith("KUBE-FW-"):
        return "LoadBalancer"
    if target.startswith(("KUBE-EXT-", "KUBE-XLB-")):
        return "ExternalIP"
    return "ClusterIP"


def _host(rule: Rule) -> str | None:
    d = rule.destination
    if d is None or d.negated or len(d.prefixes) != 1 or not d.prefixes[0].is_host:
        return None
    return naming.normalize_ip(str(d.prefixes[0]))


def _protocol(rule: Rule) -> str | None:
    p = rule.protocol
    return p.protocol if p is not None and not p.negated and p.protocol in _PROTOCOLS else None


def _suffix(target: str | None) -> str | None:
    if target is None or not target.startswith(naming.IPT_SERVICE_PREFIXES):
        return None
    return target.rsplit("-", 1)[-1]


class _Reader:
    """One pass over the dispatch chains, the Service chains and the filter rules of one dump."""

    def __init__(self, dump: IptablesDump) -> None:
        self.dump = dump
        self.ports: dict[str, _Port] = {}
        self.chainless: dict[tuple[str, str | None], _Port] = {}  # filter REJECTs of Services without chains

    def port(self, suffix: str) -> _Port:
        got = self.ports.get(suffix)
        if got is None:
            got = self.ports[suffix] = _Port(suffix)
        return got

    def add(self, p: _Port, rule: Rule, kind: str | None) -> None:
        p.protocol = p.protocol or _protocol(rule)
        name = _spn(rule.comment)
        if name is not None and name not in p.names:
            p.names.append(name)
        ip, dport = _host(rule), rule.dport.single if rule.dport is not None else None
        if kind == "NodePort":
            p.node_port = p.node_port or dport
            return
        if ip is None or dport is None or kind is None:
            return
        if kind == "ClusterIP":
            p.port = p.port or dport
        where = {"ClusterIP": p.cluster_ips, "ExternalIP": p.external_ips, "LoadBalancer": p.lb_ips}[kind]
        if ip not in where:
            where.append(ip)

    def read(self) -> None:
        nat, filt = self.dump.table("nat"), self.dump.table("filter")
        for dispatch in ("KUBE-SERVICES", "KUBE-NODEPORTS"):
            chain = nat.chain(dispatch) if nat is not None else None
            for rule in chain.rules if chain is not None else ():
                suffix = _suffix(rule.target)
                if suffix is not None and rule.target is not None:
                    p = self.port(suffix)
                    p.entry = True
                    p.local = p.local or rule.target.startswith("KUBE-XLB-")
                    kind = "NodePort" if dispatch == "KUBE-NODEPORTS" else _frontend_kind(rule, rule.target)
                    self.add(p, rule, kind)
        for name in nat.heads if nat is not None else ():
            suffix = _suffix(name)
            if suffix is None:
                continue
            p = self.port(suffix)
            p.local = p.local or name.startswith(("KUBE-XLB-", "KUBE-SVL-"))
            for rule in nat.chain(name).rules:  # type: ignore[union-attr]
                # v1.24+: the ClusterIP's masquerade rule is KUBE-SVC's first, with the address and port
                self.add(p, rule, "ClusterIP" if name.startswith("KUBE-SVC-") and is_masq(rule) else None)
        for cname in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"):
            chain = filt.chain(cname) if filt is not None else None
            for rule in chain.rules if chain is not None else ():
                self.filter_rule(rule)

    def filter_rule(self, rule: Rule) -> None:
        """A "has no endpoints" REJECT (or "has no local endpoints" DROP) names a frontend of its Service."""
        comment = rule.comment or ""
        name = _spn(comment)
        if name is None or rule.target not in ("REJECT", "DROP"):
            return
        known = next((p for p in self.ports.values() if name in p.names), None)
        local = any(isinstance(m, AddrTypeMatch) and m.field == DST for m in rule.matches)
        if known is not None:
            if comment.endswith("has no local endpoints"):
                known.local = True
            if local and known.node_port is None:
                self.add(known, rule, "NodePort")
            return
        p = self.chainless.setdefault((name, _protocol(rule)), _Port(None))
        kind = "NodePort" if local else ("ClusterIP" if rule.chain == "KUBE-SERVICES" else "ExternalIP")
        self.add(p, rule, kind)


def _candidates(dump: IptablesDump) -> dict[str, str]:
    """Chain suffix -> the ServicePortName (+ protocol) it hashes from, for every name the comments mention."""
    nat = dump.table("nat")
    names: set[str] = set(WELL_KNOWN)
    for comment in dump.first_comments("nat", naming.IPT_SERVICE_PREFIXES + (naming.IPT_ENDPOINT_PREFIX,)).values():
        spn = _spn(comment)
        if spn is not None:
            names.add(spn)
    for cname in ("KUBE-SERVICES", "KUBE-NODEPORTS"):
        chain = nat.chain(cname) if nat is not None else None
        for rule in chain.rules if chain is not None else ():
            spn = _spn(rule.comment)
            if spn is not None:
                names.add(spn)
    out: dict[str, str] = {}
    for spn in names:
        base, _, port = spn.partition(":")
        spellings = {spn, base + ":"} if not port else {spn}
        if not port:
            spellings.add(base)
        for spelling in spellings:
            for proto in _PROTOCOLS:
                out.setdefault(naming.ipt_suffix(spelling, proto), spelling + "\0" + proto)
    return out


def _identity(p: _Port, candidates: dict[str, str]) -> tuple[str | None, str | None, str, list[str]]:
    """(ServicePortName, protocol, how it was found, notes) of one port."""
    notes: list[str] = []
    if p.suffix is None:
        return (p.names[0] if p.names else None), p.protocol, "named by the comment of its filter rule", notes
    for name in p.names:
        for proto in ([p.protocol] if p.protocol else list(_PROTOCOLS)):
            if naming.ipt_suffix(name, proto) == p.suffix:
                era = " (the colon: before v1.19)" if name.endswith(":") else ""
                return name, proto, f"named by its rules' comments, confirmed by its chains' hash{era}", notes
    hashed = candidates.get(p.suffix)
    if p.names:
        notes.append(f"the comments call it {p.names[0]}, but its chains' names do not hash from that name "
                     "(an edited paste?); named by the comments")
        return p.names[0], p.protocol, "named by its rules' comments (the chain names do not check out)", notes
    if hashed is not None:
        name, proto = hashed.split("\0")
        return name, proto, f"named by its chains' hash ({name!r} + {proto!r}); no comment names it", notes
    return None, p.protocol, "nothing in the dump names it: known by its chains only", notes


def services_in_rules(dump: IptablesDump) -> tuple[RuleService, ...]:
    """The Service ports one dump shows (memoized on its nat table)."""
    nat = dump.table("nat")
    table = nat if nat is not None else dump.table("filter")
    if table is None:
        return ()
    return table.memoized("services-in-rules", lambda: _build(dump))


def _build(dump: IptablesDump) -> tuple[RuleService, ...]:
    reader = _Reader(dump)
    reader.read()
    candidates = _candidates(dump)
    out: list[RuleService] = []
    for p in [*reader.ports.values(), *reader.chainless.values()]:
        spn, proto, how, notes = _identity(p, candidates)
        ns = name = port_name = ""
        if spn is not None:
            base, _, port_name = spn.partition(":")
            ns, _, name = base.partition("/")
        out.append(RuleService(
            namespace=ns, name=name, port_name=port_name, protocol=(proto or "tcp").upper(), port=p.port,
            key=p.suffix, identity=spn, how=how, cluster_ips=tuple(p.cluster_ips), external_ips=tuple(p.external_ips),
            load_balancer_ips=tuple(p.lb_ips), node_port=p.node_port, local_policy=p.local,
            entry=p.entry or p.suffix is None, notes=tuple(notes)))
    return tuple(out)

