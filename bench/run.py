"""svctrace's benchmark suite: every figure next to its floor, measured in the same run, and the target.

    sudo python bench/run.py                         # everything (about 35 min on 2 cores today)
    sudo python bench/run.py --quick                 # 1k only, one run each (about 10 min today)
    sudo python bench/run.py 'svc-*-10k' startup-*   # by name (shell-style patterns)
    sudo python bench/run.py --list                  # the names
    sudo python bench/run.py --repeat 5 --timeout 300 --markdown /tmp/figures.md

svctrace is driven only through its command line (a fresh `svctrace ...` process per run), so the
suite measures whatever the installed svctrace is. Each figure is the median of --repeat runs (default
3; a run longer than 20 s is taken once, but in a row whose floor is read before each run), each floor
the median of --floor-repeat runs (default 5);
peak RSS is the largest of the runs (wait4's ru_maxrss). A run past --timeout (default: 40x its floor,
at least 120 s, at most 600 s) is killed and reported as TIMEOUT. See bench/README.md for the targets.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gen_cluster  # noqa: E402
import gen_hostile  # noqa: E402
from envs import ApiEnv, NodeEnv, api_list_argv, ipvs_unavailable_reason  # noqa: E402
from measure import QUIET, SETTLED, Run, Series, interpreter_of, machine, repeat, svctrace_command  # noqa: E402

ENDPOINTS = 10
SIZES = {"1k": 1000, "10k": 10_000}
MODES = gen_cluster.MODES
COMMANDS = ("svc", "trace", "audit")
SOURCES = ("snapshot", "live")
MB = 1_000_000
RSS_LIMIT = 250 * MB  # issue 11: any command at 10k x 10
ONCE_IF_LONGER = 20.0
README = HERE / "README.md"
FIGURES_START, FIGURES_END = "<!-- figures:start -->", "<!-- figures:end -->"
CLUSTER20_NODES = 20


# ------------------------------------------------------------------------------------------------
# The catalogue


@dataclass(frozen=True)
class Target:
    ratio: float | None = None  # time / floor at most this
    seconds: float | None = None  # or: time at most this
    rss_bytes: int | None = None  # and: peak RSS at most this
    source: str = ""  # where the target comes from

    def describe(self) -> str:
        parts = []
        if self.ratio is not None:
            parts.append(f"<= {self.ratio:g}x")
        if self.seconds is not None:
            parts.append(f"<= {self.seconds:g} s")
        if self.rss_bytes is not None:
            parts.append(f"<= {self.rss_bytes / MB:.0f} MB")
        return ", ".join(parts) or "-"


@dataclass(frozen=True)
class Bench:
    name: str
    kind: str  # scale | startup | hostile | api | cluster20
    target: Target
    floor: str | None = None  # a key of FLOORS
    size: str | None = None  # 1k | 10k
    mode: str | None = None
    source: str | None = None
    command: str | None = None
    hostile: str | None = None
    note: str = ""


def _scale_target(command: str, size: str, mode: str, source: str) -> Target:
    if size != "10k":
        return Target(source="no target at 1k (issue 11 sets them at 10k)")
    ratio = 2.0 if command == "audit" else 1.3
    return Target(ratio=ratio, rss_bytes=RSS_LIMIT, source="issue 11" + (", 16" if source == "live" else ""))


def scale_floor(size: str, mode: str, source: str) -> str:
    """The floor a figure is divided by: the kernel's own read of the same rules (issues 11, 16)."""
    if mode == "nftables":
        return f"nft-list-{size}"
    if mode == "iptables-legacy" and source == "live":
        return f"legacy-save-nat-{size}"
    return f"nft-save-nat-{size}"  # snapshots: "the same bound"; IPVS: no kernel IPVS read to compare with


def catalogue() -> list[Bench]:
    out = [
        Bench("startup-version", "startup", Target(ratio=3.0, source="issues 11, 15"), "python-pass",
              note="svctrace --version"),
        Bench("startup-demo", "startup", Target(ratio=2.0, source="issues 11, 15"), "python-rich-typer",
              note="svctrace svc my-nginx --from demo"),
    ]
    for kind in gen_hostile.KINDS:
        out.append(Bench(f"hostile-{kind}", "hostile", Target(seconds=5.0, rss_bytes=300 * MB, source="issue 14"),
                         hostile=kind))
    for size in SIZES:
        for mode in MODES:
            for source in SOURCES:
                for command in COMMANDS:
                    out.append(Bench(f"{command}-{mode}-{source}-{size}", "scale",
                                     _scale_target(command, size, mode, source), scale_floor(size, mode, source),
                                     size, mode, source, command))
        out.append(Bench(f"api-list-{size}", "api", Target(source="info: what the fake API server costs a client"),
                         size=size, note="page through every object the fake API server holds"))
    out.append(Bench("cluster20-audit-all-nodes", "cluster20",
                     Target(ratio=1.5, rss_bytes=300 * MB, source="issue 12 item 6"), None,
                     note="audit --all-nodes over 20 simulated nodes of 1k x 10"))
    return out


def growth_name(command: str, mode: str, source: str) -> str:
    return f"growth-{command}-{mode}-{source}"


# ------------------------------------------------------------------------------------------------
# A run of the suite


@dataclass
class Row:
    bench: str
    floor: str = "-"
    floor_s: float | None = None
    seconds: float | None = None
    ratio: float | None = None
    target: str = "-"
    rss_bytes: int | None = None
    children_rss_bytes: int | None = None  # live rows: the tools svctrace ran (rss_bytes is its own process)
    verdict: str = ""
    runs: int = 0
    detail: str = ""

    def cells(self) -> list[str]:
        fl = f"{self.floor_s:.3f} s ({self.floor})" if self.floor_s is not None else self.floor
        sec = f"{self.seconds:.3f} s" if self.seconds is not None else "-"
        ratio = f"{self.ratio:.2f}x" if self.ratio is not None else "-"
        rss = f"{self.rss_bytes / MB:.0f} MB" if self.rss_bytes is not None else "-"
        if self.children_rss_bytes is not None:
            rss += f" (tools: {self.children_rss_bytes / MB:.0f} MB)"
        runs = f" ({self.runs})" if self.runs > 1 else ""
        verdict = self.verdict + (f": {self.detail}" if self.detail else "")
        return [self.bench, fl, sec + runs, ratio, self.target, rss, verdict]


@dataclass
class Suite:
    args: argparse.Namespace
    svctrace: list[str]
    python: str
    floors: dict[str, Series] = field(default_factory=dict)
    floor_what: dict[str, str] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    results: dict[str, Series] = field(default_factory=dict)
    clusters: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    node_envs: dict[tuple[str, str], NodeEnv] = field(default_factory=dict)
    api_envs: dict[str, ApiEnv] = field(default_factory=dict)

    # -- logging ----------------------------------------------------------------------------

    def say(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    # -- data and environments ---------------------------------------------------------------

    def cluster(self, size: str) -> Path:
        if size not in self.clusters:
            self.say(f"cluster {size} x {ENDPOINTS}: generating or reusing the cached one ...")
            self.clusters[size] = gen_cluster.ensure_cluster(SIZES[size], ENDPOINTS, log=self.say)
            self.say(f"cluster {size}: {self.clusters[size]}")
        return self.clusters[size]

    def info(self, size: str) -> dict[str, Any]:
        return json.loads((self.cluster(size) / "info.json").read_text())  # type: ignore[no-any-return]

    def node_env(self, size: str, mode: str) -> NodeEnv:
        key = (size, mode)
        if key not in self.node_envs:
            self.say(f"loading the {mode} rules of {size} x {ENDPOINTS} into a network namespace ...")
            env = self.stack.enter_context(NodeEnv(self.cluster(size), mode))
            self.node_envs[key] = env
            self.say(f"loaded in {env.load_seconds:.1f} s (netns {env.name})")
            self.notes.append(f"{mode} rules of {size} x {ENDPOINTS} loaded in {env.load_seconds:.1f} s")
        return self.node_envs[key]

    def api_env(self, size: str) -> ApiEnv:
        if size not in self.api_envs:
            self.say(f"starting the fake API server for {size} x {ENDPOINTS} ...")
            env = self.stack.enter_context(ApiEnv(self.cluster(size) / "api"))
            self.api_envs[size] = env
            self.say(f"serving at {env.url} (started in {env.start_seconds:.1f} s)")
        return self.api_envs[size]

    def release(self) -> None:
        """Close every namespace and server (floors already measured stay measured)."""
        self.stack.close()
        self.stack = contextlib.ExitStack()
        self.node_envs.clear()
        self.api_envs.clear()

    # -- measuring ---------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("KUBECONFIG", "FORCE_COLOR", "PYTHONDONTWRITEBYTECODE")}
        env.update({"COLUMNS": "120", "NO_COLOR": "1", "LC_ALL": "C.UTF-8"})
        # Every Python run here (svctrace and the python floors alike) reads bytecode, as an installed
        # svctrace does (pip and pipx compile at install; the zipapp on its first run), from a cache of
        # this run's own: an editable checkout without it recompiles ~80 modules per run (~85 ms), which no
        # user pays. Warm-up runs fill it; nothing is written into the tree.
        env["PYTHONPYCACHEPREFIX"] = self.pycache()
        return env

    def pycache(self) -> str:
        if not hasattr(self, "_pycache"):
            self._pycache = tempfile.mkdtemp(prefix="svctrace-bench-pycache-")
            atexit.register(shutil.rmtree, self._pycache, True)
            self._fill_pycache()
        return self._pycache

    def _fill_pycache(self) -> None:
        """Compile svctrace and everything it may import into the cache before any run: a run that compiled
        modules itself would be measured with the compiler's time and memory (+30 MB of peak RSS), which an
        installed svctrace never pays."""
        where = subprocess.run([self.python, "-c", "import sysconfig, svctrace, os; print(sysconfig.get_paths()"
                                "['purelib']); print(os.path.dirname(svctrace.__file__))"],
                               capture_output=True, text=True, check=False).stdout.split("\n")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = self._pycache
        self.say("compiling svctrace and its dependencies into this run's bytecode cache ...")
        subprocess.run([self.python, "-m", "compileall", "-q", "-j", "0", *(w for w in where if w.strip())],
                       env=env, capture_output=True, check=False)

    def floor(self, key: str) -> Series:
        if key not in self.floors:
            argv, what = self.floor_argv(key)
            reps = self.args.floor_repeat if not key.startswith("python") else max(self.args.floor_repeat, 10)
            self.say(f"floor {key}: {what} (median of {reps}; of 3 when it takes over {ONCE_IF_LONGER:g} s) ...")
            first = repeat(argv, 1, timeout=self.args.floor_timeout, env=self.env())  # a warm-up, if it is cheap
            slow = first.last.seconds > ONCE_IF_LONGER
            series = repeat(argv, min(reps, 3) - 1 if slow else reps, timeout=self.args.floor_timeout, env=self.env())
            if slow:
                series.runs.insert(0, first.last)
            if series.timed_out or first.timed_out or any(r.returncode != 0 for r in series.runs):
                bad = next(r for r in [first.last, *series.runs] if not r.ok)
                raise RuntimeError(f"floor {key} failed: {bad.stderr.strip()[:300] or 'timeout'}")
            self.floors[key], self.floor_what[key] = series, what
            self.say(f"floor {key}: {series.seconds:.3f} s")
        return self.floors[key]

    def floor_argv(self, key: str) -> tuple[list[str], str]:
        if key == "python-pass":
            return [self.python, "-c", "pass"], "python3 -c pass"
        if key == "python-rich-typer":
            return [self.python, "-c", "import rich, typer"], "python3 -c 'import rich, typer'"
        kind, size = key.rsplit("-", 1)
        if kind == "nft-save-nat":
            return self.node_env(size, "iptables-nft").exec_argv("iptables-nft-save", "-t", "nat"), \
                "iptables-nft-save -t nat"
        if kind == "legacy-save-nat":
            return self.node_env(size, "iptables-legacy").exec_argv("iptables-legacy-save", "-t", "nat"), \
                "iptables-legacy-save -t nat"
        if kind == "nft-list":
            return self.node_env(size, "nftables").exec_argv("nft", "-j", "list", "table", "ip", "kube-proxy"), \
                "nft -j list table ip kube-proxy"
        raise KeyError(key)

    def timeout_for(self, floor_s: float | None) -> float:
        if self.args.timeout:
            return float(self.args.timeout)
        return min(max(120.0, 40 * floor_s), 600.0) if floor_s else 120.0

    # -- the 20-node cluster (issue 12 item 6) -------------------------------------------------

    def _cluster20(self, b: Bench, row: Row) -> None:
        """``audit -A --all-nodes --collect`` on bench_all_nodes.py's simulated cluster (network-namespace nodes,
        a fake API server, stand-in kubelets in this process), against iptables-nft-save run in each node's
        namespace one after another, in the same cluster. svctrace runs through the small launcher like every
        other row (a process forked from this big one would count its pages)."""
        import bench_all_nodes

        with bench_all_nodes.simulated(CLUSTER20_NODES, 1000, ENDPOINTS, say=self.say) as (cluster, kubeconfig, _):
            floor_s = min(bench_all_nodes.floor(cluster) for _ in range(3))
            row.floor = f"iptables-nft-save in each of {CLUSTER20_NODES} nodes, one after another"
            row.floor_s = floor_s
            command = [*self.svctrace, "audit", "-A", "--all-nodes", "--collect", "--parallel", "4", "-o", "json",
                       "--kubeconfig", str(kubeconfig)]
            self._measure(b, row, command, floor_s, validate=_all_nodes_validator(CLUSTER20_NODES))

    # -- one benchmark -----------------------------------------------------------------------

    def run_bench(self, b: Bench) -> None:
        row = Row(b.name, target=b.target.describe())
        try:
            self._run_bench(b, row)
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            row.verdict, row.detail = "ERROR", f"{type(exc).__name__}: {exc}"[:200]
        self.rows.append(row)
        self.say("| " + " | ".join(row.cells()) + " |")  # the table row, so an interrupted run keeps its figures

    def _run_bench(self, b: Bench, row: Row) -> None:
        if b.kind == "cluster20":  # its floor is measured in its own simulated cluster
            self._cluster20(b, row)
            return
        if b.kind == "api":
            env = self.api_env(b.size or "1k")
            series = repeat(api_list_argv(self.python, env.kubeconfig), self.reps(), timeout=600, env=self.env())
            row.seconds, row.rss_bytes, row.runs = series.seconds, series.max_rss_bytes, len(series.runs)
            row.verdict = "info" if series.last.ok else "ERROR"
            row.detail = f"{series.last.stdout.strip()} objects" if series.last.ok else series.last.stderr[-200:]
            return
        if b.kind == "hostile":
            assert b.hostile is not None
            path = gen_hostile.ensure_tarball(b.hostile)
            command = [*self.svctrace, "svc", "web", "-n", "default", "--from", str(path)]
            self._measure(b, row, command, None, validate=_no_crash)
            return
        if b.kind == "startup":
            command = [*self.svctrace, "--version"] if b.name == "startup-version" else \
                [*self.svctrace, "svc", "my-nginx", "--from", "demo"]
            assert b.floor is not None
            fl = self.floor(b.floor)
            row.floor, row.floor_s = self.floor_what[b.floor], fl.seconds
            self._measure(b, row, command, fl.seconds, validate=_exit_0, times=max(self.reps(), 10), warmup=1)
            return
        self._run_scale(b, row)

    def _run_scale(self, b: Bench, row: Row) -> None:
        assert b.size and b.mode and b.source and b.command and b.floor
        info = self.info(b.size)
        target = info["service"]
        if b.source == "live" and b.mode == "ipvs":
            reason = self.ipvs_reason()
            if reason:
                row.verdict, row.detail = "skipped", reason
                return
        fl = self.floor(b.floor)
        row.floor, row.floor_s = self.floor_what[b.floor], fl.seconds
        if b.source == "snapshot":
            where = ["--from", str(self.cluster(b.size) / b.mode)]
        else:
            node = self.node_env(b.size, b.mode)
            where = ["--netns", node.name]
            if b.command != "trace":
                where += ["--kubeconfig", str(self.api_env(b.size).kubeconfig)]
        if b.command == "svc":
            command = [*self.svctrace, "svc", target["name"], "-n", target["namespace"], "-o", "json", *where]
            validate: Callable[[Run], str | None] = _svc_validator(target)
        elif b.command == "trace":
            command = [*self.svctrace, "trace", "--dst", f"{target['clusterIP']}:{target['port']}", *where]
            validate = _trace_validator(target)
        else:
            command = [*self.svctrace, "audit", "-A", *where]
            validate = _audit_validator(info)
        # A live run's own process is measured apart from the save tools it runs (they are the floor's own:
        # iptables-save peaks at ~390 MB at 10k, nft at 1.7 GB), so the RSS target is svctrace's.
        # Its floor is read again just before each of its runs: the kernel's read of the same namespace
        # drifts by a third over minutes, and a run is compared with the floor of the same moment. So is a
        # snapshot row's where a target judges it (10k): the machine's slow spells slow both alike.
        paired = self.floor_argv(b.floor)[0] if b.source == "live" or b.target.ratio is not None else None
        self._measure(b, row, command, fl.seconds, validate=validate, own=b.source == "live", paired=paired)

    def _measure(self, b: Bench, row: Row, command: list[str], floor_s: float | None,
                 validate: Callable[[Run], str | None], times: int | None = None, warmup: int = 0,
                 own: bool = False, paired: list[str] | None = None) -> None:
        """``paired``: the floor's command, run just before each run; the row's floor is then their median."""
        timeout = self.timeout_for(floor_s) if b.kind != "hostile" else self.args.hostile_timeout
        if paired is None:
            series = repeat(command, times or self.reps(), timeout=timeout, env=self.env(),
                            once_if_longer=ONCE_IF_LONGER, warmup=warmup, own=own)
        else:
            series, floors = Series(), Series()
            for _ in range(times or self.reps()):
                floors.runs += repeat(paired, 1, timeout=self.args.floor_timeout, env=self.env()).runs
                series.runs += repeat(command, 1, timeout=timeout, env=self.env(), own=own).runs
                # however long: one run of a 25 s nftables row, against a floor that drifts by a third
                # within minutes, decided its verdict by chance (1.00x one run, 1.34x the next)
                if series.timed_out:
                    break
            if floors.runs and all(r.ok for r in floors.runs):
                floor_s = row.floor_s = floors.seconds
                row.floor = f"{row.floor}, run before each run"
                self.floors[f"{b.floor} paired with {b.name}"] = floors
        self.results[b.name] = series
        row.runs = len(series.runs)
        row.rss_bytes = series.max_rss_bytes
        rss = series.max_rss_bytes
        if own and series.own_rss_bytes is not None:
            rss = row.rss_bytes = series.own_rss_bytes
            row.children_rss_bytes = series.children_rss_bytes
        if series.timed_out:
            row.verdict, row.detail = "TIMEOUT", f"killed after {timeout:.0f} s"
            row.seconds = None
            row.ratio = None
            return
        row.seconds = series.seconds
        row.ratio = series.seconds / floor_s if floor_s else None
        problem = validate(series.last)
        if problem:
            row.verdict, row.detail = "WRONG", problem
            return
        row.verdict = verdict(b.target, series.seconds, row.ratio, rss)

    def reps(self) -> int:
        return int(self.args.repeat)

    def ipvs_reason(self) -> str | None:
        if not hasattr(self, "_ipvs_reason"):
            self._ipvs_reason = ipvs_unavailable_reason()
        return self._ipvs_reason

    # -- derived rows --------------------------------------------------------------------------

    def growth_rows(self) -> None:
        for mode in MODES:
            for source in SOURCES:
                for command in COMMANDS:
                    small = self.results.get(f"{command}-{mode}-{source}-1k")
                    big = self.results.get(f"{command}-{mode}-{source}-10k")
                    if small is None or big is None or small.timed_out:
                        continue
                    row = Row(growth_name(command, mode, source), floor="1k time", floor_s=small.seconds,
                              target="<= 12x (~10x is linear)")
                    if big.timed_out:
                        killed = big.last.seconds
                        row.verdict = "TIMEOUT"
                        row.detail = f"10k killed after {killed:.0f} s, so more than {killed / small.seconds:.0f}x"
                    else:
                        row.seconds, row.ratio = big.seconds, big.seconds / small.seconds
                        row.verdict = "PASS" if row.ratio <= 12 else "FAIL"
                        # (a live row's own floors, read before each of its runs, where it has them)
                        floors = [self.floors.get(f"{scale_floor(size, mode, source)} paired with "
                                                  f"{command}-{mode}-{source}-{size}")
                                  or self.floors.get(scale_floor(size, mode, source)) for size in ("1k", "10k")]
                        if source == "live" and floors[0] is not None and floors[1] is not None:
                            kernel = floors[1].seconds / floors[0].seconds
                            if row.ratio > 12 and row.ratio <= kernel:  # a live read includes the kernel's own
                                row.verdict = "PASS"
                            if row.ratio > 12 or kernel > 12:
                                row.detail = f"the floor itself grows {kernel:.1f}x"
                    self.rows.append(row)


def verdict(target: Target, seconds: float, ratio: float | None, rss: int) -> str:
    if target.ratio is None and target.seconds is None and target.rss_bytes is None:
        return "info"
    failed = []
    if target.ratio is not None and (ratio is None or ratio > target.ratio):
        failed.append("time")
    if target.seconds is not None and seconds > target.seconds:
        failed.append("time")
    if target.rss_bytes is not None and rss > target.rss_bytes:
        failed.append("RSS")
    return "PASS" if not failed else "FAIL (" + ", ".join(dict.fromkeys(failed)) + ")"


# ------------------------------------------------------------------------------------------------
# Does the output answer the question? (a fast wrong answer is not a pass)


def _exit_0(run: Run) -> str | None:
    return None if run.returncode == 0 else f"exit {run.returncode}: {run.stderr.strip()[-200:]}"


def _exit_0_to_1(run: Run) -> str | None:
    return None if run.returncode in (0, 1) else f"exit {run.returncode}: {run.stderr.strip()[-200:]}"


def _all_nodes_validator(nodes: int) -> Callable[[Run], str | None]:
    def check(run: Run) -> str | None:
        if run.returncode not in (0, 1):
            return _exit_0_to_1(run)
        try:
            summary = json.loads(run.stdout)["summary"]
        except (ValueError, KeyError, TypeError):
            return "no JSON summary"
        if summary.get("nodes") != nodes or summary.get("outOfStep") or summary.get("failed"):
            return f"expected {nodes} nodes read, none out of step or failed: {summary}"[:200]
        return None

    return check


def _no_crash(run: Run) -> str | None:
    """A hostile input may be answered (0/1) or refused (2, with svctrace's one-line error); nothing else."""
    if run.returncode in (0, 1):
        return None
    if run.returncode == 2 and run.stderr.lstrip().startswith("svctrace: error:"):
        return None
    return f"exit {run.returncode}: {run.stderr.strip()[-200:]}"


def _svc_validator(target: dict[str, Any]) -> Callable[[Run], str | None]:
    def check(run: Run) -> str | None:
        if run.returncode not in (0, 1):
            return _exit_0(run)
        try:
            doc = json.loads(run.stdout)
            got = sorted(e["ip"] for e in doc["endpoints"] if e.get("inDataplane"))
        except (ValueError, KeyError, TypeError) as exc:
            return f"not the expected JSON ({exc})"
        if got != sorted(target["endpoints"]):
            return f"endpoints in the dataplane {got}, expected {sorted(target['endpoints'])}"
        return None

    return check


def _trace_validator(target: dict[str, Any]) -> Callable[[Run], str | None]:
    def check(run: Run) -> str | None:
        if run.returncode != 0:
            return _exit_0(run)
        missing = [ip for ip in target["endpoints"] if ip not in run.stdout]
        return f"endpoints not in the trace: {missing}" if missing else None

    return check


def _audit_validator(info: dict[str, Any]) -> Callable[[Run], str | None]:
    def check(run: Run) -> str | None:
        if run.returncode not in (0, 1):
            return _exit_0_to_1(run)
        m = re.search(r"^\s*Services\s+(\d+)", run.stdout, re.MULTILINE)
        if not m:
            return "no Service count in the summary"
        if int(m.group(1)) != info["serviceObjects"]:
            return f"audited {m.group(1)} Services, the cluster has {info['serviceObjects']}"
        return None

    return check


# ------------------------------------------------------------------------------------------------
# Order, output


def order(benches: list[Bench]) -> Iterator[tuple[str | None, list[Bench]]]:
    """Groups that share environments: start-up and hostile first, then per size, mode by mode."""
    yield None, [b for b in benches if b.kind in ("startup", "hostile")]
    for size in SIZES:
        group = [b for b in benches if b.size == size]
        key = {m: i for i, m in enumerate(MODES)}
        group.sort(key=lambda b: (b.kind != "scale", key.get(b.mode or "", 9), b.source != "snapshot",
                                  COMMANDS.index(b.command) if b.command else 9))
        yield size, group
    yield "cluster20", [b for b in benches if b.kind == "cluster20"]


def table(rows: list[Row]) -> str:
    head = ["bench", "floor", "time (runs)", "ratio", "target", "peak RSS", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def report(suite: Suite, mach: dict[str, str], started: float) -> str:
    out = ["**Machine**", ""]
    out += [f"- {k}: {v}" for k, v in mach.items()]
    out.append(f"- load average at end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}; "
               f"suite wall time {(time.time() - started) / 60:.1f} min")
    out.append(f"- each run started once the CPUs were {QUIET:.0%} idle over 0.25 s: {SETTLED[0]:.0f} s waited in "
               f"all, {SETTLED[1]:.1f} s at the longest")
    out.append(f"- repetitions: median of {suite.args.repeat} (runs over {ONCE_IF_LONGER:g} s taken once, but for "
               "rows whose floor is read before each run), "
               f"floors median of {suite.args.floor_repeat} (python floors and start-up: of at least 10)")
    out += [f"- {n}" for n in suite.notes]
    out += ["", table(suite.rows), ""]
    return "\n".join(out)


def update_readme(text: str) -> None:
    readme = README.read_text()
    start, end = readme.index(FIGURES_START) + len(FIGURES_START), readme.index(FIGURES_END)
    README.write_text(readme[:start] + "\n" + text + "\n" + readme[end:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="benchmarks to run (shell patterns; default: all)")
    ap.add_argument("--quick", action="store_true", help="1k only, one run each, floors of 3")
    ap.add_argument("--repeat", type=int, default=None, help="runs per figure (median; default 3, --quick 1)")
    ap.add_argument("--floor-repeat", type=int, default=None, help="runs per floor (median; default 5)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per run (default: 40x its floor, within 120-600 s)")
    ap.add_argument("--hostile-timeout", type=float, default=60.0, help="seconds per hostile-tarball run")
    ap.add_argument("--floor-timeout", type=float, default=600.0)
    ap.add_argument("--svctrace", help="the command that starts svctrace (default: the one installed here)")
    ap.add_argument("--markdown", type=Path, help="also write the report here")
    ap.add_argument("--json", type=Path, help="also write every run's figures here")
    ap.add_argument("--update-readme", action="store_true", help="replace the figures in bench/README.md")
    ap.add_argument("--list", action="store_true", help="print the benchmark names and exit")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: namespaces and the API server go away
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.floor_repeat = args.floor_repeat or (3 if args.quick else 5)

    benches = catalogue()
    if args.list:
        for b in benches:
            print(f"{b.name:40} {b.target.describe():24} {b.note}")
        return 0
    if args.names:
        chosen = [b for b in benches if any(fnmatch.fnmatch(b.name, p) for p in args.names)]
        if not chosen:
            ap.error("no benchmark matches " + " ".join(args.names) + " (see --list)")
    else:
        chosen = [b for b in benches if not (args.quick and b.size == "10k")]
    if os.geteuid() != 0 and any(b.kind in ("scale", "cluster20") for b in chosen):
        ap.error("the scale benchmarks need root (network namespaces); run with sudo")

    svctrace = svctrace_command(args.svctrace)
    suite = Suite(args, svctrace, interpreter_of(svctrace))
    started = time.time()
    mach = machine(suite.python, svctrace)
    try:
        for _, group in order(chosen):
            for b in group:
                suite.run_bench(b)
            suite.release()
    finally:
        suite.release()
    suite.growth_rows()
    text = report(suite, mach, started)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        runs = {k: [r.__dict__ | {"stdout": r.stdout[:2000], "stderr": r.stderr[-2000:]} for r in s.runs]
                for k, s in suite.results.items()}
        floors = {k: [r.seconds for r in s.runs] for k, s in suite.floors.items()}
        args.json.write_text(json.dumps({"machine": mach, "rows": [r.__dict__ for r in suite.rows], "runs": runs,
                                         "floors": floors}, indent=1))
    if args.update_readme:
        update_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
