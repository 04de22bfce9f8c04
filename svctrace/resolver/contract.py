"""What every proxy mode's resolver implements (resolver/iptables.py, ipvs.py, nftables.py), and the registry.

A mode is one module that provides a ``ModeResolver``; the mode-neutral work (which endpoints kube-proxy
programs, shares, DNS, explanations, frontends the dataplane does not show) is in resolver/common.py and
resolver/__init__.py, written once. tests/unit/test_mode_contract.py checks that every ProxyMode has one.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

from svctrace.model.graph import EndpointInfo, Frontend, StaleChain
from svctrace.model.k8s import Service, ServicePort
from svctrace.model.mode import ProxyMode
from svctrace.model.snapshot import Snapshot
from svctrace.record import record

# What resolving one Service port in one IP family gives: its frontends, the endpoints seen (in the API
# and in the dataplane), and the chains the walk reached (for stale-chain detection).
PortResult = tuple[list[Frontend], tuple[EndpointInfo, ...], set[str]]


@record
class RuleService:
    """One Service port as a node's rules show it: what a node-only snapshot knows of a Service."""

    namespace: str  # "" when the rules do not name it
    name: str
    port_name: str
    protocol: str  # TCP | UDP | SCTP
    port: int | None  # the Service port (a ClusterIP's destination port); None when only a NodePort shows
    key: str | None  # what the mode finds the port's chains by (iptables: the hash suffix); None: no chain
    identity: str | None  # what the rules call it ("default/nginx:"), None when they do not say
    how: str  # how the identity was found, in words
    cluster_ips: tuple[str, ...] = ()
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    node_port: int | None = None
    local_policy: bool = False  # the rules treat external traffic with policy Local
    entry: bool = True  # a dispatch rule leads to it; False: only its own chains show it (no address, or its own)
    notes: tuple[str, ...] = ()

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.cluster_ips + self.external_ips + self.load_balancer_ips


@runtime_checkable
class ModeResolver(Protocol):
    """One proxy mode, as the resolver reads it."""

    mode: ProxyMode
    files: frozenset[str]  # the node/ files this mode reads (what "not collected" is worth saying)

    def gap(self, snapshot: Snapshot, family: int) -> str | None:
        """Why this mode's dataplane for ``family`` is not in the snapshot; None when it is."""

    def resolve_port(self, snapshot: Snapshot, svc: Service, sp: ServicePort, family: int) -> PortResult:
        """Every frontend of one Service port in one family, followed through the dataplane."""

    def stale_chains(self, snapshot: Snapshot, svc: Service, reached: set[str]) -> tuple[StaleChain, ...]:
        """Chains (or map elements) that name this Service but that its current ports do not reach."""

    def orphans(self, snapshot: Snapshot) -> tuple[StaleChain, ...]:
        """Service chains no Service in the snapshot owns any more."""

    def not_programmed(self, frontend: Frontend) -> str:
        """What the dataplane lacks for a frontend that is not programmed, in this mode's words."""

    def services_in_rules(self, snapshot: Snapshot) -> tuple[RuleService, ...]:
        """The Service ports this mode's rules show, named by their comments or chain names where they can be."""


REGISTRY: dict[ProxyMode, ModeResolver] = {}


def register(resolver: ModeResolver) -> ModeResolver:
    REGISTRY[resolver.mode] = resolver
    return resolver


def for_mode(mode: ProxyMode | str | None) -> ModeResolver | None:
    """The resolver of a mode (a ProxyMode or its name); None for an unknown mode.

    A mode's module (svctrace/resolver/<mode>.py) is imported the first time it is asked for, so an
    answer in one mode does not pay for loading the others."""
    if mode is None:
        return None
    parsed = mode if isinstance(mode, ProxyMode) else ProxyMode.parse(mode)
    if parsed is None:
        return None
    if parsed not in REGISTRY:
        importlib.import_module(f"svctrace.resolver.{parsed.value}")  # registers itself
    return REGISTRY.get(parsed)


def every_mode() -> dict[ProxyMode, ModeResolver]:
    """Every mode's resolver (imports them all)."""
    for mode in ProxyMode:
        for_mode(mode)
    return dict(REGISTRY)
