"""Read another node's dataplane through the API: a short-lived collector pod pinned to it, read over exec.

This is how ``--collect`` reaches a node from a laptop with only a kubeconfig, the way ``kubectl debug
node/NAME`` does: one pod per node (``nodeName`` pinned, ``hostNetwork``, every taint tolerated, no
service account token, NET_ADMIN and NET_RAW only, a read-only root filesystem, an
``activeDeadlineSeconds``), running kube-proxy's own image by default (it is on every node, so nothing is
pulled, and it has iptables in both backends, nft and ipset). The pod only sleeps; svctrace execs the
read-only script of svctrace/collectors/node_script.py in it (the script rides in the pod's environment,
so ``kubectl get pod -o yaml`` shows exactly what runs) and reads the output back over the exec
WebSocket: exec carries a 46 MB nat table intact in seconds, where pod logs lose all but the last
10 MiB to the kubelet's log rotation. The output becomes the node's NodeInput
(svctrace/parsers/collector_output.py), the same files a local read or a snapshot's node/ folder gives.

Every pod is deleted (grace period 0) when its read ends, on error, on timeout and on Ctrl-C; the pod's
own deadline ends it even if svctrace is killed, and pods left by a killed run are found by label and
reported. Apart from creating and deleting its own labelled pods and exec'ing into them, everything here
is a GET or a LIST.
"""

from __future__ import annotations

import contextlib
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from svctrace.collectors._probe import SYSCTLS
from svctrace.collectors.collector_pod import (
    CONTAINER,
    KUBE_PROXY,
    RUN_LABEL,
    SCRIPT_ENV,
    SELECTOR,
    NodeReadError,
    collector_pod,
    handshake_status,
    node_ready,
    role_yaml,
)
from svctrace.collectors.exec_stream import drain, wait_closed
from svctrace.collectors.kube import KubeCollector
from svctrace.collectors.kube_http import Op, StatusFailure
from svctrace.collectors.kubeclient import client
from svctrace.collectors.live import CollectOptions
from svctrace.collectors.node_script import script
from svctrace.errors import CollectionError, ForbiddenError, UsageError
from svctrace.parsers import collector_output
from svctrace.parsers.node_read import ALL_TABLES
from svctrace.parsers.snapshot import NodeInput
from svctrace.record import record

k8s_client = client()
from kubernetes.stream import stream  # noqa: E402 - after client(): see svctrace.collectors.kubeclient

READ_BUDGET = 300  # seconds a started pod has for the read itself, on top of the start timeout
MAX_OUTPUT = 1 << 30  # a 10k-Service node reads ~50 MB; this only stops a runaway
EXEC_COMMAND = ["sh", "-c", f'eval "${SCRIPT_ENV}" 2>&1']
_PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
_START_FAILURES = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")

@record
class NodeRead:
    """One node's read: its NodeInput, or why it failed (a ForbiddenError fails every node alike); its cost."""

    node: str
    input: NodeInput | None
    error: CollectionError | None = None
    bytes: int = 0
    seconds: float = 0.0


Progress = Callable[[str, str, str], None]  # (node, stage, detail): queued | starting | reading | done | failed


def _no_progress(node: str, stage: str, detail: str) -> None:
    return None


@dataclass
class _Pods:
    """Names of the pods this run asked for (registered before the create is sent), and which are gone."""

    names: dict[str, str] = field(default_factory=dict)  # pod name -> node
    gone: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class RemoteCollector:
    """Collector pods for one run: create, wait, exec the read, delete; several nodes at once."""

    def __init__(self, kube: KubeCollector, options: CollectOptions, *, progress: Progress | None = None,
                 sysctls: Sequence[str] = SYSCTLS) -> None:
        self.kube = kube
        self.options = options
        self.progress = progress or _no_progress
        self.sysctls = tuple(sysctls)
        self.run_id = secrets.token_hex(3)
        self.namespace = options.namespace or kube.target.namespace
        self.notes: list[str] = []  # things worth saying once (leftovers found, where the image came from)
        self._image: str | None = options.image
        self._pods = _Pods()
        self._cancel = threading.Event()  # make no more pods, stop waiting for them
        self._abandon = threading.Event()  # stop reading too (set once the pods are being deleted)
        self._threads: list[threading.Thread] = []
        self._checked_leftovers = False
        self._tokens: dict[str, str] = {}  # pod name -> the token framing its script's output

    # -- lifecycle --

    def __enter__(self) -> RemoteCollector:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop every read and delete every pod this run created (safe to call twice).

        No new pod is made from here on; the pods are deleted first, which ends their reads on the node (the
        kubelet stops the exec'd processes), then the readers are let go, and the pods of creates that were
        on their way are deleted too.
        """
        self._cancel.set()
        self._delete_all(report=False)
        self._abandon.set()
        for thread in self._threads:
            thread.join(timeout=self.kube.timeout + 1)
        self._delete_all()

    # -- what to run --

    @property
    def image(self) -> str:
        """--image, else the image of kube-proxy's DaemonSet (or pod): on every node, with the tools."""
        if self._image is None:
            self._image = self._kube_proxy_image()
        return self._image

    def _kube_proxy_image(self) -> str:
        api, _ = self.kube._connect()
        ns, name = KUBE_PROXY
        apps = k8s_client.AppsV1Api(api)
        op = Op("get", "daemonsets", "apps", ns, name)
        try:
            ds = self.kube.request(op, apps.read_namespaced_daemon_set, name, ns)
        except StatusFailure as failure:
            if failure.status not in (403, 404):
                raise self.kube.translate(failure) from None
        else:
            containers = ((ds.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
            chosen = next((c for c in containers if c.get("name") == "kube-proxy"), containers[0] if containers
                          else None)
            if chosen is not None and chosen.get("image"):
                self.notes.append(f"collector image: {chosen['image']} (the kube-proxy DaemonSet's, on every node)")
                return str(chosen["image"])
        # kube-proxy as static pods (kubeadm-less distributions) or a DaemonSet under another name
        core = k8s_client.CoreV1Api(api)
        for selector in ("k8s-app=kube-proxy", "component=kube-proxy"):
            pod_op = Op("list", "pods", namespace=ns)
            try:
                pods = self.kube.list_whole(pod_op, core.list_namespaced_pod, ns, label_selector=selector)
            except StatusFailure:
                continue
            for pod in pods:
                for c in (pod.get("spec") or {}).get("containers") or []:
                    if c.get("image"):
                        self.notes.append(f"collector image: {c['image']} (kube-proxy's, from pod "
                                          f"{ns}/{pod['metadata']['name']})")
                        return str(c["image"])
        raise CollectionError(
            "cannot find kube-proxy's image: no kube-proxy DaemonSet or pod in kube-system. This cluster may not "
            "run kube-proxy (Cilium's kube-proxy replacement, for one, programs no kube-proxy rules at all)",
            "pass --image IMAGE: an image with sh, iptables-save and nft that the nodes can pull (e.g. built from "
            "svctrace's packaging/node-collector/Containerfile); a node without kube-proxy then shows no "
            "kube-proxy rules")

    # -- nodes --

    def node(self, name: str) -> dict[str, Any]:
        """The Node object of ``name``, or a clear error when it does not exist."""
        api, _ = self.kube._connect()
        op = Op("get", "nodes", name=name)
        try:
            return self.kube.request(op, k8s_client.CoreV1Api(api).read_node, name)
        except StatusFailure as failure:
            if failure.status == 404:
                raise UsageError(f'node "{name}" does not exist in the cluster',
                                 "list the nodes with: kubectl get nodes") from None
            raise self.kube.translate(failure) from None

    def nodes(self, selector: str | None) -> list[dict[str, Any]]:
        """Every Node (matching ``selector``, a label selector like kubectl's -l)."""
        api, _ = self.kube._connect()
        op = Op("list", "nodes")
        try:
            found = self.kube.list_whole(op, k8s_client.CoreV1Api(api).list_node, label_selector=selector)
        except StatusFailure as failure:
            if failure.status == 400 and selector:
                raise UsageError(f"--nodes {selector!r} is not a label selector: {failure.message}",
                                 "give e.g. --nodes kubernetes.io/os=linux or --nodes 'node-role.kubernetes.io/"
                                 "control-plane!='") from None
            raise self.kube.translate(failure) from None
        if not found:
            raise UsageError(f"no node matches --nodes {selector!r}" if selector else "the cluster lists no nodes",
                             "list them with: `kubectl get nodes --show-labels`")
        return sorted(found, key=lambda n: str(n["metadata"]["name"]))

    def leftovers(self) -> list[str]:
        """Collector pods of earlier runs still in the namespace (a killed run's), as notes; checked once."""
        if self._checked_leftovers:
            return []
        self._checked_leftovers = True
        api, _ = self.kube._connect()
        op = Op("list", "pods", namespace=self.namespace)
        try:
            pods = self.kube.list_whole(op, k8s_client.CoreV1Api(api).list_namespaced_pod, self.namespace,
                                   label_selector=SELECTOR)
        except StatusFailure:
            return []  # only a courtesy: a refusal here must not stop the read
        left = [p for p in pods if (p["metadata"].get("labels") or {}).get(RUN_LABEL) != self.run_id]
        if not left:
            return []
        names = ", ".join(f"{p['metadata']['name']} ({(p.get('status') or {}).get('phase', '?')})" for p in left)
        note = (f"{len(left)} collector pod(s) of an earlier svctrace run are still in namespace {self.namespace}: "
                f"{names}; an interrupted run leaves them until their deadline. Remove them with: kubectl delete "
                f"pod -n {self.namespace} -l {SELECTOR},{RUN_LABEL}!={self.run_id}")
        self.notes.append(note)
        return [note]

    # -- reading --

    def read(self, node: str, tables: tuple[str, ...] = ALL_TABLES) -> NodeRead:
        """One node's read (the error raised, for a single node)."""
        doc = self.node(node)
        results = list(self.read_nodes([doc], tables))
        if results[0].error is not None:
            raise results[0].error
        return results[0]

    def read_nodes(self, nodes: Sequence[dict[str, Any]], tables: tuple[str, ...] = ALL_TABLES
                   ) -> Iterator[NodeRead]:
        """Read each Node, ``parallel`` at a time, yielding each read as it ends (whatever the order).

        The reads start at once (before the first result is asked for), so the caller can read the API
        meanwhile. At most 2 x ``parallel`` reads are in memory (``parallel`` in flight, as many waiting to be
        taken): a worker hands its result over before it starts the next node, so a consumer that reduces each
        read as it arrives never holds them all.
        """
        self.leftovers()
        image = self.image
        jobs: queue.Queue[dict[str, Any]] = queue.Queue()
        for doc in nodes:
            jobs.put(doc)
            self.progress(doc["metadata"]["name"], "queued", "")
        # A few finished reads may wait while the consumer is busy (the first node of a rule set is the slow one),
        # so the next reads go on meanwhile; never more than this many.
        results: queue.Queue[NodeRead] = queue.Queue(maxsize=max(1, self.options.parallel))
        workers = max(1, min(self.options.parallel, len(nodes)))

        def work() -> None:
            while not self._cancel.is_set():
                try:
                    doc = jobs.get_nowait()
                except queue.Empty:
                    return
                result = self._read_one(doc, image, tables)
                while not self._cancel.is_set():
                    try:
                        results.put(result, timeout=0.2)
                        break
                    except queue.Full:
                        continue

        threads = [threading.Thread(target=work, name=f"svctrace-collect-{i}", daemon=True) for i in range(workers)]
        self._threads += threads
        for thread in threads:
            thread.start()
        return self._results(results, threads, len(nodes))

    def _results(self, results: queue.Queue[NodeRead], threads: list[threading.Thread], count: int
                 ) -> Iterator[NodeRead]:
        for _ in range(count):
            while True:
                try:
                    result = results.get(timeout=0.2)
                    break
                except queue.Empty:
                    if self._cancel.is_set() or not any(t.is_alive() for t in threads) and results.empty():
                        return
            yield result

    def _read_one(self, doc: dict[str, Any], image: str, tables: tuple[str, ...]) -> NodeRead:
        node = str(doc["metadata"]["name"])
        start = time.monotonic()
        try:
            ready, why = node_ready(doc)
            if not ready:
                raise NodeReadError(node, f"node {node} is NotReady ({why}): its kubelet cannot start a collector pod",
                                    f"check the node (kubectl describe node {node}); the other nodes can still be "
                                    "read")
            if (doc.get("spec") or {}).get("unschedulable"):
                self.notes.append(f"node {node} is cordoned; its collector pod runs there anyway (nodeName bypasses "
                                  "the scheduler)")
            name = self._create(node, image, tables)
            self.progress(node, "starting", name)
            self._wait_running(node, name, image, start)
            data = self._exec(node, name)
            size = len(data)
            self.progress(node, "parsing", f"{size / 2**20:.1f} MB")
            self._delete(name)
            text = data.decode("utf-8", "replace")
            del data  # one copy of a node's read at a time: they are tens of MB on big nodes
            records = collector_output.parse_records(text, self._tokens[name])
            if not records.records:
                raise NodeReadError(node, f"the collector pod on node {node} printed nothing svctrace can read"
                                    + (f": {text[:200].strip()!r}" if text else ""),
                                    "the image needs a POSIX sh; pass --image with one (e.g. kube-proxy's)")
            del text
            # Said as a read on the node itself says it: a sudo svctrace there and this read print the same.
            result = collector_output.node_input(records, node_name=node, where="",
                                                 sysctls=self.sysctls, tables=tables)
            self.progress(node, "done", f"{size / 2**20:.1f} MB")
            return NodeRead(node, result, None, size, time.monotonic() - start)
        except (NodeReadError, ForbiddenError) as exc:
            self.progress(node, "failed", exc.message)
            return NodeRead(node, None, exc, 0, time.monotonic() - start)
        except CollectionError as exc:
            self.progress(node, "failed", exc.message)
            return NodeRead(node, None, NodeReadError(node, exc.message, exc.hint), 0, time.monotonic() - start)
        finally:
            for pod, owner in list(self._pods.names.items()):
                if owner == node and pod not in self._pods.gone:
                    self._delete(pod)

    # -- one pod --

    def _create(self, node: str, image: str, tables: tuple[str, ...]) -> str:
        api, _ = self.kube._connect()
        token = f"@@svctrace-{secrets.token_hex(8)}"
        deadline = int(self.options.start_timeout) + READ_BUDGET
        body = collector_pod(node, self.run_id, image, privileged=self.options.privileged, deadline=deadline,
                             read_script=script(token, tables))
        name = str(body["metadata"]["name"])
        with self._pods.lock:
            self._pods.names[name] = node
            self._tokens[name] = token
        if self._cancel.is_set():
            raise NodeReadError(node, "interrupted")
        self.progress(node, "creating", name)
        op = Op("create", "pods", namespace=self.namespace, name=name)
        try:
            self.kube.request(op, k8s_client.CoreV1Api(api).create_namespaced_pod, self.namespace, body)
        except StatusFailure as failure:
            with self._pods.lock:
                self._pods.gone.add(name)
            raise self._create_failed(node, failure) from None
        if self._cancel.is_set():  # interrupted while the create was on its way: undo it here
            self._delete(name)
            raise NodeReadError(node, "interrupted")
        return name

    def _create_failed(self, node: str, failure: StatusFailure) -> CollectionError:
        ns = self.namespace
        if failure.status == 403 and "PodSecurity" in failure.message:
            level = re.search(r'violates PodSecurity "([a-z]+)', failure.message)
            return NodeReadError(
                node, f'namespace "{ns}" enforces Pod Security "{level.group(1) if level else "baseline"}", which '
                      "refuses a collector pod (it needs hostNetwork and NET_ADMIN to read the node's rules)",
                "pass --collector-namespace with a namespace that allows it (kube-system does by default, or one "
                "labelled pod-security.kubernetes.io/enforce=privileged)")
        if failure.status == 403:
            user = re.search(r'User "([^"]*)"', failure.message)
            who = f" for {user.group(1)}" if user else ""
            return ForbiddenError(
                f'not allowed to create pods in namespace "{ns}"{who} (403 Forbidden): --collect reads a node '
                "through a short-lived collector pod",
                f"ask for this Role and a RoleBinding to it (or pick another namespace with --collector-namespace):"
                f"\n{role_yaml(ns)}", verb="create", resource="pods", namespace=ns)
        if failure.status == 404:
            return NodeReadError(node, f'namespace "{ns}" does not exist', "pass --collector-namespace with an "
                                 "existing namespace (default: the kubeconfig context's)")
        return NodeReadError(node, f"the API server refused the collector pod for node {node} ({failure.status}): "
                             f"{failure.message or failure.reason}",
                             "check the cluster's admission policies for pods with hostNetwork and NET_ADMIN")

    def _get_pod(self, name: str) -> dict[str, Any] | None:
        api, _ = self.kube._connect()
        op = Op("get", "pods", namespace=self.namespace, name=name)
        try:
            return self.kube.request(op, k8s_client.CoreV1Api(api).read_namespaced_pod, name, self.namespace)
        except StatusFailure as failure:
            if failure.status == 404:
                return None
            raise self.kube.translate(failure) from None

    def _wait_running(self, node: str, name: str, image: str, start: float) -> None:
        delay = 0.1
        end = start + self.options.start_timeout
        while True:
            if self._cancel.is_set():
                raise NodeReadError(node, "interrupted")
            pod = self._get_pod(name)
            if pod is None:
                raise NodeReadError(node, f"the collector pod {name} on node {node} was deleted before it ran",
                                    "something else removes pods in this namespace; pass --collector-namespace")
            status = pod.get("status") or {}
            phase = status.get("phase")
            container: dict[str, Any] = next(
                (c for c in status.get("containerStatuses") or [] if c.get("name") == CONTAINER), {})
            state = container.get("state") or {}
            if phase == "Running" and "running" in state:
                return
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in _PULL_FAILURES:
                said = self._event(name, ("Failed",)) or waiting.get("message") or waiting.get("reason")
                raise NodeReadError(node, f"the collector image {image} cannot be pulled on node {node} "
                                    f"({waiting.get('reason')}): {said}",
                                    "pass --image with an image the nodes have or can pull (by default svctrace "
                                    "uses the kube-proxy DaemonSet's image, which every node has)")
            if waiting.get("reason") in _START_FAILURES:
                raise NodeReadError(node, f"the collector pod cannot start on node {node} ({waiting.get('reason')}): "
                                    f"{waiting.get('message') or ''}".rstrip(": "),
                                    "pass --image with another image, or --privileged if the node's policy needs it")
            if phase in ("Failed", "Succeeded"):
                terminated = state.get("terminated") or {}
                why = terminated.get("message") or status.get("message") or terminated.get("reason") or phase
                raise NodeReadError(node, f"the collector pod on node {node} ended before it was read ({phase}): "
                                    f"{str(why).strip()}", "pass --image with an image that has sh and sleep "
                                    "(kube-proxy's has both)")
            if time.monotonic() > end:
                raise NodeReadError(node, f"the collector pod {name} on node {node} is still Pending after "
                                    f"{self.options.start_timeout:g}s: {self._pending_reason(pod, name)}",
                                    "check the node's kubelet (kubectl describe node "
                                    f"{node}); a slow image pull needs a longer --collect-timeout")
            self.progress(node, "starting", waiting.get("reason") or phase or "Pending")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _pending_reason(self, pod: dict[str, Any], name: str) -> str:
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("status") != "True" and cond.get("message"):
                return f"{cond.get('type')}: {cond['message']}"
        event = self._event(name, ())
        if event:
            return event
        if not status.get("containerStatuses") and not status.get("conditions"):
            return "no kubelet has reported on it (the node's kubelet may be down)"
        return f"phase {status.get('phase') or 'Pending'}"

    def _event(self, name: str, reasons: tuple[str, ...]) -> str | None:
        """The newest event about the pod (of these reasons, if given), in words; None when none or refused."""
        api, _ = self.kube._connect()
        op = Op("list", "events", namespace=self.namespace)
        try:
            events = self.kube.list_whole(op, k8s_client.CoreV1Api(api).list_namespaced_event, self.namespace,
                                     field_selector=f"involvedObject.name={name}")
        except (StatusFailure, CollectionError):
            return None
        chosen = [e for e in events if not reasons or e.get("reason") in reasons]
        if not chosen:
            return None
        last = max(chosen, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        return f"{last.get('reason')}: {last.get('message')}"

    def _exec(self, node: str, name: str) -> bytearray:
        """Run the read in the pod and bring its output back whole over the exec WebSocket."""
        self.progress(node, "reading", "0 MB")
        api, _ = self.kube._connect()
        # stream() swaps the ApiClient's request method while it connects: give it a client of its own
        own = k8s_client.ApiClient(api.configuration)
        own.user_agent = api.user_agent
        try:
            try:
                resp = stream(k8s_client.CoreV1Api(own).connect_get_namespaced_pod_exec, name, self.namespace,
                              command=EXEC_COMMAND, container=CONTAINER, stderr=True, stdin=False, stdout=True,
                              tty=False, _preload_content=False, binary=True)
            except k8s_client.ApiException as exc:
                raise self._exec_refused(node, name, str(exc.reason or "")) from None
            try:
                return drain(resp, node, abandon=self._abandon, limit=MAX_OUTPUT, idle=READ_BUDGET,
                             progress=lambda size: self.progress(node, "reading", f"{size / 2**20:.0f} MB"))
            except BaseException:
                # Delete the pod before hanging up: the kubelet then stops the read on the node, and the stream
                # ends from its side.
                self._delete(name)
                wait_closed(resp, 3.0)
                raise
            finally:
                resp.close()
                if resp.sock is not None:
                    with contextlib.suppress(OSError):
                        resp.sock.shutdown()
        finally:
            own.close()

    def _exec_refused(self, node: str, name: str, reason: str) -> CollectionError:
        status, body = handshake_status(reason)
        message = str(body.get("message") or reason.split(" -+-+- ")[0] or "no answer")
        if status == 403:
            return ForbiddenError(
                f'not allowed to exec into pods in namespace "{self.namespace}" (403 Forbidden): --collect reads '
                "the node through exec in its collector pod",
                f"ask for this Role and a RoleBinding to it:\n{role_yaml(self.namespace)}",
                verb="create", resource="pods/exec", namespace=self.namespace)
        return NodeReadError(node, f"cannot exec into the collector pod {name} on node {node}"
                             + (f" ({status})" if status else "") + f": {message}",
                             "the API server could not reach the node's kubelet; check the node")

    # -- deleting --

    def _delete(self, name: str) -> bool:
        """Delete one of this run's pods now (grace period 0); True once it is gone."""
        with self._pods.lock:
            if name in self._pods.gone:
                return True
        api, _ = self.kube._connect()
        op = Op("delete", "pods", namespace=self.namespace, name=name)
        try:
            self.kube.request(op, k8s_client.CoreV1Api(api).delete_namespaced_pod, name, self.namespace,
                            grace_period_seconds=0)
        except StatusFailure as failure:
            if failure.status != 404:
                return False
        except CollectionError:
            return False
        with self._pods.lock:
            self._pods.gone.add(name)
        return True

    def _delete_all(self, *, report: bool = True) -> None:
        left = []
        for name in list(self._pods.names):
            try:
                if not self._delete(name):
                    left.append(name)
            except KeyboardInterrupt:  # a second Ctrl-C: keep deleting, the pods must not stay
                left.append(name)
        if left and report:
            self.notes.append(f"could not delete collector pod(s) {', '.join(left)}: they end at their deadline; "
                              f"remove them now with: kubectl delete pod -n {self.namespace} -l {RUN_LABEL}="
                              f"{self.run_id}")

    @property
    def created(self) -> list[str]:
        """Every pod name this run asked for (for tests and messages)."""
        return list(self._pods.names)

