"""The check catalog: one function per check, registered under its stable code, run in catalog order."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import field

from svctrace.diagnosis.findings import INFO, Finding, ranked
from svctrace.diagnosis.target import ResolvedTarget
from svctrace.model.graph import PathGraph
from svctrace.model.k8s import Pod, Service
from svctrace.model.snapshot import Snapshot
from svctrace.record import record


@record
class Client:
    """Who is connecting: a pod, the node itself, an outside address, or unknown (None fields)."""

    src: str | None = None
    pod: Pod | None = None
    origin: str | None = None  # pod | node | external | None (not said)


@record
class CheckContext:
    """Everything a check may look at. ``graph`` is the Service's path graph when the Service exists."""

    snapshot: Snapshot
    target: ResolvedTarget
    client: Client = field(default_factory=Client)
    graph: PathGraph | None = None

    @property
    def service(self) -> Service | None:
        return self.target.service

    @property
    def dataplane_collected(self) -> bool:
        s = self.snapshot
        return s.iptables is not None or s.ip6tables is not None or s.ipvs is not None or s.nft is not None


CheckFn = Callable[[CheckContext], Iterable[Finding]]


@record
class Check:
    code: str
    fn: CheckFn
    needs_service: bool  # skipped when the target matched no Service
    needs_dataplane: bool  # skipped when no dataplane was collected (the output says so)
    summary: str

    @property
    def subject(self) -> str:
        """The catalog module the check lives in: selection, ports, endpoints, dns, policy, dataplane, node."""
        return self.fn.__module__.rpartition(".")[2]


CATALOG: dict[str, Check] = {}


def check(code: str, *, needs_service: bool = True, needs_dataplane: bool = False) -> Callable[[CheckFn], CheckFn]:
    """Register a check under its stable kebab-case code (its docstring's first line is the summary)."""
    def register(fn: CheckFn) -> CheckFn:
        if code in CATALOG:
            raise ValueError(f"check {code} registered twice")
        summary = (fn.__doc__ or code).strip().splitlines()[0]
        CATALOG[code] = Check(code, fn, needs_service, needs_dataplane, summary)
        return fn
    return register


def catalog() -> tuple[Check, ...]:
    """Every registered check, in the catalog's order (checks.ORDER; any code it lacks runs last)."""
    from svctrace.diagnosis.checks import ORDER  # importing the package registers every check

    ordered = [CATALOG[code] for code in ORDER if code in CATALOG]
    return (*ordered, *(c for code, c in CATALOG.items() if code not in ORDER))


def run_checks(ctx: CheckContext, codes: Iterable[str] | None = None) -> tuple[tuple[Finding, ...], tuple[str, ...]]:
    """Every applicable check's findings (ranked) and the checks skipped, with why."""
    wanted = set(codes) if codes is not None else None
    findings: list[Finding] = []
    skipped: list[str] = []
    for c in catalog():
        if wanted is not None and c.code not in wanted:
            continue
        if c.needs_service and ctx.service is None:
            continue
        if c.needs_dataplane and not ctx.dataplane_collected:
            skipped.append(f"{c.code}: the node's dataplane was not collected")
            continue
        try:
            findings.extend(c.fn(ctx))
        except Exception as exc:  # a broken check must not hide what the others found during an incident
            findings.append(Finding(
                "svctrace-check-failed", INFO, f"the {c.code} check failed: {type(exc).__name__}: {exc}",
                (), "please report this with `svctrace --debug`; the other findings stand"))
    return ranked(findings), tuple(skipped)
