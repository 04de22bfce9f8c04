"""Where a command's Snapshot comes from: decide between a snapshot (``--from``) and the live cluster and node.

The cli builds one :class:`Source` from its flags and asks for what a command needs; this module picks the
collector and works out the namespace a name without one is looked up in, the one way kubectl does it:
``-n``, else the kubeconfig context's namespace (live), else ``default``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from svctrace.collectors.live import LiveCollection, LiveOptions, live_all, live_node, live_service
from svctrace.model.snapshot import Snapshot

DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True, slots=True)
class Source:
    """A snapshot to replay (a folder, a tarball, ``demo`` or ``demo:MODE``), or else the live cluster and node."""

    snapshot: str | None = None
    live: LiveOptions = field(default_factory=LiveOptions)

    @property
    def is_live(self) -> bool:
        return self.snapshot is None


@dataclass(frozen=True, slots=True)
class Loaded:
    """A command's Snapshot, the namespace names without one belong to, and the raw live reads (``capture``)."""

    snapshot: Snapshot
    namespace: str  # -n, else the kubeconfig context's (live), else "default"
    collection: LiveCollection | None = None


def load_service(source: Source, namespace: str | None, name: str) -> Loaded:
    """What one Service's answer needs (``svc``): live, only that Service's objects and this node's rules."""
    if source.snapshot is not None:
        return _replayed(source.snapshot, namespace)
    collection = live_service(source.live, namespace, name)
    return Loaded(collection.snapshot, namespace or collection.api.target.namespace, collection)


def load_namespace(source: Source, namespace: str | None, *, scope: str | None = None,
                   every_namespace: bool = False) -> Loaded:
    """The Services of ``scope`` (default: ``namespace``, the ``-n`` given) and this node's rules
    (``why-unreachable``, ``audit``, ``capture``). Live, every namespace is read with ``every_namespace`` or when
    neither names one; a snapshot holds what it holds."""
    if source.snapshot is not None:
        return _replayed(source.snapshot, namespace)
    collection = live_all(source.live, None if every_namespace else (scope or namespace))
    return Loaded(collection.snapshot, namespace or collection.api.target.namespace, collection)


def load_node(source: Source, namespace: str | None, *, with_api: bool, scope: str | None = None) -> Loaded:
    """This node's rules (``trace``), with the API objects of ``scope`` (default: ``namespace``) only when
    ``with_api``; without them no kubeconfig is read."""
    if source.snapshot is not None:
        return _replayed(source.snapshot, namespace)
    if with_api:
        return load_namespace(source, namespace, scope=scope)
    return Loaded(live_node(source.live), namespace or DEFAULT_NAMESPACE)


def _replayed(spec: str, namespace: str | None) -> Loaded:
    from svctrace.collectors.snapshot_dir import load_snapshot

    return Loaded(load_snapshot(spec), namespace or DEFAULT_NAMESPACE)
