"""why-unreachable: match the target, resolve its path, run the checks, rank the findings, give a verdict."""

from __future__ import annotations

from dataclasses import replace

from svctrace.diagnosis.checks.dns import external_name_passed
from svctrace.diagnosis.findings import DEGRADED, ERROR, PASSED, REACHABLE, UNREACHABLE, Finding, ranked, verdict
from svctrace.diagnosis.registry import CheckContext, Client, run_checks
from svctrace.diagnosis.target import ResolvedTarget, parse_target, resolve_target
from svctrace.errors import NotFoundError, PortNotFoundError
from svctrace.model import graph as g
from svctrace.model.graph import PathGraph
from svctrace.model.snapshot import Snapshot
from svctrace.record import record
from svctrace.resolver import resolve


@record
class Diagnosis:
    target: ResolvedTarget
    client: Client
    verdict: str  # reachable | unreachable | degraded
    reason: str  # one sentence
    findings: tuple[Finding, ...]
    graph: PathGraph | None
    skipped: tuple[str, ...] = ()  # checks that could not run, with why


def diagnose(snapshot: Snapshot, target_text: str, *, namespace: str | None = None,
             client: Client | None = None) -> Diagnosis:
    """Why the target is (or is not) reachable for this client, with ranked findings."""
    target = resolve_target(snapshot, parse_target(target_text, namespace), namespace or "default")
    if target.service is None and (target.target.kind in ("address", "url") or not snapshot.api_collected):
        ruled = _rules_graph(snapshot, target)
        if ruled is not None:
            return _from_rules(snapshot, target, client or Client(), ruled)
        dumps = (snapshot.iptables, snapshot.ip6tables)
        partial = next((d.partial for d in dumps if d is not None and d.partial), None)
        if partial is not None:  # what is not in a fragment may well be on the node
            return Diagnosis(target, client or Client(), DEGRADED,
                             f"no rule in the dump handles {target.target.text}, but the dump is partial ({partial}): "
                             "the rules that would may be on the node", (), None, (NOT_CHECKED_RULES,))
    graph = None
    port = target.port
    if target.service is not None:
        try:
            graph = resolve(snapshot, target.namespace, target.name, port)
        except PortNotFoundError:  # the port-not-defined check says so; show the path of every port
            graph = resolve(snapshot, target.namespace, target.name, None)
    ctx = CheckContext(snapshot=snapshot, target=target, client=client or Client(), graph=graph)
    found, skipped = run_checks(ctx)
    findings = ranked(found)
    passed, unchecked = _when_passed(ctx)
    word, reason = verdict(findings, passed)
    if target.service is None and not any(f.severity == ERROR for f in findings):
        word, reason = "unreachable", target.how
    return Diagnosis(target, ctx.client, word, reason, findings, graph, (*skipped, *unchecked))


NOT_CHECKED_RULES = ("every check of the Service's Kubernetes objects (selector, endpoints, pods, DNS): the snapshot "
                     "holds none for it, so only this node's rules were read; whether the endpoints answer is not "
                     "in them")


def _rules_graph(snapshot: Snapshot, target: ResolvedTarget) -> PathGraph | None:
    """The path of an address no API Service has, as the node's rules alone show it (None: they do not)."""
    from svctrace.resolver import resolve, resolve_address

    try:
        if target.target.kind == "address" or (target.target.kind == "url" and target.target.name is None):
            graph = resolve_address(snapshot, target.target.host or "", None)
        else:
            graph = resolve(snapshot, target.namespace, target.name, None)  # node-only: the Service the rules name
    except NotFoundError:
        return None
    return graph if graph.from_rules is not None else None


def _from_rules(snapshot: Snapshot, target: ResolvedTarget, client: Client, graph: PathGraph) -> Diagnosis:
    """reachable / unreachable / degraded for an address from the node's rules: the client's packet traced when
    the client is known, else the frontend's verdict."""
    by_address = target.target.kind == "address"
    host = target.target.host if by_address else None
    port = int(target.port) if target.port and target.port.isdigit() else None
    fronts = [f for f in graph.frontends if (host is None or f.ip == host)
              and (port is None or f.port == port or (target.port is not None and f.port_name == target.port))]
    who = graph.from_rules.identity if graph.from_rules is not None and graph.from_rules.identity else "a Service"
    how = (f"{target.target.text} is a frontend of {who}" if by_address else f"{who} is named by this node's rules") \
        + ", as this node's rules show it (no Kubernetes objects)"
    if not fronts:
        word, reason = UNREACHABLE, f"no rule of this node handles {target.target.text} ({who} has other ports)"
    elif client.src is not None and fronts[0].ip != "*":
        word, reason = _traced(snapshot, client, fronts[0].ip, fronts[0].port, fronts[0].protocol)
    else:
        verdicts = {f.verdict for f in fronts}
        if verdicts == {g.FORWARDED}:
            word, reason = REACHABLE, (f"this node's rules translate {target.target.text} to an endpoint of {who}")
        elif verdicts & {g.FORWARDED, g.PARTIAL, g.UNKNOWN}:
            word, reason = DEGRADED, (f"this node's rules translate {target.target.text} for some clients or "
                                      f"not for certain ({', '.join(sorted(verdicts))}); trace a client with --src")
        else:
            word, reason = UNREACHABLE, f"this node's rules do not translate {target.target.text}: " + \
                ", ".join(sorted(verdicts))
    resolved = replace(target, namespace=graph.service.namespace, name=graph.service.name, how=how)
    return Diagnosis(resolved, client, word, reason, (), graph, (NOT_CHECKED_RULES,))


def _traced(snapshot: Snapshot, client: Client, ip: str, port: int, protocol: str) -> tuple[str, str]:
    from svctrace.trace import Packet, trace_packet

    packet = Packet(src=client.src or "", dst=ip, dport=port, protocol=protocol.lower(),
                    origin=client.origin or "external")
    result = trace_packet(snapshot, packet)
    dnat = [o for o in result.outcomes if o.verdict == "DNAT"]
    other = [o for o in result.outcomes if o.verdict != "DNAT" and (o.probability or o.conditions)]
    if dnat and not other and all(o.probability is not None for o in dnat):
        return REACHABLE, f"this node's rules translate the packet from {client.src} to an endpoint"
    if not dnat:
        ends = ", ".join(sorted({o.verdict for o in result.outcomes}))
        return UNREACHABLE, f"this node's rules do not translate the packet from {client.src} ({ends})"
    return DEGRADED, f"this node's rules translate the packet from {client.src} only under some conditions"


def _when_passed(ctx: CheckContext) -> tuple[str, tuple[str, ...]]:
    """What "every check passed" means for this target, and what could not be checked from here."""
    svc = ctx.service
    if svc is not None and svc.is_external_name:
        return external_name_passed(ctx.snapshot, svc)  # no endpoints, no rules: only DNS
    if svc is not None and not ctx.dataplane_collected:
        return ("every check that could run passed: the Service has a ready endpoint in the API; this node's "
                "rules were not collected, so whether they forward to it is not checked"), ()
    return PASSED, ()
