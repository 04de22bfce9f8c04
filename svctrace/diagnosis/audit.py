"""audit: every Service's checks at once, summarised (programmed, drifted, without endpoints, by code)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace

from svctrace import parallel
from svctrace.diagnosis.diagnose import Diagnosis, diagnose
from svctrace.diagnosis.findings import ERROR, WARNING
from svctrace.model.graph import NOT_PROGRAMMED, UNKNOWN, PathGraph, StaleChain
from svctrace.model.k8s import Service
from svctrace.model.snapshot import Snapshot
from svctrace.record import record
from svctrace.resolver.common import api_endpoints, categorize

# Findings that mean the node's rules and the API disagree (the dataplane checks own these codes).
DRIFT_CODES = ("dataplane-stale-endpoints", "dataplane-missing-service")


@record
class ServiceAudit:
    """One Service's diagnosis and the facts the summary counts."""

    ref: str
    diagnosis: Diagnosis  # without its graph
    programmed: bool  # some frontend is forwarded or rejected as expected on this node
    drifted: bool
    without_endpoints: bool


@record
class Audit:
    services: tuple[ServiceAudit, ...]
    source: str
    namespace: str | None  # None: every namespace
    dataplane_collected: bool
    api_collected: bool = True  # False: no Kubernetes objects, only the node's files
    warnings: tuple[str, ...] = ()  # what reading the snapshot said (a pasted dump cut short, ...)
    stale_chains: tuple[StaleChain, ...] = ()  # Service chains no Service in the snapshot owns
    # node-only: (identity, how, frontends, chain key) of each Service port the rules show
    in_rules: tuple[tuple[str, str, tuple[str, ...], str | None], ...] = ()
    proxy_mode: str | None = None  # kube-proxy's mode as decided from the snapshot

    @property
    def checked_nothing(self) -> bool:
        """No Service could be checked because none is known (an empty namespace was checked: it is empty)."""
        return not self.api_collected and not self.services

    @property
    def not_checked(self) -> tuple[str, ...]:
        """What this audit could not check, and why, in words."""
        if self.api_collected:
            return ()
        return ("every check: each one compares a Service's objects (selector, ports, endpoints, DNS names, "
                f"policies) with this node's rules, and {self.source or 'the snapshot'} holds no Service",)

    @property
    def programmed(self) -> int:
        return sum(s.programmed for s in self.services)

    @property
    def drifted(self) -> int:
        return sum(s.drifted for s in self.services)

    @property
    def without_endpoints(self) -> int:
        return sum(s.without_endpoints for s in self.services)

    @property
    def by_code(self) -> dict[str, int]:
        """How many Services each finding code was raised for, most frequent first."""
        counts = Counter(code for s in self.services for code in {f.code for f in s.diagnosis.findings})
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def by_severity(self) -> dict[str, int]:
        counts = Counter(f.severity for s in self.services for f in s.diagnosis.findings)
        return {sev: counts.get(sev, 0) for sev in (ERROR, WARNING, "info")}

    @property
    def has_problems(self) -> bool:
        return any(f.severity in (ERROR, WARNING) for s in self.services for f in s.diagnosis.findings)


Progress = Callable[[int, int, str], None]  # (done, total, the Service being checked)
KEEP_CHAINS = 2048  # typed chains a table keeps during a sweep: the shared ones stay, each Service's are read once


def _endpoints_drift(graph: PathGraph) -> bool:
    """Rules to an endpoint the API no longer lists, or no rule for one kube-proxy should program."""
    if any(e.in_dataplane and not e.in_api for e in graph.endpoints):
        return True
    # Not-ready endpoints are rightly absent from the rules: compare only those kube-proxy would choose.
    chosen = categorize(tuple(e for e in graph.endpoints if e.in_api)).cluster
    return any(not e.in_dataplane for e in chosen)


def audit(snapshot: Snapshot, namespace: str | None = None, progress: Progress | None = None,
          workers: int | None = None) -> Audit:
    """Run every check for each Service (of one namespace, or all) and summarise the results.

    A big audit is split over ``workers`` forked processes (svctrace.parallel; None: the usable cores).
    The graphs are not kept: the summary needs only each Service's findings.
    """
    chosen = sorted((s for s in snapshot.services if namespace is None or s.namespace == namespace),
                    key=lambda s: (s.namespace, s.name))
    dataplane = dataplane_collected(snapshot)
    # Big files' pods and slices are typed per namespace and per Service, in the workers, and not kept: typing
    # them all before forking costs one core's time and every worker's memory.
    snapshot.prepare_sweep(KEEP_CHAINS, services=len(chosen))
    parent = os.getpid()
    n = parallel.workers(len(chosen)) if workers is None else workers

    checked_here = [0]  # by this process (the bar's estimate: the workers go as fast)

    def work(piece: Sequence[Service]) -> list[ServiceAudit]:
        out: list[ServiceAudit] = []
        report = progress is not None and os.getpid() == parent
        for svc in piece:
            if report:
                assert progress is not None
                progress(min(checked_here[0] * n, len(chosen)), len(chosen), svc.ref)
                checked_here[0] += 1
            out.append(_audit_one(snapshot, svc, dataplane))
        return out

    from svctrace.resolver import all_stale_chains
    from svctrace.resolver.from_rules import services_in_rules

    # The chains no Service owns are looked for by one more process meanwhile: not after the sweep, alone.
    stale = parallel.Background(lambda: all_stale_chains(snapshot)) if namespace is None and n > 1 else None
    try:
        # the workers' answers come after this process's last piece, into the memory its pieces used
        # a namespace's Services in one piece: its pods are typed by one process, not by both sides of a cut
        results = parallel.fork_map(work, chosen, n, then=lambda: snapshot.end_sweep(KEEP_CHAINS),
                                    key=lambda s: s.namespace)
    except BaseException:
        if stale is not None:
            stale.cancel()
        raise
    if progress is not None:
        progress(len(chosen), len(chosen), "")
    unowned = stale.result() if stale is not None else (all_stale_chains(snapshot) if namespace is None else ())

    in_rules = () if snapshot.api_collected else tuple(
        (r.identity or "not named by the rules", r.how,
         (*r.addresses, *((f"NodePort {r.node_port}",) if r.node_port else ())), r.key)
        for r in services_in_rules(snapshot))
    return Audit(tuple(results), snapshot.source, namespace, dataplane, snapshot.api_collected,
                 warnings=snapshot.warnings, stale_chains=unowned,
                 in_rules=in_rules, proxy_mode=snapshot.mode.value if snapshot.mode is not None else None)


def dataplane_collected(snapshot: Snapshot) -> bool:
    """Whether the snapshot holds any of the node's Service rules (iptables, IPVS or nftables)."""
    return any(x is not None for x in (snapshot.iptables, snapshot.ip6tables, snapshot.ipvs, snapshot.nft))


def audit_service(snapshot: Snapshot, svc: Service) -> ServiceAudit:
    """One Service's audit on this node, its path graph kept (``audit --all-nodes`` reads the drift from it)."""
    return _audit_one(snapshot, svc, dataplane_collected(snapshot), keep_graph=True)


def _audit_one(snapshot: Snapshot, svc: Service, dataplane: bool, *, keep_graph: bool = False) -> ServiceAudit:
    diag = diagnose(snapshot, f"{svc.namespace}/{svc.name}", namespace=svc.namespace)
    graph = diag.graph
    # As kube-proxy programs it in its era: a REJECT, a DROP or an untranslated path counts, "not programmed" does not
    programmed = graph is not None and any(fe.verdict not in (NOT_PROGRAMMED, UNKNOWN) for fe in graph.frontends)
    drifted = any(f.code in DRIFT_CODES for f in diag.findings) or (
        dataplane and graph is not None and bool(graph.frontends) and _endpoints_drift(graph))
    without = not svc.is_external_name and not any(
        categorize(api_endpoints(snapshot, svc, sp)).has_any for sp in svc.ports)
    return ServiceAudit(svc.ref, diag if keep_graph else replace(diag, graph=None), programmed, drifted, without)
