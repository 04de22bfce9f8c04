"""Small readers of PathGraphs shared by the resolver tests of every proxy mode."""

from __future__ import annotations

from collections.abc import Iterable

from svctrace.model.graph import Frontend, Hop
from svctrace.resolver.common import leaves


def frontend(frontends: Iterable[Frontend], type_: str, ip: str | None = None) -> Frontend:
    """The one frontend of this type (and address); fails the test when there is not exactly one."""
    fes = list(frontends)
    found = [f for f in fes if f.type == type_ and (ip is None or f.ip == ip)]
    assert len(found) == 1, [(f.type, f.ip) for f in fes]
    return found[0]


def endpoint_shares(hop: Hop) -> dict[str, float]:
    """Endpoint address -> effective share, for every endpoint a hop leads to."""
    return {leaf.endpoint.address: round(leaf.share or 0, 4) for leaf in leaves(hop) if leaf.endpoint}


__all__ = ["endpoint_shares", "frontend", "leaves"]
