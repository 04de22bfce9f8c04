"""Helpers for the --collect tests: run svctrace against a simulated cluster, and what a run must leave behind."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from svctrace.cli.app import app
from tests.integration.cluster import SimCluster

COLLECTOR_LABEL = "app.kubernetes.io/name=svctrace-collector"


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def svctrace(cluster: SimCluster, kubeconfig: Path, *args: str) -> Ran:
    """Run svctrace in this process against the simulated cluster (its API server and kubelets run here too)."""
    result = CliRunner().invoke(app, [*args, "--kubeconfig", str(kubeconfig)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def kubeconfig(cluster: SimCluster, tmp_path: Path, namespace: str = "default") -> Path:
    return cluster.write_kubeconfig(tmp_path / f"kubeconfig-{namespace}", namespace=namespace)


def collector_pods(cluster: SimCluster) -> list[str]:
    """Collector pods the API still holds, in any namespace."""
    assert cluster.server is not None
    with cluster.server._lock:
        pods = [o for (plural, _, _), o in cluster.server._store.items() if plural == "pods"]
    return sorted(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods
                  if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == "svctrace-collector")


def non_gets(cluster: SimCluster) -> list[tuple[str, str]]:
    """(method, path) of every request that was not a GET, in order."""
    assert cluster.server is not None
    return [(r.method, r.path) for r in cluster.server.writes()]


def without_source(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("warnings", "missing")}
