"""Timing and peak memory of one command run as a fresh child process, and the machine it ran on.

Each run is a new process (its own session, so a run that times out is killed with everything it
started), started through bench/_spawn.py: wall time is taken there around fork+exec+exit, and peak
RSS is the command's ``ru_maxrss`` from ``wait4`` (the largest resident set of the command or any
descendant it waited for). The launcher matters: a child forked straight from this (big) process would
report this process's resident set as its own.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    """One run of one command."""

    seconds: float
    max_rss_bytes: int
    returncode: int | None  # None: killed by the timeout
    timed_out: bool
    stdout: str
    stderr: str
    own_rss_bytes: int | None = None  # with ``own``: svctrace's own process (bench/_own.py)
    children_rss_bytes: int | None = None  # and the largest process it started (a save tool, a worker)

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.returncode == 0


QUIET = 0.85  # the share of every CPU's time that must be idle for a run to start
SETTLED: list[float] = [0.0, 0.0]  # seconds waited for a quiet machine: in all, the longest once


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs (/proc/stat), or (0, 0) where there is no such file."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return values[3] + (values[4] if len(values) > 4 else 0), sum(values[:8])


def settle(window: float = 0.25, longest: float = 30.0) -> float:
    """Wait until the CPUs are at least QUIET idle over ``window`` (at most ``longest`` seconds), so that no run
    starts while something else (a namespace's rules still being loaded or freed, a process of the last row)
    takes a core it would count as its own. How long it waited is added to SETTLED and returned (the report
    says it: a run that had to wait long is one to read with care)."""
    started = time.monotonic()
    while True:
        idle0, total0 = _cpu_times()
        time.sleep(window)
        idle1, total1 = _cpu_times()
        waited = time.monotonic() - started
        if total1 <= total0 or (idle1 - idle0) / (total1 - total0) >= QUIET or waited >= longest:
            SETTLED[0] += waited
            SETTLED[1] = max(SETTLED[1], waited)
            return waited


def run_measured(argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
                 keep_output: bool = True, own: bool = False) -> Run:
    """Run ``argv`` once, on a quiet machine (``settle``); its wall time and peak RSS. Output goes to temporary
    files (never a pipe that could fill up), and comes back as text when ``keep_output``. ``own`` (``argv[0]`` a
    Python console script): also the peak RSS of that process alone and of its children, apart (bench/_own.py)."""
    settle()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".spawn") as figures, \
            tempfile.NamedTemporaryFile("r", suffix=".own") as own_figures:
        fired = threading.Event()
        if own:
            argv = [interpreter_of(argv), str(Path(__file__).with_name("_own.py")), own_figures.name, *argv]
        t0 = time.perf_counter()
        launcher = [sys.executable, "-S", str(Path(__file__).with_name("_spawn.py")), figures.name]
        proc = subprocess.Popen([*launcher, *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=dict(env) if env is not None else None, start_new_session=True)

        def kill() -> None:
            fired.set()
            with _suppress_missing():
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
        spawned = figures.read().split()
        if len(spawned) == 3:  # the command's own figures (none when it was killed)
            seconds, max_rss, proc.returncode = float(spawned[0]), int(spawned[1]), int(spawned[2])
        else:
            max_rss = usage.ru_maxrss * 1024
        apart = own_figures.read().split()
        own_rss, children_rss = (int(apart[0]), int(apart[1])) if len(apart) == 2 else (None, None)
        with _suppress_missing():
            os.killpg(proc.pid, signal.SIGKILL)  # anything the command left running in its session
        text = ("", "")
        if keep_output:
            out.seek(0)
            err.seek(0)
            text = (out.read().decode(errors="replace"), err.read().decode(errors="replace"))
    timed_out = fired.is_set()
    return Run(seconds, max_rss, None if timed_out else proc.returncode, timed_out, *text, own_rss, children_rss)


class _suppress_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], ProcessLookupError | PermissionError)


@dataclass
class Series:
    """Repeated runs of one command: the median time, the largest peak RSS."""

    runs: list[Run] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def max_rss_bytes(self) -> int:
        return max(r.max_rss_bytes for r in self.runs)

    @property
    def own_rss_bytes(self) -> int | None:
        """The largest own peak of svctrace's process over the runs (None: not measured apart)."""
        got = [r.own_rss_bytes for r in self.runs if r.own_rss_bytes is not None]
        return max(got) if got else None

    @property
    def children_rss_bytes(self) -> int | None:
        got = [r.children_rss_bytes for r in self.runs if r.children_rss_bytes is not None]
        return max(got) if got else None

    @property
    def timed_out(self) -> bool:
        return any(r.timed_out for r in self.runs)

    @property
    def last(self) -> Run:
        return self.runs[-1]


def repeat(argv: Sequence[str], times: int, *, timeout: float, env: Mapping[str, str] | None = None,
           once_if_longer: float | None = None, warmup: int = 0, own: bool = False) -> Series:
    """``times`` runs (after ``warmup`` unmeasured ones); a run that times out, or one longer than
    ``once_if_longer`` seconds, ends the series early (a slow command's median is not worth minutes)."""
    for _ in range(warmup):
        run_measured(argv, timeout=timeout, env=env, keep_output=False)
    series = Series()
    for _ in range(max(1, times)):
        run = run_measured(argv, timeout=timeout, env=env, own=own)
        series.runs.append(run)
        if run.timed_out or (once_if_longer is not None and run.seconds > once_if_longer):
            break
    return series


# ------------------------------------------------------------------------------------------------
# What is measured, and where


def svctrace_command(explicit: str | None = None) -> list[str]:
    """How to start svctrace: --svctrace, else the `svctrace` next to this Python, else on PATH."""
    if explicit:
        return explicit.split()
    beside = Path(sys.executable).with_name("svctrace")
    found = str(beside) if beside.exists() else shutil.which("svctrace")
    if not found:
        raise SystemExit("svctrace is not installed in this environment (pip install -e .), or pass --svctrace")
    return [found]


def interpreter_of(command: Sequence[str]) -> str:
    """The Python that runs svctrace (its script's #! line), for the `python3 -c ...` floors."""
    try:
        first = Path(command[0]).read_bytes()[:256].split(b"\n", 1)[0].decode()
    except (OSError, UnicodeDecodeError):
        return sys.executable
    if first.startswith("#!") and "python" in first:
        return first[2:].strip().split()[0]
    return sys.executable


def _first_line(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not available"
    return ((proc.stdout or proc.stderr).strip().splitlines() or ["?"])[0]


def machine(python: str, svctrace: Sequence[str]) -> dict[str, str]:
    """What the figures were taken on."""
    cpu = "unknown"
    with _suppress_missing(), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with _suppress_missing(), open("/proc/meminfo") as f:
        m = re.search(r"MemTotal:\s+(\d+)", f.read())
        mem = f"{int(m.group(1)) / 2**20:.1f} GiB" if m else ""
    commit = _first_line(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"])
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": _first_line([python, "-c", "import sys; print(sys.version.split()[0])"]),
        "svctrace": f"{_first_line([*svctrace, '--version'])} ({' '.join(svctrace)}), commit {commit}",
        "iptables": "; ".join(_first_line([t, "--version"]) for t in ("iptables-nft-save", "iptables-legacy-save")),
        "nft": _first_line(["nft", "--version"]),
        "load average (1/5/15 min) at start": load,
    }
