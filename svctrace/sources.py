"""Where a command's Snapshot comes from: decide between a snapshot (``--from``) and the live cluster and node.

The cli builds one :class:`Source` from its flags and asks for what a command needs; this module picks the
collector and works out the namespace a name without one is looked up in, the one way kubectl does it:
``-n``, else the kubeconfig context's namespace (live), else ``default``.

A node's rules come from this node (a live run on the node), from a collector pod on another node
(``--collect``, with ``--node NAME`` or, for a client pod, the node it runs on), or from a snapshot;
``--all-nodes`` asks for every node, one after another (:func:`each_node`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import field
from typing import TYPE_CHECKING

from svctrace.collectors.live import (
    CollectOptions,
    LiveCollection,
    LiveOptions,
    begin_node,
    begin_service,
    live_all,
)
from svctrace.errors import UsageError
from svctrace.parsers.commands import ALL_TABLES
from svctrace.record import record

if TYPE_CHECKING:
    from svctrace.collectors.kube import ApiCollection
    from svctrace.collectors.remote_live import NodeResult
    from svctrace.collectors.snapshot_nodes import MultiNodeSnapshot
    from svctrace.model.k8s import Service
    from svctrace.model.snapshot import Snapshot
    from svctrace.parsers.snapshot import NodeInput

DEFAULT_NAMESPACE = "default"
NETNS_RUN_DIR = "/var/run/netns"  # where `ip netns` keeps the namespaces it names (--netns)

Progress = Callable[[str, str, str], None]  # (node, stage, detail), called from the collector's threads


@record
class NodeChoice:
    """Which node(s) to answer for: ``--node NAME``, or every node (``--all-nodes``, ``--nodes SELECTOR``)."""

    name: str | None = None
    every: bool = False
    selector: str | None = None


@record
class Source:
    """A snapshot to replay (a folder, a tarball, ``demo`` or ``demo:MODE``), or else the live cluster and node.

    ``collect``: read nodes through collector pods (``--collect``) instead of this node's kernel.
    """

    snapshot: str | None = None
    live: LiveOptions = field(default_factory=LiveOptions)
    collect: CollectOptions | None = None
    nodes: NodeChoice = field(default_factory=NodeChoice)

    @property
    def is_live(self) -> bool:
        return self.snapshot is None

    def check(self, *, every_node: bool = True) -> None:
        """Refuse flag combinations that cannot be answered (before anything is read)."""
        if self.collect is not None and self.snapshot is not None:
            raise UsageError("--collect reads the live cluster; --from reads a snapshot: give one of them",
                             "drop --collect to analyse the snapshot")
        if self.nodes.every and not every_node:
            raise UsageError("this command answers for one node: --all-nodes and --nodes do not apply",
                             "give --node NAME --collect")
        if self.nodes.every and self.nodes.name:
            raise UsageError("give --node NAME or --all-nodes, not both", "pick one node, or every node")
        netns = self.live.netns if self.snapshot is None else None
        if netns is not None and not os.path.exists(os.path.join(NETNS_RUN_DIR, netns)):
            raise UsageError(f"there is no network namespace {netns!r}", "`ip netns list` lists them")
        if self.nodes.every and self.snapshot is None and self.collect is None:
            raise UsageError("--all-nodes reads every node's rules through the API, which needs --collect (it "
                             "creates a short-lived read-only collector pod on each node)",
                             "add --collect, or analyse a capture made with `svctrace capture --all-nodes` "
                             "using --from")


@record
class Loaded:
    """A command's Snapshot, the namespace names without one belong to, and the raw live reads (``capture``)."""

    snapshot: Snapshot
    namespace: str  # -n, else the kubeconfig context's (live), else "default"
    collection: LiveCollection | None = None

    @property
    def notes(self) -> tuple[str, ...]:
        """How the node was read, when the reader should know (a collector pod, the client pod's node)."""
        return self.collection.notes if self.collection is not None else ()


def _collect_node(source: Source) -> str:
    if source.nodes.name is None:
        raise UsageError("--collect needs the node to read", "give --node NAME (`kubectl get nodes` lists them)")
    return source.nodes.name


def begin_load_service(source: Source, namespace: str | None, name: str, *,
                       progress: Progress | None = None) -> Callable[[], Loaded]:
    """What one Service's answer needs (``svc``): live, only that Service's objects and one node's rules. Read in
    two steps: live on this node, the node's commands start now and the function returned reads the rest, so
    that what the caller imports in between overlaps the kernel's saves."""
    source.check(every_node=False)
    if source.snapshot is not None:
        return lambda: _replayed(source, namespace)
    collect = source.collect
    if collect is not None:
        def remote() -> Loaded:
            from svctrace.collectors.remote_live import remote_service

            collection = remote_service(source.live, collect, _collect_node(source), namespace, name, progress)
            return Loaded(collection.snapshot, namespace or collection.api.target.namespace, collection)
        return remote
    finish = begin_service(source.live, namespace, name)

    def live() -> Loaded:
        collection = finish()
        return Loaded(collection.snapshot, namespace or collection.api.target.namespace, collection)
    return live


def load_namespace(source: Source, namespace: str | None, *, scope: str | None = None,
                   every_namespace: bool = False, client_pod: str | None = None,
                   progress: Progress | None = None, documents: bool = False) -> Loaded:
    """The Services of ``scope`` (default: ``namespace``, the ``-n`` given) and one node's rules
    (``why-unreachable``, ``audit``, ``capture``). Live, every namespace is read with ``every_namespace`` or when
    neither names one; a snapshot holds what it holds. With ``--collect`` and no ``--node``, the node read is
    the one ``client_pod`` runs on. ``documents``: keep the API objects as ``capture`` writes them."""
    source.check(every_node=False)
    if source.snapshot is not None:
        return _replayed(source, namespace)
    wanted = None if every_namespace else (scope or namespace)
    if source.collect is not None:
        from svctrace.collectors.remote_live import remote_all

        collection = remote_all(source.live, source.collect, source.nodes.name, wanted, client_pod=client_pod,
                                client_namespace=namespace or _context_namespace(source), progress=progress,
                                documents=documents)
    else:
        collection = live_all(source.live, wanted, documents=documents)
    return Loaded(collection.snapshot, namespace or collection.api.target.namespace, collection)


def begin_load_node(source: Source, namespace: str | None, *, with_api: bool, scope: str | None = None,
                    client_pod: str | None = None, progress: Progress | None = None) -> Callable[[], Loaded]:
    """One node's rules (``trace``), with the API objects of ``scope`` (default: ``namespace``) only when
    ``with_api``; without them no kubeconfig is read. In two steps, as ``begin_load_service``."""
    source.check(every_node=False)
    if source.snapshot is not None:
        return lambda: _replayed(source, namespace)
    if with_api:
        return lambda: load_namespace(source, namespace, scope=scope, client_pod=client_pod, progress=progress)
    collect = source.collect
    if collect is not None:
        def remote() -> Loaded:
            from svctrace.collectors.remote_live import remote_node

            return Loaded(remote_node(source.live, collect, _collect_node(source), progress),
                          namespace or DEFAULT_NAMESPACE)
        return remote
    finish = begin_node(source.live)
    return lambda: Loaded(finish(), namespace or DEFAULT_NAMESPACE)


def _context_namespace(source: Source) -> str:
    from svctrace.collectors.live import default_namespace

    return default_namespace(source.live)


def _replayed(source: Source, namespace: str | None) -> Loaded:
    from svctrace.collectors.snapshot_nodes import MultiNodeSnapshot, load

    assert source.snapshot is not None
    loaded = load(source.snapshot)
    if isinstance(loaded, MultiNodeSnapshot):
        if source.nodes.name is None:
            raise UsageError(f"{loaded.label} holds {len(loaded.nodes)} nodes ({', '.join(loaded.nodes)}): "
                             "say which to answer for", "add --node NAME, or --all-nodes")
        return Loaded(loaded.snapshot(source.nodes.name), namespace or DEFAULT_NAMESPACE)
    return Loaded(loaded, namespace or DEFAULT_NAMESPACE)


# --- every node -------------------------------------------------------------------------------------------

class EachNode:
    """The API objects, read once, and every selected node, one result at a time (``--all-nodes``)."""

    def __init__(self, namespace: str, services: tuple[Service, ...], results: Iterator[NodeResult],
                 notes: list[str], api: ApiCollection | None = None, label: str = "",
                 api_warnings: tuple[str, ...] = ()) -> None:
        self.namespace = namespace  # what a name without one is looked up in
        self.services = services
        self.api_warnings = api_warnings  # about the API objects: the same whichever node is read
        self.notes = notes
        self.api = api  # live runs: the raw API documents (``capture``)
        self.label = label
        self._results = results

    def __iter__(self) -> Iterator[NodeResult]:
        return self._results


@contextlib.contextmanager
def each_node(source: Source, namespace: str | None, *, service: str | None = None, scope: str | None = None,
              every_namespace: bool = False, tables: tuple[str, ...] = ALL_TABLES,
              progress: Progress | None = None, documents: bool = False) -> Iterator[EachNode]:
    """Every node of ``--all-nodes`` (or ``--nodes SELECTOR``): from a multi-node snapshot, or read live by
    collector pods; the API objects (one Service's, with ``service``) are read once, before any node. Every
    collector pod is deleted when the block ends, however it ends. ``documents``: keep every Service's objects
    as ``capture`` writes them."""
    source.check()
    if not source.nodes.every:
        raise UsageError("this answer is for every node: give --all-nodes or --nodes SELECTOR", "")
    wanted = None if every_namespace else (scope or namespace)
    if source.snapshot is not None:
        yield _replayed_nodes(source, namespace)
        return
    from svctrace.collectors.remote_live import RemoteNodes

    assert source.collect is not None
    with RemoteNodes(source.live, source.collect, source.nodes.selector, tables=tables, progress=progress) as nodes:
        api = nodes.read_service(wanted, service) if service is not None else \
            nodes.read_all(wanted, documents=documents)
        yield EachNode(namespace or api.target.namespace, api.objects.services, iter(nodes), nodes.notes, api,
                       f"live: {api.target.server}", (*api.warnings, *api.objects.warnings))


def _replayed_nodes(source: Source, namespace: str | None) -> EachNode:
    from svctrace.collectors.remote_live import NodeResult
    from svctrace.collectors.snapshot_nodes import MultiNodeSnapshot, load

    assert source.snapshot is not None
    loaded = load(source.snapshot)
    if not isinstance(loaded, MultiNodeSnapshot):
        raise UsageError(f"{source.snapshot} is a snapshot of one node, so --all-nodes has nothing to compare",
                         "make one of every node with `svctrace capture --all-nodes --collect`")
    multi: MultiNodeSnapshot = loaded
    labels = {n.name: n.labels for n in (multi.api.nodes if multi.api is not None else ())}
    selector = source.nodes.selector
    chosen = [n for n in multi.nodes if selector is None or selects(selector, labels.get(n, {}))]
    if not chosen:
        raise UsageError(f"no node of {multi.label} matches --nodes {selector!r}",
                         f"its nodes: {', '.join(multi.nodes)}")

    def build(name: str, read: NodeInput) -> Callable[[], Snapshot]:
        return lambda: multi.snapshot(name, read)

    def results() -> Iterator[NodeResult]:
        for name in chosen:
            read = multi.node_input(name)
            yield NodeResult(name, read, None, build(name, read))

    services = multi.api.services if multi.api is not None else ()
    api_warnings = (*multi.warnings, *(multi.api.warnings if multi.api is not None else ()))
    return EachNode(namespace or DEFAULT_NAMESPACE, services, results(), [], None, multi.label, api_warnings)


def selects(selector: str, labels: Mapping[str, str]) -> bool:
    """Whether a label selector of equality terms (``k=v``, ``k!=v``, ``k``, ``!k``, comma-separated) matches."""
    for term in (t.strip() for t in selector.split(",")):
        if not term:
            continue
        if " in " in term or " notin " in term or "(" in term:
            raise UsageError(f"--nodes {selector!r}: set-based terms are only understood live",
                             "use k=v, k!=v, k or !k terms with --from")
        if "!=" in term:
            key, value = (p.strip() for p in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (p.strip() for p in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True
