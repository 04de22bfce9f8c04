"""A stand-in kubelet (+ container runtime) for the fake kube-apiserver: pods pinned to a node run there.

Each simulated node is a network namespace (tests/integration/netns.py). A pod created through the API
with ``spec.nodeName: X`` on a registered node X has its containers' ``command``+``args`` (or the
image's entrypoint/cmd) run inside X's namespace (host network, as ``hostNetwork: true`` pods run), and
the pod's API object follows the process as a real kubelet reports it::

    server = FakeApiServer(objects, watch_timeout=None).start()
    kubelet = Kubelet(server, images=[kube_proxy_image()])      # attaches itself to the server
    kubelet.add_node("node-a", netns="svct-1a2b3c4d")           # the namespace must exist
    ...                                                         # POST a pod with nodeName node-a
    kubelet.close(); server.stop()

Lifecycle (v1.30 shapes, restartPolicy treated as Never: a container is never restarted):

* Pending (ContainerCreating) -> Running -> Succeeded (every container exited 0) or Failed; status
  carries ``startTime``, ``hostIP``/``podIP`` (the node's InternalIP for hostNetwork pods), conditions
  PodReadyToStartContainers, Initialized, Ready, ContainersReady, PodScheduled, and containerStatuses
  (waiting/running/terminated with exitCode, reason Completed/Error/StartError, containerID, imageID).
  Events (Pulling, Pulled, Created, Started, Killing, Failed, BackOff, DeadlineExceeded) are written to
  the API as the kubelet writes them, repeated ones counted.
* Images: only images the kubelet knows (``images=``, :meth:`Kubelet.add_image`) can be pulled. Any
  other leaves the pod Pending with its container waiting in ErrImagePull, then ImagePullBackOff,
  retried with a doubling back-off (``pull_backoff``: (first, max) seconds; the real kubelet's is
  (10, 300)), Warning events included.
* An image is a set of tools (:class:`Image`): the container's PATH is a directory of links to just
  those host programs (or scripts), so an image without ``nft`` or without a shell behaves so. A
  command that is not in the image fails to start: terminated, exit code 128, reason StartError with
  containerd's message; pod Failed.
* ``activeDeadlineSeconds`` counts from ``startTime`` (also while pulling): the containers are killed,
  the pod is Failed with reason DeadlineExceeded.
* Deletion: a graceful delete (the API sets deletionTimestamp) sends SIGTERM to the container's
  process group, SIGKILL after the grace period, then removes the pod object; a delete with
  gracePeriodSeconds=0 removes the object at once and the processes are killed right after.
* A node whose kubelet is down (:meth:`set_ready` False, or added with ``ready=False``) starts nothing:
  its pods stay Pending with no container statuses (nodeName bypasses the scheduler, so nothing else
  happens to them either), graceful deletes stay Terminating, and logs/exec cannot reach it (the
  apiserver's dial error). When it comes back it catches up.

Logs, as the kubelet and containerd keep them. Each container's stdout/stderr is written in the CRI
format (``<RFC3339Nano> stdout|stderr F|P <text>``, lines over 16 KiB split into P parts) to
``<root>/<ns>_<pod>_<uid>/<container>/0.log``. ``GET .../log`` reads it like the kubelet's ReadLogs:
``container``, ``follow``, ``tailLines`` (counted in CRI lines), ``limitBytes`` (cuts mid-line),
``timestamps`` (RFC3339NanoFixed prefix on every part), ``sinceSeconds``/``sinceTime``; ``previous``
is refused (nothing restarts). Rotation follows the kubelet's container log manager
(containerLogMaxSize ``log_max_size``, default 10 MiB; containerLogMaxFiles ``log_max_files``, default
5; containerLogMonitorInterval ``log_monitor_interval``, default 10 s; 0 checks after every write):
only a *running* container's log is rotated, when the current file has reached the maximum size; the
file is renamed ``0.log.<YYYYMMDD-HHMMSS>`` and a new ``0.log`` started, and old rotated files beyond
max_files-2 are removed (the real manager also gzips them; not done here). What a client then gets:

* ``kubectl logs`` (no follow) reads only the current file: after a rotation, everything written before
  it is gone from the API's point of view (the output starts mid-stream, with the lines written since
  the last rotation). A container that exits before a rotation check keeps its whole log, however big:
  rotation depends on timing, so a test wanting a deterministic cut uses ``log_monitor_interval=0``.
* ``kubectl logs -f`` started before the rotation follows it: the kubelet reopens the new file, so a
  follower reading while the container runs sees everything (the real one can lose the few lines
  written between the rename and containerd reopening its file; this one loses none).

Exec: ``pods/exec`` over WebSocket (tests/harness/websocket.py) runs the command in the node's namespace
with the container's image tools and environment, in a running container only; stdin, stdout and
stderr are relayed; the exit travels on the error channel (Success, NonZeroExitCode with the code, or
InternalError with containerd's message when the command is not in the image). ``tty`` is accepted but
no terminal is allocated (stderr is merged into stdout).

Recorded, not enforced: securityContext (capabilities, privileged, readOnlyRootFilesystem, runAsUser),
resources, volumes and mounts. Processes run as the test's user (root) in the node's network namespace
and in a private mount namespace (``ip netns exec``); their working directory is a per-container
scratch directory. Environment: PATH (the image's tools), HOSTNAME, HOME, KUBERNETES_SERVICE_HOST/PORT
(from the default/kubernetes Service, when there is one), the container's ``env`` with ``value``,
``fieldRef`` and ``configMapKeyRef``, and ``$(VAR)`` expansion in command and args.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from tests.harness.websocket import CLOSE_SIGNAL, ERROR, RESIZE, STDERR, STDIN, STDOUT, ChannelSocket, Closed
from tests.harness.wire import ApiStatus, Object, bad_request, now_rfc3339

if TYPE_CHECKING:
    from tests.harness.apiserver import FakeApiServer, LogOptions

MiB = 1024 * 1024
MAX_LOG_LINE = 16 * 1024  # containerd's max_container_log_line_size: longer lines become P parts
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# --- images ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Script:
    """A tool that is a script written into the image (shebang included)."""

    text: str


@dataclass(frozen=True)
class Image:
    """An image as the test cluster knows it: its name and the programs it contains.

    ``tools`` maps a command name in the image to a host program (a name looked up on the host's
    PATH, or an absolute path) or a :class:`Script`.
    """

    name: str
    tools: Mapping[str, str | Script] = field(default_factory=dict)
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.name.encode()).hexdigest()

    def without(self, *names: str) -> Image:
        """The same image minus some tools (e.g. a kube-proxy image without ``nft``)."""
        return replace(self, tools={k: v for k, v in self.tools.items() if k not in names})

    def with_tools(self, tools: Mapping[str, str | Script]) -> Image:
        return replace(self, tools={**self.tools, **tools})

    def renamed(self, name: str) -> Image:
        return replace(self, name=name)


# iptables-wrappers (kubernetes-sigs/iptables-wrappers, installed in the kube-proxy image): the
# unsuffixed iptables commands pick the backend the node's kubelet uses, by its hint chains, else by
# which backend has more rules.
IPTABLES_WRAPPER = r"""#!/bin/sh
name="${0##*/}"
hint() { "$1" -t mangle 2>/dev/null | grep -q -e KUBE-IPTABLES-HINT -e KUBE-KUBELET-CANARY; }
if hint @NFT_SAVE@; then mode=nft
elif hint @LEGACY_SAVE@; then mode=legacy
else
  legacy=$( (@LEGACY_SAVE@; @LEGACY6_SAVE@) 2>/dev/null | grep -c '^-')
  nft=$( (@NFT_SAVE@; @NFT6_SAVE@) 2>/dev/null | grep -c '^-')
  if [ "$legacy" -gt "$nft" ]; then mode=legacy; else mode=nft; fi
fi
case "$name" in
  ip6tables*) base=ip6tables; rest="${name#ip6tables}" ;;
  *) base=iptables; rest="${name#iptables}" ;;
esac
exec "@SBIN@/$base-$mode$rest" "$@"
"""

_IPTABLES_NAMES = [f"{b}{s}" for b in ("iptables", "ip6tables") for s in ("", "-save", "-restore")]


def _host_tool(name: str) -> str:
    found = shutil.which(name, path=HOST_PATH)
    return found or f"/usr/sbin/{name}"


def iptables_wrapper() -> Script:
    text = IPTABLES_WRAPPER
    for key, tool in (("NFT_SAVE", "iptables-nft-save"), ("LEGACY_SAVE", "iptables-legacy-save"),
                      ("NFT6_SAVE", "ip6tables-nft-save"), ("LEGACY6_SAVE", "ip6tables-legacy-save")):
        text = text.replace(f"@{key}@", _host_tool(tool))
    return Script(text.replace("@SBIN@", str(Path(_host_tool("iptables-nft-save")).parent)))


def kube_proxy_image(version: str = "v1.30.2", *, without: Iterable[str] = ()) -> Image:
    """registry.k8s.io/kube-proxy as built on distroless-iptables (kubernetes/release
    images/build/distroless-iptables): iptables in both backends behind iptables-wrapper, ip6tables,
    ipset, nft, kmod's modprobe, dash as sh and the few coreutils the wrapper needs. No conntrack, no
    ip, no ipvsadm."""
    tools: dict[str, str | Script] = {name: iptables_wrapper() for name in _IPTABLES_NAMES}
    for fam in ("iptables", "ip6tables"):
        for backend in ("nft", "legacy"):
            for suffix in ("", "-save", "-restore"):
                tools[f"{fam}-{backend}{suffix}"] = f"{fam}-{backend}{suffix}"
    tools.update({"xtables-nft-multi": "xtables-nft-multi", "xtables-legacy-multi": "xtables-legacy-multi",
                  "ipset": "ipset", "nft": "nft", "modprobe": "modprobe", "sh": "dash" if shutil.which("dash")
                  else "sh", "cat": "cat", "chmod": "chmod", "grep": "grep", "ln": "ln", "rm": "rm",
                  "sleep": "sleep", "wc": "wc"})
    image = Image(f"registry.k8s.io/kube-proxy:{version}", tools, entrypoint=("/usr/local/bin/kube-proxy",))
    return image.without(*without)


def shell_image(name: str = "docker.io/library/busybox:1.36", *, extra: Iterable[str] = ()) -> Image:
    """A small image with a shell and the usual coreutils (plus ``extra`` host tools)."""
    names = ["sh", "cat", "echo", "sleep", "printf", "head", "tail", "wc", "grep", "ls", "env", "true", "false",
             "yes", "dd", "sha256sum", "kill", *extra]
    return Image(name, {n: n for n in names}, cmd=("sh",))


def normalize_image(name: str) -> str:
    """How the kubelet reports an image reference: docker.io/library/ and :latest filled in."""
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name}" if rest else f"docker.io/library/{name}"
    last = name.rsplit("/", 1)[-1]
    if "@" not in name and ":" not in last:
        name += ":latest"
    return name


# --- logs -----------------------------------------------------------------------------------------------

def _cri_time(ts: float) -> str:
    """containerd's log timestamp: RFC3339Nano, trailing zeros of the fraction trimmed."""
    whole = int(ts)
    nanos = min(999_999_999, int((ts - whole) * 1e9))
    base = datetime.fromtimestamp(whole, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{nanos:09d}".rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def _fixed_time(cri: bytes) -> bytes:
    """A CRI timestamp as the kubelet prints it with ?timestamps=true (RFC3339NanoFixed)."""
    body = cri[:-1]  # drop Z
    head, _, frac = body.partition(b".")
    return head + b"." + frac.ljust(9, b"0") + b"Z"


def _parse_time(cri: bytes) -> float:
    head, _, frac = cri[:-1].partition(b".")
    base = datetime.strptime(head.decode(), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return base + (int(frac.ljust(9, b"0")) / 1e9 if frac else 0.0)


class ContainerLog:
    """One container's log files, written as containerd writes them and rotated as the kubelet does."""

    def __init__(self, directory: Path, max_size: int, max_files: int, strict: bool) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "0.log"
        self.max_size = max_size
        self.max_files = max_files
        self.strict = strict
        self.lock = threading.Lock()
        self.generation = 0
        self.rotations = 0
        self.written = 0  # bytes of container output taken in (not counting the CRI prefixes)
        self._fh = self.path.open("ab")
        self._size = 0
        self._partial = {"stdout": b"", "stderr": b""}
        self.segments: dict[int, Path] = {}  # rotated files still on disk, by generation

    def _entry(self, stream: str, tag: str, content: bytes) -> None:
        line = f"{_cri_time(time.time())} {stream} {tag} ".encode() + content + b"\n"
        self._fh.write(line)
        self._size += len(line)

    def write(self, stream: str, data: bytes) -> None:
        with self.lock:
            self.written += len(data)
            buf = self._partial[stream] + data
            start = 0
            while True:
                nl = buf.find(b"\n", start)
                if nl < 0:
                    break
                line = buf[start:nl]
                while len(line) > MAX_LOG_LINE:
                    self._entry(stream, "P", line[:MAX_LOG_LINE])
                    line = line[MAX_LOG_LINE:]
                self._entry(stream, "F", line)
                start = nl + 1
                if self.strict:
                    self._rotate_if_needed()
            rest = buf[start:]
            while len(rest) >= MAX_LOG_LINE:
                self._entry(stream, "P", rest[:MAX_LOG_LINE])
                rest = rest[MAX_LOG_LINE:]
            self._partial[stream] = rest
            self._fh.flush()
            if self.strict:
                self._rotate_if_needed()

    def end(self, stream: str) -> None:
        """The stream closed: a last line without a newline is written whole (tag F)."""
        with self.lock:
            if self._partial[stream]:
                self._entry(stream, "F", self._partial[stream])
                self._partial[stream] = b""
            self._fh.flush()

    def _rotate_if_needed(self) -> None:
        if self._size >= self.max_size:
            self._rotate()

    def rotate_if_needed(self) -> None:
        with self.lock:
            self._rotate_if_needed()

    def _rotate(self) -> None:
        self._fh.flush()
        self._fh.close()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        target = self.path.with_name(f"0.log.{stamp}")
        n = 0
        while target.exists():  # several rotations in one second: only when checking after every write
            n += 1
            target = self.path.with_name(f"0.log.{stamp}.{n:04d}")
        self.path.rename(target)
        self.segments[self.generation] = target
        # removeExcessLogs: at most max_files-1 rotated files beside the current one
        for old in sorted(self.segments)[:max(0, len(self.segments) - max(self.max_files - 1, 1))]:
            self.segments.pop(old).unlink(missing_ok=True)
        self._fh = self.path.open("ab")
        self._size = 0
        self.generation += 1
        self.rotations += 1

    def close(self) -> None:
        with self.lock:
            self._fh.close()

    def _open_since(self, generation: int) -> tuple[list[BinaryIO], int]:
        """Open the rotated files after ``generation`` that still exist, then the current one."""
        with self.lock:
            files: list[BinaryIO] = [self.segments[g].open("rb") for g in range(generation + 1, self.generation)
                                     if g in self.segments]
            files.append(self.path.open("rb"))
            return files, self.generation

    def _chunks(self, opts: LogOptions, running: Callable[[], bool], stop: threading.Event) -> Iterator[bytes]:
        """The bytes a reader gets: the current file; when following, then every file rotation starts."""
        with self.lock:
            files: list[BinaryIO] = [self.path.open("rb")]
            generation = self.generation
        try:
            if opts.tail_lines is not None:
                files[0].seek(_tail_offset(files[0], opts.tail_lines))
            while True:
                chunk = files[0].read(256 * 1024)
                if chunk:
                    yield chunk
                    continue
                if len(files) > 1:  # a rotated file, complete: on to the next one
                    files.pop(0).close()
                    continue
                if not opts.follow:
                    return
                with self.lock:
                    rotated = self.generation != generation
                if rotated:
                    # the writer has moved on, so what this file holds now is all it will ever hold
                    rest = files[0].read()
                    if rest:
                        yield rest
                    files[0].close()
                    files, generation = self._open_since(generation)
                    continue
                if not running():
                    rest = files[0].read()  # the last write may have landed between the read and the check
                    if rest:
                        yield rest
                        continue
                    return
                if stop.wait(0.05):
                    return
        finally:
            for f in files:
                f.close()

    def read(self, opts: LogOptions, running: Callable[[], bool], stop: threading.Event) -> Iterator[bytes]:
        """The kubelet's ReadLogs: CRI lines rendered with the request's options."""
        remain = opts.limit_bytes if opts.limit_bytes is not None else -1
        limited = opts.tail_lines is not None and not opts.follow
        left = opts.tail_lines or 0
        if limited and left == 0:
            return
        pending = b""
        for chunk in self._chunks(opts, running, stop):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            out: list[bytes] = []
            for raw in lines:
                piece = _render(raw, opts)
                if piece is None:
                    continue
                if 0 <= remain <= len(piece):
                    out.append(piece[:remain])
                    yield b"".join(out)
                    return
                if remain >= 0:
                    remain -= len(piece)
                out.append(piece)
                if limited:
                    left -= 1
                    if left == 0:
                        yield b"".join(out)
                        return
            if out:
                yield b"".join(out)


def _render(raw: bytes, opts: LogOptions) -> bytes | None:
    """One CRI line as the API prints it (None: skipped)."""
    try:
        ts, stream, tag, content = raw.split(b" ", 3)
    except ValueError:
        return None
    del stream
    if opts.since is not None and _parse_time(ts) < opts.since:
        return None
    text = content if tag.startswith(b"P") else content + b"\n"
    if opts.timestamps:
        text = _fixed_time(ts) + b" " + text
    return text


def _tail_offset(f: Any, n: int) -> int:
    """Where the last ``n`` lines of a file start (util/tail.FindTailLineStartIndex)."""
    f.seek(0, os.SEEK_END)
    end: int = f.tell()
    if n == 0:
        return end
    pos: int = end
    count = 0
    block = 64 * 1024
    # a complete file ends with a newline, which does not start a line
    while pos > 0:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        data: bytes = f.read(step)
        limit = len(data) - (1 if pos + step == end and data.endswith(b"\n") else 0)
        i = limit
        while True:
            i = data.rfind(b"\n", 0, i)
            if i < 0:
                break
            count += 1
            if count == n:
                return pos + i + 1
    return 0


# --- the kubelet ----------------------------------------------------------------------------------------

@dataclass
class _Container:
    name: str
    image_ref: str
    spec: Object
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    exit_code: int | None = None
    container_id: str = ""
    image_id: str = ""
    started_at: str = ""
    finished_at: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log: ContainerLog | None = None
    pumps: list[threading.Thread] = field(default_factory=list)
    image: Image | None = None
    bindir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class _Pod:
    namespace: str
    name: str
    uid: str
    node: str
    spec: Object
    containers: list[_Container]
    workdir: Path
    wake: threading.Event = field(default_factory=threading.Event)
    deleting: float | None = None  # the grace deadline (monotonic) once a graceful delete arrived
    removed: bool = False  # gone from the API (immediate delete)
    start: float | None = None
    deadline_exceeded: bool = False
    phase: str = "Pending"
    cond_times: dict[str, tuple[str, str]] = field(default_factory=dict)
    execs: set[subprocess.Popen[bytes]] = field(default_factory=set)
    worker: threading.Thread | None = None
    events: dict[tuple[str, str, str, str], str] = field(default_factory=dict)

    def container(self, name: str) -> _Container | None:
        return next((c for c in self.containers if c.name == name), None)


@dataclass
class SimNodeAgent:
    """What the kubelet knows of one node."""

    name: str
    netns: str
    ready: bool = True
    tools: dict[str, str | Script] = field(default_factory=dict)  # node-specific tool overrides


class Kubelet:
    """The kubelets of every simulated node, attached to one FakeApiServer (see the module docstring)."""

    def __init__(self, server: FakeApiServer, *, images: Iterable[Image] = (), log_max_size: int = 10 * MiB,
                 log_max_files: int = 5, log_monitor_interval: float = 10.0,
                 pull_backoff: tuple[float, float] = (1.0, 30.0), pull_error_seconds: float = 0.2,
                 root: Path | None = None) -> None:
        self.server = server
        self.images: dict[str, Image] = {}
        for image in images:
            self.add_image(image)
        self.pull_errors: dict[str, str] = {}  # image -> the registry's error, for a custom pull failure
        self.log_max_size = log_max_size
        self.log_max_files = log_max_files
        self.log_monitor_interval = log_monitor_interval
        self.pull_backoff = pull_backoff
        self.pull_error_seconds = pull_error_seconds
        self.nodes: dict[str, SimNodeAgent] = {}
        self.errors: list[str] = []  # harness failures inside worker threads (a test asserts it is empty)
        self._pods: dict[str, _Pod] = {}
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="svctrace-kubelet-")) if root is None else root
        self._ip = shutil.which("ip") or "/usr/sbin/ip"
        self._monitor: threading.Thread | None = None
        if log_monitor_interval > 0:
            self._monitor = threading.Thread(target=self._monitor_logs, name="sim-kubelet-logs", daemon=True)
            self._monitor.start()
        server.attach_kubelet(self)

    # -- configuration --

    def add_node(self, name: str, netns: str, *, ready: bool = True,
                 tools: Mapping[str, str | Script] | None = None) -> None:
        """Run the pods bound to ``name`` in network namespace ``netns`` (``tools`` override image tools there)."""
        with self._lock:
            self.nodes[name] = SimNodeAgent(name, netns, ready, dict(tools or {}))

    def set_ready(self, name: str, ready: bool) -> None:
        """Bring a node's kubelet up or down (down: it starts nothing and cannot be reached)."""
        with self._lock:
            self.nodes[name].ready = ready
            pods = [p for p in self._pods.values() if p.node == name]
        for p in pods:
            p.wake.set()

    def add_image(self, image: Image) -> None:
        self.images[image.name] = image
        self.images[normalize_image(image.name)] = image

    def remove_image(self, name: str) -> None:
        self.images.pop(name, None)
        self.images.pop(normalize_image(name), None)

    def rotate_logs(self) -> None:
        """One pass of the container log manager now (running containers whose log reached the maximum)."""
        with self._lock:
            logs = [c.log for p in self._pods.values() for c in p.containers
                    if c.state == "running" and c.log is not None]
        for log in logs:
            log.rotate_if_needed()

    def container_log(self, namespace: str, pod: str, container: str) -> ContainerLog | None:
        """A container's log files (tests read rotation counts from it)."""
        with self._lock:
            for p in self._pods.values():
                if (p.namespace, p.name) == (namespace, pod):
                    c = p.container(container)
                    return c.log if c is not None else None
        return None

    def live_processes(self) -> list[int]:
        """Pids of container and exec processes still running."""
        with self._lock:
            procs = [c.proc for p in self._pods.values() for c in p.containers if c.proc is not None]
            procs += [e for p in self._pods.values() for e in p.execs]
        return [pr.pid for pr in procs if pr.poll() is None]

    def close(self) -> None:
        """Kill every process, end every thread, remove the kubelet's files."""
        self._closing.set()
        with self._lock:
            pods = list(self._pods.values())
        for p in pods:
            p.wake.set()
        for p in pods:
            self._kill(p, grace=0.5)
        for p in pods:
            if p.worker is not None:
                p.worker.join(timeout=10)
            for c in p.containers:
                for t in c.pumps:
                    t.join(timeout=5)
                if c.log is not None:
                    c.log.close()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def live_threads(self) -> list[threading.Thread]:
        with self._lock:
            threads = [p.worker for p in self._pods.values() if p.worker is not None]
            threads += [t for p in self._pods.values() for c in p.containers for t in c.pumps]
        if self._monitor is not None:
            threads.append(self._monitor)
        return [t for t in threads if t.is_alive()]

    # -- NodeAgent: what the apiserver calls --

    def knows(self, node: str) -> bool:
        with self._lock:
            return node in self.nodes

    def serves(self, node: str) -> bool:
        with self._lock:
            agent = self.nodes.get(node)
            return agent is not None and agent.ready

    def pod_created(self, pod: Object) -> None:
        node = str(pod["spec"].get("nodeName") or "")
        with self._lock:
            if node not in self.nodes or self._closing.is_set():
                return
            meta = pod["metadata"]
            uid = meta["uid"]
            workdir = self.root / f"{meta['namespace']}_{meta['name']}_{uid}"
            containers = [_Container(c["name"], str(c.get("image", "")), c) for c in pod["spec"]["containers"]]
            p = _Pod(meta["namespace"], meta["name"], uid, node, pod["spec"], containers, workdir)
            self._pods[uid] = p
            p.worker = threading.Thread(target=self._run, args=(p,), daemon=True,
                                        name=f"sim-kubelet-{node}-{meta['name']}")
            p.worker.start()

    def pod_deleting(self, pod: Object) -> None:
        with self._lock:
            p = self._pods.get(pod["metadata"]["uid"])
        if p is None:
            return
        grace = float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
        if p.deleting is None or time.monotonic() + grace < p.deleting:
            p.deleting = time.monotonic() + grace
        p.wake.set()

    def pod_removed(self, pod: Object) -> None:
        with self._lock:
            p = self._pods.get(pod["metadata"]["uid"])
        if p is None:
            return
        p.removed = True
        p.wake.set()

    def _pod_for(self, pod: Object) -> _Pod | None:
        with self._lock:
            return self._pods.get(pod["metadata"]["uid"])

    def logs(self, pod: Object, opts: LogOptions, stop: threading.Event) -> Iterator[bytes]:
        name = pod["metadata"]["name"]
        p = self._pod_for(pod)
        c = p.container(opts.container) if p is not None else None
        if p is None or c is None:
            raise bad_request(f'container "{opts.container}" in pod "{name}" is not available')
        if opts.previous:
            raise bad_request(f'previous terminated container "{c.name}" in pod "{name}" not found')
        if c.state == "terminated" and c.log is None:
            return iter([b""])  # it never started (StartError): its log file is empty
        if c.state == "waiting" or c.log is None:
            if c.reason == "ErrImagePull":
                raise bad_request(f'container "{c.name}" in pod "{name}" is waiting to start: image can\'t be pulled')
            if c.reason == "ImagePullBackOff":
                raise bad_request(f'container "{c.name}" in pod "{name}" is waiting to start: trying and failing '
                                  "to pull image")
            raise bad_request(f'container "{c.name}" in pod "{name}" is waiting to start: {c.reason}')
        return c.log.read(opts, lambda: c.state == "running", stop)

    def check_exec(self, pod: Object, container: str) -> None:
        p = self._pod_for(pod)
        c = p.container(container) if p is not None else None
        if c is None or c.state != "running":
            raise ApiStatus(500, "", f'container not found ("{container}")')

    def exec_stream(self, pod: Object, container: str, command: list[str], *, stdin: bool, stdout: bool,
                    stderr: bool, tty: bool, ws: ChannelSocket, stop: threading.Event) -> None:
        p = self._pod_for(pod)
        c = p.container(container) if p is not None else None
        if p is None or c is None or c.state != "running" or c.image is None or c.bindir is None:
            ws.send_status(_internal(f'container not found ("{container}")'))
            return
        exe = self._resolve(c, command[0])
        exec_id = uuid.uuid4().hex + uuid.uuid4().hex
        if exe is None:
            ws.send_status(_internal(
                f'error executing command in container: failed to exec in container: failed to start exec '
                f'"{exec_id}": OCI runtime exec failed: exec failed: unable to start container process: exec: '
                f'"{command[0]}": executable file not found in $PATH: unknown'))
            return
        proc = subprocess.Popen(
            [self._ip, "netns", "exec", self.nodes[p.node].netns, exe, *command[1:]],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if tty else subprocess.PIPE, env=c.env, cwd=str(p.workdir),
            start_new_session=True)
        with self._lock:
            p.execs.add(proc)
        try:
            code = self._relay(proc, ws, stdin, stdout, stderr, stop)
        finally:
            with self._lock:
                p.execs.discard(proc)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        if code is None:
            return
        if code == 0:
            ws.send_status({"metadata": {}, "status": "Success"})
        else:
            shown = "[" + " ".join(command) + "]"
            ws.send_status({"metadata": {}, "status": "Failure",
                            "message": f"command terminated with non-zero exit code: error executing command "
                                       f"{shown}, exit code {code}",
                            "reason": "NonZeroExitCode",
                            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}})

    def _relay(self, proc: subprocess.Popen[bytes], ws: ChannelSocket, stdin: bool, stdout: bool, stderr: bool,
               stop: threading.Event) -> int | None:
        """Relay the process's output to the client and the client's stdin to it; its exit code (None: gone)."""
        sel = selectors.DefaultSelector()
        outputs: dict[int, int] = {}
        for pipe, channel, wanted in ((proc.stdout, STDOUT, stdout), (proc.stderr, STDERR, stderr)):
            if pipe is not None:
                os.set_blocking(pipe.fileno(), False)
                sel.register(pipe, selectors.EVENT_READ, (channel, wanted))
                outputs[pipe.fileno()] = channel
        try:
            while outputs:
                if stop.is_set() or self._closing.is_set():
                    _killpg(proc, signal.SIGKILL)
                    return None
                if ws.readable(0):
                    try:
                        channel, data = ws.recv()
                    except Closed:
                        _killpg(proc, signal.SIGKILL)
                        return None
                    if channel == STDIN and stdin and proc.stdin is not None and data:
                        with contextlib.suppress(OSError):
                            proc.stdin.write(data)
                            proc.stdin.flush()
                    elif channel == CLOSE_SIGNAL and data[:1] == bytes([STDIN]) and proc.stdin is not None:
                        proc.stdin.close()
                    elif channel in (RESIZE, ERROR):
                        pass
                for key, _ in sel.select(timeout=0.05):
                    channel, wanted = key.data
                    try:
                        data = os.read(key.fd, 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        sel.unregister(key.fileobj)
                        outputs.pop(key.fd, None)
                        continue
                    if wanted:
                        try:
                            ws.send_channel(channel, data)
                        except Closed:
                            _killpg(proc, signal.SIGKILL)
                            return None
            rc = proc.wait()
        finally:
            sel.close()
        return rc if rc >= 0 else 128 - rc

    # -- the pod worker --

    def _run(self, p: _Pod) -> None:
        try:
            self._sync(p)
        except Exception as exc:  # noqa: BLE001 - a harness bug must fail the test, not vanish in a thread
            self.errors.append(f"{p.namespace}/{p.name}: {type(exc).__name__}: {exc}")
            self._kill(p, grace=0.5)

    def _wait(self, p: _Pod, seconds: float) -> None:
        p.wake.wait(seconds)
        p.wake.clear()

    def _stopped(self, p: _Pod) -> bool:
        return self._closing.is_set() or p.removed

    def _sync(self, p: _Pod) -> None:
        node = self.nodes[p.node]
        while not node.ready:
            if self._stopped(p):
                return
            self._wait(p, 0.5)
        if self._stopped(p):
            return
        if p.deleting is not None:
            self.server.remove("Pod", p.namespace, p.name, uid=p.uid)
            return
        p.start = time.time()
        p.workdir.mkdir(parents=True, exist_ok=True)
        self._report(p)
        deadline = None
        ads = p.spec.get("activeDeadlineSeconds")
        if ads:
            deadline = time.monotonic() + float(ads)
        if self._pull_all(p, deadline):
            for c in p.containers:
                self._start(p, c)
            self._report(p)
            self._wait_exit(p, deadline)
        elif p.deadline_exceeded:
            for c in p.containers:
                if c.state == "waiting":
                    c.state, c.exit_code, c.reason = "terminated", 137, "ContainerStatusUnknown"
                    c.message = "The container could not be located when the pod was terminated"
        self._finish(p)

    def _interrupted(self, p: _Pod, deadline: float | None) -> bool:
        if deadline is not None and time.monotonic() >= deadline and not p.deadline_exceeded:
            p.deadline_exceeded = True
            self._event(p, None, "Normal", "DeadlineExceeded",
                        "Pod was active on the node longer than the specified deadline")
        return self._stopped(p) or p.deleting is not None or p.deadline_exceeded

    def _pause(self, p: _Pod, seconds: float, deadline: float | None) -> bool:
        """Wait, waking early for deletion, close or the deadline; True if the pod must stop."""
        end = time.monotonic() + seconds
        while True:
            if self._interrupted(p, deadline):
                return True
            left = end - time.monotonic()
            if deadline is not None:
                left = min(left, deadline - time.monotonic())
            if left <= 0:
                return self._interrupted(p, deadline)
            self._wait(p, min(left, 0.5))

    def _pull_all(self, p: _Pod, deadline: float | None) -> bool:
        for c in p.containers:
            backoff = self.pull_backoff[0]
            while True:
                if self._interrupted(p, deadline):
                    return False
                image = self.images.get(c.image_ref) or self.images.get(normalize_image(c.image_ref))
                policy = c.spec.get("imagePullPolicy", "IfNotPresent")
                if image is not None:
                    c.image = image
                    if policy == "Always":
                        self._event(p, c, "Normal", "Pulling", f'Pulling image "{c.image_ref}"')
                        self._event(p, c, "Normal", "Pulled", f'Successfully pulled image "{c.image_ref}" in 12ms '
                                    "(12ms including waiting). Image size: 31415926 bytes.")
                    else:
                        self._event(p, c, "Normal", "Pulled",
                                    f'Container image "{c.image_ref}" already present on machine')
                    break
                ref = normalize_image(c.image_ref)
                error = self.pull_errors.get(c.image_ref) or (
                    f'rpc error: code = NotFound desc = failed to pull and unpack image "{ref}": failed to resolve '
                    f'reference "{ref}": {ref}: not found')
                if policy == "Never":
                    c.reason, c.message = "ErrImageNeverPull", (
                        f'Container image "{c.image_ref}" is not present with pull policy of Never')
                    self._event(p, c, "Warning", "ErrImageNeverPull", c.message)
                    self._report(p)
                    if self._pause(p, backoff, deadline):
                        return False
                    continue
                self._event(p, c, "Normal", "Pulling", f'Pulling image "{c.image_ref}"')
                self._event(p, c, "Warning", "Failed", f'Failed to pull image "{c.image_ref}": {error}')
                self._event(p, c, "Warning", "Failed", "Error: ErrImagePull")
                c.reason, c.message = "ErrImagePull", error
                self._report(p)
                if self._pause(p, self.pull_error_seconds, deadline):
                    return False
                c.reason, c.message = "ImagePullBackOff", f'Back-off pulling image "{c.image_ref}"'
                self._event(p, c, "Normal", "BackOff", f'Back-off pulling image "{c.image_ref}"')
                self._event(p, c, "Warning", "Failed", "Error: ImagePullBackOff")
                self._report(p)
                if self._pause(p, backoff, deadline):
                    return False
                backoff = min(backoff * 2, self.pull_backoff[1])
        return True

    def _resolve(self, c: _Container, command: str) -> str | None:
        """The host path a command runs as in this container, or None when the image lacks it."""
        assert c.bindir is not None
        base = command.rsplit("/", 1)[-1]
        candidate = c.bindir / base
        if candidate.exists() or candidate.is_symlink():
            return str(candidate)
        return None

    def _make_bindir(self, p: _Pod, c: _Container) -> Path:
        assert c.image is not None
        bindir = p.workdir / c.name / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        tools = {**c.image.tools, **self.nodes[p.node].tools}
        for name, target in tools.items():
            dest = bindir / name
            if isinstance(target, Script):
                dest.write_text(target.text)
                dest.chmod(0o755)
            else:
                host = target if target.startswith("/") else shutil.which(target, path=HOST_PATH)
                if host is not None:
                    dest.symlink_to(host)
        return bindir

    def _environment(self, p: _Pod, c: _Container) -> dict[str, str] | str:
        """The container's environment, or the reason it cannot be built (CreateContainerConfigError)."""
        assert c.bindir is not None
        node_ip = self._node_ip(p.node)
        env: dict[str, str] = {"PATH": str(c.bindir), "HOME": "/root",
                               "HOSTNAME": p.node if p.spec.get("hostNetwork") else p.name}
        kube = self.server.get("Service", "default", "kubernetes")
        if kube is not None and (kube.get("spec") or {}).get("clusterIP"):
            port = ((kube["spec"].get("ports") or [{}])[0]).get("port", 443)
            env.update({"KUBERNETES_SERVICE_HOST": kube["spec"]["clusterIP"], "KUBERNETES_SERVICE_PORT": str(port),
                        "KUBERNETES_PORT": f"tcp://{kube['spec']['clusterIP']}:{port}"})
        api = self.server.get("Pod", p.namespace, p.name) or {}
        for var in c.spec.get("env") or []:
            name = var.get("name", "")
            if "value" in var or "valueFrom" not in var:
                env[name] = _expand(str(var.get("value", "")), env)
                continue
            source = var["valueFrom"]
            if "fieldRef" in source:
                path = source["fieldRef"].get("fieldPath", "")
                value = _field(api, path, node_ip)
                if value is None:
                    return f'unsupported fieldPath "{path}"'
                env[name] = value
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                cm = self.server.get("ConfigMap", p.namespace, ref.get("name", ""))
                if cm is None or ref.get("key") not in (cm.get("data") or {}):
                    if ref.get("optional"):
                        continue
                    return (f'configmap "{ref.get("name")}" not found' if cm is None
                            else f'couldn\'t find key {ref.get("key")} in ConfigMap {p.namespace}/{ref.get("name")}')
                env[name] = cm["data"][ref["key"]]
            else:
                return f"valueFrom {sorted(source)} is not supported by the test kubelet"
        return env

    def _start(self, p: _Pod, c: _Container) -> None:
        if self._interrupted(p, None):
            return
        assert c.image is not None
        c.bindir = self._make_bindir(p, c)
        env = self._environment(p, c)
        if isinstance(env, str):
            c.reason, c.message = "CreateContainerConfigError", env
            self._event(p, c, "Warning", "Failed", f"Error: {env}")
            return
        c.env = env
        spec_args: list[str] | None = c.spec.get("args")
        if spec_args is None:
            spec_args = [] if c.spec.get("command") else list(c.image.cmd)
        command = [_expand(a, env) for a in (c.spec.get("command") or list(c.image.entrypoint))]
        args = [_expand(a, env) for a in spec_args]
        argv = command + args
        c.container_id = "containerd://" + hashlib.sha256(f"{p.uid}/{c.name}".encode()).hexdigest()
        c.image_id = f"{normalize_image(c.image_ref).rsplit(':', 1)[0]}@{c.image.digest}"
        exe = self._resolve(c, argv[0]) if argv else None
        if exe is None:
            shown = argv[0] if argv else ""
            why = (f'exec: "{shown}": executable file not found in $PATH' if argv and "/" not in shown
                   else f'exec: "{shown}": stat {shown}: no such file or directory' if argv
                   else "no command specified")
            c.state, c.exit_code, c.reason = "terminated", 128, "StartError"
            c.message = (f"failed to create containerd task: failed to create shim task: OCI runtime create failed: "
                         f"runc create failed: unable to start container process: {why}: unknown")
            c.started_at, c.finished_at = "1970-01-01T00:00:00Z", now_rfc3339()
            self._event(p, c, "Normal", "Created", f"Created container {c.name}")
            self._event(p, c, "Warning", "Failed", f"Error: {c.message}")
            return
        c.log = ContainerLog(p.workdir / c.name, self.log_max_size, self.log_max_files,
                             strict=self.log_monitor_interval <= 0)
        self._event(p, c, "Normal", "Created", f"Created container {c.name}")
        c.proc = subprocess.Popen([self._ip, "netns", "exec", self.nodes[p.node].netns, exe, *argv[1:]],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=env, cwd=str(p.workdir), start_new_session=True)
        c.state, c.reason, c.message, c.started_at = "running", "", "", now_rfc3339()
        # one reader for both streams keeps their order, as far as the process's writes allow
        t = threading.Thread(target=self._pump, args=(c.proc, c.log), daemon=True,
                             name=f"sim-kubelet-log-{p.name}-{c.name}")
        c.pumps.append(t)
        t.start()
        self._event(p, c, "Normal", "Started", f"Started container {c.name}")

    @staticmethod
    def _pump(proc: subprocess.Popen[bytes], log: ContainerLog) -> None:
        sel = selectors.DefaultSelector()
        for pipe, stream in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
            if pipe is not None:
                os.set_blocking(pipe.fileno(), False)
                sel.register(pipe, selectors.EVENT_READ, stream)
        try:
            while sel.get_map():
                for key, _ in sel.select(timeout=1.0):
                    try:
                        data = os.read(key.fd, 65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        log.write(key.data, data)
                    else:
                        sel.unregister(key.fileobj)
                        log.end(key.data)
        finally:
            sel.close()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()

    def _wait_exit(self, p: _Pod, deadline: float | None) -> None:
        killing = False
        while True:
            running = [c for c in p.containers if c.state == "running"]
            for c in running:
                assert c.proc is not None
                if c.proc.poll() is not None:
                    for t in c.pumps:
                        t.join(timeout=10)
                    rc = c.proc.returncode
                    c.exit_code = rc if rc >= 0 else 128 - rc
                    c.state = "terminated"
                    c.reason = "Completed" if c.exit_code == 0 else "Error"
                    c.finished_at = now_rfc3339()
                    self._report(p)
            if not any(c.state == "running" for c in p.containers):
                # a container that could not be configured waits (Pending) until the pod is stopped
                if not any(c.state == "waiting" for c in p.containers) or self._interrupted(p, deadline):
                    return
            elif not killing and self._interrupted(p, deadline):
                killing = True
                if p.removed or self._closing.is_set():
                    grace = 1.0
                elif p.deleting is not None:
                    grace = max(0.0, p.deleting - time.monotonic())
                else:
                    grace = float(p.spec.get("terminationGracePeriodSeconds", 30))
                for c in p.containers:
                    if c.state == "running":
                        self._event(p, c, "Normal", "Killing", f"Stopping container {c.name}")
                threading.Thread(target=self._kill, args=(p, grace), daemon=True,
                                 name=f"sim-kubelet-kill-{p.name}").start()
            self._wait(p, 0.05)

    def _kill(self, p: _Pod, grace: float) -> None:
        procs = [c.proc for c in p.containers if c.proc is not None and c.proc.poll() is None]
        with self._lock:
            procs += [e for e in p.execs if e.poll() is None]
        for proc in procs:
            _killpg(proc, signal.SIGTERM)
        end = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                _killpg(proc, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)

    def _finish(self, p: _Pod) -> None:
        if self._closing.is_set():
            return
        if not p.removed:
            self._report(p, final=True)
        if p.deleting is not None and not p.removed:
            # the kubelet's own final delete (grace 0) once everything has stopped
            self.server.remove("Pod", p.namespace, p.name, uid=p.uid)

    # -- status and events --

    def _node_ip(self, node: str) -> str:
        obj = self.server.get("Node", "", node) or {}
        for addr in (obj.get("status") or {}).get("addresses") or []:
            if addr.get("type") == "InternalIP":
                return str(addr.get("address"))
        return "127.0.0.1"

    def _condition(self, p: _Pod, type_: str, status: str, reason: str = "", message: str = "") -> Object:
        prev = p.cond_times.get(type_)
        if prev is None or prev[0] != status:
            prev = (status, now_rfc3339())
            p.cond_times[type_] = prev
        cond: Object = {"type": type_, "status": status, "lastProbeTime": None, "lastTransitionTime": prev[1]}
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        return cond

    def _report(self, p: _Pod, *, final: bool = False) -> None:
        states = [c.state for c in p.containers]
        if final or all(s == "terminated" for s in states):
            failed = p.deadline_exceeded or any(c.exit_code not in (0, None) for c in p.containers) or \
                any(c.state != "terminated" for c in p.containers)
            phase = "Failed" if failed else "Succeeded"
        elif any(s == "running" for s in states):
            phase = "Running"
        else:
            phase = "Pending"
        p.phase = phase
        node_ip = self._node_ip(p.node)
        pod_ip = node_ip if p.spec.get("hostNetwork") else "10.244.254." + str(int(p.uid[:2], 16) % 250 + 2)
        terminal = phase in ("Succeeded", "Failed")
        unready = [c.name for c in p.containers if c.state != "running"]
        end_reason = "PodCompleted" if phase == "Succeeded" else "PodFailed"
        ready_args = (("True",) if not unready and not terminal else
                      ("False", end_reason) if terminal else
                      ("False", "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]"))
        conditions = [
            self._condition(p, "PodReadyToStartContainers", "False" if terminal else "True"),
            self._condition(p, "Initialized", "True", "PodCompleted" if terminal else ""),
            self._condition(p, "Ready", *ready_args),
            self._condition(p, "ContainersReady", *ready_args),
            self._condition(p, "PodScheduled", "True"),
        ]
        statuses = [self._container_status(c) for c in p.containers]
        start_time = now_rfc3339(p.start) if p.start is not None else None

        def change(doc: Object) -> None:
            status = doc.setdefault("status", {})
            status.update({"phase": phase, "conditions": conditions, "hostIP": node_ip,
                           "hostIPs": [{"ip": node_ip}], "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
                           "startTime": start_time, "containerStatuses": statuses})
            if p.deadline_exceeded:
                status["reason"] = "DeadlineExceeded"
                status["message"] = "Pod was active on the node longer than the specified deadline"

        self.server.update("Pod", p.namespace, p.name, change, uid=p.uid)

    @staticmethod
    def _container_status(c: _Container) -> Object:
        if c.state == "running":
            state: Object = {"running": {"startedAt": c.started_at}}
        elif c.state == "terminated":
            term: Object = {"exitCode": c.exit_code, "reason": c.reason}
            if c.message:
                term["message"] = c.message
            term.update({"startedAt": c.started_at or None, "finishedAt": c.finished_at or now_rfc3339()})
            if c.container_id:
                term["containerID"] = c.container_id
            state = {"terminated": term}
        else:
            state = {"waiting": {"reason": c.reason, **({"message": c.message} if c.message else {})}}
        status: Object = {"name": c.name, "state": state, "lastState": {}, "ready": c.state == "running",
                          "restartCount": 0, "image": normalize_image(c.image_ref), "imageID": c.image_id,
                          "started": c.state == "running"}
        if c.container_id:
            status["containerID"] = c.container_id
        return status

    def _event(self, p: _Pod, c: _Container | None, type_: str, reason: str, message: str) -> None:
        """Record an Event as the kubelet's recorder does (a repeat bumps count and lastTimestamp)."""
        field_path = f"spec.containers{{{c.name}}}" if c is not None else ""
        key = (type_, reason, message, field_path)
        now = now_rfc3339()
        existing = p.events.get(key)
        if existing is not None:
            def bump(doc: Object) -> None:
                doc["count"] = int(doc.get("count", 1)) + 1
                doc["lastTimestamp"] = now

            if self.server.update("Event", p.namespace, existing, bump) is not None:
                return
        name = f"{p.name}.{time.time_ns():x}"
        pod = self.server.get("Pod", p.namespace, p.name) or {}
        involved: Object = {"kind": "Pod", "namespace": p.namespace, "name": p.name, "uid": p.uid, "apiVersion": "v1",
                            "resourceVersion": (pod.get("metadata") or {}).get("resourceVersion", "")}
        if field_path:
            involved["fieldPath"] = field_path
        self.server.add({"apiVersion": "v1", "kind": "Event",
                         "metadata": {"name": name, "namespace": p.namespace, "creationTimestamp": now,
                                      "uid": str(uuid.uuid4())},
                         "involvedObject": involved, "reason": reason, "message": message,
                         "source": {"component": "kubelet", "host": p.node}, "firstTimestamp": now,
                         "lastTimestamp": now, "count": 1, "type": type_, "eventTime": None,
                         "reportingComponent": "kubelet", "reportingInstance": p.node})
        p.events[key] = name

    def _monitor_logs(self) -> None:
        while not self._closing.wait(self.log_monitor_interval):
            self.rotate_logs()


def _internal(message: str) -> Object:
    """An InternalError Status as the exec error channel carries it."""
    return {"metadata": {}, "status": "Failure", "message": f"Internal error occurred: {message}",
            "reason": "InternalError", "details": {"causes": [{"message": message}]}, "code": 500}


def _killpg(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion ($$ escapes a dollar; unknown references stay as written)."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, text)


def _field(pod: Object, path: str, node_ip: str) -> str | None:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
              "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
              "spec.serviceAccountName": spec.get("serviceAccountName"), "status.hostIP": node_ip,
              "status.hostIPs": node_ip,
              "status.podIP": node_ip if spec.get("hostNetwork") else status.get("podIP", ""),
              "status.podIPs": node_ip if spec.get("hostNetwork") else status.get("podIP", "")}
    if path not in simple:
        return None
    return str(simple[path] or "")

