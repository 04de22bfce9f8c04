"""The live API collector: finds the cluster like kubectl does and reads what one Service depends on.

Only this module imports ``kubernetes``. It returns the objects both as the model (through
``svctrace.parsers.k8s.parse_objects``) and as the raw JSON the server sent, which ``capture``
writes to ``api/`` so a replayed snapshot parses exactly what a live run parsed.

Responses are read raw (``_preload_content=False``) rather than through the client's models: the
models drop fields they do not know (newer API fields), refuse some objects the server does send,
and cost far more time than ``json.loads`` on large lists. The dicts are the server's own camelCase
JSON, the same shape ``kubectl get -o json`` writes.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import urllib3
import yaml
from kubernetes import client as k8s_client
from kubernetes.config import incluster_config, kube_config
from kubernetes.config.config_exception import ConfigException

from svctrace import __version__
from svctrace.errors import (
    ApiUnreachableError,
    AuthError,
    CollectionError,
    ForbiddenError,
    InputError,
    KubeconfigError,
    NotFoundError,
)
from svctrace.parsers.k8s import ApiObjects, parse_objects

SERVICEACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_TIMEOUT = 5.0
PAGE_SIZE = 500
# Up to this many Nodes are fetched one GET each; beyond it one LIST is cheaper and keeps the
# number of requests independent of how many nodes a Service's endpoints are spread over.
MAX_NODE_GETS = 8
DNS_CONFIGMAP = ("kube-system", "coredns")
PROXY_CONFIGMAP = ("kube-system", "kube-proxy")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Doc = dict[str, Any]

# The config loaders are untyped; naming them as Any keeps mypy strict everywhere else.
_KubeConfigMerger: Any = kube_config.KubeConfigMerger
_KubeConfigLoader: Any = kube_config.KubeConfigLoader
_InClusterConfigLoader: Any = incluster_config.InClusterConfigLoader

_NEXT_STEP_SOURCES = "pass --kubeconfig PATH, set KUBECONFIG, or analyse a capture with --from SNAPSHOT"


@dataclass(frozen=True, slots=True)
class KubeTarget:
    """Which API server svctrace talks to and how it was found."""

    server: str
    namespace: str  # the default namespace: the context's, the pod's, else "default"
    context: str | None  # None in-cluster
    origin: str  # "kubeconfig /root/.kube/config", "KUBECONFIG=a:b", "in-cluster service account ..."


@dataclass(frozen=True, slots=True)
class ApiCollection:
    """What one collection read: the model, the raw documents, and what is missing and why."""

    objects: ApiObjects
    # resource plural ("services", "endpointslices", "endpoints", "pods", "nodes", "configmaps",
    # "networkpolicies") -> the objects as the server sent them, with kind/apiVersion filled in
    raw: Mapping[str, tuple[Mapping[str, Any], ...]]
    target: KubeTarget
    warnings: tuple[str, ...] = ()  # collection problems; parse problems are in objects.warnings
    missing: tuple[str, ...] = ()  # inputs that could not be read, in the user's words
    requests: int = 0  # API requests this collection made, errors included

    def list_documents(self) -> dict[str, Doc]:
        """One ``kind: List`` document per resource, ready to write as ``api/<resource>.json``."""
        return {res: {"apiVersion": "v1", "kind": "List", "items": [dict(i) for i in items]}
                for res, items in self.raw.items()}


@dataclass(frozen=True, slots=True)
class _Op:
    """One API request, described for error messages and RBAC hints."""

    verb: str  # get | list
    resource: str  # plural
    group: str = ""
    namespace: str | None = None  # None: cluster scope or all namespaces
    name: str | None = None

    @property
    def cluster_scoped(self) -> bool:
        return self.resource in ("nodes", "namespaces")

    def describe(self) -> str:
        what = f'{self.resource} "{self.name}"' if self.name else self.resource
        if self.group:
            what = f"{what} ({self.group})"
        if self.namespace is not None:
            return f'{self.verb} {what} in namespace "{self.namespace}"'
        return f"{self.verb} {what}" + ("" if self.cluster_scoped else " in all namespaces")

    def rule(self) -> str:
        kind = "Role" if self.namespace is not None else "ClusterRole"
        return (f'a {kind} rule: apiGroups: ["{self.group}"], resources: ["{self.resource}"], '
                f'verbs: ["{self.verb}"]')


class _Failure(Exception):
    """An API answer other than 2xx, kept until the caller decides whether it is fatal."""

    def __init__(self, op: _Op, status: int, body: Mapping[str, Any]) -> None:
        super().__init__(f"{status} {op.describe()}")
        self.op = op
        self.status = status
        self.reason = str(body.get("reason") or "")
        self.message = str(body.get("message") or "")
        self.body = body


# --- finding the cluster ---------------------------------------------------------------------------------

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


# --- the collector ---------------------------------------------------------------------------------------

class KubeCollector:
    """Reads Services and what they depend on from a live API server, with a bounded number of requests."""

    def __init__(
        self,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        namespace: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        environ: Mapping[str, str] | None = None,
        home: Path | None = None,
        serviceaccount_dir: Path = SERVICEACCOUNT_DIR,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._args = (kubeconfig, context, namespace)
        self._env = environ
        self._home = home
        self._sa_dir = serviceaccount_dir
        self.timeout = timeout
        self._target: KubeTarget | None = None
        self._api: Any = None
        self.requests = 0  # every request sent, failures included

    # -- lifecycle --

    def _connect(self) -> tuple[Any, KubeTarget]:
        if self._api is None or self._target is None:
            kubeconfig, context, namespace = self._args
            configuration, target = load_client_configuration(
                kubeconfig, context, namespace, environ=self._env, home=self._home,
                serviceaccount_dir=self._sa_dir)
            # fail fast: urllib3 would otherwise retry (and log) three times before giving up
            configuration.retries = False
            api = k8s_client.ApiClient(configuration)
            api.user_agent = f"svctrace/{__version__} (kubernetes-python)"
            self._api, self._target = api, target
        return self._api, self._target

    @property
    def target(self) -> KubeTarget:
        """The resolved server, context and default namespace (resolving the kubeconfig if needed)."""
        return self._connect()[1]

    def close(self) -> None:
        """Release the connection pool."""
        if self._api is not None:
            self._api.close()
            self._api = None

    def __enter__(self) -> KubeCollector:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- requests --

    def _call(self, op: _Op, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Doc:
        """One request; API errors come back as _Failure, transport errors as svctrace errors."""
        target = self._connect()[1]
        self.requests += 1
        # (connect, read): the client before 36 ignores a float timeout (it takes only ints and pairs).
        kwargs.update(_request_timeout=(self.timeout, self.timeout), _preload_content=False)
        try:
            with warnings.catch_warnings():
                # insecure-skip-tls-verify is the user's explicit choice; kubectl does not warn either
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                resp = fn(*args, **kwargs)
                try:
                    data = resp.data
                finally:
                    resp.release_conn()
        except k8s_client.ApiException as exc:
            if not exc.status:  # the client reports TLS failures as status 0
                first = str(exc.reason or "").splitlines()
                detail = first[-1] if first else "TLS failure"
                raise ApiUnreachableError(
                    f"TLS with the API server at {target.server} failed: {detail}",
                    "check the cluster's certificate-authority in the kubeconfig (kubectl config view)",
                ) from None
            failure = _Failure(op, int(exc.status), _status_body(exc.body))
            self._raise_common(failure, target)
            raise failure from None
        except urllib3.exceptions.HTTPError as exc:
            raise ApiUnreachableError(
                f"cannot reach the API server at {target.server}: {_transport_reason(exc, self.timeout)} "
                f"(timeout {self.timeout:g}s)",
                'check the VPN or network route to the cluster and run "kubectl cluster-info"; '
                "or analyse a capture with --from SNAPSHOT",
            ) from None
        try:
            return cast(Doc, json.loads(data))
        except ValueError:
            raise CollectionError(f"the API server at {target.server} sent something that is not JSON "
                                  f"to {op.describe()}", "check the server URL in the kubeconfig") from None

    def _raise_common(self, failure: _Failure, target: KubeTarget) -> None:
        """Errors that are fatal whatever was asked: bad credentials, a broken server."""
        if failure.status == 401:
            raise AuthError(
                f"the API server at {target.server} rejected the credentials (401 Unauthorized)",
                'they may have expired: log in again, then check with "kubectl get --raw /version"',
            )
        if failure.status >= 500 or failure.status in (400, 405, 406, 415, 429):
            msg = failure.message or failure.reason or "no message"
            raise CollectionError(f"the API server at {target.server} answered {failure.status} to "
                                  f"{failure.op.describe()}: {msg}",
                                  "retry in a moment; if it persists, check the control plane's health")

    def _forbidden(self, failure: _Failure) -> ForbiddenError:
        user = re.search(r'User "([^"]*)"', failure.message)
        who = f" for {user.group(1)}" if user else ""
        op = failure.op
        return ForbiddenError(
            f"not allowed to {op.describe()}{who} (403 Forbidden); svctrace cannot answer without it",
            f"ask for {op.rule()}",
            verb=op.verb, resource=op.resource, group=op.group, namespace=op.namespace,
        )

    def _list(self, op: _Op, fn: Callable[..., Any], *args: Any, label_selector: str | None = None,
              field_selector: str | None = None) -> list[Doc]:
        """Every item of a LIST, page by page, each stamped with the kind and apiVersion of its List."""
        items: list[Doc] = []
        token: str | None = None
        restarted = False
        while True:
            kwargs: dict[str, Any] = {"limit": PAGE_SIZE}
            if token:
                kwargs["_continue"] = token
            if label_selector:
                kwargs["label_selector"] = label_selector
            if field_selector:
                kwargs["field_selector"] = field_selector
            try:
                doc = self._call(op, fn, *args, **kwargs)
            except _Failure as failure:
                if failure.status == 410 and token and not restarted:
                    # the snapshot the pages came from was compacted away: start one consistent list again
                    items, token, restarted = [], None, True
                    continue
                raise
            kind = str(doc.get("kind") or "").removesuffix("List")
            api_version = str(doc.get("apiVersion") or "v1")
            for item in doc.get("items") or []:
                if isinstance(item, dict):
                    items.append({"apiVersion": api_version, "kind": kind, **item})
            token = (doc.get("metadata") or {}).get("continue") or None
            if not token:
                return items

    # -- public reads --

    def list_namespaces(self) -> list[str]:
        """Names of all namespaces (for shell completion)."""
        api, _ = self._connect()
        op = _Op("list", "namespaces")
        return sorted(str(o["metadata"]["name"]) for o in self._essential(
            lambda: self._list(op, k8s_client.CoreV1Api(api).list_namespace)))

    def list_service_names(self, namespace: str | None = None) -> list[str]:
        """Names of the Services in a namespace (for shell completion)."""
        api, target = self._connect()
        ns = namespace or target.namespace
        op = _Op("list", "services", namespace=ns)
        return sorted(str(o["metadata"]["name"]) for o in self._essential(
            lambda: self._list(op, k8s_client.CoreV1Api(api).list_namespaced_service, ns)))

    def _essential(self, read: Callable[[], list[Doc]]) -> list[Doc]:
        try:
            return read()
        except _Failure as failure:
            raise self._translate(failure) from None

    def _translate(self, failure: _Failure) -> CollectionError:
        if failure.status == 403:
            return self._forbidden(failure)
        return CollectionError(f"the API server answered {failure.status} to {failure.op.describe()}: "
                               f"{failure.message or failure.reason}",
                               "check the cluster's API with: kubectl api-resources")

    def collect_service(self, namespace: str | None, name: str, *,
                        node_name: str | None = None) -> ApiCollection:
        """One Service and what its dataplane depends on, in a fixed number of requests.

        GET the Service; LIST its EndpointSlices (or GET its v1 Endpoints where slices are not
        served); LIST its Pods by selector; GET the Nodes its endpoints (and ``node_name``) name;
        GET the CoreDNS ConfigMap. Pods, Nodes and the ConfigMap are optional: when refused, the
        answer is partial and says so in ``warnings``.
        """
        api, target = self._connect()
        start = self.requests
        ns = namespace or target.namespace
        core = k8s_client.CoreV1Api(api)
        partial = _Partial()
        raw: dict[str, list[Doc]] = {}

        svc_op = _Op("get", "services", namespace=ns, name=name)
        try:
            svc = self._call(svc_op, core.read_namespaced_service, name, ns)
        except _Failure as failure:
            if failure.status == 404:
                raise self._service_not_found(core, ns, name) from None
            raise self._translate(failure) from None
        raw["services"] = [svc]
        spec = svc.get("spec") or {}
        external_name = spec.get("type") == "ExternalName"

        if not external_name:
            self._endpoints_for(api, ns, name, raw)

        selector = spec.get("selector") or {}
        if selector and not external_name:
            pod_op = _Op("list", "pods", namespace=ns)
            labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
            raw["pods"] = partial.read(
                pod_op, "pod details (readiness, restarts, container ports) are missing",
                lambda: self._list(pod_op, core.list_namespaced_pod, ns, label_selector=labels), self) or []

        wanted = _node_names(raw)
        if node_name:
            wanted.add(node_name)
        raw["nodes"] = self._nodes(core, sorted(wanted), partial)

        raw["configmaps"] = self._config_maps(core, [DNS_CONFIGMAP], partial)
        return self._result(raw, target, partial, self.requests - start)

    def collect_all(self, namespace: str | None = None) -> ApiCollection:
        """Every Service, EndpointSlice, Pod, Node and NetworkPolicy (one namespace or all), paged."""
        api, target = self._connect()
        start = self.requests
        core = k8s_client.CoreV1Api(api)
        net = k8s_client.NetworkingV1Api(api)
        disc = k8s_client.DiscoveryV1Api(api)
        partial = _Partial()
        raw: dict[str, list[Doc]] = {}

        def lister(resource: str, group: str, namespaced: Callable[..., Any],
                   everywhere: Callable[..., Any]) -> tuple[_Op, Callable[[], list[Doc]]]:
            op = _Op("list", resource, group, namespace)
            if namespace is None:
                return op, lambda: self._list(op, everywhere)
            return op, lambda: self._list(op, namespaced, namespace)

        op, read = lister("services", "", core.list_namespaced_service, core.list_service_for_all_namespaces)
        raw["services"] = self._essential(read)

        op, read = lister("endpointslices", "discovery.k8s.io", disc.list_namespaced_endpoint_slice,
                          disc.list_endpoint_slice_for_all_namespaces)
        try:
            raw["endpointslices"] = read()
        except _Failure as failure:
            if failure.status != 404:
                raise self._translate(failure) from None
            partial.note("this cluster does not serve discovery.k8s.io/v1 EndpointSlices; "
                         "read the v1 Endpoints instead")
            op, read = lister("endpoints", "", core.list_namespaced_endpoints,
                              core.list_endpoints_for_all_namespaces)
            raw["endpoints"] = self._essential(read)

        op, read = lister("pods", "", core.list_namespaced_pod, core.list_pod_for_all_namespaces)
        raw["pods"] = partial.read(op, "pod details are missing", read, self) or []

        node_op = _Op("list", "nodes")
        raw["nodes"] = partial.read(node_op, "node addresses and zones are missing",
                                    lambda: self._list(node_op, core.list_node), self) or []

        op, read = lister("networkpolicies", "networking.k8s.io", net.list_namespaced_network_policy,
                          net.list_network_policy_for_all_namespaces)
        raw["networkpolicies"] = partial.read(op, "NetworkPolicies were not checked", read, self,
                                              tolerate_404=True) or []

        raw["configmaps"] = self._config_maps(core, [DNS_CONFIGMAP, PROXY_CONFIGMAP], partial)
        return self._result(raw, target, partial, self.requests - start)

    # -- pieces of a collection --

    def _endpoints_for(self, api: Any, ns: str, name: str, raw: dict[str, list[Doc]]) -> None:
        disc = k8s_client.DiscoveryV1Api(api)
        core = k8s_client.CoreV1Api(api)
        op = _Op("list", "endpointslices", "discovery.k8s.io", ns)
        try:
            raw["endpointslices"] = self._list(op, disc.list_namespaced_endpoint_slice, ns,
                                               label_selector=f"{SERVICE_NAME_LABEL}={name}")
            return
        except _Failure as failure:
            if failure.status != 404:
                raise self._translate(failure) from None
        # a LIST only 404s when the API group is not served: an old cluster, read v1 Endpoints
        ep_op = _Op("get", "endpoints", namespace=ns, name=name)
        try:
            raw["endpoints"] = [{"apiVersion": "v1", "kind": "Endpoints",
                                 **self._call(ep_op, core.read_namespaced_endpoints, name, ns)}]
        except _Failure as failure:
            if failure.status != 404:
                raise self._translate(failure) from None
            raw["endpoints"] = []  # no Endpoints object: the Service has no endpoints (yet)

    def _nodes(self, core: Any, names: Sequence[str], partial: _Partial) -> list[Doc]:
        if not names:
            return []
        missing_text = "node addresses and zones are missing"
        if len(names) > MAX_NODE_GETS:
            op = _Op("list", "nodes")
            found = partial.read(op, missing_text, lambda: self._list(op, core.list_node), self) or []
            return [n for n in found if n["metadata"]["name"] in set(names)]
        nodes: list[Doc] = []
        for node in names:
            op = _Op("get", "nodes", name=node)
            got = partial.get(op, missing_text, functools.partial(self._call, op, core.read_node, node),
                              self, not_found=f'node "{node}" named by an endpoint or --node does not exist')
            if got is not None:
                nodes.append({"apiVersion": "v1", "kind": "Node", **got})
        return nodes

    def _config_maps(self, core: Any, which: Iterable[tuple[str, str]], partial: _Partial) -> list[Doc]:
        out: list[Doc] = []
        for ns, cm in which:
            op = _Op("get", "configmaps", namespace=ns, name=cm)
            got = partial.get(op, f"{ns}/{cm} settings were not checked",
                              functools.partial(self._call, op, core.read_namespaced_config_map, cm, ns),
                              self, not_found=None)
            if got is not None:
                out.append({"apiVersion": "v1", "kind": "ConfigMap", **got})
        return out

    def _service_not_found(self, core: Any, ns: str, name: str) -> NotFoundError:
        """The not-found error, with close names here and the same name elsewhere (two extra LISTs)."""
        here: list[str] = []
        elsewhere: list[str] = []
        # suggestions are a courtesy: a refusal here must not hide the real answer
        with contextlib.suppress(_Failure):
            here = [o["metadata"]["name"] for o in
                    self._list(_Op("list", "services", namespace=ns), core.list_namespaced_service, ns)]
        with contextlib.suppress(_Failure):
            elsewhere = sorted(o["metadata"]["namespace"] for o in self._list(
                _Op("list", "services"), core.list_service_for_all_namespaces,
                field_selector=f"metadata.name={name}") if o["metadata"].get("namespace") != ns)
        close = difflib.get_close_matches(name, here, n=3, cutoff=0.6)
        hints: list[str] = []
        if close:
            hints.append("did you mean " + " or ".join(f'"{c}"' for c in close) + "?")
        if elsewhere:
            hints.append(f'a Service "{name}" exists in namespace ' + ", ".join(f'"{n}"' for n in elsewhere)
                         + f" (use -n {elsewhere[0]})")
        if not hints:
            hints.append(f"list the Services with: kubectl get services -n {ns}")
        return NotFoundError(f'Service "{name}" not found in namespace "{ns}"', " ".join(hints))

    def _result(self, raw: Mapping[str, list[Doc]], target: KubeTarget, partial: _Partial,
                requests: int) -> ApiCollection:
        docs = [d for items in raw.values() for d in items]
        objects = parse_objects(docs, f"api {target.server}")
        return ApiCollection(
            objects=objects,
            raw={k: tuple(v) for k, v in raw.items()},
            target=target,
            warnings=tuple(partial.warnings),
            missing=tuple(partial.missing),
            requests=requests,
        )


@dataclass
class _Partial:
    """Collects what optional reads could not get, so the answer says it is partial."""

    warnings: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.warnings.append(text)

    def read(self, op: _Op, consequence: str, fn: Callable[[], list[Doc]], collector: KubeCollector,
             *, tolerate_404: bool = False) -> list[Doc] | None:
        try:
            return fn()
        except _Failure as failure:
            self._refused(op, consequence, failure, collector, tolerate_404)
            return None

    def get(self, op: _Op, consequence: str, fn: Callable[[], Doc], collector: KubeCollector,
            *, not_found: str | None) -> Doc | None:
        try:
            return fn()
        except _Failure as failure:
            if failure.status == 404:
                if not_found:
                    self.warnings.append(not_found)
                else:
                    self.missing.append(f"{op.resource} {op.namespace}/{op.name} (not found)")
                return None
            self._refused(op, consequence, failure, collector, False)
            return None

    def _refused(self, op: _Op, consequence: str, failure: _Failure, collector: KubeCollector,
                 tolerate_404: bool) -> None:
        if failure.status == 404 and tolerate_404:
            self.missing.append(f"{op.resource} (not served by this cluster)")
            return
        if failure.status != 403:
            raise collector._translate(failure) from None
        self.missing.append(f"{op.describe()} (forbidden)")
        self.warnings.append(f"not allowed to {op.describe()} (403 Forbidden): {consequence}, so this "
                             f"answer is partial; to allow it, add {op.rule()}")


def _node_names(raw: Mapping[str, list[Doc]]) -> set[str]:
    names: set[str] = set()
    for sl in raw.get("endpointslices", []):
        for ep in sl.get("endpoints") or []:
            if ep.get("nodeName"):
                names.add(str(ep["nodeName"]))
    for eps in raw.get("endpoints", []):
        for subset in eps.get("subsets") or []:
            for addr in [*(subset.get("addresses") or []), *(subset.get("notReadyAddresses") or [])]:
                if addr.get("nodeName"):
                    names.add(str(addr["nodeName"]))
    return names


def _status_body(body: Any) -> Mapping[str, Any]:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        doc = json.loads(body) if isinstance(body, str) and body else {}
    except ValueError:
        return {"message": str(body).strip().splitlines()[0] if str(body).strip() else ""}
    return doc if isinstance(doc, dict) else {}


def _transport_reason(exc: Exception, timeout: float) -> str:
    inner = getattr(exc, "reason", None) or exc
    # NameResolutionError < NewConnectionError < ConnectTimeoutError in urllib3 2: test the narrow ones first
    if isinstance(inner, urllib3.exceptions.NameResolutionError):
        return "the host name does not resolve"
    if isinstance(inner, urllib3.exceptions.NewConnectionError):
        found = re.search(r"\[Errno -?\d+\] ([^')\]]+)", str(inner))
        return found.group(1).strip().lower() if found else "the connection failed"
    if isinstance(inner, (urllib3.exceptions.TimeoutError, TimeoutError)):
        return f"no answer within {timeout:g}s"
    if isinstance(inner, urllib3.exceptions.ProtocolError):
        return "the connection was closed without an answer"
    return type(inner).__name__
