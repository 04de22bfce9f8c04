"""kube-proxy's iptables rules read one at a time: what a rule of a Service chain does, and the per-table
indexes a frontend's rules are found by (the resolver's hot path: read a million rules in a big audit)."""

from __future__ import annotations

from svctrace.kubeproxy import naming
from svctrace.model.actions import DnatAction, MarkAction
from svctrace.model.addresses import ip_value
from svctrace.model.graph import RuleRef
from svctrace.model.iptables import Rule, Table
from svctrace.model.matches import SRC, AddrMatch, AddrTypeMatch, RecentMatch
from svctrace.resolver.chains import RuleFacts, Words
from svctrace.resolver.rule_words import source_words

MASQ_CHAIN = "KUBE-MARK-MASQ"
DROP_CHAIN = "KUBE-MARK-DROP"  # kubelet's (v1.4 - v1.27): marks 0x8000 for its filter KUBE-FIREWALL to drop
V11_MASQ_MARK = 0x4D415351  # v1.1 marked connections to masquerade inline with this mark ("MASQ")
DROP_MARK = 0x8000


def is_masq(rule: Rule) -> bool:
    """The rule marks the connection for masquerade: KUBE-MARK-MASQ, or v1.1's inline MARK 0x4d415351."""
    target = rule.target
    if target == MASQ_CHAIN:
        return True
    if target != "MARK":
        return False
    action = rule.action
    return isinstance(action, MarkAction) and action.value == V11_MASQ_MARK and action.field == "mark"


def rule_ref(rule: Rule) -> RuleRef:
    return RuleRef(table=rule.table, chain=rule.chain, index=rule.index, text=rule.text)


def host_of(rule: Rule) -> tuple[int, int] | None:
    """(version, address) of a rule's single-address destination (``-d IP/32``); None for any other."""
    d = rule.destination
    if d is None or d.negated or len(d.prefixes) != 1 or not d.prefixes[0].is_host:
        return None
    return d.prefixes[0].version, d.prefixes[0].net


def dst_is(rule: Rule, ip: str) -> bool:
    host = host_of(rule)
    return host is not None and host == ip_value(naming.normalize_ip(ip))


def dport_is(rule: Rule, port: int) -> bool:
    d = rule.dport
    return d is not None and d.single == port


def proto_is(rule: Rule, protocol: str) -> bool:
    p = rule.protocol
    return p is None or (not p.negated and p.protocol == protocol.lower())


def source_text(rule: Rule) -> str | None:
    s = rule.source
    return ",".join(map(str, s.prefixes)) if s is not None else None


def port_index(table: Table, chain: str) -> dict[int, list[Rule]]:
    """The rules of a chain that match one destination port, by that port: built once per table, so a
    frontend's rules are found without reading every rule of a 10,000-Service KUBE-SERVICES again."""
    def build() -> dict[int, list[Rule]]:
        out: dict[int, list[Rule]] = {}
        c = table.chain(chain)
        for rule in c.rules if c is not None else ():
            d = rule.dport
            port = d.single if d is not None else None
            if port is not None:
                out.setdefault(port, []).append(rule)
        return out
    return table.memoized(f"ports:{chain}", build)


def frontend_index(table: Table, chain: str) -> dict[tuple[tuple[int, int], int], list[Rule]]:
    """The rules of a chain that match one destination address and port, by (address, port): what a
    ClusterIP, externalIP or load balancer frontend is looked up by (built once per table)."""
    def build() -> dict[tuple[tuple[int, int], int], list[Rule]]:
        out: dict[tuple[tuple[int, int], int], list[Rule]] = {}
        for port, rules in port_index(table, chain).items():
            for rule in rules:
                host = host_of(rule)
                if host is not None:
                    out.setdefault((host, port), []).append(rule)
        return out
    return table.memoized(f"frontends:{chain}", build)


def rule_facts(rule: Rule) -> RuleFacts:
    """What a rule of kube-proxy's Service chains does, read from its typed matches and target (one pass
    over the matches: an audit of 10,000 Services reads a million rules)."""
    target = rule.target
    matches = rule.matches
    dnat = dnat_note = None
    skip = False
    if target == "DNAT":
        action = rule.action
        first = action.first if isinstance(action, DnatAction) else None
        if first is None or first.first_ip is None:
            if isinstance(action, DnatAction) and action.problem == "DNAT rule without --to-destination":
                dnat_note, skip = f"DNAT rule without --to-destination (rule {rule.index})", True
            else:
                shown = repr(action.raw) if isinstance(action, DnatAction) and action.raw else "(no address)"
                dnat_note = f"rule {rule.index}: cannot read the DNAT destination {shown}: {rule.text}"
        else:
            dnat = (first.first_ip, first.first_port)
    src: AddrMatch | None = None
    rcheck: RecentMatch | None = None
    records = plain = False
    for m in matches:
        if isinstance(m, AddrMatch):
            if src is None and m.field == SRC:
                src = m
        elif isinstance(m, RecentMatch):
            if m.op == "rcheck" and rcheck is None:
                rcheck = m
            records = records or m.op == "set"
        elif isinstance(m, AddrTypeMatch):
            plain = True  # the words need the address-type part too
    src_text = ",".join(map(str, src.prefixes)) if src is not None else None
    if plain:
        source = source_words(matches)
    elif src is not None:
        source = f"source not in {src_text}" if src.negated else f"source in {src_text}"
    else:
        source = None
    return RuleFacts(
        index=rule.index, text=rule.text, target=target, goto=rule.goto,
        masq=target == MASQ_CHAIN or (target == "MARK" and is_masq(rule)), drop_mark=target == DROP_CHAIN,
        source=source,
        hairpin=src_text if src is not None and not src.negated else None,
        pod_network=src_text if src is not None and src.negated else None,
        dnat=dnat, dnat_note=dnat_note, dnat_skip=skip,
        records_affinity=records,
        affinity_seconds=(str(rcheck.seconds) if rcheck.seconds is not None else "?") if rcheck is not None else None,
        action_less=target is None,
    )


IPTABLES_WORDS = Words(
    dnat="DNAT",
    records="-m recent --set records the client, so session affinity sends it here again.",
    missing_note="chain missing from the dump",
    local="KUBE-SVL holds only the endpoints on this node (traffic policy Local).",
    balance="kube-proxy balances new connections over {n} endpoints with -m statistic: each rule takes its "
            "probability of the connections that reach it (1/n, 1/(n-1), ... then the rest), so each endpoint "
            "gets an equal share.",
    masq_marked="KUBE-POSTROUTING masquerades them",
    affinity="sessionAffinity ClientIP: a client seen in the last {seconds}s (-m recent --rcheck) goes straight "
             "back to its endpoint; only new clients are balanced.",
    fallthrough="(no KUBE-SVL jump and no filter rule)",
    not_followed="not a kube-proxy chain; not followed",
)
