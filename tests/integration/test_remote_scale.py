"""A 10k-Service x 10-endpoint node (~430k nat lines, 46 MB) read through a collector pod arrives intact.

The rules are loaded into the node's namespace by the real iptables-nft-restore; the collector pod runs
kube-proxy's image and its read comes back over the exec stream. The node/ file svctrace builds from it
must be exactly what iptables-nft-save prints on the node (its date comments aside), and parse to the same
rules.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from svctrace.collectors.kube import KubeCollector
from svctrace.collectors.live import CollectOptions
from svctrace.collectors.remote import RemoteCollector
from svctrace.model.snapshot import NodeFile
from svctrace.parsers import iptables_save
from tests.integration.cluster import NodeSpec, SimCluster, kube_proxy_order
from tests.integration.netns import nfacct_counters
from tests.integration.remote import collector_pods, kubeconfig

pytestmark = pytest.mark.netns


def _without_comments(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))


def test_a_10k_service_node_arrives_intact(sim_cluster_factory: Callable[..., SimCluster], tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from gen_iptables import generate  # type: ignore[import-not-found]

    cluster = sim_cluster_factory([NodeSpec("node-a", kube_proxy=False)], families=(4,))
    node = cluster.node("node-a")
    rules = kube_proxy_order(generate(10_000, 10))
    for counter in nfacct_counters(rules):
        node.netns.ensure_nfacct(counter)
    node.run("iptables-nft-restore", input=rules, timeout=600)  # whole tables: --noflush takes minutes here
    truth = _without_comments(node.run("iptables-nft-save").stdout)
    assert truth.count("\n") > 430_000

    with KubeCollector(str(kubeconfig(cluster, tmp_path))) as kube, \
            RemoteCollector(kube, CollectOptions()) as pods:
        start = time.monotonic()
        read = pods.read("node-a")
        seconds = time.monotonic() - start
    assert read.input is not None
    got = read.input.files[NodeFile.IPTABLES]
    assert hashlib.sha256(_without_comments(got).encode()).hexdigest() == hashlib.sha256(truth.encode()).hexdigest()
    assert read.input.where[NodeFile.IPTABLES] == "iptables-nft-save"
    dump = iptables_save.parse(got, "remote", eager=False)
    assert dump.chain("nat", "KUBE-SERVICES") is not None
    assert len(dump.chain("nat", "KUBE-SERVICES").rules) >= 10_000  # type: ignore[union-attr]
    assert collector_pods(cluster) == []
    print(f"\n10k Services x 10 through a collector pod: {read.bytes / 2**20:.1f} MiB read in {seconds:.1f} s "
          f"(pod start, exec, transfer), {truth.count(chr(10))} lines intact")
