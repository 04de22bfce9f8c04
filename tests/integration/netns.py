"""A network-namespace harness for dataplane tests: a node, its pods and an external client, for real.

Everything runs in throw-away network namespaces named ``svct-<random>...``; nothing touches the
host's own network and traffic only ever goes to addresses inside namespaces the harness made.
The layout copies a Calico node (the demo cluster's CNI), so rules taken from a real node work as is::

    client ns                    node ns ("the node")                          pod ns (one per pod)
    eth0 192.168.1.10/24 ──veth── ens33 192.168.1.63/24                         eth0 10.244.x.y/32
                                  default via 192.168.1.1 (nobody: a dead end)   default via 169.254.1.1
                                  cali<hash> (proxy ARP) ──────────veth───────── (answered by proxy ARP)
                                  route 10.244.x.y/32 dev cali<hash>

Usage::

    with NetnsNode(backend="nft") as node:
        node.load_rules(Path("iptables-save.txt").read_text())     # nfacct counters made first
        node.add_pod("web-1", "10.244.1.5", tcp_ports=(80,))        # echo server answers "web-1"
        assert connect_tcp(node.client, "192.168.1.63", 30080) == "web-1"
        assert connect_tcp(node, "10.96.0.10", 80) == "web-1"       # from the node itself

A pod runs one small Python echo server that answers every TCP connection and UDP datagram on its
ports with its own name and the source address it saw, so a test knows which pod a packet reached
and whether it was masqueraded on the way. Each probe is a fresh connection (a new conntrack entry,
so kube-proxy's random endpoint choice is made again) bounded by a timeout (1 s by default).

Cleanup: :meth:`NetnsNode.close` (also run by ``__exit__``, the pytest fixtures and, for anything
still alive, an ``atexit`` hook) kills every process the node started and deletes every namespace
it created, even after a failure half-way through setup. Only the names it created are touched, so
parallel runs by other people on the same machine are safe.

Tests call :func:`require_netns` first: it skips when the machine cannot do this (not root, no
``ip``, no ``iptables-restore`` for the backend, ...) unless ``SVCTRACE_REQUIRE_NETNS=1`` (CI), in
which case it fails with the same reason.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import secrets
import select
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

import pytest

PREFIX = "svct-"
REQUIRE_ENV = "SVCTRACE_REQUIRE_NETNS"
DEFAULT_TIMEOUT = 1.0

# iptables binaries per backend: (restore, save) for IPv4 and IPv6.
BACKENDS: dict[str, dict[int, tuple[str, str]]] = {
    "nft": {4: ("iptables-nft-restore", "iptables-nft-save"), 6: ("ip6tables-nft-restore", "ip6tables-nft-save")},
    "legacy": {
        4: ("iptables-legacy-restore", "iptables-legacy-save"),
        6: ("ip6tables-legacy-restore", "ip6tables-legacy-save"),
    },
}
IPTABLES = {"nft": {4: "iptables-nft", 6: "ip6tables-nft"}, "legacy": {4: "iptables-legacy", 6: "ip6tables-legacy"}}


class NetnsError(RuntimeError):
    """A harness step failed; the message names the command and what it printed."""


# ------------------------------------------------------------------------------------------------
# Can this machine run netns tests?


def netns_unavailable_reason(backend: str = "nft", *, need: Iterable[str] = ()) -> str | None:
    """Why netns tests cannot run here (None when they can)."""
    if backend not in BACKENDS:
        return f"unknown iptables backend {backend!r} (use one of {', '.join(BACKENDS)})"
    if os.geteuid() != 0:
        return "network-namespace tests need root"
    tools = ["ip", BACKENDS[backend][4][0], BACKENDS[backend][4][1], *need]
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"missing tools for network-namespace tests: {', '.join(missing)}"
    return None


def require_netns(backend: str = "nft", *, need: Iterable[str] = ()) -> None:
    """Skip the calling test when netns tests cannot run here; fail instead when SVCTRACE_REQUIRE_NETNS=1."""
    reason = netns_unavailable_reason(backend, need=need)
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1 forbids skipping)", pytrace=False)
    pytest.skip(reason)


# ------------------------------------------------------------------------------------------------
# Running things


def _run(argv: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = 30.0
         ) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"timed out after {timeout:g}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        out = (proc.stderr or proc.stdout).strip()
        raise NetnsError(f"exit {proc.returncode}: {' '.join(argv)}: {out}")
    return proc


def nfacct_counters(rules: str) -> list[str]:
    """The nfacct counters an iptables dump refers to (they must exist before it can be restored)."""
    return sorted(set(re.findall(r"--nfacct-name\s+(\S+)", rules)))


@dataclass(frozen=True)
class Probe:
    """One attempt: the pod that answered and the source address it saw, or why there was no answer."""

    answer: str | None
    error: str | None = None
    seen_from: str | None = None  # the client address as the pod saw it (the node's, if masqueraded)


class Namespace:
    """A named network namespace the harness created."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def exec_argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, input: str | None = None, check: bool = True, timeout: float = 30.0
            ) -> subprocess.CompletedProcess[str]:
        """Run a command inside this namespace."""
        return _run(self.exec_argv(*argv), input=input, check=check, timeout=timeout)

    def iproute(self, *args: str) -> None:
        _run(["ip", "-n", self.name, *args])

    def sysctl(self, key: str, value: str | int) -> None:
        # /proc/sys/net shows the namespace of the process reading it, so write it from inside.
        path = "/proc/sys/" + key.replace(".", "/")
        self.run("sh", "-c", f"echo {value} > {path}")


class Pod(Namespace):
    """A pod: its own namespace, a Calico-style veth to the node and an echo server."""

    def __init__(self, ns: str, pod_name: str, ip: str, host_iface: str) -> None:
        super().__init__(ns)
        self.pod_name = pod_name
        self.ip = ip
        self.host_iface = host_iface


# ------------------------------------------------------------------------------------------------
# Programs run inside the namespaces (kept tiny: they are started per pod / per probe batch)

ECHO_SERVER = r"""
import selectors, socket, sys
name, tcp, udp = sys.argv[1], sys.argv[2], sys.argv[3]
sel = selectors.DefaultSelector()
for port in filter(None, tcp.split(",")):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    s.listen(128)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, "tcp")
for port in filter(None, udp.split(",")):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", int(port)))
    sel.register(u, selectors.EVENT_READ, "udp")
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        sock = key.fileobj
        try:
            if key.data == "tcp":
                conn, peer = sock.accept()
                with conn:
                    conn.settimeout(1.0)
                    conn.sendall(f"{name} {peer[0]}\n".encode())
            else:
                _, peer = sock.recvfrom(2048)
                sock.sendto(f"{name} {peer[0]}\n".encode(), peer)
        except OSError:
            pass
"""

PROBE = r"""
import json, socket, sys
proto, ip, port, count, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
family = socket.AF_INET6 if ":" in ip else socket.AF_INET
out = []
for _ in range(count):
    try:
        if proto == "tcp":
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect((ip, port))
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(256)
                    if not chunk:
                        break
                    data += chunk
        else:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                s.connect((ip, port))
                s.send(b"ping\n")
                data = s.recv(2048)
        words = data.decode(errors="replace").split()
        out.append([words[0], None, words[1] if len(words) > 1 else None] if words
                   else [None, "closed without an answer", None])
    except socket.timeout:
        out.append([None, "timeout", None])
    except ConnectionRefusedError:
        out.append([None, "refused", None])
    except ConnectionResetError:
        out.append([None, "reset", None])
    except OSError as exc:
        out.append([None, exc.strerror or str(exc), None])
print(json.dumps(out))
"""


def _ns_name(ns: Namespace | str) -> str:
    return ns.name if isinstance(ns, Namespace) else ns


def _probe(proto: str, from_ns: Namespace | str, ip: str, port: int, count: int, timeout: float) -> list[Probe]:
    argv = ["ip", "netns", "exec", _ns_name(from_ns), sys.executable, "-c", PROBE,
            proto, ip, str(port), str(count), str(timeout)]
    proc = _run(argv, timeout=count * (timeout + 1.0) + 10.0)
    return [Probe(answer, error, seen_from) for answer, error, seen_from in json.loads(proc.stdout)]


def probe_tcp(from_ns: Namespace | str, ip: str, port: int, *, count: int = 1,
              timeout: float = DEFAULT_TIMEOUT) -> list[Probe]:
    """``count`` fresh TCP connections from a namespace to ip:port; what answered each one."""
    return _probe("tcp", from_ns, ip, port, count, timeout)


def probe_udp(from_ns: Namespace | str, ip: str, port: int, *, count: int = 1,
              timeout: float = DEFAULT_TIMEOUT) -> list[Probe]:
    """``count`` UDP datagrams (each from a fresh socket) to ip:port; the replies' names."""
    return _probe("udp", from_ns, ip, port, count, timeout)


def connect_tcp(from_ns: Namespace | str, ip: str, port: int, *, timeout: float = DEFAULT_TIMEOUT) -> str | None:
    """The pod name that answered one TCP connection, or None (timeout, refused, reset: see probe_tcp)."""
    return probe_tcp(from_ns, ip, port, timeout=timeout)[0].answer


def send_udp(from_ns: Namespace | str, ip: str, port: int, *, timeout: float = DEFAULT_TIMEOUT) -> str | None:
    """The pod name that answered one UDP datagram, or None."""
    return probe_udp(from_ns, ip, port, timeout=timeout)[0].answer


# ------------------------------------------------------------------------------------------------
# The node

_LIVE: set[NetnsNode] = set()


def _close_all_live() -> None:
    for node in list(_LIVE):
        node.close()


atexit.register(_close_all_live)


def calico_iface(pod_name: str) -> str:
    """A host-side interface name the way Calico makes one: cali + 11 hex chars (15 chars in all)."""
    return "cali" + hashlib.sha1(pod_name.encode()).hexdigest()[:11]


class NetnsNode(Namespace):
    """The node: a network namespace with the node address, forwarding on, and pods and a client attached."""

    def __init__(self, *, backend: str = "nft", node_ip: str = "192.168.1.63", prefixlen: int = 24,
                 uplink: str = "ens33", gateway: str = "192.168.1.1", client_ip: str = "192.168.1.10") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown iptables backend {backend!r}")
        super().__init__(f"{PREFIX}{secrets.token_hex(4)}")
        self.backend = backend
        self.node_ip = node_ip
        self.prefixlen = prefixlen
        self.uplink = uplink
        self.gateway = gateway
        self.client = Namespace(f"{self.name}-client")
        self.client_ip = client_ip
        self.pods: dict[str, Pod] = {}
        self.namespaces: list[str] = []  # every namespace this node created, in creation order
        self._procs: list[subprocess.Popen[str]] = []
        self._open = False

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> NetnsNode:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        """Create the node and its client namespace and wire them together."""
        if self._open:
            return
        self._open = True
        _LIVE.add(self)
        try:
            self._add_namespace(self.name)
            self.iproute("link", "set", "lo", "up")
            # Before any interface exists, so new interfaces inherit them; kube-proxy sets route_localnet
            # for localhost NodePorts, and strict reverse-path filtering would drop masqueraded replies.
            self.sysctl("net.ipv4.ip_forward", 1)
            for scope in ("all", "default"):
                self.sysctl(f"net.ipv4.conf.{scope}.route_localnet", 1)
                self.sysctl(f"net.ipv4.conf.{scope}.rp_filter", 0)
            self._add_namespace(self.client.name)
            self.client.iproute("link", "set", "lo", "up")
            self.iproute("link", "add", self.uplink, "type", "veth", "peer", "name", "eth0", "netns", self.client.name)
            self.iproute("addr", "add", f"{self.node_ip}/{self.prefixlen}", "dev", self.uplink)
            self.iproute("link", "set", self.uplink, "up")
            self.client.iproute("addr", "add", f"{self.client_ip}/{self.prefixlen}", "dev", "eth0")
            self.client.iproute("link", "set", "eth0", "up")
            # A node has a default route; without one a ClusterIP is unroutable before NAT ever sees it.
            self.iproute("route", "add", "default", "via", self.gateway, "dev", self.uplink)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill every process and delete every namespace this node created (safe to call twice)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            for pipe in (proc.stdout, proc.stderr):
                if pipe:
                    pipe.close()
        self._procs.clear()
        for ns in reversed(self.namespaces):
            _run(["ip", "netns", "del", ns], check=False)
        _LIVE.discard(self)
        self._open = False

    def _add_namespace(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self.namespaces.append(name)

    def leftovers(self) -> list[str]:
        """Namespaces this node created that still exist (empty after close())."""
        existing = set(_run(["ip", "netns", "list"]).stdout.split())
        return [ns for ns in self.namespaces if ns in existing]

    # -- iptables --------------------------------------------------------------------------------

    def load_rules(self, rules: str, *, family: int = 4, noflush: bool = False, counters: bool = False) -> None:
        """Load iptables-save/restore text with the backend's real iptables-restore."""
        for counter in nfacct_counters(rules):
            self.ensure_nfacct(counter)
        argv = [BACKENDS[self.backend][family][0]]
        if noflush:
            argv.append("--noflush")
        if counters:
            argv.append("--counters")
        self.run(*argv, input=rules)

    def save_rules(self, *, family: int = 4) -> str:
        """What the backend's iptables-save prints in this node."""
        return self.run(BACKENDS[self.backend][family][1]).stdout

    def iptables(self, *args: str, family: int = 4, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run iptables (or ip6tables) of this node's backend with the given arguments."""
        return self.run(IPTABLES[self.backend][family], "-w", *args, check=check)

    def ensure_nfacct(self, counter: str) -> None:
        """Create an nfacct counter (per namespace; kube-proxy's ``-m nfacct`` rules need them)."""
        # `nfacct list` prints "{ pkts = ..., bytes = ... } = NAME;" per counter.
        existing = re.findall(r"=\s*(\S+);\s*$", self.run("nfacct", "list").stdout, re.MULTILINE)
        if counter not in existing:
            self.run("nfacct", "add", counter)

    # -- pods ------------------------------------------------------------------------------------

    def add_pod(self, name: str, ip: str, *, tcp_ports: Iterable[int] = (80,), udp_ports: Iterable[int] = (),
                start_timeout: float = 10.0) -> Pod:
        """A pod namespace joined to the node the way Calico does it, with an echo server answering ``name``."""
        if name in self.pods:
            raise ValueError(f"pod {name!r} already added")
        pod = Pod(f"{self.name}-p{len(self.pods)}", name, ip, calico_iface(name))
        self._add_namespace(pod.name)
        pod.iproute("link", "set", "lo", "up")
        self.iproute("link", "add", pod.host_iface, "type", "veth", "peer", "name", "eth0", "netns", pod.name)
        self.sysctl(f"net.ipv4.conf.{pod.host_iface}.proxy_arp", 1)
        # Proxy ARP answers after a random delay of up to 0.8 s, which can eat a 1 s probe's first try.
        self.sysctl(f"net.ipv4.neigh.{pod.host_iface}.proxy_delay", 0)
        self.iproute("link", "set", pod.host_iface, "up")
        pod.iproute("addr", "add", f"{ip}/32", "dev", "eth0")
        pod.iproute("link", "set", "eth0", "up")
        # Calico's trick: the pod's gateway is a link-local address nobody has; the host side answers
        # ARP for it (proxy ARP) because the node routes it elsewhere.
        pod.iproute("route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        pod.iproute("route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        self.iproute("route", "add", f"{ip}/32", "dev", pod.host_iface, "scope", "link")
        self.pods[name] = pod
        self._start_echo(pod, tuple(tcp_ports), tuple(udp_ports), start_timeout)
        return pod

    def _start_echo(self, pod: Pod, tcp: tuple[int, ...], udp: tuple[int, ...], start_timeout: float) -> None:
        argv = pod.exec_argv(sys.executable, "-c", ECHO_SERVER, pod.pod_name,
                             ",".join(map(str, tcp)), ",".join(map(str, udp)))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], start_timeout)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            proc.kill()
            _, err = proc.communicate(timeout=5)
            raise NetnsError(f"echo server of pod {pod.pod_name} did not start: {err.strip() or 'no output'}")
