"""Findings: what is wrong (or worth knowing), the evidence that proves it, and what to do next."""

from __future__ import annotations

from svctrace.record import record

ERROR = "error"  # the target is unreachable for this client because of it
WARNING = "warning"  # some clients or some of the time, or a risk that is live now
INFO = "info"  # worth knowing; does not stop traffic
SEVERITIES = (ERROR, WARNING, INFO)

REACHABLE = "reachable"
UNREACHABLE = "unreachable"
DEGRADED = "degraded"


@record
class Finding:
    """One check's result: a stable kebab-case code, a severity, a title, the evidence and the next step."""

    code: str
    severity: str
    title: str  # one sentence, specific to this target ("Service default/web selects no pods")
    # lines a reviewer can check against objects and rules ("svc default/web spec.selector: app=web")
    evidence: tuple[str, ...]
    hint: str  # the next step: the change to make, or what to look at (never `kubectl get` for what was read)
    hops: tuple[str, ...] = ()  # names of path hops (chains, addresses) this finding marks as broken

    @property
    def rank(self) -> int:
        return SEVERITIES.index(self.severity)


def ranked(findings: list[Finding] | tuple[Finding, ...]) -> tuple[Finding, ...]:
    """Errors first, then warnings, then info; stable within a severity (checks run in catalog order)."""
    return tuple(sorted(findings, key=lambda f: f.rank))


# The reason when every check passed, for a Service whose traffic kube-proxy's rules carry to endpoints.
PASSED = "every check passed: new connections reach a ready endpoint"


def verdict(findings: tuple[Finding, ...], passed: str = PASSED) -> tuple[str, str]:
    """reachable / unreachable / degraded, and the reason in one sentence (``passed`` when nothing is wrong)."""
    errors = [f for f in findings if f.severity == ERROR]
    if errors:
        return UNREACHABLE, errors[0].title
    warnings = [f for f in findings if f.severity == WARNING]
    if warnings:
        return DEGRADED, warnings[0].title
    return REACHABLE, passed
