"""Checks of the dataplane area: does kube-proxy's programming on this node match the API, for this client?"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from svctrace.diagnosis.findings import ERROR, INFO, WARNING, Finding
from svctrace.diagnosis.registry import CheckContext, check
from svctrace.errors import SvctraceError
from svctrace.model import graph as g
from svctrace.model.graph import EndpointInfo, Frontend, Hop, RuleRef
from svctrace.model.k8s import Service
from svctrace.resolver.contract import for_mode
from svctrace.trace import Packet, trace_packet

KUBE_PROXY_LOGS = "`kubectl -n kube-system logs -l k8s-app=kube-proxy --tail=100`"
# Dataplane rules older than this many lines of evidence are summarised, not listed.
MAX_LISTED = 8


def cite(rule: RuleRef) -> str:
    """``nat KUBE-SERVICES #5: -A KUBE-SERVICES ...``: a rule a reviewer can find in the dump."""
    return f"{rule.table} {rule.chain} #{rule.index}: {rule.text}"


def frontends(ctx: CheckContext) -> tuple[Frontend, ...]:
    """The frontends the target asks about: one type/address when it named an address, else all."""
    if ctx.graph is None:
        return ()
    t = ctx.target
    out = tuple(f for f in ctx.graph.frontends if t.frontend is None or f.type == t.frontend)
    if t.frontend is not None and t.frontend != "NodePort" and t.target.host:
        out = tuple(f for f in out if f.ip == t.target.host) or out
    return out


def walk(hops: tuple[Hop, ...]) -> Iterator[Hop]:
    """Every hop below these, depth first."""
    for hop in hops:
        yield hop
        yield from walk(hop.children)


def _mode_words(mode: str, f: Frontend) -> str:
    resolver = for_mode(mode)
    return resolver.not_programmed(f) if resolver is not None else "not programmed"


def _ready(eps: tuple[EndpointInfo, ...]) -> list[EndpointInfo]:
    return [e for e in eps if e.in_api and e.ready is not False and not e.terminating]


def _node_word(ctx: CheckContext) -> str:
    return ctx.snapshot.node.name or "this node"


@check("dataplane-missing-service", needs_dataplane=True)
def dataplane_missing_service(ctx: CheckContext) -> Iterator[Finding]:
    """kube-proxy has not programmed the Service on this node (no dataplane rule for a frontend)."""
    svc, graph = ctx.service, ctx.graph
    if svc is None or graph is None or graph.mode == "none":
        return
    missing = [f for f in frontends(ctx) if f.verdict == g.NOT_PROGRAMMED and f.type != "NodePort"]
    if not missing:
        return
    ready = _ready(graph.endpoints)
    evidence = [f"{f.type} {f.address}: {_mode_words(graph.mode, f)}" for f in missing]
    evidence.append(f"svc {svc.ref} has {len(ready)} ready endpoint(s) in the API"
                    + (": " + ", ".join(e.address for e in ready[:MAX_LISTED]) if ready else "")
                    + ("; kube-proxy would have written rules (or a REJECT) for it" if ready
                       else "; even without endpoints kube-proxy writes a REJECT rule"))
    programmed = [f for f in graph.frontends if f.verdict not in (g.NOT_PROGRAMMED, g.UNKNOWN)]
    if programmed:
        evidence.append("programmed: " + ", ".join(f"{f.type} {f.address}" for f in programmed))
    yield Finding(
        "dataplane-missing-service", ERROR,
        f"kube-proxy has not programmed {svc.ref} on {_node_word(ctx)}: no rule handles "
        + ", ".join(f.address for f in missing),
        tuple(evidence),
        f"kube-proxy on {_node_word(ctx)} is not syncing: read its log ({KUBE_PROXY_LOGS}) and restart it "
        f"(`kubectl -n kube-system delete pod -l k8s-app=kube-proxy --field-selector spec.nodeName="
        f"{ctx.snapshot.node.name or 'NODE'}`)",
        hops=tuple(f"{f.ip}:{f.port}" for f in missing))


@check("nodeport-not-programmed", needs_dataplane=True)
def nodeport_not_programmed(ctx: CheckContext) -> Iterator[Finding]:
    """A NodePort with no KUBE-NODEPORTS rule, service-nodeports element or IPVS virtual server on this node."""
    svc, graph = ctx.service, ctx.graph
    if svc is None or graph is None or graph.mode == "none":
        return
    if ctx.target.frontend not in (None, "NodePort"):
        return
    missing = [f for f in frontends(ctx) if f.type == "NodePort" and f.verdict == g.NOT_PROGRAMMED]
    if not missing:
        return
    ports = sorted({f.port for f in missing})
    yield Finding(
        "nodeport-not-programmed", ERROR,
        f"NodePort {', '.join(map(str, ports))} of {svc.ref} is not programmed on {_node_word(ctx)}",
        tuple([f"NodePort {f.address}: {_mode_words(graph.mode, f)}" for f in missing]
              + [f"svc {svc.ref} spec.ports[].nodePort: {', '.join(str(p.node_port) for p in svc.ports if p.node_port)}"
                 f" (type {svc.type})"]),
        f"kube-proxy on {_node_word(ctx)} has not synced this Service: read its log ({KUBE_PROXY_LOGS}); check "
        "its --nodeport-addresses includes the address you connect to, then restart it",
        hops=tuple(f"{f.ip}:{f.port}" for f in missing))


def _in_ranges(ip: str, ranges: tuple[str, ...]) -> str | None:
    addr = ipaddress.ip_address(ip)
    for r in ranges:
        try:
            if addr in ipaddress.ip_network(r.strip(), strict=False):
                return r
        except ValueError:
            continue
    return None


def _firewall_drops(ctx: CheckContext, f: Frontend) -> list[RuleRef]:
    """The filter KUBE-PROXY-FIREWALL rules that drop what the KUBE-FW chain did not accept."""
    dump = ctx.snapshot.dump(6 if ":" in f.ip else 4)
    chain = dump.chain("filter", "KUBE-PROXY-FIREWALL") if dump is not None else None
    out = []
    for rule in chain.rules if chain is not None else ():
        dst = rule.destination
        if rule.target == "DROP" and dst is not None and any(p.address == f.ip for p in dst.prefixes) \
                and (rule.dport is None or rule.dport.single == f.port):
            out.append(RuleRef("filter", rule.chain, rule.index, rule.text))
    return out


def _traced(ctx: CheckContext, src: str, f: Frontend) -> str | None:
    """What the tracer says this client's new connection meets, in words (None: it cannot say)."""
    try:
        result = trace_packet(ctx.snapshot, Packet(src=src, dst=f.ip, dport=f.port, protocol=f.protocol.lower(),
                                                   origin=ctx.client.origin or "external"))
    except SvctraceError:
        return None
    verdicts = sorted({o.verdict for o in result.outcomes if o.share > 0})
    return "/".join(verdicts) if verdicts else None


@check("source-range-blocks-client")
def source_range_blocks_client(ctx: CheckContext) -> Iterator[Finding]:
    """spec.loadBalancerSourceRanges leaves out the client: kube-proxy drops its packets to the LB IP."""
    svc = ctx.service
    if svc is None or not svc.load_balancer_source_ranges:
        return
    if ctx.target.frontend not in (None, "LoadBalancer"):
        return
    ranges = svc.load_balancer_source_ranges
    lbs = [f for f in frontends(ctx) if f.type == "LoadBalancer"]
    fw_hops = [h for f in lbs for h in walk(f.hops) if h.kind == "firewall"]
    evidence = [f"svc {svc.ref} spec.loadBalancerSourceRanges: {', '.join(ranges)}"]
    src = ctx.client.src
    if src is None or ctx.client.origin in ("pod", "node"):
        # Pods and the node reach the LB IP through the ClusterIP path rules (KUBE-FW accepts them), so
        # only outside clients are subject to the ranges; without a client this is only worth knowing.
        if src is None:
            yield Finding("source-range-blocks-client", INFO,
                          f"only clients in {', '.join(ranges)} may use the load-balancer IP of {svc.ref}",
                          tuple(evidence + [cite(r) for h in fw_hops for r in h.rules[:MAX_LISTED]]),
                          "give the client with --src IP (or --from-pod) to check it against the ranges",
                          hops=tuple(h.name for h in fw_hops))
        return
    if _in_ranges(src, ranges) is not None:
        return
    evidence.append(f"client {src} is in none of them")
    for h in fw_hops:
        dump = ctx.snapshot.dump(6 if ":" in src else 4)
        chain = dump.chain("nat", h.name) if dump is not None else None
        # The whole KUBE-FW chain: its accept rules are the ranges, its last rule leaves the rest to the DROP.
        own = [RuleRef("nat", r.chain, r.index, r.text) for r in chain.rules] if chain is not None else []
        evidence += [cite(r) for r in (own or list(h.rules))[:MAX_LISTED]]
    for f in lbs:
        evidence += [cite(r) for r in _firewall_drops(ctx, f)]
        traced = _traced(ctx, src, f)
        if traced is not None:
            evidence.append(f"trace {src} -> {f.ip}:{f.port}/{f.protocol}: {traced}")
    patch = '{"spec":{"loadBalancerSourceRanges":[' + ",".join(f'"{r}"' for r in (*ranges, f"{src}/32")) + "]}}"
    yield Finding(
        "source-range-blocks-client", ERROR,
        f"{src} is outside loadBalancerSourceRanges of {svc.ref}: its packets to the load-balancer IP are dropped",
        tuple(evidence),
        f"connect from an allowed range, or allow this client: `kubectl patch svc {svc.name} -n {svc.namespace} "
        f"--type merge -p '{patch}'`",
        hops=tuple(h.name for h in fw_hops) + ("KUBE-PROXY-FIREWALL",))


def _dnat_rules(f: Frontend, ip: str) -> list[RuleRef]:
    """The rules of the endpoint hops that send this frontend's traffic to ``ip``."""
    out: list[RuleRef] = []
    for hop in walk(f.hops):
        if hop.endpoint is not None and hop.endpoint.ip == ip:
            out += [r for r in hop.rules if "DNAT" in r.text or "-j" not in r.text] or list(hop.rules[-1:])
    return out


@check("dataplane-stale-endpoints", needs_dataplane=True)
def dataplane_stale_endpoints(ctx: CheckContext) -> Iterator[Finding]:
    """The API and the dataplane disagree on the endpoints: ready ones without rules, rules to gone ones."""
    svc, graph = ctx.service, ctx.graph
    if svc is None or graph is None or graph.mode == "none":
        return
    fronts = [f for f in frontends(ctx) if f.verdict not in (g.NOT_PROGRAMMED, g.UNKNOWN)]
    if not fronts:
        return
    families = {6 if ":" in f.ip else 4 for f in fronts if f.ip != "*"} or {4, 6}
    ports = {f.port_name for f in fronts}
    eps = [e for e in graph.endpoints if (6 if ":" in e.ip else 4) in families]
    missing = [e for e in _ready(tuple(eps)) if not e.in_dataplane]
    extra = [e for e in eps if e.in_dataplane and not e.in_api]
    if not missing and not extra:
        return
    programmed = [e for e in eps if e.in_dataplane]
    good = [e for e in programmed if e.in_api]
    evidence: list[str] = []
    for e in missing[:MAX_LISTED]:
        who = f" ({e.pod})" if e.pod else ""
        evidence.append(f"missing: {e.address}{who} is ready in the API but no rule on {_node_word(ctx)} sends "
                        "traffic to it")
    for e in extra[:MAX_LISTED]:
        rules = [r for f in fronts for r in _dnat_rules(f, e.ip)]
        evidence.append(f"extra: {e.address} is in no EndpointSlice of {svc.ref}, yet the dataplane sends to it"
                        + (f": {cite(rules[0])}" if rules else ""))
    hidden = len(missing) + len(extra) - min(len(missing), MAX_LISTED) - min(len(extra), MAX_LISTED)
    if hidden > 0:
        evidence.append(f"... and {hidden} more")
    evidence.append(f"dataplane endpoints: {', '.join(e.address for e in programmed) or 'none'}; API ready "
                    f"endpoints: {', '.join(e.address for e in _ready(tuple(eps))) or 'none'}")
    # Nothing current behind the rules: every new connection goes to a gone pod (or is rejected).
    severity = ERROR if not good else WARNING
    share = "every" if not good else "some"
    parts = []
    if extra:
        parts.append(f"{len(extra)} gone endpoint(s) still in the rules")
    if missing:
        parts.append(f"{len(missing)} ready endpoint(s) without rules")
    yield Finding(
        "dataplane-stale-endpoints", severity,
        f"the dataplane on {_node_word(ctx)} is out of date for {svc.ref}: {' and '.join(parts)} "
        f"({share} new connection{'s' if share == 'some' else ''} affected)",
        tuple(evidence),
        f"kube-proxy on {_node_word(ctx)} has not applied the latest EndpointSlices of port(s) "
        f"{', '.join(sorted(p or '(unnamed)' for p in ports))}: read its log ({KUBE_PROXY_LOGS}); restarting it "
        "forces a full sync",
        hops=tuple(e.address for e in (*extra, *missing)))


def _service_addresses(svc: Service) -> set[str]:
    return set(svc.virtual_ips) | set(svc.external_ips) | {i.ip for i in svc.load_balancer_ingress if i.ip}


@check("stale-udp-conntrack")
def stale_udp_conntrack(ctx: CheckContext) -> Iterator[Finding]:
    """UDP conntrack entries still pin clients of the Service to an endpoint that no longer exists."""
    svc, graph, entries = ctx.service, ctx.graph, ctx.snapshot.conntrack
    if svc is None or graph is None or entries is None:
        return
    udp_ports = {p.port for p in svc.ports if p.protocol == "UDP"}
    node_ports = {p.node_port for p in svc.ports if p.protocol == "UDP" and p.node_port}
    if not udp_ports and not node_ports:
        return
    current = {e.ip for e in graph.endpoints if e.in_api}
    addresses = _service_addresses(svc)
    local = set(ctx.snapshot.node.local_ips)
    stale = [e for e in entries if e.protocol == "udp" and e.dnat and e.reply_src not in current
             and ((e.dst in addresses and e.dport in udp_ports) or (e.dst in local and e.dport in node_ports))]
    if not stale:
        return
    mine = [e for e in stale if ctx.client.src is not None and e.src == ctx.client.src]
    gone = sorted({e.reply_src for e in stale})
    evidence = [f"conntrack: {e.text().strip()}" for e in (mine or stale)[:MAX_LISTED]]
    if len(stale) > MAX_LISTED:
        evidence.append(f"... {len(stale)} such entries in all")
    evidence.append(f"{', '.join(gone)} {'is' if len(gone) == 1 else 'are'} not an endpoint of {svc.ref}; "
                    f"current endpoints: {', '.join(sorted(current)) or 'none'}")
    commands = sorted({f"conntrack -D -p udp --orig-dst {e.dst} --reply-src {e.reply_src}" for e in stale})
    severity = ERROR if mine else WARNING
    who = f"{ctx.client.src}'s UDP flow" if mine else f"{len(stale)} UDP flow(s)"
    yield Finding(
        "stale-udp-conntrack", severity,
        f"{who} to {svc.ref} still go{'es' if mine and len(mine) == 1 else ''} to gone endpoint "
        f"{', '.join(gone)} (stale conntrack entries; kube-proxy did not clear them)",
        tuple(evidence),
        "delete the stale entries on the node (svctrace never does): `" + "`; `".join(commands[:4]) + "`",
        hops=tuple(gone))
