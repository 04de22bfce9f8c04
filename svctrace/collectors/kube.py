"""The live API collector: reads what one Service (or every Service) depends on, in a bounded number of requests.

Finding the cluster is svctrace.collectors.kubeconfig; sending a request within its deadline and reading
the answer as a stream is svctrace.collectors.kube_http. This module decides what to read, which reads
are required (exit 2, naming the request) and which optional (a warning and a partial answer: judged by
svctrace.collectors.kube_partial), and keeps the objects as the model and, for ``capture``, as the documents it
writes to ``api/`` (svctrace.parsers.k8s_fields). A big cluster's pods and EndpointSlices are listed by forked
children (svctrace.collectors.kube_spool).

Responses are read raw rather than through the client's models: the models drop fields they do not
know (newer API fields), refuse some objects the server does send, and cost far more time.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from svctrace import __version__
from svctrace.collectors import kube_spool
from svctrace.collectors.kube_http import (
    Ahead,
    BadAnswer,
    Deadline,
    Doc,
    NoAnswer,
    Op,
    ReadFailure,
    StatusFailure,
    Transport,
)
from svctrace.collectors.kube_http import (
    json_type as _json_type,
)
from svctrace.collectors.kube_partial import Partial, forbidden_error, slices_unavailable
from svctrace.collectors.kubeclient import client
from svctrace.collectors.kubeconfig import SERVICEACCOUNT_DIR, KubeTarget, load_client_configuration
from svctrace.errors import CollectionError, InputError, NotFoundError
from svctrace.parsers.json_stream import Streamed
from svctrace.parsers.k8s import Accumulator, ApiObjects, merge_objects, parse_objects
from svctrace.parsers.k8s_fields import read_fields
from svctrace.parsers.limits import MAX_LIST_PAGES
from svctrace.record import record

__all__ = ["DEFAULT_TIMEOUT", "MAX_NODE_GETS", "PAGE_SIZE", "ApiCollection", "KubeCollector", "KubeTarget",
           "load_client_configuration"]

k8s_client = client()
DEFAULT_TIMEOUT = 5.0
PAGE_SIZE = 500
# Up to this many Nodes are fetched one GET each; beyond it one LIST is cheaper and keeps the
# number of requests independent of how many nodes a Service's endpoints are spread over.
MAX_NODE_GETS = 8
DNS_CONFIGMAP = ("kube-system", "coredns")
PROXY_CONFIGMAP = ("kube-system", "kube-proxy")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# What each resource's objects are, for the documents written to api/ and for the parser.
_KINDS = {"services": ("v1", "Service"), "endpointslices": ("discovery.k8s.io/v1", "EndpointSlice"),
          "endpoints": ("v1", "Endpoints"), "pods": ("v1", "Pod"), "nodes": ("v1", "Node"),
          "configmaps": ("v1", "ConfigMap"), "networkpolicies": ("networking.k8s.io/v1", "NetworkPolicy"),
          "namespaces": ("v1", "Namespace"), "events": ("v1", "Event"), "daemonsets": ("apps/v1", "DaemonSet")}


@record
class ApiCollection:
    """What one collection read: the model, the raw documents, and what is missing and why."""

    objects: ApiObjects
    # resource plural ("services", "endpointslices", "endpoints", "pods", "nodes", "configmaps",
    # "networkpolicies") -> the objects as the server sent them, cut down to the fields svctrace reads,
    # with kind/apiVersion filled in; empty when read without documents (only capture writes them)
    raw: Mapping[str, tuple[Mapping[str, Any], ...]]
    target: KubeTarget
    warnings: tuple[str, ...] = ()  # collection problems; parse problems are in objects.warnings
    missing: tuple[str, ...] = ()  # inputs that could not be read, in the user's words
    requests: int = 0  # API requests this collection made, errors included

    def list_documents(self) -> dict[str, Doc]:
        """One ``kind: List`` document per resource, ready to write as ``api/<resource>.json``."""
        return {res: {"apiVersion": "v1", "kind": "List", "items": [dict(i) for i in items]}
                for res, items in self.raw.items()}


def _stamped(resource: str, doc: Any, *, cut: bool = True) -> Doc:
    """A LIST item or a GET answer as a document of its kind, with only the fields svctrace reads (``cut``; an
    item typed at once is not cut: the parser reads nothing else, and cutting 100,000 pods took 3 s)."""
    api_version, kind = _KINDS[resource]
    if not isinstance(doc, Mapping):
        return {"apiVersion": api_version, "kind": kind, "malformed": doc}
    stamped = {**doc, "apiVersion": api_version, "kind": kind}
    return read_fields(stamped) if cut else stamped


class KubeCollector:
    """Reads Services and what they depend on from a live API server, with a bounded number of requests."""

    def __init__(
        self,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        namespace: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        total_timeout: float | None = None,
        environ: Mapping[str, str] | None = None,
        home: Path | None = None,
        serviceaccount_dir: Path = SERVICEACCOUNT_DIR,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self._args = (kubeconfig, context, namespace)
        self._env = environ
        self._home = home
        self._sa_dir = serviceaccount_dir
        self.timeout = timeout
        # The deadline of the whole collection starts now: finding the kubeconfig and reading the node count.
        self.deadline = Deadline(timeout, total_timeout)
        self._target: KubeTarget | None = None
        self._api: Any = None
        self._transport: Transport | None = None
        self._elsewhere = 0  # requests a forked lister made (svctrace.collectors.kube_spool)

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
            self._transport = Transport(api, target.server, self.deadline)
            self._api, self._target = api, target
        return self._api, self._target

    @property
    def target(self) -> KubeTarget:
        """The resolved server, context and default namespace (resolving the kubeconfig if needed)."""
        return self._connect()[1]

    @property
    def requests(self) -> int:
        """Every request sent so far, failures included (a forked lister's too, once it answered)."""
        return (self._transport.requests if self._transport is not None else 0) + self._elsewhere

    def reconnect(self) -> None:
        """(In a forked child.) A connection pool of its own, with the configuration already loaded: the parent's
        pool and sockets stay the parent's. Its requests are counted from zero."""
        api, target = self._connect()
        fresh = k8s_client.ApiClient(api.configuration)
        fresh.user_agent = api.user_agent
        self._api, self._elsewhere = fresh, 0
        self._transport = Transport(fresh, target.server, self.deadline)

    def list_texts(self, op: Op, lister: Callable[[Any], Callable[..., Any]], args: tuple[Any, ...],
                   each: Callable[[Streamed], None], restart: Callable[[], None]) -> None:
        """Every item of a LIST handed to ``each`` as it came, with its JSON text, a page at a time (``restart``:
        the list starts again); ``lister`` gives the client's list function for this collector's ApiClient.
        Raises ReadFailure."""
        api, _ = self._connect()
        self._list(op, lister(api), *args, each=each, restart=restart, texts=True)

    def close(self) -> None:
        """Release the connection pool."""
        if self._transport is not None:
            self._transport.close()
        if self._api is not None:
            self._api.close()
            self._api = None

    def __enter__(self) -> KubeCollector:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- requests --

    def _get(self, op: Op, fn: Callable[..., Any], *args: Any) -> Doc:
        """One GET of one object, as a document of its kind cut down to what svctrace reads."""
        self._connect()
        assert self._transport is not None
        doc = self._transport.request(op, fn, *args, expect=f"a {_KINDS[op.resource][1]}")
        return _stamped(op.resource, doc)

    def _list(self, op: Op, fn: Callable[..., Any], *args: Any, label_selector: str | None = None,
              field_selector: str | None = None, whole: bool = False, cut: bool = True,
              each: Callable[[Any], None] | None = None, restart: Callable[[], None] | None = None,
              texts: bool = False) -> list[Doc]:
        """Every item of a LIST, page by page; stops on a continue token seen before and past MAX_LIST_PAGES.
        Items are cut to the fields svctrace reads (``_stamped``) when kept as documents: not with ``each`` (typed
        as they come) or without ``cut`` (typed, then dropped). With ``texts`` (and ``each``), each item is handed on
        as it came, its Streamed value with its JSON text, and the next page is asked for as soon as a page's
        metadata names it (``kube_http.Ahead``), so the server makes it while this one is read."""
        self._connect()
        assert self._transport is not None
        transport = self._transport
        items: list[Doc] = []
        token: str | None = None
        seen: set[str] = set()
        restarted = False
        pages = 0
        expect = f"a {_KINDS[op.resource][1]}List"

        def convert(item: Any) -> Any:
            return item if whole or texts else _stamped(op.resource, item, cut=cut and each is None)

        def one(token: str | None, head: Callable[[Doc], None] | None) -> tuple[Doc, list[Doc]]:
            kwargs: dict[str, Any] = {"limit": PAGE_SIZE}
            if token:
                kwargs["_continue"] = token
            if label_selector:
                kwargs["label_selector"] = label_selector
            if field_selector:
                kwargs["field_selector"] = field_selector
            page: list[Doc] = []
            doc = transport.request(op, fn, *args, items=lambda item: page.append(convert(item)), expect=expect,
                                    texts=texts, head=head, **kwargs)
            return doc, page

        ahead = Ahead(one) if texts else None
        while True:
            pages += 1
            if pages > MAX_LIST_PAGES:
                raise BadAnswer(op, f"more than {MAX_LIST_PAGES:,} pages of {PAGE_SIZE} objects; stopped paging")
            try:
                doc, page = ahead.take(token) if ahead is not None else one(token, None)
            except StatusFailure as failure:
                if failure.status == 410 and token and not restarted:
                    # the snapshot the pages came from was compacted away: start one consistent list again
                    items, token, seen, restarted, pages = [], None, set(), True, 0
                    if restart is not None:
                        restart()
                    continue
                raise
            listed = doc.get("items", ())
            if listed is not None and not isinstance(listed, list):
                raise BadAnswer(op, f"its items are {_json_type(listed)}, not a list" if listed != () else
                                f"the answer has no items, so it is not {expect}")
            if each is not None:  # handed on page by page, not kept
                for item in page:
                    each(item)
            else:
                items += page
            meta = doc.get("metadata")
            token = meta.get("continue") if isinstance(meta, Mapping) else None
            if not token:
                return items
            if not isinstance(token, str):
                raise BadAnswer(op, "the answer's metadata.continue is not a string")
            if token in seen:
                raise BadAnswer(op, f"the API server sent a continue token again (page {pages + 1}), so the "
                                    "pages would never end; stopped paging")
            seen.add(token)

    # -- requests for other readers (the collector pods of svctrace.collectors.remote) --

    def request(self, op: Op, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Doc:
        """One request of any verb, its answer whole (not cut down to what the Service read keeps).

        A non-2xx answer raises StatusFailure for the caller to judge; no answer, or one svctrace cannot use,
        is a CollectionError."""
        self._connect()
        assert self._transport is not None
        try:
            return self._transport.request(op, fn, *args, **kwargs)
        except (NoAnswer, BadAnswer) as failure:
            raise self.translate(failure) from None

    def list_whole(self, op: Op, fn: Callable[..., Any], *args: Any, label_selector: str | None = None,
                   field_selector: str | None = None) -> list[Doc]:
        """Every item of a LIST, whole, page by page (StatusFailure as in ``request``)."""
        try:
            return self._list(op, fn, *args, label_selector=label_selector, field_selector=field_selector, whole=True)
        except (NoAnswer, BadAnswer) as failure:
            raise self.translate(failure) from None

    # -- public reads --

    def list_namespaces(self) -> list[str]:
        """Names of all namespaces (for shell completion)."""
        api, _ = self._connect()
        op = Op("list", "namespaces")
        return sorted(_names(self._required(lambda: self._list(op, k8s_client.CoreV1Api(api).list_namespace))))

    def list_service_names(self, namespace: str | None = None) -> list[str]:
        """Names of the Services in a namespace (for shell completion)."""
        api, target = self._connect()
        ns = namespace or target.namespace
        op = Op("list", "services", namespace=ns)
        return sorted(_names(self._required(
            lambda: self._list(op, k8s_client.CoreV1Api(api).list_namespaced_service, ns))))

    def _required(self, read: Callable[[], list[Doc]]) -> list[Doc]:
        try:
            return read()
        except ReadFailure as failure:
            raise self.translate(failure) from None

    def translate(self, failure: ReadFailure) -> CollectionError:
        if isinstance(failure, StatusFailure) and failure.status == 403:
            return forbidden_error(failure)
        return failure.error(self.target.server)

    def collect_service(self, namespace: str | None, name: str, *,
                        node_name: str | None = None) -> ApiCollection:
        """One Service and what its dataplane depends on, in a fixed number of requests.

        GET the Service; LIST its EndpointSlices (or GET its v1 Endpoints where slices are not served or
        not allowed); LIST its Pods by selector; GET the Nodes its endpoints (and ``node_name``) name; GET
        the CoreDNS ConfigMap. Pods, Nodes and the ConfigMap are optional: when they cannot be read, the
        answer is partial and says so in ``warnings``.
        """
        api, target = self._connect()
        start = self.requests
        ns = namespace or target.namespace
        core = k8s_client.CoreV1Api(api)
        partial = Partial()
        raw: dict[str, list[Doc]] = {}

        svc_op = Op("get", "services", namespace=ns, name=name)
        try:
            svc = self._get(svc_op, core.read_namespaced_service, name, ns)
        except StatusFailure as failure:
            if failure.status == 404:
                raise self._service_not_found(core, ns, name) from None
            raise self.translate(failure) from None
        except ReadFailure as failure:
            raise self.translate(failure) from None
        raw["services"] = [svc]
        spec = svc.get("spec")
        spec = spec if isinstance(spec, Mapping) else {}
        external_name = spec.get("type") == "ExternalName"

        if not external_name:
            self._endpoints_for(api, ns, name, raw, partial)

        selector = spec.get("selector")
        if isinstance(selector, Mapping) and selector and not external_name:
            pod_op = Op("list", "pods", namespace=ns)
            labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
            raw["pods"] = partial.read(
                pod_op, "pod details (readiness, restarts, container ports) are missing",
                lambda: self._list(pod_op, core.list_namespaced_pod, ns, label_selector=labels)) or []

        wanted = _node_names(raw)
        if node_name:
            wanted.add(node_name)
        raw["nodes"] = self._nodes(core, sorted(wanted), partial)

        raw["configmaps"] = self._config_maps(core, [DNS_CONFIGMAP], partial)
        return self._result(raw, target, partial, self.requests - start)

    def collect_all(self, namespace: str | None = None, *, documents: bool = True) -> ApiCollection:
        """Every Service, EndpointSlice, Pod, Node and NetworkPolicy (one namespace or all), paged; without
        ``documents`` (all but ``capture``) each page is typed as it comes and no document is kept (at 10,000
        Services the EndpointSlices alone, read whole and then typed, were 150 MB for a moment)."""
        api, target = self._connect()
        start = self.requests
        core = k8s_client.CoreV1Api(api)
        net = k8s_client.NetworkingV1Api(api)
        disc = k8s_client.DiscoveryV1Api(api)
        partial = Partial()
        raw: dict[str, list[Doc]] = {}
        typed: dict[str, ApiObjects] = {}

        def lister(resource: str, group: str, namespaced: Callable[..., Any] | None,
                   everywhere: Callable[..., Any]) -> tuple[Op, Callable[[], list[Doc]]]:
            op = Op("list", resource, group, None if namespaced is None else namespace)  # nodes: no namespace
            fn, args = (namespaced, (namespace,)) if namespaced is not None and namespace is not None else \
                (everywhere, ())
            if not documents:
                return op, self._typing(op, fn, args, typed, partial, target)
            return op, lambda: self._list(op, fn, *args)

        op, read = lister("services", "", core.list_namespaced_service, core.list_service_for_all_namespaces)
        raw["services"] = self._required(read)
        spools: dict[str, kube_spool.ListSpool | None] = {}
        if not documents and len(typed["services"].services) >= kube_spool.SPOOL_AFTER_SERVICES:
            spools["endpointslices"] = kube_spool.ListSpool.start(
                self, Op("list", "endpointslices", "discovery.k8s.io", namespace), _KINDS["endpointslices"],
                k8s_client.DiscoveryV1Api, "list_namespaced_endpoint_slice", "list_endpoint_slice_for_all_namespaces")
            spools["pods"] = kube_spool.ListSpool.start(self, Op("list", "pods", "", namespace), _KINDS["pods"],
                                                        k8s_client.CoreV1Api, "list_namespaced_pod",
                                                        "list_pod_for_all_namespaces")
        try:
            op, read = lister("endpointslices", "discovery.k8s.io", disc.list_namespaced_endpoint_slice,
                              disc.list_endpoint_slice_for_all_namespaces)
            read = self._spooled(spools.get("endpointslices"), read, typed, partial, target)
            try:
                raw["endpointslices"] = read()
            except ReadFailure as failure:
                if not slices_unavailable(failure):
                    raise self.translate(failure) from None
                partial.fall_back(failure)
                op, read = lister("endpoints", "", core.list_namespaced_endpoints,
                                  core.list_endpoints_for_all_namespaces)
                raw["endpoints"] = self._required(read)

            op, read = lister("pods", "", core.list_namespaced_pod, core.list_pod_for_all_namespaces)
            read = self._spooled(spools.get("pods"), read, typed, partial, target)
            raw["pods"] = partial.read(op, "pod details are missing", read) or []

            op, read = lister("nodes", "", None, core.list_node)
            raw["nodes"] = partial.read(op, "node addresses and zones are missing", read) or []

            op, read = lister("networkpolicies", "networking.k8s.io", net.list_namespaced_network_policy,
                              net.list_network_policy_for_all_namespaces)
            raw["networkpolicies"] = partial.read(op, "NetworkPolicies were not checked", read,
                                                  tolerate_404=True) or []

            raw["configmaps"] = self._config_maps(core, [DNS_CONFIGMAP, PROXY_CONFIGMAP], partial)
            # Typed pages, in the order the documents would have been (their parse warnings come in this order).
            first = [typed.pop("pods")] if "pods" in typed else []
            return self._result(raw, target, partial, self.requests - start, [*first, *typed.values()],
                                documents=documents)
        finally:
            for spool in spools.values():
                if spool is not None:
                    spool.cancel()

    def _spooled(self, spool: kube_spool.ListSpool | None, here: Callable[[], list[Doc]],
                 typed: dict[str, ApiObjects], partial: Partial, target: KubeTarget) -> Callable[[], list[Doc]]:
        """The spooled LIST's read (``here`` without a spool, or when the child could not spool): its failure
        raised as if read here, its objects put in ``typed``, refused ones judged as ``_typing`` judges them."""
        if spool is None:
            return here

        def read() -> list[Doc]:
            got = spool.result()
            if got is None:
                return here()
            self._elsewhere += got.requests
            if got.failure is not None:
                raise got.failure
            assert got.index is not None
            resource = spool.op.resource
            try:
                typed[resource] = spool.objects(got.index)
            except InputError as exc:
                partial.refused(resource, exc, target)
            return []
        return read

    def _typing(self, op: Op, fn: Callable[..., Any], args: tuple[Any, ...], typed: dict[str, ApiObjects],
                partial: Partial, target: KubeTarget) -> Callable[[], list[Doc]]:
        """A LIST read whose items are typed as they arrive (into ``typed``, by resource); it returns no documents.
        Objects the parser refuses make a required resource's read fail, and an optional one's partial."""
        source = f"the API server's {op.resource}"

        def read() -> list[Doc]:
            acc = [Accumulator(source)]
            try:
                self._list(op, fn, *args, each=lambda doc: acc[0].add(doc, source),
                           restart=lambda: acc.__setitem__(0, Accumulator(source)))
                typed[op.resource] = acc[0].result()
            except InputError as exc:
                partial.refused(op.resource, exc, target)
            return []
        return read

    # -- pieces of a collection --

    def _endpoints_for(self, api: Any, ns: str, name: str, raw: dict[str, list[Doc]], partial: Partial) -> None:
        disc = k8s_client.DiscoveryV1Api(api)
        core = k8s_client.CoreV1Api(api)
        op = Op("list", "endpointslices", "discovery.k8s.io", ns)
        try:
            raw["endpointslices"] = self._list(op, disc.list_namespaced_endpoint_slice, ns,
                                               label_selector=f"{SERVICE_NAME_LABEL}={name}")
            return
        except ReadFailure as failure:
            if not slices_unavailable(failure):
                raise self.translate(failure) from None
            partial.fall_back(failure)
        # slices not served (an old cluster) or not allowed: kube-proxy's older source, v1 Endpoints
        ep_op = Op("get", "endpoints", namespace=ns, name=name)
        try:
            raw["endpoints"] = [self._get(ep_op, core.read_namespaced_endpoints, name, ns)]
        except StatusFailure as failure:
            if failure.status != 404:
                raise self.translate(failure) from None
            raw["endpoints"] = []  # no Endpoints object: the Service has no endpoints (yet)
        except ReadFailure as failure:
            raise self.translate(failure) from None

    def _nodes(self, core: Any, names: Sequence[str], partial: Partial) -> list[Doc]:
        if not names:
            return []
        missing_text = "node addresses and zones are missing"
        if len(names) > MAX_NODE_GETS:
            op = Op("list", "nodes")
            found = partial.read(op, missing_text, lambda: self._list(op, core.list_node)) or []
            return [n for n in found if _name(n) in set(names)]
        nodes: list[Doc] = []
        for node in names:
            op = Op("get", "nodes", name=node)
            got = partial.get(op, missing_text, functools.partial(self._get, op, core.read_node, node),
                              not_found=f'node "{node}" named by an endpoint or --node does not exist')
            if got is not None:
                nodes.append(got)
        return nodes

    def _config_maps(self, core: Any, which: Iterable[tuple[str, str]], partial: Partial) -> list[Doc]:
        out: list[Doc] = []
        for ns, cm in which:
            op = Op("get", "configmaps", namespace=ns, name=cm)
            got = partial.get(op, f"{ns}/{cm} settings were not checked",
                              functools.partial(self._get, op, core.read_namespaced_config_map, cm, ns),
                              not_found=None)
            if got is not None:
                out.append(got)
        return out

    def _service_not_found(self, core: Any, ns: str, name: str) -> NotFoundError:
        """The not-found error, with close names here and the same name elsewhere (two extra LISTs)."""
        here: list[str] = []
        elsewhere: list[str] = []
        # suggestions are a courtesy: a refusal or a broken answer here must not hide the real answer
        with contextlib.suppress(ReadFailure):
            here = _names(self._list(Op("list", "services", namespace=ns), core.list_namespaced_service, ns))
        with contextlib.suppress(ReadFailure):
            elsewhere = sorted(str(d["metadata"]["namespace"]) for d in self._list(
                Op("list", "services"), core.list_service_for_all_namespaces, field_selector=f"metadata.name={name}")
                if _namespace(d) not in (None, ns))
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

    def _result(self, raw: dict[str, list[Doc]], target: KubeTarget, partial: Partial,
                requests: int, typed: Iterable[ApiObjects] = (), *, documents: bool = True) -> ApiCollection:
        """The collection of what was read: ``raw`` typed (and kept as documents only with ``documents``: at 10,000
        Services the EndpointSlices alone are 400,000 dicts, which no command but capture reads again)."""
        parts: list[ApiObjects] = list(typed)
        for resource, docs in list(raw.items()):
            source = f"the API server's {resource}"
            try:
                parts.append(parse_objects(docs, source))
            except InputError as exc:
                partial.refused(resource, exc, target)
                raw[resource] = []
        return ApiCollection(
            objects=merge_objects(parts),
            raw={k: tuple(v) for k, v in raw.items()} if documents else {},
            target=target,
            warnings=tuple(partial.warnings),
            missing=tuple(partial.missing),
            requests=requests,
        )


def _name(doc: Mapping[str, Any]) -> str | None:
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return name if isinstance(name, str) else None


def _namespace(doc: Mapping[str, Any]) -> str | None:
    meta = doc.get("metadata")
    ns = meta.get("namespace") if isinstance(meta, Mapping) else None
    return ns if isinstance(ns, str) else None


def _names(docs: Iterable[Mapping[str, Any]]) -> list[str]:
    return [n for n in (_name(d) for d in docs) if n is not None]


def _node_names(raw: Mapping[str, list[Doc]]) -> set[str]:
    def maps(value: Any) -> list[Mapping[str, Any]]:
        return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []

    names: set[str] = set()
    for sl in raw.get("endpointslices", []):
        for ep in maps(sl.get("endpoints")):
            if isinstance(ep.get("nodeName"), str) and ep["nodeName"]:
                names.add(ep["nodeName"])
    for eps in raw.get("endpoints", []):
        for subset in maps(eps.get("subsets")):
            for addr in [*maps(subset.get("addresses")), *maps(subset.get("notReadyAddresses"))]:
                if isinstance(addr.get("nodeName"), str) and addr["nodeName"]:
                    names.add(addr["nodeName"])
    return names
