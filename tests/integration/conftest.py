"""Fixtures for dataplane tests in network namespaces (the harness itself is netns.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from tests.integration.netns import NetnsNode, require_netns


@pytest.fixture
def netns_factory() -> Iterator[Callable[..., NetnsNode]]:
    """Make opened NetnsNodes: ``make(backend="legacy", need=("nfacct",))``; all are removed afterwards.

    Skips (or, with SVCTRACE_REQUIRE_NETNS=1, fails) when the machine cannot run them. After the
    test, every namespace the nodes created must be gone, or the test errors in teardown.
    """
    nodes: list[NetnsNode] = []

    def make(*, need: Iterable[str] = (), **kwargs: Any) -> NetnsNode:
        require_netns(kwargs.get("backend", "nft"), need=need)
        node = NetnsNode(**kwargs)
        nodes.append(node)
        node.open()
        return node

    try:
        yield make
    finally:
        for node in reversed(nodes):
            node.close()
    leftovers = [ns for node in nodes for ns in node.leftovers()]
    assert not leftovers, f"network namespaces left behind: {leftovers}"


@pytest.fixture
def netns_node(netns_factory: Callable[..., NetnsNode]) -> NetnsNode:
    """One opened node (nft backend) with its external client; removed after the test."""
    return netns_factory()
