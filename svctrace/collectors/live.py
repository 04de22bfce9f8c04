"""A Snapshot from live sources: the Kubernetes API and this node, assembled the way a snapshot folder is.

Whatever a live run reads is also what ``capture`` writes, so ``--from`` a capture gives the live answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from svctrace import __version__
from svctrace.parsers.commands import ALL_TABLES
from svctrace.record import record

if TYPE_CHECKING:
    from svctrace.collectors.kube import ApiCollection
    from svctrace.collectors.spawn import StartedNode
    from svctrace.model.snapshot import Snapshot
    from svctrace.parsers.snapshot import NodeInput

# The Kubernetes client (~300 ms to import), the node collector and the parsers are imported by the functions
# that read the live cluster and node, after the node's commands are started: LiveOptions, and every command
# that reads only a snapshot, cost nothing of them, and a live read imports them while the kernel's saves run.
A = TypeVar("A")

SERVICE_TABLES = ("nat", "filter")  # what `svc` needs: kube-proxy's dispatch, Service and REJECT rules


@record
class LiveOptions:
    """How to reach the live sources (kubectl's flags, plus the node's network namespace for tests)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    node_name: str | None = None
    netns: str | None = None
    timeout: float = 5.0  # --request-timeout: each API request, all of it
    proxy_mode_url: str | None = None
    total_timeout: float | None = None  # --timeout: the whole collection (API and node); None: no limit


@record
class CollectOptions:
    """How ``--collect`` reads nodes through collector pods (svctrace.collectors.remote): the image, the pod's
    privileges, where the pods go, how many nodes at once, how long a pod may take to start."""

    image: str | None = None  # None: the kube-proxy DaemonSet's image, on every node
    privileged: bool = False
    namespace: str | None = None  # None: the kubeconfig context's
    parallel: int = 4
    start_timeout: float = 60.0


@record
class LiveCollection:
    """Everything one live run read: the Snapshot, and the raw documents and texts ``capture`` writes."""

    snapshot: Snapshot
    api: ApiCollection
    node: NodeInput
    notes: tuple[str, ...] = ()  # what the reader should know about how it was read (a collector pod's node)

    def api_documents(self) -> dict[str, dict[str, Any]]:
        return self.api.list_documents()

    def node_files(self) -> dict[str, str]:
        """The node/ files as read (meta.json apart: ``meta`` writes it with what was decided)."""
        from svctrace.model.snapshot import NodeFile

        return {name: text for name, text in self.node.files.items() if name != NodeFile.META}

    def meta(self) -> dict[str, Any]:
        facts = self.snapshot.node
        return {"nodeName": facts.name, "proxyMode": facts.proxy_mode.value if facts.proxy_mode else None,
                "proxyModeHow": facts.proxy_mode_how, "sysctls": dict(facts.sysctls),
                "iptablesBackend": facts.iptables_backend, "iptablesBackendReason": facts.iptables_backend_reason,
                "server": self.api.target.server, "context": self.api.target.context,
                "svctraceVersion": __version__}


def _start_node(opts: LiveOptions, tables: tuple[str, ...] = ALL_TABLES, *, conntrack: bool = True,
                documents: bool = False) -> StartedNode:
    """The node's reads, started now (before the Kubernetes client is imported and the API read), so that the
    kernel's saves run while svctrace starts; ``finish`` gathers them. ``conntrack``: its UDP entries too
    (only the stale-UDP check of why-unreachable and audit reads them; capture writes them). ``documents``:
    the nftables tables' text too (capture writes it; the others keep only their ruleset). A read started
    early (``start_early``) is taken instead when it is this one; any other is stopped."""
    key = _ReadKey(opts.netns, tables, conntrack, documents, opts.proxy_mode_url, opts.total_timeout)
    early = _EARLY.pop() if _EARLY else None
    if early is not None:
        if early[0] == key:
            return early[1]
        early[1].cancel()
    return _start(key, time.monotonic())


def _start(key: _ReadKey, now: float) -> StartedNode:
    from svctrace.collectors.spawn import start_node

    kwargs: dict[str, Any] = {"netns": key.netns, "tables": key.tables, "conntrack": key.conntrack,
                              "nft_text": key.documents,
                              "deadline": now + key.total_timeout if key.total_timeout else None}
    if key.proxy_mode_url is not None:
        kwargs["proxy_mode_url"] = key.proxy_mode_url
    return start_node(**kwargs)


@record
class _ReadKey:
    """What tells one node read from another: what ``_start_node`` is asked for."""

    netns: str | None
    tables: tuple[str, ...]
    conntrack: bool
    documents: bool
    proxy_mode_url: str | None
    total_timeout: float | None


# The node read svctrace.cli.early started before the command was parsed (at most one), until a command takes
# it (``_start_node``) or the process ends (``stop_early``).
_EARLY: list[tuple[_ReadKey, StartedNode]] = []


def start_early(netns: str | None, tables: tuple[str, ...], total_timeout: float | None) -> None:
    """Start now the node read a live ``svc NAME`` (``tables``: SERVICE_TABLES) or ``trace`` (ALL_TABLES) will ask
    for, without conntrack entries or the nftables text, as those commands ask; its deadline counts from now."""
    stop_early()
    key = _ReadKey(netns, tables, False, False, None, total_timeout)
    _EARLY.append((key, _start(key, time.monotonic())))


def stop_early() -> None:
    """Stop an early read no command took (nothing it started outlives the process)."""
    while _EARLY:
        _EARLY.pop()[1].cancel()


def _hostname() -> str:
    import socket

    return socket.gethostname().split(".")[0]


def assemble(api: ApiCollection | None, node: NodeInput, *, explicit: str | None, source: str) -> Snapshot:
    """The Snapshot of what the API and the node collectors read (the one assembly every source uses)."""
    from svctrace.model.snapshot import API, Missing
    from svctrace.parsers.snapshot import build_snapshot

    objects = api.objects if api is not None else None
    api_missing = tuple(Missing(what) for what in api.missing) if api is not None else (Missing(API, "not read"),)
    return build_snapshot(objects, node, source=source, api_missing=api_missing,
                          api_warnings=api.warnings if api is not None else (), explicit_node=explicit,
                          hostname=_hostname(), api_collected=api is not None)


def _alongside(read_node: Callable[[], NodeInput], read_api: Callable[[], A]) -> tuple[NodeInput, A]:
    """The node's rules read while the API is: the node waits on save processes, the API on the server."""
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="svctrace-node") as pool:
        node = pool.submit(contextvars.copy_context().run, read_node)
        api = read_api()  # an error here still waits for the node's reads to end (their own deadlines bound them)
        return node.result(), api


def begin_service(opts: LiveOptions, namespace: str | None, name: str) -> Callable[[], LiveCollection]:
    """What ``svctrace svc NAME`` needs, read live: a fixed number of API requests and this node's rules. The
    node's commands start now; the function returned reads the rest, so that what the caller does in between
    (its own imports) overlaps the kernel's saves."""
    started = _start_node(opts, SERVICE_TABLES, conntrack=False)
    return lambda: _service(opts, started, namespace, name)


def _service(opts: LiveOptions, started: StartedNode, namespace: str | None, name: str) -> LiveCollection:
    try:
        from svctrace.collectors.kube import KubeCollector

        with KubeCollector(opts.kubeconfig, opts.context, opts.namespace, opts.timeout,
                           total_timeout=opts.total_timeout) as kube:
            _ = kube.target  # a missing or broken kubeconfig fails here, and the node's reads are stopped
            node, api = _alongside(lambda: started.finish(opts.node_name),
                                   lambda: kube.collect_service(namespace, name,
                                                                node_name=opts.node_name or _hostname()))
    finally:
        started.cancel()
    snap = assemble(api, node, explicit=opts.node_name, source=f"live: {api.target.server}")
    return LiveCollection(snap, api, node)


def live_all(opts: LiveOptions, namespace: str | None, *, documents: bool = False) -> LiveCollection:
    """Every Service in one namespace (or all) and this node's rules: what ``capture`` (with ``documents``, the
    objects as it writes them) and ``audit`` read."""
    started = _start_node(opts, documents=documents)
    try:
        from svctrace.collectors.kube import KubeCollector

        with KubeCollector(opts.kubeconfig, opts.context, opts.namespace, opts.timeout,
                           total_timeout=opts.total_timeout) as kube:
            _ = kube.target
            node, api = _alongside(lambda: started.finish(opts.node_name),
                                   lambda: kube.collect_all(namespace, documents=documents))
    finally:
        started.cancel()
    snap = assemble(api, node, explicit=opts.node_name, source=f"live: {api.target.server}")
    return LiveCollection(snap, api, node)


def begin_node(opts: LiveOptions) -> Callable[[], Snapshot]:
    """This node's rules alone (no API objects): what ``trace`` reads when it needs no Service. The commands
    start now; the function returned gathers them (as begin_service)."""
    started = _start_node(opts, conntrack=False)

    def finish() -> Snapshot:
        node = started.finish(opts.node_name)
        return assemble(None, node, explicit=opts.node_name, source="live node")
    return finish


def default_namespace(opts: LiveOptions) -> str:
    """The namespace kubectl would use: -n, else the context's, else "default"."""
    from svctrace.collectors.kube import KubeCollector

    with KubeCollector(opts.kubeconfig, opts.context, opts.namespace, opts.timeout) as kube:
        return kube.target.namespace
