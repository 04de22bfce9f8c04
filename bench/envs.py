"""The live side of the benchmarks: a node's rules loaded in a network namespace, the API served in the background.

A :class:`NodeEnv` is one network namespace (named ``svct-<random>``, removed on close, also after a
failure: tests/integration/netns.py's NetnsNode) holding kube-proxy's rules of one mode for a generated
cluster, loaded the way a node starts (kube-proxy's chain order). ``svctrace --netns NAME`` reads it, and
the floors (``iptables-nft-save -t nat`` ...) run in it.

An :class:`ApiEnv` is bench/fake_api.py in a background process serving the cluster's api/ folder, with a
kubeconfig that points at it.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gen_cluster  # noqa: E402


class NodeEnv:
    """kube-proxy's rules for ``mode`` (iptables-nft, iptables-legacy, nftables, ipvs) of a generated cluster,
    loaded in a fresh network namespace."""

    def __init__(self, cluster: Path, mode: str) -> None:
        self.cluster = cluster
        self.mode = mode
        info = json.loads((cluster / "info.json").read_text())
        self.services, self.endpoints = int(info["services"]), int(info["endpoints"])
        self.node: Any = None
        self.load_seconds = 0.0

    @property
    def name(self) -> str:
        assert self.node is not None, "NodeEnv not opened"
        return str(self.node.name)

    def __enter__(self) -> NodeEnv:
        model = gen_cluster.build_cluster(self.services, self.endpoints)
        self.node = gen_cluster.netns_node(model, gen_cluster.BACKEND_OF[self.mode])
        self.node.open()
        t0 = time.perf_counter()
        try:
            if self.mode == "nftables":
                gen_cluster.load_nftables(self.node, (self.cluster / "kube-proxy" / "kube-proxy.nft").read_text())
            elif self.mode == "ipvs":
                load_ipvs(self.node, self.cluster / "ipvs" / "node")
            else:
                gen_cluster.load_iptables(self.node, model)
        except BaseException:
            self.node.close()
            raise
        self.load_seconds = time.perf_counter() - t0
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.node is not None:
            self.node.close()
            self.node = None

    def exec_argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]


def ipvs_unavailable_reason() -> str | None:
    """Why IPVS rules cannot be loaded here (None when they can)."""
    probe = subprocess.run(["sh", "-c", "ip netns add svct-ipvsprobe && ip netns exec svct-ipvsprobe ipvsadm -Ln; "
                            "r=$?; ip netns del svct-ipvsprobe; exit $r"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        said = (probe.stderr.strip() or probe.stdout.strip()).splitlines()
        return "this kernel has no IPVS" + (f" ({said[0]})" if said else "")
    return None


def load_ipvs(node: Any, files: Path) -> None:
    """IPVS mode's ipsets, virtual servers and iptables rules (needs a kernel with IPVS)."""
    node.run("ipset", "restore", input=(files / "ipset.txt").read_text(), timeout=1800)
    node.run("ipvsadm", "-R", input=(files / "ipvsadm.txt").read_text(), timeout=1800)
    node.load_rules((files / "iptables-save.txt").read_text())


class ApiEnv:
    """bench/fake_api.py serving ``api`` from a background process; ``kubeconfig`` reaches it."""

    def __init__(self, api: Path, *, start_timeout: float = 900.0) -> None:
        self.api = api
        self.start_timeout = start_timeout
        self._tmp = Path(tempfile.mkdtemp(prefix="svctrace-bench-api-"))
        self.kubeconfig = self._tmp / "kubeconfig"
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None
        self.start_seconds = 0.0

    def __enter__(self) -> ApiEnv:
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, str(HERE / "fake_api.py"), "--api", str(self.api),
                                      "--kubeconfig", str(self.kubeconfig)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], self.start_timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("ready "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the fake API server did not start: {line.strip() or 'no answer'}")
        self.url = line.split()[1]
        self.start_seconds = time.perf_counter() - t0
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            if self.proc.stdin:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None
        for f in self._tmp.iterdir():
            f.unlink()
        os.rmdir(self._tmp)


# What a client pays just to page through every object the fake server holds (svctrace's page size).
API_LIST = r"""
import json, sys, urllib.request, urllib.parse, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
server, token = cfg["clusters"][0]["cluster"]["server"], cfg["users"][0]["user"]["token"]
n = 0
for path in ("/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices", "/api/v1/pods", "/api/v1/nodes"):
    token_ = ""
    while True:
        q = "?limit=500" + ("&continue=" + urllib.parse.quote(token_) if token_ else "")
        req = urllib.request.Request(server + path + q, headers={"Authorization": "Bearer " + token})
        doc = json.load(urllib.request.urlopen(req))
        n += len(doc["items"])
        token_ = doc["metadata"].get("continue")
        if not token_:
            break
print(n)
"""


def api_list_argv(python: str, kubeconfig: Path) -> list[str]:
    return [python, "-c", API_LIST, str(kubeconfig)]
