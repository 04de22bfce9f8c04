"""why-unreachable: match the target, resolve its path, run the checks, rank the findings, give a verdict."""

from __future__ import annotations

from dataclasses import dataclass

from svctrace.diagnosis.checks.dns import external_name_passed
from svctrace.diagnosis.findings import ERROR, PASSED, Finding, ranked, verdict
from svctrace.diagnosis.registry import CheckContext, Client, run_checks
from svctrace.diagnosis.target import ResolvedTarget, parse_target, resolve_target
from svctrace.errors import PortNotFoundError
from svctrace.model.graph import PathGraph
from svctrace.model.snapshot import Snapshot
from svctrace.resolver import resolve


@dataclass(frozen=True, slots=True)
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


def _when_passed(ctx: CheckContext) -> tuple[str, tuple[str, ...]]:
    """What "every check passed" means for this target, and what could not be checked from here."""
    svc = ctx.service
    if svc is not None and svc.is_external_name:
        return external_name_passed(ctx.snapshot, svc)  # no endpoints, no rules: only DNS
    if svc is not None and not ctx.dataplane_collected:
        return ("every check that could run passed: the Service has a ready endpoint in the API; this node's "
                "rules were not collected, so whether they forward to it is not checked"), ()
    return PASSED, ()
