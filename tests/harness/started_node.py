"""A started node read that gives a fixed NodeInput: for tests of the API side, where the node is not under test."""

from __future__ import annotations

from svctrace.parsers.snapshot import NodeInput


class StartedNode:
    """What ``svctrace.collectors.live._start_node`` returns, reading nothing: ``finish`` gives ``node``."""

    def __init__(self, node: NodeInput) -> None:
        self.node = node

    def finish(self, node_name: str | None) -> NodeInput:
        return self.node

    def cancel(self) -> None:
        pass
