"""``audit --all-nodes --collect`` on a simulated cluster: wall time and peak RSS against the floor of reading the
nodes one after another.

    sudo python bench/bench_all_nodes.py                       # issue 12's: 20 nodes x 1,000 Services x 10
    sudo python bench/bench_all_nodes.py --nodes 5 --services 200 --stale 1

The cluster is tests/integration/cluster.py's SimCluster: each node a network namespace loaded with the rules
kube-proxy (iptables mode, nf_tables backend) writes for the API state (scaled_objects), the API a fake
kube-apiserver, the pods run by a stand-in kubelet in their node's namespace (kube-proxy's image's tools).
Loading the nodes takes about 6 s each; it is not measured.

* floor: ``iptables-nft-save`` run in each node's namespace, one node after another: the least any
  all-nodes read can cost (one process per node, no API, no parsing);
* svctrace: ``svctrace audit -A --all-nodes --collect -o json`` as its own process, wall time and its peak
  RSS (``wait4``). Target (issue 12): within 1.5x of the floor, under 300 MB.

``--stale K`` leaves K nodes with the previous API state's rules (one endpoint more), so their rule sets differ
and the audit checks them apart (the others share one rule set and are checked once).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.cluster import NodeSpec, SimCluster, scaled_objects  # noqa: E402


def _without_one_endpoint(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The API state after the first shop Service lost an endpoint (stale nodes keep it programmed)."""
    current = copy.deepcopy(objects)
    for obj in current:
        if obj["kind"] == "EndpointSlice" and obj["metadata"].get("namespace") == "shop":
            obj["endpoints"] = obj["endpoints"][:-1]
            break
    return current


def floor(cluster: SimCluster) -> float:
    """Seconds to run iptables-nft-save in every node's namespace, one after another."""
    start = time.perf_counter()
    for node in cluster.nodes.values():
        node.run("iptables-nft-save", timeout=300)
    return time.perf_counter() - start


def run_svctrace(kubeconfig: Path, parallel: int) -> tuple[float, float, int, dict[str, Any], float]:
    """(wall seconds, peak RSS MiB, exit status, the JSON answer, CPU seconds) of one all-nodes audit."""
    argv = [sys.executable, "-m", "svctrace", "audit", "-A", "--all-nodes", "--collect", "--parallel", str(parallel),
            "-o", "json", "--kubeconfig", str(kubeconfig)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=errors, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        errors.seek(0)
        text, err = out.read().decode(), errors.read().decode()
    if not text.strip():
        raise SystemExit(f"svctrace printed nothing (exit {proc.returncode}): {err}")
    return wall, usage.ru_maxrss / 1024, proc.returncode, json.loads(text), usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def simulated(nodes: int, services: int, endpoints: int, stale: int = 0,
              say: Callable[[str], None] = print) -> Iterator[tuple[SimCluster, Path, list[str]]]:
    """A simulated cluster of ``nodes`` nodes (the first ``stale`` with the previous state's rules), its
    kubeconfig and the node names; torn down on exit."""
    names = [f"node-{i:02d}" for i in range(nodes)]
    previous = scaled_objects(names, services, endpoints)
    objects = _without_one_endpoint(previous) if stale else previous
    specs = [NodeSpec(name, stale=i < stale) for i, name in enumerate(names)]
    t0 = time.perf_counter()
    with SimCluster(specs, mode="iptables", objects=objects, previous=previous, families=(4,)) as cluster, \
            tempfile.TemporaryDirectory() as tmp:
        say(f"cluster:  {nodes} nodes x {services} Services x {endpoints} endpoints ({stale} stale), loaded in "
            f"{time.perf_counter() - t0:.0f} s")
        yield cluster, cluster.write_kubeconfig(Path(tmp) / "kubeconfig", namespace="default"), names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--stale", type=int, default=0, help="nodes left with the previous state's rules")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each measurement (the best is reported)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the simulated nodes are network namespaces")
    with simulated(args.nodes, args.services, args.endpoints, args.stale) as (cluster, kubeconfig, names):
        lines = cluster.node(names[-1]).run("iptables-nft-save").stdout.count("\n")
        print(f"per node: {lines:,} iptables-save lines")
        floors = [floor(cluster) for _ in range(args.repeat)]
        runs = [run_svctrace(kubeconfig, args.parallel) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r[0])
        wall, rss, code, doc, cpu = best
        print(f"floor:    {min(floors):.2f} s  ({args.nodes} x iptables-nft-save, one after another; runs: "
              + ", ".join(f"{f:.2f}" for f in floors) + ")")
        print(f"svctrace: {wall:.2f} s  ({wall / min(floors):.2f}x the floor; runs: "
              + ", ".join(f"{r[0]:.2f}" for r in runs) + f"), peak RSS {max(r[1] for r in runs):.0f} MiB, "
              f"{cpu:.1f} s CPU, --parallel {args.parallel}")
        summary = doc["summary"]
        print(f"answer:   exit {code}; {summary['nodes']} nodes read, out of step: {summary['outOfStep'] or 'none'}, "
              f"failed: {summary['failed'] or 'none'}")
        expected = names[:args.stale]
        if summary["outOfStep"] != expected or summary["nodes"] != args.nodes:
            raise SystemExit(f"wrong answer: expected out of step {expected}")


if __name__ == "__main__":
    main()
