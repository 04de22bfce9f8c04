"""Where a command's Snapshot comes from: a snapshot folder, a tarball, the demo, or the live cluster and node."""

from __future__ import annotations

from svctrace.collectors.live import LiveOptions, live_all, live_node, live_service
from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.model.snapshot import Snapshot


def service_snapshot(spec: str | None, live: LiveOptions, namespace: str | None, name: str) -> tuple[Snapshot, str]:
    """The Snapshot for one Service and the namespace it was looked up in."""
    if spec is not None:
        return load_snapshot(spec), namespace or "default"
    collection = live_service(live, namespace, name)
    return collection.snapshot, namespace or collection.api.target.namespace


def node_snapshot(spec: str | None, live: LiveOptions, *, with_api_namespace: str | None = None,
                  with_api: bool = False) -> Snapshot:
    """A Snapshot for node-level commands (trace): the node's rules, and the API objects only when asked."""
    if spec is not None:
        return load_snapshot(spec)
    if with_api:
        return live_all(live, with_api_namespace).snapshot
    return live_node(live)
