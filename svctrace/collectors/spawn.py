"""A node read's commands, started at once and as early as possible; light to import.

A live command starts the kernel's saves (``iptables-*-save``, ``nft -j list table ... kube-proxy``) and,
in a network namespace, the probes, before it imports the Kubernetes client or anything heavy: on a
10,000-Service node the save is the longest part of the run, so it should begin with the process. What
the commands print is gathered by ``StartedNode.finish`` (svctrace.collectors.node.gather), which turns
it into the node/ files. Read-only, like every collector: only save and list commands are run.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING

from svctrace.parsers.commands import ALL_TABLES, LEGACY, NFT, NFT_FAMILIES, SAVE_COMMANDS, CommandRun, nft_source

if TYPE_CHECKING:
    from svctrace.collectors.conntrack import ConntrackCollection
    from svctrace.model.nft import NftRuleset
    from svctrace.parsers.iptables_save import Stream
    from svctrace.parsers.nft_json import NftJsonReader
    from svctrace.parsers.snapshot import NodeInput

DEFAULT_PROXY_MODE_URL = "http://127.0.0.1:10249/proxyMode"
# The legacy (x_tables) tables the kernel holds: reading them tells whether iptables-legacy has anything,
# without running iptables-legacy-save (which would load modules and create tables).
LEGACY_TABLES = {4: Path("/proc/net/ip_tables_names"), 6: Path("/proc/net/ip6_tables_names")}

_PIECE = 1 << 20  # bytes read at a time from a followed command's output
_POLL = 0.02  # seconds between looks at a followed command's output when nothing new came

# The end of the command's --timeout (time.monotonic()), set while StartedNode starts its commands (each
# Started takes it then: the commands are started by several helpers, which need not pass it along).
_DEADLINE: ContextVar[float | None] = ContextVar("svctrace_node_deadline", default=None)


def argv_in(netns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


class Started:
    """A command started now and read later, so that the kernel's reads run while svctrace does other work
    (the Kubernetes client's import, the API requests, the other reads). Its output goes to a file, not a
    pipe: a 10k-Service save is 48 MB, which a pipe would hold three times over (the pieces read, them
    joined, the text) before it is decoded once here."""

    __slots__ = ("name", "proc", "out", "err", "timeout", "end", "done", "sink", "follower", "followed", "stop",
                 "pidfd", "deadline")

    def __init__(self, argv: Sequence[str], netns: str | None, timeout: float = 60.0,
                 env: Mapping[str, str] | None = None, hold: bool = False,
                 sink: Callable[[str], None] | None = None) -> None:
        """``hold``: the command's stdin is a pipe that ``release`` writes one line to (it waits for it), and its
        ``timeout`` counts from then (it may be held for as long as the saves take).
        ``sink``: what it prints is handed to this as it is written (by a thread reading the output file as
        it grows); its result's stdout is then "" and the text is the sink's."""
        self.name = argv[0]
        self.proc: subprocess.Popen[bytes] | None = None
        self.done: CommandRun | None = None
        self.sink = sink
        self.follower: threading.Thread | None = None
        self.followed: bool | None = None  # None: following; True: all handed over; False: the sink failed
        self.stop = threading.Event()
        self.pidfd: int | None = None
        self.deadline = end = _DEADLINE.get()
        if end is not None:
            if end - time.monotonic() <= 0:
                self.done = CommandRun(None, f"{argv[0]} not run: the --timeout for the collection had passed")
                return
            timeout = min(timeout, end - time.monotonic())
        self.timeout = timeout
        self.end = time.monotonic() + timeout  # for a held command: counted again from its release
        if shutil.which(argv[0]) is None:
            self.done = CommandRun(None, f"{argv[0]} is not installed")
            return
        if netns and shutil.which("ip") is None:
            self.done = CommandRun(None, "ip (iproute2) is not installed")
            return
        # Kept open past this call (the command writes to them while we do other work); _close closes them.
        self.out, self.err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(argv_in(netns, argv), stdin=subprocess.PIPE if hold else subprocess.DEVNULL,
                                         stdout=self.out,
                                         stderr=self.err, env=dict(env) if env is not None else None)
        except OSError as exc:
            self._close()
            self.done = CommandRun(None, f"{argv[0]} could not run: {exc.strerror or exc}")
            return
        with contextlib.suppress(AttributeError, OSError):  # Linux 5.3 and later: its end wakes a waiter
            self.pidfd = os.pidfd_open(self.proc.pid)
        if sink is not None:
            self.follower = threading.Thread(target=self._follow, name=f"svctrace-follow-{self.name}", daemon=True)
            self.follower.start()

    def _follow(self) -> None:
        """Hand what the command writes to the sink as it comes: the file is read at growing offsets (pread
        leaves the offset the command writes at alone) until the command has ended and all is read."""
        assert self.proc is not None and self.sink is not None
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        fd, offset = self.out.fileno(), 0
        try:
            while True:
                ended = self.proc.poll() is not None  # before reading: what it wrote before it ended is read
                data = os.pread(fd, _PIECE, offset)
                while data:
                    offset += len(data)
                    self.sink(decoder.decode(data))
                    data = os.pread(fd, _PIECE, offset)
                if ended or self.stop.is_set():
                    break
                self._ended_within(_POLL)
            self.sink(decoder.decode(b"", final=True))
            self.followed = True
        except Exception:  # noqa: BLE001 - a sink that fails costs the early reading only: the file is read whole
            self.followed = False

    def result(self) -> CommandRun:
        """What it printed (waiting for it, within its timeout), or why not."""
        if self.done is None:
            self.done = self._wait()
        return self.done

    def release(self) -> None:
        """Tell a held command to go on (a line on its stdin, then end of file); its time starts now."""
        stdin = self.proc.stdin if self.proc is not None else None
        if stdin is not None and not stdin.closed:  # (only a held command's stdin is a pipe)
            self.end = time.monotonic() + self.timeout
            if self.deadline is not None:
                self.end = min(self.end, self.deadline)
            with contextlib.suppress(OSError):  # it may have ended already
                stdin.write(b"\n")
                stdin.flush()
            with contextlib.suppress(OSError):
                stdin.close()

    def _wait(self) -> CommandRun:
        assert self.proc is not None
        self.release()
        try:
            if self.pidfd is not None:
                self._ended_within(max(0.0, self.end - time.monotonic()))
            self.proc.wait(timeout=max(0.0, self.end - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.cancel()
            return CommandRun(None, f"{self.name} did not finish in {self.timeout:g} s")
        if self.follower is not None:
            self.follower.join()
        try:
            if self.followed:
                stdout = ""  # the sink has it
            else:
                self.out.seek(0)
                stdout = self.out.read().decode("utf-8", "replace")
            if self.proc.returncode != 0:
                self.err.seek(0)
                said = (self.err.read().decode("utf-8", "replace").strip() or stdout.strip()).splitlines()
                return CommandRun(None, f"{self.name} failed (exit {self.proc.returncode}): "
                                  f"{said[0] if said else 'no message'}")
            return CommandRun(stdout, followed=bool(self.followed))
        finally:
            self._close()

    def _ended_within(self, seconds: float) -> None:
        """Wait until the command ends, at most ``seconds``: woken by its end (its pidfd), where Popen.wait
        and a sleep would look every 20-50 ms, each look late by up to that."""
        if self.pidfd is None:
            self.stop.wait(seconds)
            return
        with contextlib.suppress(OSError, ValueError):
            select.select([self.pidfd], [], [], seconds)

    def cancel(self) -> None:
        """Stop it if it still runs (an error elsewhere ended the collection): nothing is left behind."""
        self.stop.set()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            self.proc.wait()
        if self.follower is not None:
            self.follower.join()
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if self.done is None:
            self.done = CommandRun(None, f"{self.name} was stopped: the collection ended without it")
        self._close()

    def _close(self) -> None:
        for f in (getattr(self, "out", None), getattr(self, "err", None)):
            if f is not None:
                f.close()
        pidfd, self.pidfd = self.pidfd, None
        if pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(pidfd)


def child(module: str, args: Sequence[str], netns: str, timeout: float, hold: bool = False) -> Started:
    """One of svctrace's own modules run inside the namespace (netlink and /proc belong to the namespace of
    the process that opens them); the child imports svctrace from wherever this copy lives."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return Started([sys.executable, "-m", module, *args], netns, timeout=timeout, env=env, hold=hold)


def start_probe(netns: str | None, url: str | None, timeout: float) -> Started | None:
    """Sysctls, /proc/net/ip_vs and /proxyMode are read by a child in the namespace (None: no namespace)."""
    if netns is None:
        return None
    # It reads the sysctls at once and asks /proxyMode when released: after the saves, so that its packet is
    # not in the nat counters they show.
    return child("svctrace.collectors._probe", [url or "", str(timeout), "--after-stdin"], netns, timeout + 10.0,
                 hold=True)


class Conntrack:
    """The UDP conntrack entries: in this process, or by a child started at once in the namespace."""

    __slots__ = ("netns", "child")

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self.child = child("svctrace.collectors.conntrack", [], netns, 30.0) if netns else None

    def result(self) -> ConntrackCollection:
        from svctrace.collectors.conntrack import collect_conntrack, from_child

        if self.child is None or self.netns is None:
            return collect_conntrack()
        run = self.child.result()
        return from_child(run.stdout, run.error, self.netns)

    def cancel(self) -> None:
        if self.child is not None:
            self.child.cancel()


def _legacy_tables(netns: str | None) -> dict[int, list[str] | None]:
    """The x_tables tables the kernel holds per family (None: the module is not loaded; left out: cannot
    tell), read before any save is started: iptables-legacy-save runs only where there are some, and -t only
    names one that exists (asking for another would make the kernel create it)."""
    if netns is None:
        out: dict[int, list[str] | None] = {}
        for family, path in LEGACY_TABLES.items():
            try:
                out[family] = path.read_text().split()
            except OSError:
                out[family] = None
        return out
    reads = {family: Started(["cat", str(path)], netns, timeout=10.0) for family, path in LEGACY_TABLES.items()}
    out = {}
    for family, started in reads.items():
        run = started.result()
        if run.stdout is not None:
            out[family] = run.stdout.split()
        elif run.error and "No such file" in run.error:
            out[family] = None
        # else: cannot tell (no cat): the family is left out, and its legacy save reads every table
    return out


class _Save:
    """One backend's save of one family, started: only ``tables`` (each its own -t run, all at once). The
    (first) run's output is indexed as it is written (svctrace.parsers.iptables_save.Stream), so that a
    10,000-Service dump is indexed by the time the save ends, not after."""

    __slots__ = ("runs", "skipped", "tables", "cut", "stream")

    def __init__(self, backend: str, family: int, tables: tuple[str, ...], netns: str | None,
                 skipped: str | None = None) -> None:
        command = SAVE_COMMANDS[backend][family]
        self.skipped = skipped
        self.tables = tables
        self.stream: Stream | None = None
        # The nf_tables backend reads every table whatever -t says: one run, cut to the tables asked for.
        self.cut = backend == NFT and tables != ALL_TABLES
        if skipped is not None:
            self.runs: list[Started] = []
        elif tables == ALL_TABLES or self.cut:
            self.runs = [Started([command], netns, sink=self._feed)]
        else:  # the others' output (small: nat is the big table, and first) is indexed when the first ends
            self.runs = [Started([command, "-t", table], netns, sink=self._feed if i == 0 else None)
                         for i, table in enumerate(tables)]

    def _feed(self, piece: str) -> None:
        if self.stream is None:
            from svctrace.parsers.iptables_save import Stream

            self.stream = Stream()
        self.stream.feed(piece)

    def result(self) -> CommandRun:
        from svctrace.parsers.node_read import joined, only_tables
        from svctrace.parsers.snapshot import EAGER_BYTES

        if self.skipped is not None:
            return CommandRun(None, self.skipped, skipped=True)
        runs = [r.result() for r in self.runs]
        failed = next((i for i, r in enumerate(runs) if r.stdout is None), None)
        if failed is not None:
            return runs[failed]
        if runs[0].followed:  # the text is the stream's: the others' are fed after it, as joined() joins them
            for run in runs[1:]:
                self._feed(run.stdout or "")
            stream = self.stream
            text = stream.close() if stream is not None else ""
            runs = [CommandRun(text)]
        else:
            stream = None
        if self.cut and stream is not None and len(runs[0].stdout or "") > EAGER_BYTES:
            # Indexed as it was read: the dump it gives holds only the tables asked for (choose_iptables), and
            # the text stays whole; a copy cut to them would hold a second 48 MB at 10k Services.
            got = runs[0]
        else:
            got = only_tables(runs[0], self.tables) if self.cut else joined(runs)
        whole = stream is not None and got.stdout is not None and got.stdout is runs[0].stdout
        return CommandRun(got.stdout, got.error, got.skipped,
                          indexed=stream.dump if stream is not None and got.stdout else None,
                          kube_chains=stream.kube_chains if whole and stream is not None else None)

    def cancel(self) -> None:
        for r in self.runs:
            r.cancel()


class StartedNode:
    """A node read whose commands (the saves, kube-proxy's nftables tables, the probes in a namespace) were
    all started at once, as early as possible, and whose results are gathered by ``finish``. Started before
    the Kubernetes client is even imported, the kernel's reads overlap svctrace's own start."""

    def __init__(self, netns: str | None, tables: tuple[str, ...], deadline: float | None,
                 proxy_mode_url: str, timeout: float, conntrack: bool = True, nft_text: bool = True) -> None:
        """``nft_text``: keep kube-proxy's nftables tables as `nft -j` text (capture writes it); otherwise
        they are read as they are written and only their ruleset is kept (NodeInput.parsed)."""
        self.netns, self.tables, self.deadline = netns, tables, deadline
        self.proxy_mode_url, self.timeout = proxy_mode_url, timeout
        self.root = os.geteuid() == 0
        token = _DEADLINE.set(deadline)
        try:
            self.probe = start_probe(netns, proxy_mode_url, timeout)
            # The node's addresses as `ip -j addr` prints them (a snapshot's node/ip-addr.json), root or not;
            # without iproute2 (or one too old for -j) netlink is asked instead (collectors.node).
            self.addresses = Started(["ip", "-j", "address", "show"], netns) if shutil.which("ip") else None
            # Conntrack entries are for the stale-UDP check only: `svc` and `trace` do not read them.
            self.conntrack = Conntrack(netns) if self.root and conntrack else None
            self.saves: dict[tuple[str, int], _Save] = {}
            self.nft: list[NftList] | None = None
            if self.root:
                self.saves = _start_saves(netns, tables, _legacy_tables(netns))
                if shutil.which("nft") is not None:
                    self.nft = [NftList(family, netns, keep_text=nft_text) for family in NFT_FAMILIES]
        except BaseException:
            self.cancel()
            raise
        finally:
            _DEADLINE.reset(token)

    def cancel(self) -> None:
        """Stop whatever still runs (the collection failed elsewhere)."""
        for started in (getattr(self, "probe", None), getattr(self, "addresses", None),
                        *getattr(self, "saves", {}).values(),
                        *(r.run for r in (getattr(self, "nft", None) or ()))):
            if started is not None:
                started.cancel()
        conntrack: Conntrack | None = getattr(self, "conntrack", None)
        if conntrack is not None:
            conntrack.cancel()

    def finish(self, node_name: str | None) -> NodeInput:
        """The node's files, waiting for what still runs (each command within its timeout and the deadline, set
        when it was started)."""
        from svctrace.collectors.node import gather

        try:
            return gather(self, node_name)
        finally:
            self.cancel()
            # What the commands printed is the node's files now: a caller that keeps this object (a read begun
            # in two steps) must not keep a second reference to a 91 MB nftables document while it is parsed.
            self.saves, self.nft, self.addresses, self.probe, self.conntrack = {}, None, None, None, None


class NftList:
    """``nft -j list table FAMILY kube-proxy``, started. Unless its text is kept (capture writes it), what it
    prints is read as it is written (svctrace.parsers.nft_json.NftJsonReader), so that a 10,000-Service
    table (a 91 MB document) is never held whole, nor as bytes and as text at once."""

    __slots__ = ("family", "run", "_reader", "source")

    def __init__(self, family: str, netns: str | None, *, keep_text: bool) -> None:
        self.family = family
        # (named as the node's nftables file: one ruleset of both families)
        self.source = nft_source(f" in network namespace {netns}" if netns else "")
        self._reader: NftJsonReader | None = None
        self.run = Started(["nft", "-j", "list", "table", family, "kube-proxy"], netns,
                           sink=None if keep_text else self._feed)

    def _feed(self, piece: str) -> None:
        self.reader().feed(piece)

    def reader(self) -> NftJsonReader:
        """The reader its output went to (a new one: it printed nothing)."""
        if self._reader is None:
            from svctrace.parsers.nft_json import NftJsonReader

            self._reader = NftJsonReader(self.source)
        return self._reader

    def ruleset(self) -> NftRuleset:
        """What the reader read, the command having ended (its result followed)."""
        return self.reader().close()


def _start_saves(netns: str | None, tables: tuple[str, ...],
                 legacy_tables: Mapping[int, list[str] | None]) -> dict[tuple[str, int], _Save]:
    """The saves of both backends, started (the one holding kube's chains is chosen when they end)."""
    saves: dict[tuple[str, int], _Save] = {}
    for family in (4, 6):
        # The legacy backend has nothing when the kernel holds no x_tables table: its save is not even run.
        # It is asked for a table (-t) only when the table exists: -t would make the kernel create it.
        if family not in legacy_tables:  # cannot tell: the whole save, as iptables-legacy-save would give it
            saves[LEGACY, family] = _Save(LEGACY, family, ALL_TABLES, netns)
        else:
            have = legacy_tables[family] or []
            wanted = tables if tables == ALL_TABLES else tuple(t for t in tables if t in have)
            saves[LEGACY, family] = _Save(LEGACY, family, wanted, netns) if have and wanted else \
                _Save(LEGACY, family, wanted, netns, skipped="the kernel holds no iptables-legacy table")
        saves[NFT, family] = _Save(NFT, family, tables, netns)
    return saves


def start_node(*, netns: str | None = None, proxy_mode_url: str = DEFAULT_PROXY_MODE_URL, timeout: float = 1.0,
               tables: tuple[str, ...] = ALL_TABLES, deadline: float | None = None,
               conntrack: bool = True, nft_text: bool = True) -> StartedNode:
    """Start reading this node (or network namespace ``netns``) now; ``finish`` gives what collect_node does
    (without conntrack entries unless ``conntrack``: neither recorded as missing, nor read; without the
    nftables tables' text unless ``nft_text``: their ruleset is kept instead)."""
    return StartedNode(netns, tables, deadline, proxy_mode_url, timeout, conntrack, nft_text)
