"""Commands that need no cluster import neither the Kubernetes client nor netlink (nor, for help, the core)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import main_probe

REPO = Path(__file__).resolve().parents[2]
OVERALL = str(REPO / "tests" / "fixtures" / "overall")

# Which modules a command loaded.
PROBE = main_probe("", '"\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n"')

LIVE_ONLY = ("kubernetes", "pyroute2", "urllib3", "requests", "aiohttp", "pydantic", "svctrace.collectors.kube",
             "svctrace.collectors.node")
CORE = ("svctrace.resolver", "svctrace.trace", "svctrace.diagnosis", "svctrace.parsers", "yaml")


def loaded_modules(*args: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(args))], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=False)
    marker = proc.stderr.rsplit("\nMODULES ", 1)
    assert len(marker) == 2, proc.stderr
    return set(json.loads(marker[1]))


def _loaded(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_version_imports_nothing_but_svctrace() -> None:
    modules = loaded_modules("--version")
    assert _loaded(modules, ("typer", "rich", *LIVE_ONLY, *CORE)) == []


@pytest.mark.parametrize("args", [["--help"], ["svc", "--help"], ["trace", "--help"], ["audit", "--help"],
                                  ["completion", "bash"], ["svc"]])
def test_help_completion_and_usage_errors_load_no_core(args: list[str]) -> None:
    assert _loaded(loaded_modules(*args), (*LIVE_ONLY, *CORE)) == []


@pytest.mark.parametrize("args", [
    ["svc", "my-nginx", "--from", "demo"],
    ["svc", "svc4", "-n", "ns4", "--from", OVERALL, "-o", "json"],
    ["trace", "--dst", "10.99.198.177:80", "--from", "demo"],
    ["why-unreachable", "my-nginx", "--from", "demo"],
    ["audit", "--from", "demo"],
    ["demo", "-o", "json"],
])
def test_snapshot_commands_do_not_load_the_live_collectors(args: list[str]) -> None:
    modules = loaded_modules(*args)
    assert "svctrace.resolver" in modules or "svctrace.trace" in modules  # the probe really ran the command
    assert _loaded(modules, LIVE_ONLY) == []


# What `svc NAME --from demo` (issue 11's start-up figure) has no use for: the demo is JSON, a folder is no
# tarball, nothing is logged or sent, svc neither diagnoses nor traces, and no other command is built; the
# chain names' SHA-256 is CPython's own (hashlib would bind OpenSSL: 3 ms).
NOT_FOR_SVC_FROM_DEMO = ("yaml", "logging", "socket", "tarfile", "zipfile", "importlib.resources", "hashlib",
                         "base64",
                         "svctrace.diagnosis", "svctrace.trace", "svctrace.collectors.spawn",
                         *(f"svctrace.cli.{module}" for module in ("audit", "capture", "completion", "demo", "trace",
                                                                    "why")))


@pytest.mark.parametrize("args", [["svc", "my-nginx", "--from", "demo"],
                                  ["svc", "my-nginx", "--from", "demo", "-o", "json"]])
def test_svc_from_the_demo_loads_only_what_it_uses(args: list[str]) -> None:
    modules = loaded_modules(*args)
    assert "svctrace.resolver" in modules
    assert _loaded(modules, NOT_FOR_SVC_FROM_DEMO) == []


def test_a_live_command_does_load_the_kubernetes_client(tmp_path: Path) -> None:
    # The probe can tell: a live run (here failing on a missing kubeconfig) imports the client.
    modules = loaded_modules("svc", "x", "--kubeconfig", str(tmp_path / "missing"))
    assert "kubernetes" in modules


@pytest.mark.parametrize(("args", "status"), [
    (["audit", "-A", "--from", "demo", "-o", "json"], None),  # findings: audit's own status
    (["svc", "my-nginx", "--from", "demo", "-o", "json"], 0),
    (["svc", "nope", "--from", "demo"], 2),
])
def test_the_process_leaves_with_its_status_and_all_its_output(args: list[str], status: int | None) -> None:
    # main() skips the interpreter's teardown (os._exit): what was printed must still be flushed, whole.
    from typer.testing import CliRunner

    from svctrace.cli.app import app

    expected = CliRunner().invoke(app, args)
    proc = subprocess.run([sys.executable, "-m", "svctrace", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120, check=False)
    assert proc.returncode == (expected.exit_code if status is None else status)
    if status == 2:
        assert proc.stderr.startswith('svctrace: error: service "nope" not found')
    else:
        assert json.loads(proc.stdout) == json.loads(expected.stdout)


def test_a_full_disk_is_said_not_reported_as_a_bug() -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "svctrace", "audit", "-A", "--from", "demo"], stdout=full,
                              stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr == ("svctrace: error: cannot write: No space left on device\n"
                           "  next: free some space, or write the output elsewhere\n")


# What a live command has imported when it starts the node's first command (the saves come right after).
FIRST_SPAWN = main_probe("""
import subprocess
seen = []
real = subprocess.Popen.__init__
def init(self, argv, *args, **kwargs):
    if not seen:
        seen.append(sorted(m for m in sys.modules if m.split(".")[0] in ("rich", "kubernetes", "yaml")))
    return real(self, argv, *args, **kwargs)
subprocess.Popen.__init__ = init
""", '"\\nFIRST " + json.dumps(seen) + "\\n"')


@pytest.mark.parametrize("args", [["trace", "--dst", "10.0.0.1:80"], ["svc", "web", "--kubeconfig", "/nonexistent"]])
def test_a_live_command_starts_the_node_read_before_rich_or_the_client(args: list[str]) -> None:
    # The node's save is the longest part of a live run; rich (25 ms) and the client come while it runs.
    proc = subprocess.run([sys.executable, "-c", FIRST_SPAWN, json.dumps(args)],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    first = json.loads(proc.stderr.rsplit("\nFIRST ", 1)[1])
    assert first == [[]], proc.stderr  # a command was started, with none of them imported yet
