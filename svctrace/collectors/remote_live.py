"""Live Snapshots whose node part is read through collector pods (``--collect``): one node, or each node.

The API is read once, the way a local run reads it (svctrace.collectors.live); each node is read by
svctrace.collectors.remote and assembled with ``assemble``, exactly as a local read is, so ``svc NAME
--node X --collect`` from a laptop answers what ``sudo svctrace svc NAME`` answers on X.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from svctrace.collectors.live import (
    SERVICE_TABLES,
    CollectOptions,
    LiveCollection,
    LiveOptions,
    assemble,
)
from svctrace.errors import CollectionError, ForbiddenError, NotFoundError, SvctraceError, UsageError
from svctrace.model.snapshot import Snapshot
from svctrace.parsers.node_read import ALL_TABLES
from svctrace.parsers.snapshot import NodeInput

if TYPE_CHECKING:
    from svctrace.collectors.kube import ApiCollection, KubeCollector
    from svctrace.collectors.remote import NodeRead, Progress, RemoteCollector


@dataclass(frozen=True)
class NodeResult:
    """One node of an all-nodes run: its read (or why it failed) and how to build its Snapshot."""

    node: str
    input: NodeInput | None
    error: CollectionError | None
    build: Callable[[], Snapshot]
    bytes: int = 0
    seconds: float = 0.0

    def snapshot(self) -> Snapshot:
        return self.build()


def _source(api: ApiCollection) -> str:
    return f"live: {api.target.server}"


class _Session:
    """The API client and the collector pods of one run, closed (every pod deleted) on exit."""

    def __init__(self, opts: LiveOptions, collect: CollectOptions, progress: Progress | None) -> None:
        from svctrace.collectors.kube import KubeCollector
        from svctrace.collectors.remote import RemoteCollector

        # -n names the Services' namespace; collector pods go to --collector-namespace, else the context's.
        self.kube: KubeCollector = KubeCollector(opts.kubeconfig, opts.context, None, opts.timeout)
        _ = self.kube.target  # a missing or broken kubeconfig fails here, before any pod is made
        self.pods: RemoteCollector = RemoteCollector(self.kube, collect, progress=progress)

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.pods.close()
        finally:
            self.kube.close()
        if isinstance(exc, SvctraceError) and self.pods.notes:  # pods an earlier run left matter most on error
            exc.notes = (*exc.notes, *self.pods.notes)

    def read(self, node: str, tables: tuple[str, ...]) -> NodeInput:
        result = self.pods.read(node, tables)
        assert result.input is not None
        return result.input

    def pod_node(self, ref: str, namespace: str) -> tuple[str, str]:
        """The node a client pod (NS/POD, or POD in ``namespace``) runs on, and the pod's NS/NAME."""
        from svctrace.collectors.kube_http import Op, StatusFailure
        from svctrace.collectors.kubeclient import client

        k8s_client = client()

        ns, _, name = ref.rpartition("/")
        ns = ns or namespace
        api, _ = self.kube._connect()
        op = Op("get", "pods", namespace=ns, name=name)
        try:
            pod = self.kube.request(op, k8s_client.CoreV1Api(api).read_namespaced_pod, name, ns)
        except StatusFailure as failure:
            if failure.status == 404:
                raise NotFoundError(f'pod "{name}" not found in namespace "{ns}"',
                                    "give NS/POD of a running pod (kubectl get pods -A)") from None
            raise self.kube.translate(failure) from None
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            raise UsageError(f"pod {ns}/{name} is not scheduled on a node yet, so no node's rules translate its "
                             "packets", "give --node NAME to read a node of your choice")
        return str(node), f"{ns}/{name}"


def remote_service(opts: LiveOptions, collect: CollectOptions, node: str, namespace: str | None, name: str,
                   progress: Progress | None = None) -> LiveCollection:
    """``svc NAME --node X --collect``: the Service's objects, then node X's rules read by a collector pod."""
    with _Session(opts, collect, progress) as session:
        # The API first: a Service that does not exist fails before a pod is made.
        api = session.kube.collect_service(namespace, name, node_name=node)
        read = session.read(node, SERVICE_TABLES)
        notes = tuple(session.pods.notes)
    return LiveCollection(assemble(api, read, explicit=node, source=_source(api)), api, read, notes)


def remote_all(opts: LiveOptions, collect: CollectOptions, node: str | None, namespace: str | None, *,
               client_pod: str | None = None, client_namespace: str = "default",
               progress: Progress | None = None, documents: bool = True) -> LiveCollection:
    """Every Service of ``namespace`` (or all) and one node's rules read by a collector pod: ``node``, or the
    node the client pod runs on (where its packets are translated). ``documents``: keep the API objects as
    ``capture`` writes them (KubeCollector.collect_all)."""
    with _Session(opts, collect, progress) as session:
        notes: list[str] = []
        if node is None:
            if client_pod is None:
                raise UsageError("--collect needs the node to read", "give --node NAME, or --all-nodes")
            node, ref = session.pod_node(client_pod, client_namespace)
            notes.append(f"read node {node}'s rules: pod {ref} runs there, so that is where its packets are "
                         "translated")
        api = session.kube.collect_all(namespace, documents=documents)
        read = session.read(node, ALL_TABLES)
        notes += session.pods.notes
    return LiveCollection(assemble(api, read, explicit=node, source=_source(api)), api, read, tuple(notes))


def remote_node(opts: LiveOptions, collect: CollectOptions, node: str, progress: Progress | None = None) -> Snapshot:
    """One node's rules alone, read by a collector pod (``trace --node X --collect``)."""
    with _Session(opts, collect, progress) as session:
        read = session.read(node, ALL_TABLES)
    return assemble(None, read, explicit=node, source=f"node {node}")


class RemoteNodes:
    """Every selected node of the cluster, read by collector pods ``parallel`` at a time (``--all-nodes``).

    Enter it, read the API once (:meth:`read_service` or :meth:`read_all`), then iterate: each node's result
    arrives as its read ends. Leaving it deletes every collector pod, whatever happened.
    """

    def __init__(self, opts: LiveOptions, collect: CollectOptions, selector: str | None, *,
                 tables: tuple[str, ...] = ALL_TABLES, progress: Progress | None = None) -> None:
        self.opts = opts
        self.collect = collect
        self.selector = selector
        self.tables = tables
        self.progress = progress
        self.api: ApiCollection | None = None
        self._session: _Session | None = None
        self._reads: Iterator[NodeRead] | None = None

    def __enter__(self) -> RemoteNodes:
        self._session = _Session(self.opts, self.collect, self.progress)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._session is not None:
            self._session.__exit__(exc_type, exc, tb)

    @property
    def session(self) -> _Session:
        assert self._session is not None, "enter RemoteNodes first"
        return self._session

    @property
    def pods(self) -> RemoteCollector:
        return self.session.pods

    @property
    def notes(self) -> list[str]:
        return self.session.pods.notes

    @property
    def namespace(self) -> str:
        """The kubeconfig context's namespace (what a name without one is looked up in)."""
        return self.session.kube.target.namespace

    def read_service(self, namespace: str | None, name: str) -> ApiCollection:
        """One Service's objects (read before any pod is made: a Service that does not exist makes none)."""
        self.api = self.session.kube.collect_service(namespace, name)
        return self.api

    def read_all(self, namespace: str | None, *, documents: bool = False) -> ApiCollection:
        """Every Service of ``namespace`` (or all); the nodes' reads start first and go on meanwhile.
        ``documents``: keep the API objects as ``capture`` writes them."""
        self.start()
        self.api = self.session.kube.collect_all(namespace, documents=documents)
        return self.api

    def start(self) -> None:
        """Start reading the nodes (once)."""
        if self._reads is None:
            self._reads = self.session.pods.read_nodes(self.session.pods.nodes(self.selector), self.tables)

    def __iter__(self) -> Iterator[NodeResult]:
        api = self.api
        self.start()
        assert self._reads is not None
        for read in self._reads:
            if isinstance(read.error, ForbiddenError):
                raise read.error  # every node would be refused alike
            if read.input is None:
                yield NodeResult(read.node, None, read.error, _unbuildable, read.bytes, read.seconds)
                continue
            yield NodeResult(read.node, read.input, None, _builder(api, read.input, read.node), read.bytes,
                             read.seconds)


def _builder(api: ApiCollection | None, read: NodeInput, node: str) -> Callable[[], Snapshot]:
    def build() -> Snapshot:
        return assemble(api, read, explicit=node, source=_source(api) if api is not None else f"node {node}")
    return build


def _unbuildable() -> Snapshot:
    raise CollectionError("this node was not read")


def collection(api: ApiCollection, result: NodeResult, snapshot: Snapshot) -> LiveCollection:
    """One node of an all-nodes run as a LiveCollection (what ``capture`` writes for it)."""
    assert result.input is not None
    return LiveCollection(snapshot, api, result.input)

