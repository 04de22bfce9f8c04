"""Fixtures for dataplane tests in network namespaces (netns.py) and simulated clusters (cluster.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pytest

from tests.integration.cluster import NodeSpec, SimCluster, three_nodes
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


@pytest.fixture
def sim_cluster_factory() -> Iterator[Callable[..., SimCluster]]:
    """Make opened SimClusters: ``make(three_nodes(), mode="nftables", kubelet_options={...})``.

    Skips (or, with SVCTRACE_REQUIRE_NETNS=1, fails) when the machine cannot run network namespaces.
    After the test every cluster is closed; any namespace, container process or harness thread left
    behind, or an error inside a kubelet worker, fails the test in teardown.
    """
    clusters: list[SimCluster] = []

    def make(nodes: Sequence[NodeSpec] | int | None = None, **kwargs: Any) -> SimCluster:
        cluster = SimCluster(three_nodes() if nodes is None else nodes, **kwargs)
        clusters.append(cluster)
        return cluster.open()

    try:
        yield make
    finally:
        for cluster in reversed(clusters):
            cluster.close()
    left = [item for cluster in clusters for item in cluster.leftovers()]
    errors = [e for cluster in clusters if cluster.kubelet is not None for e in cluster.kubelet.errors]
    assert not left, f"left behind by the simulated cluster: {left}"
    assert not errors, f"errors inside the stand-in kubelet: {errors}"


@pytest.fixture
def sim_cluster(sim_cluster_factory: Callable[..., SimCluster]) -> SimCluster:
    """Issue 12's 3-node cluster in iptables mode: node-a healthy, node-b stale, node-c on iptables-legacy."""
    return sim_cluster_factory(three_nodes(), mode="iptables")
