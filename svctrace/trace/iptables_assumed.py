"""What a partial iptables dump (a pasted fragment, a grep, a dump cut short) leaves out, as kube-proxy and kubelet
write it, so a trace through it goes as far as the rules a careful reader would assume.

Only for a dump marked partial (svctrace.parsers.pasted), and only for chains the dump does not hold: kube-proxy's
jumps from the built-in chains (nat PREROUTING/OUTPUT to KUBE-SERVICES, POSTROUTING to KUBE-POSTROUTING),
KUBE-POSTROUTING's masquerade of marked connections, kubelet's KUBE-MARK-DROP and filter KUBE-FIREWALL, and, when
KUBE-SERVICES itself is not shown, its rules as the Service chains that are shown imply them: a Service chain's
own ClusterIP rule (v1.24+) says the jump it is reached by, but whether that jump is on the node the dump does
not say, so the tracer follows both ways; the last rule to KUBE-NODEPORTS for local destinations. Each assumed
rule's text says it is assumed, and the trace's steps show it.
"""

from __future__ import annotations

from svctrace.kubeproxy import naming
from svctrace.model.actions import MarkAction, SnatAction
from svctrace.model.iptables import IptablesDump, Rule
from svctrace.model.matches import DST, AddrTypeMatch, MarkMatch, UnknownMatch

MASQ_MARK = 0x4000
DROP_MARK = 0x8000
_NOTE = "(not in the dump; assumed as kube-proxy writes it) "


def _rule(table: str, chain: str, index: int, text: str, matches: tuple[object, ...] = (), target: str | None = None,
          action: object = None) -> Rule:
    return Rule(table, chain, index, 0, _NOTE + text, matches, target, False, action)  # type: ignore[arg-type]


def _service_entries(dump: IptablesDump) -> list[Rule]:
    """KUBE-SERVICES as the Service chains shown imply it: each ClusterIP rule a KUBE-SVC chain holds (v1.24+)."""
    nat = dump.table("nat")
    out: list[Rule] = []
    for name in nat.heads if nat is not None else ():
        if not name.startswith("KUBE-SVC-"):
            continue
        for rule in nat.chain(name).rules:  # type: ignore[union-attr]
            d, port = rule.destination, rule.dport
            if rule.target != "KUBE-MARK-MASQ" or d is None or d.negated or port is None or port.single is None:
                continue
            unknown = UnknownMatch(f"KUBE-SERVICES jumps to {name} for {d.text[3:]}:{port.single}",
                                   "the dump does not show KUBE-SERVICES")
            matches = (d, *(m for m in (rule.protocol, port) if m is not None), unknown)
            out.append(_rule("nat", "KUBE-SERVICES", len(out) + 1,
                             f"-A KUBE-SERVICES {d.text} --dport {port.single} -j {name}", matches, name))
            break
    return out


def assumed_chains(dump: IptablesDump) -> dict[tuple[str, str], tuple[Rule, ...]]:
    """(table, chain) -> the rules assumed for a chain a partial dump does not hold; empty for a whole dump."""
    if dump.partial is None:
        return {}
    nat, filt = dump.table("nat"), dump.table("filter")
    out: dict[tuple[str, str], tuple[Rule, ...]] = {}
    if nat is None:
        return out
    targets = dump.targets("nat")
    if not nat.has("KUBE-SERVICES"):
        entries = _service_entries(dump)
        if nat.has("KUBE-NODEPORTS"):
            local = AddrTypeMatch(DST, frozenset({"LOCAL"}))
            entries.append(_rule("nat", "KUBE-SERVICES", len(entries) + 1,
                                 "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS", (local,),
                                 "KUBE-NODEPORTS"))
        if entries:
            out[("nat", "KUBE-SERVICES")] = tuple(entries)
    if nat.has("KUBE-SERVICES") or ("nat", "KUBE-SERVICES") in out:
        for hook in ("PREROUTING", "OUTPUT"):
            if not nat.has(hook):
                out[("nat", hook)] = (_rule("nat", hook, 1, f"-A {hook} -j KUBE-SERVICES", (), "KUBE-SERVICES"),)
    if not nat.has("POSTROUTING"):
        out[("nat", "POSTROUTING")] = (_rule("nat", "POSTROUTING", 1, "-A POSTROUTING -j KUBE-POSTROUTING", (),
                                             "KUBE-POSTROUTING"),)
    if not nat.has("KUBE-POSTROUTING"):
        out[("nat", "KUBE-POSTROUTING")] = (_rule(
            "nat", "KUBE-POSTROUTING", 1, "-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE",
            (MarkMatch("mark", MASQ_MARK, MASQ_MARK),), "MASQUERADE", SnatAction(masquerade=True)),)
    if "KUBE-MARK-DROP" in targets and not nat.has("KUBE-MARK-DROP"):
        out[("nat", "KUBE-MARK-DROP")] = (_rule("nat", "KUBE-MARK-DROP", 1,
                                                "-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000", (), "MARK",
                                                MarkAction("mark", "xset", DROP_MARK, DROP_MARK)),)
        if filt is None or not filt.has("KUBE-FIREWALL"):
            drop = _rule("filter", "KUBE-FIREWALL", 1,
                         "-A KUBE-FIREWALL -m mark --mark 0x8000/0x8000 -j DROP  (kubelet's, v1.4 - v1.27)",
                         (MarkMatch("mark", DROP_MARK, DROP_MARK),), "DROP")
            out[("filter", "KUBE-FIREWALL")] = (drop,)
            for hook in ("INPUT", "OUTPUT"):
                if filt is None or not filt.has(hook):
                    out[("filter", hook)] = (_rule("filter", hook, 1, f"-A {hook} -j KUBE-FIREWALL", (),
                                                   "KUBE-FIREWALL"),)
    return out


def unseen_endpoint(dump: IptablesDump, chain: str) -> bool:
    """A jump to this chain, missing from a partial dump, stands for a DNAT to an endpoint it does not show."""
    return dump.partial is not None and chain.startswith(naming.IPT_ENDPOINT_PREFIX)
