"""Finding the cluster the way kubectl does: ``--kubeconfig``, ``KUBECONFIG``, ``~/.kube/config``, or the pod's
service account; and the client configuration that reaches it.

Only this module and svctrace.collectors.kube import ``kubernetes``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from svctrace.collectors.kubeclient import client
from svctrace.errors import InputError, KubeconfigError
from svctrace.record import record

k8s_client = client()
# After client(), which keeps these imports from importing the whole kubernetes package.
from kubernetes.config import incluster_config, kube_config  # noqa: E402
from kubernetes.config.config_exception import ConfigException  # noqa: E402

SERVICEACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# The config loaders are untyped; naming them as Any keeps mypy strict everywhere else.
_KubeConfigMerger: Any = kube_config.KubeConfigMerger
_KubeConfigLoader: Any = kube_config.KubeConfigLoader
_InClusterConfigLoader: Any = incluster_config.InClusterConfigLoader

_NEXT_STEP_SOURCES = "pass --kubeconfig PATH, set KUBECONFIG, or analyse a capture with --from SNAPSHOT"


@record
class KubeTarget:
    """Which API server svctrace talks to and how it was found."""

    server: str
    namespace: str  # the default namespace: the context's, the pod's, else "default"
    context: str | None  # None in-cluster
    origin: str  # "kubeconfig /root/.kube/config", "KUBECONFIG=a:b", "in-cluster service account ..."



def _read_kubeconfig(path: Path) -> Mapping[str, Any] | None:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {exc.strerror}", _NEXT_STEP_SOURCES) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise InputError(f"not a valid kubeconfig: {problem}", "fix the file or point --kubeconfig elsewhere",
                         path=str(path), line=mark.line + 1 if mark is not None else None) from None
    if doc is None:
        return None  # an empty file counts as an empty config, as kubectl treats it
    if not isinstance(doc, dict):
        raise InputError("not a valid kubeconfig: expected a mapping with clusters, users and contexts",
                         "fix the file or point --kubeconfig elsewhere", path=str(path))
    return doc


def _kubeconfig_files(kubeconfig: str | os.PathLike[str] | None, environ: Mapping[str, str],
                      home: Path) -> tuple[list[Path], str]:
    """The files kubectl would read, in precedence order, and how to name them in messages."""
    if kubeconfig is not None:
        path = Path(kubeconfig).expanduser()
        if not path.is_file():
            raise KubeconfigError(f"kubeconfig {path} does not exist",
                                  "check the --kubeconfig path, or omit it to use KUBECONFIG or "
                                  "~/.kube/config")
        return [path], f"kubeconfig {path}"
    env = environ.get("KUBECONFIG", "")
    if env:
        # like kubectl: missing files in the list are skipped, and ~/.kube/config is not consulted
        paths = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
        return [p for p in paths if p.is_file()], f"KUBECONFIG={env}"
    default = home / ".kube" / "config"
    return ([default] if default.is_file() else []), f"kubeconfig {default}"


def _in_cluster(environ: Mapping[str, str], serviceaccount_dir: Path) -> bool:
    return bool(environ.get("KUBERNETES_SERVICE_HOST") and environ.get("KUBERNETES_SERVICE_PORT")
                and (serviceaccount_dir / "token").is_file())


def load_client_configuration(
    kubeconfig: str | os.PathLike[str] | None = None,
    context: str | None = None,
    namespace: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
    serviceaccount_dir: Path = SERVICEACCOUNT_DIR,
) -> tuple[Any, KubeTarget]:
    """A ``kubernetes.client.Configuration`` and its target, resolved the way kubectl resolves them.

    ``--kubeconfig`` alone if given; else every file in ``KUBECONFIG`` merged (the first file to set
    a value wins); else ``~/.kube/config``; with no file at all, the pod's service account.
    """
    env = os.environ if environ is None else environ
    files, where = _kubeconfig_files(kubeconfig, env, Path.home() if home is None else home)
    configuration = k8s_client.Configuration()
    docs = [(p, d) for p in files if (d := _read_kubeconfig(p)) is not None]
    if not docs:
        if kubeconfig is None and context is None and _in_cluster(env, serviceaccount_dir):
            return _load_in_cluster(configuration, namespace, env, serviceaccount_dir)
        if kubeconfig is not None:
            looked = f"{where} is empty"
        elif where.startswith("KUBECONFIG"):
            looked = f"{where} names no existing file"
        else:
            looked = f"{where} is missing"
        raise KubeconfigError(f"no kubeconfig found: {looked}, and not running in a pod "
                              "(KUBERNETES_SERVICE_HOST unset)", _NEXT_STEP_SOURCES)

    merger = _KubeConfigMerger(os.pathsep.join(str(p) for p, _ in docs))
    merged = merger.config
    # KubeConfigMerger lets the last file's current-context win; kubectl lets the first one that sets it
    current = next((str(d["current-context"]) for _, d in docs if d.get("current-context")), "")
    merged.value["current-context"] = current
    # the merger wraps each entry in a ConfigNode that remembers its file (for relative cert paths)
    contexts = [str(getattr(c, "value", c).get("name")) for c in merged.value.get("contexts") or []]
    chosen = context or current
    if not chosen:
        raise KubeconfigError(f"{where} has no current-context",
                              f"pass --context NAME (one of: {', '.join(contexts) or 'none defined'}) "
                              "or run: kubectl config use-context NAME")
    if chosen not in contexts:
        raise KubeconfigError(f'context "{chosen}" not found in {where}',
                              f"pass --context with one of: {', '.join(contexts) or 'none defined'}")
    try:
        loader = _KubeConfigLoader(config_dict=merged, active_context=chosen, config_base_path=None)
        loader.load_and_set(configuration)
    except ConfigException as exc:
        detail = str(exc).splitlines()[0] if str(exc) else "incomplete"
        raise KubeconfigError(f'context "{chosen}" in {where} cannot be used: {detail}',
                              "check its cluster and user entries with: kubectl config view") from None
    ctx_ns = (loader.current_context.get("context") or {}).get("namespace")
    target = KubeTarget(server=str(configuration.host), namespace=namespace or ctx_ns or "default",
                        context=chosen, origin=where)
    return configuration, target


def _load_in_cluster(configuration: Any, namespace: str | None, environ: Mapping[str, str],
                     serviceaccount_dir: Path) -> tuple[Any, KubeTarget]:
    try:
        _InClusterConfigLoader(token_filename=str(serviceaccount_dir / "token"),
                              cert_filename=str(serviceaccount_dir / "ca.crt"),
                              environ=environ).load_and_set(configuration)
    except ConfigException as exc:
        raise KubeconfigError(f"in-cluster service account at {serviceaccount_dir} is unusable: {exc}",
                              _NEXT_STEP_SOURCES) from None
    pod_ns = environ.get("POD_NAMESPACE", "")
    ns_file = serviceaccount_dir / "namespace"
    if not pod_ns and ns_file.is_file():
        pod_ns = ns_file.read_text(encoding="utf-8").strip()
    target = KubeTarget(server=str(configuration.host), namespace=namespace or pod_ns or "default",
                        context=None, origin=f"in-cluster service account {serviceaccount_dir}")
    return configuration, target
