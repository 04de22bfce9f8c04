"""Small helpers for tests that drive the fake API with the real ``kubernetes`` client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client, config

T = TypeVar("T")


def api_client(kubeconfig: str | Path) -> Any:
    """An ApiClient from a kubeconfig file, with urllib3's retries off (a fault must reach the test)."""
    cfg = client.Configuration()
    config.load_kube_config(str(kubeconfig), client_configuration=cfg, persist_config=False)
    cfg.retries = False
    return client.ApiClient(cfg)


def raw(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The JSON document the server sent (not the client's model of it)."""
    resp = fn(*args, _preload_content=False, **kwargs)
    try:
        return json.loads(resp.data)
    finally:
        resp.release_conn()


def status_of(exc: Any) -> dict[str, Any]:
    """The Status body of an ApiException."""
    body: dict[str, Any] = json.loads(exc.body)
    return body


def wait_for(check: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.05,
             what: str = "condition") -> T:
    """Poll until ``check`` returns something other than None/False; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def collector_pod(name: str, node: str, command: list[str], *, image: str = "registry.k8s.io/kube-proxy:v1.30.2",
                  generate: bool = False, **spec: Any) -> dict[str, Any]:
    """A pod shaped like issue 12's collector: pinned, hostNetwork, tolerating everything, no token."""
    meta: dict[str, Any] = {"labels": {"app.kubernetes.io/name": "svctrace-collector", "svctrace.io/run": "t1"}}
    meta["generateName" if generate else "name"] = name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "hostNetwork": True, "restartPolicy": "Never",
                     "automountServiceAccountToken": False, "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "collect", "image": image, "command": command,
                                     "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"],
                                                                          "drop": ["ALL"]},
                                                         "readOnlyRootFilesystem": True}}],
                     **spec}}
