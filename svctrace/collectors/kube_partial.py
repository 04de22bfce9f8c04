"""What a live API collection could not read, and what that means for the answer (pure: judges ReadFailures).

A required read that fails is an error (``unusable_error``, ``forbidden_error``); an optional one makes the
answer partial, and ``Partial`` keeps the warnings and the list of what is missing, in the user's words.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from svctrace.collectors.kube_http import BadAnswer, Doc, NoAnswer, Op, ReadFailure, StatusFailure
from svctrace.collectors.kubeconfig import KubeTarget
from svctrace.errors import CollectionError, ForbiddenError, InputError

__all__ = ["REQUIRED", "Partial", "forbidden_error", "slices_unavailable", "unusable_error"]

REQUIRED = ("services", "endpointslices", "endpoints")  # no answer without them: a failed read is an error


def unusable_error(target: KubeTarget, exc: InputError) -> CollectionError:
    """Objects of a kind svctrace cannot answer without, which the parser refused."""
    return CollectionError(f"the API server at {target.server} sent {exc.message}",
                           'svctrace cannot answer without these objects; check the server with "kubectl get --raw '
                           '/version", or analyse a capture with --from SNAPSHOT')


def slices_unavailable(failure: ReadFailure) -> bool:
    """403 (not allowed) or 404 (not served): EndpointSlices cannot be read, v1 Endpoints may be."""
    return isinstance(failure, StatusFailure) and failure.status in (403, 404)


def forbidden_error(failure: StatusFailure) -> ForbiddenError:
    user = re.search(r'User "([^"]*)"', failure.message)
    who = f" for {user.group(1)}" if user else ""
    op = failure.op
    return ForbiddenError(
        f"not allowed to {op.describe()}{who} (403 Forbidden); svctrace cannot answer without it",
        f"ask for {op.rule()}",
        verb=op.verb, resource=op.resource, group=op.group, namespace=op.namespace,
    )


@dataclass
class Partial:
    """Collects what optional reads could not get, so the answer says it is partial."""

    warnings: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def fall_back(self, failure: ReadFailure) -> None:
        """EndpointSlices could not be read: say why, and that v1 Endpoints are read instead."""
        op = failure.op
        if failure.status == 403:
            self.warnings.append(f"not allowed to {op.describe()} (403 Forbidden): read the v1 Endpoints instead "
                                 "(what kube-proxy read before 1.19; dual-stack and topology details may be "
                                 f"missing); to allow it, add {op.rule()}")
        else:
            self.warnings.append("this cluster does not serve discovery.k8s.io/v1 EndpointSlices; "
                                 "read the v1 Endpoints instead")

    def read(self, op: Op, consequence: str, fn: Callable[[], list[Doc]], *,
             tolerate_404: bool = False) -> list[Doc] | None:
        try:
            return fn()
        except ReadFailure as failure:
            if failure.status == 404 and tolerate_404:
                self.missing.append(f"{op.resource} (not served by this cluster)")
                self.warnings.append(f"{op.resource} ({op.group or 'v1'}) are not served by this cluster: "
                                     f"{consequence}")
            else:
                self._failed(op, consequence, failure)
            return None

    def get(self, op: Op, consequence: str, fn: Callable[[], Doc], *, not_found: str | None) -> Doc | None:
        try:
            return fn()
        except ReadFailure as failure:
            if failure.status == 404:
                if not_found:
                    self.warnings.append(not_found)
                else:
                    self.missing.append(f"{op.resource} {op.namespace}/{op.name} (not found)")
            else:
                self._failed(op, consequence, failure)
            return None

    def _failed(self, op: Op, consequence: str, failure: ReadFailure) -> None:
        if failure.status == 403:
            self.missing.append(f"{op.describe()} (forbidden)")
            self.warnings.append(f"not allowed to {op.describe()} (403 Forbidden): {consequence}, so this "
                                 f"answer is partial; to allow it, add {op.rule()}")
            return
        why = "no answer" if isinstance(failure, NoAnswer) else (
            "unusable answer" if isinstance(failure, BadAnswer) else f"error {failure.status}")
        self.missing.append(f"{op.describe()} ({why})")
        self.warnings.append(f"could not {op.describe()} ({failure.detail}): {consequence}, so this answer is partial")

    def refused(self, resource: str, exc: InputError, target: KubeTarget) -> None:
        """Objects the parser refused: a required kind's (``REQUIRED``) fail the read, an optional one's leave
        the answer partial."""
        if resource in REQUIRED:
            raise unusable_error(target, exc) from None
        self.unusable(resource, exc.message)

    def unusable(self, resource: str, detail: str) -> None:
        self.missing.append(f"{resource} (unusable answer)")
        self.warnings.append(f"the API server sent {detail}; its {resource} were left out, so this answer is partial")
