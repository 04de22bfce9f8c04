"""iptables mode: which chains are a Service port's, in every era, and which chains no Service owns.

A Service port's chains are found by kube-proxy's naming hash (svctrace.kubeproxy.naming). Before v1.19 an
unnamed port hashed as ``ns/name:`` (with the colon), so when no chain has today's name the older spelling is
tried, and the answer says which one the node's kube-proxy used. A Service read from the rules alone (no API
objects) carries the suffix its rules gave it (``ServicePort.chains``). Only the iptables mode reads this.
"""

from __future__ import annotations

from svctrace.kubeproxy import naming
from svctrace.model.graph import StaleChain
from svctrace.model.iptables import SWEEP, SWEEP_FROM, IptablesDump, Table
from svctrace.model.k8s import Service, ServicePort
from svctrace.record import record

SERVICE_CHAIN_PREFIXES = naming.IPT_SERVICE_PREFIXES + (naming.IPT_ENDPOINT_PREFIX,)
COLON_NOTE = ("this node's chains hash the unnamed port as '{spn}' (with the colon): kube-proxy before v1.19 "
              "named them so")


@record
class PortChains:
    """The chain suffix of one Service port on this node, the port name it hashes from, and how it was found."""

    suffix: str
    spn: str  # the ServicePortName the chains hash from ("ns/name:port", "ns/name" or "ns/name:")
    note: str | None = None  # set when not today's spelling


def has_service_chains(nat: Table, suffix: str) -> bool:
    return any(nat.has(prefix + suffix) for prefix in naming.IPT_SERVICE_PREFIXES)


def port_chains(dump: IptablesDump, svc: Service, sp: ServicePort) -> PortChains:
    """A Service port's chains: today's hash; for an unnamed port whose chains are not there, the pre-v1.19 one."""
    if sp.chains is not None:  # a Service read from the rules: its suffix is what the rules show
        return PortChains(sp.chains, naming.service_port_name(svc.namespace, svc.name, sp.name))
    spn = naming.service_port_name(svc.namespace, svc.name, sp.name)
    suffix = naming.ipt_suffix(spn, sp.protocol)
    nat = dump.table("nat")
    if sp.name or nat is None or has_service_chains(nat, suffix):
        return PortChains(suffix, spn)
    old = spn + ":"
    old_suffix = naming.ipt_suffix(old, sp.protocol)
    if has_service_chains(nat, old_suffix):
        return PortChains(old_suffix, old, COLON_NOTE.format(spn=old))
    return PortChains(suffix, spn)


def owner(comment: str | None) -> str | None:
    """The Service a kube-proxy comment names ("ns/name" of "ns/name:port cluster IP")."""
    if not comment:
        return None
    return comment.partition(" ")[0].partition(":")[0]


def _owned(dump: IptablesDump) -> dict[str, list[str]]:
    """Service chains by the Service their comment names: built once per dump, not once per Service. Only the
    chains' names are kept (the table's own strings): 111,000 comments were 20 MB in each ``audit`` worker."""
    nat = dump.table("nat")
    if nat is None:
        return {}

    def build() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, comment in dump.each_first_comment("nat", SERVICE_CHAIN_PREFIXES):
            who = owner(comment)
            if who is not None:
                names = out.get(who)
                if names is None:
                    out[who] = [name]
                else:
                    names.append(name)
        return out
    return nat.memoized("owners", build)


def _names_service(comment: str, svc: Service) -> bool:
    ref = svc.ref
    return comment == ref or comment.startswith((ref + ":", ref + " "))


# Services asked about one at a time before the whole owner index is built (audit asks about every one).
_ASKED_ALONE = SWEEP_FROM


def _owned_by(dump: IptablesDump, svc: Service) -> list[str]:
    """This Service's chains by their comments: for the first few Services asked about, by searching the
    dump's text for its name (a few ms); after that, from the index of every chain's owner."""
    nat = dump.table("nat")
    assert nat is not None
    asked = nat.memo.get("asked-alone", 0)
    if isinstance(asked, int) and asked < _ASKED_ALONE and not nat.memo.get(SWEEP):
        found = dump.first_comments_mentioning("nat", svc.ref, SERVICE_CHAIN_PREFIXES)
        if found is not None:
            nat.memo["asked-alone"] = asked + 1
            return [name for name, comment in found.items() if owner(comment) == svc.ref]
    return _owned(dump).get(svc.ref, [])


def stale_chains(svc: Service, dump: IptablesDump, reached: set[str]) -> tuple[StaleChain, ...]:
    """Chains whose comments name this Service but that its current ports do not reach."""
    nat = dump.table("nat")
    if nat is None:
        return ()
    out: list[StaleChain] = []
    for name in _owned_by(dump, svc):
        if name in reached:  # most are: their comments are not read again
            continue
        comment = dump.first_comment("nat", name)
        if comment is not None and _names_service(comment, svc):
            out.append(StaleChain(table="nat", chain=name, comment=comment, rule_count=nat.rule_count(name)))
    return tuple(out)


def current_suffixes(services: tuple[Service, ...]) -> set[str]:
    """The chain suffixes today's hash gives every Service port."""
    return {naming.ipt_suffix(naming.service_port_name(s.namespace, s.name, p.name), p.protocol)
            for s in services for p in s.ports}


def orphan_chains(dump: IptablesDump, services: tuple[Service, ...], current: set[str]) -> tuple[StaleChain, ...]:
    """Service chains whose hash matches no current Service port (``current``: their chain suffixes). A chain
    left by no Service but hashed the pre-v1.19 way (an unnamed port with its colon) is a current one too."""
    nat = dump.table("nat")
    if nat is None:
        return ()
    # By name first: only the chains left have their comments read (not 100,000 of them kept at once).
    left = [name for name in nat.heads if name.startswith(naming.IPT_SERVICE_PREFIXES)
            and name.rsplit("-", 1)[-1] not in current]
    if left:  # only then: the older spelling of each unnamed port
        older = {naming.ipt_suffix(naming.service_port_name(s.namespace, s.name, "", colon=True), p.protocol)
                 for s in services for p in s.ports if not p.name}
        left = [name for name in left if name.rsplit("-", 1)[-1] not in older]
    return tuple(StaleChain(table="nat", chain=name, comment=dump.first_comment("nat", name),
                            rule_count=nat.rule_count(name)) for name in left)


def unreferenced_endpoint_chains(dump: IptablesDump) -> tuple[StaleChain, ...]:
    """KUBE-SEP chains no rule jumps to (left over from endpoints that went away)."""
    nat = dump.table("nat")
    if nat is None:
        return ()
    targets = dump.targets("nat")
    return tuple(StaleChain("nat", name, dump.first_comment("nat", name), nat.rule_count(name))
                 for name in nat.heads if name.startswith(naming.IPT_ENDPOINT_PREFIX) and name not in targets)
