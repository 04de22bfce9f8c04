"""Where a command's Snapshot comes from: a snapshot folder, a tarball, the demo, or (later) the live node."""

from __future__ import annotations

from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.errors import UsageError
from svctrace.model.snapshot import Snapshot

LIVE_HINT = ("use --from SNAPSHOT (see docs/snapshot.md for the one-liner that makes one on a node) "
             "or try `svctrace demo`")


def snapshot_from(spec: str | None) -> Snapshot:
    """The Snapshot a command analyses."""
    if spec is None:
        raise UsageError("live collection from the cluster and this node is not available in this version",
                         LIVE_HINT)
    return load_snapshot(spec)
