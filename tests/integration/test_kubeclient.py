"""svctrace.collectors.kubeclient: a live read imports the parts of the kubernetes client it uses, not its
700 generated modules, and the package still reads whole to any code that imports it afterwards.

Each case runs in a fresh interpreter: which modules an import loads can only be seen there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.harness.apiserver import FakeApiServer, load_manifests

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "svctrace" / "demo" / "tutorial"


def _run(code: str, *args: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


LIVE_READ = """
import json, sys
from svctrace.collectors.kube import KubeCollector
with KubeCollector(kubeconfig=sys.argv[1], environ={}) as kube:
    got = kube.collect_service("default", "my-nginx")
print(json.dumps({"pods": len(got.objects.pods),
                  "modules": sorted(m for m in sys.modules if m.startswith("kubernetes"))}))
"""


def test_a_live_read_imports_no_generated_model(tmp_path: Path) -> None:
    manifests = sorted((DEMO / "api").glob("*.json"))
    with FakeApiServer(load_manifests(manifests)) as srv:
        kubeconfig = tmp_path / "kubeconfig"
        srv.write_kubeconfig(kubeconfig, namespace="default")
        got = _run(LIVE_READ, str(kubeconfig))
    assert got["pods"] == 2  # the read really ran
    modules = set(got["modules"])  # type: ignore[call-overload]
    assert {"kubernetes.client.api_client", "kubernetes.client.api.core_v1_api", "kubernetes.config.kube_config"} \
        <= modules
    assert not [m for m in modules if m.startswith("kubernetes.client.models.")]
    assert not [m for m in modules if m.startswith(("kubernetes.watch", "kubernetes.dynamic", "kubernetes.utils"))]
    assert len(modules) < 40  # of the package's ~800


WHOLE_AFTER = """
import json, sys
from svctrace.collectors.kubeclient import client
lean = client()
import kubernetes
from kubernetes import client as k8s_client, config, watch
from kubernetes.client import V1Pod
import kubernetes.client.models as models
print(json.dumps({
    "same": k8s_client is lean and kubernetes.client is lean,
    "version": kubernetes.__version__,
    "pod": V1Pod is models.V1Pod and V1Pod.__module__ == "kubernetes.client.models.v1_pod",
    "api": lean.CoreV1Api is kubernetes.client.api.CoreV1Api,
    "config": callable(config.load_kube_config) and callable(watch.Watch),
    "missing": hasattr(lean, "NoSuchThing"),
}))
"""


def test_the_package_reads_whole_to_whoever_imports_it_afterwards() -> None:
    got = _run(WHOLE_AFTER)
    assert got.pop("version")
    assert got == {"same": True, "pod": True, "api": True, "config": True, "missing": False}


IMPORTED_BEFORE = """
import json, sys
import kubernetes
whole = kubernetes.client
from svctrace.collectors.kubeclient import client
print(json.dumps({"same": client() is whole, "models": "kubernetes.client.models.v1_pod" in sys.modules}))
"""


def test_a_package_imported_before_is_used_as_it_is() -> None:
    assert _run(IMPORTED_BEFORE) == {"same": True, "models": True}


LAID_OUT_OTHERWISE = """
import json, sys
from svctrace.collectors import kubeclient
kubeclient._PARTS["CoreV1Api"] = "kubernetes.client.api.no_such_module"  # a client without a module it expects
pkg = kubeclient.client()
import kubernetes
print(json.dumps({"whole": pkg is kubernetes.client and "kubernetes.client.models.v1_pod" in sys.modules,
                  "api": pkg.CoreV1Api.__module__, "pod": pkg.V1Pod.__name__}))
"""


def test_a_client_laid_out_otherwise_is_imported_whole() -> None:
    assert _run(LAID_OUT_OTHERWISE) == {"whole": True, "api": "kubernetes.client.api.core_v1_api", "pod": "V1Pod"}
