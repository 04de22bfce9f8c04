"""Every live command takes the same kubectl flags, turned into one Source the same way; errors map in one place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import svctrace.sources
from svctrace.cli.app import app
from svctrace.cli.durations import parse_duration
from svctrace.cli.options import KUBECTL_FLAGS
from svctrace.collectors.live import LiveOptions
from svctrace.errors import UsageError
from svctrace.sources import Loaded, NodeChoice, Source

REPO = Path(__file__).resolve().parents[2]
OVERALL = str(REPO / "tests" / "fixtures" / "overall")
LIVE_COMMANDS = ["svc", "trace", "why-unreachable", "audit", "capture"]
KUBECTL_OPTS = {"--kubeconfig", "--context", "-n", "--namespace", "--node", "--request-timeout", "--netns"}


def commands() -> dict[str, Any]:
    group = typer.main.get_command(app)
    return {name: group.get_command(None, name) for name in group.list_commands(None)}  # type: ignore[arg-type]


def options_of(command: Any) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")}


@pytest.mark.parametrize("name", LIVE_COMMANDS)
def test_every_live_command_takes_the_kubectl_flags(name: str) -> None:
    assert options_of(commands()[name]) >= KUBECTL_OPTS


def test_the_kubectl_flags_are_one_definition() -> None:
    # The same click declaration (help, metavar, default) in every command, from one table.
    def declaration(command: Any, opt: str) -> tuple[Any, ...]:
        (param,) = [p for p in command.params if opt in p.opts]
        return (tuple(param.opts), param.help, param.metavar, param.default, param.hidden)

    cmds = commands()
    for flag in KUBECTL_FLAGS:
        opt = "--" + flag.name.replace("_", "-")
        assert len({declaration(cmds[name], opt) for name in LIVE_COMMANDS}) == 1, opt


def test_demo_and_completion_take_no_kubectl_flags() -> None:
    cmds = commands()
    assert not options_of(cmds["demo"]) & KUBECTL_OPTS
    assert not options_of(cmds["completion"]) & KUBECTL_OPTS


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Source, dict[str, Any]]]:
    """Record what each command asks svctrace.sources for, and stop there (no cluster is needed)."""
    calls: list[tuple[str, Source, dict[str, Any]]] = []

    def recorder(kind: str) -> Any:
        def record(source: Source, *args: Any, **kwargs: Any) -> Loaded:
            calls.append((kind, source, {"args": args, **kwargs}))
            raise UsageError("recorded", None)
        return record

    for kind in ("begin_load_service", "load_namespace", "begin_load_node"):
        monkeypatch.setattr(svctrace.sources, kind, recorder(kind))
    return calls


FLAGS = ["--kubeconfig", "/k/config", "--context", "ctx", "-n", "shop", "--node", "node-a",
         "--request-timeout", "1m30s", "--timeout", "5m", "--netns", "ns0"]
EXPECTED_LIVE = LiveOptions(kubeconfig="/k/config", context="ctx", namespace="shop", node_name="node-a", timeout=90.0,
                            total_timeout=300.0, netns="ns0")


@pytest.mark.parametrize(("argv", "kind"), [
    (["svc", "web"], "begin_load_service"),
    (["trace", "--dst", "10.0.0.1:80", "--from-pod", "client"], "begin_load_node"),
    (["why-unreachable", "web"], "load_namespace"),
    (["audit"], "load_namespace"),
    (["capture"], "load_namespace"),
])
def test_the_flags_become_one_live_source(seen: list[tuple[str, Source, dict[str, Any]]], argv: list[str],
                                          kind: str) -> None:
    result = CliRunner().invoke(app, [*argv, *FLAGS])
    assert result.output.startswith("svctrace: error: recorded"), result.output
    ((called, source, _),) = seen
    assert called == kind and source == Source(None, EXPECTED_LIVE, None, NodeChoice("node-a"))


def test_from_makes_a_snapshot_source(seen: list[tuple[str, Source, dict[str, Any]]]) -> None:
    CliRunner().invoke(app, ["svc", "web", "--from", OVERALL])
    assert seen[0][1].snapshot == OVERALL and not seen[0][1].is_live


def test_a_name_with_its_namespace_is_looked_up_there(seen: list[tuple[str, Source, dict[str, Any]]]) -> None:
    CliRunner().invoke(app, ["svc", "shop/web"])
    assert seen[0][2]["args"] == ("shop", "web")


@pytest.mark.parametrize(("text", "seconds"), [("5", 5.0), ("5s", 5.0), ("500ms", 0.5), ("1m30s", 90.0),
                                               ("2h", 7200.0), ("0.25", 0.25)])
def test_request_timeout_reads_kubectl_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-1", "5x", "s", "1m 30s", "nan", "inf", "-inf", "1e999"])
def test_request_timeout_rejects_what_kubectl_would_not_wait_for(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_timeout_zero_means_no_limit_and_infinity_is_refused_with_its_own_words() -> None:
    assert parse_duration("0", "--timeout", zero_means_none=True) is None
    assert parse_duration("2m", "--timeout", zero_means_none=True) == 120.0
    with pytest.raises(UsageError, match=r"^--timeout 'inf' is not a finite duration$"):
        parse_duration("inf", "--timeout", zero_means_none=True)
    with pytest.raises(UsageError, match=r"^--request-timeout 'nan' is not a finite duration$"):
        parse_duration("nan")


@pytest.mark.parametrize("name", LIVE_COMMANDS)
def test_a_bad_request_timeout_is_one_line_on_every_live_command(name: str) -> None:
    extra = {"svc": ["x"], "trace": ["--dst", "10.0.0.1:80"], "why-unreachable": ["x"]}.get(name, [])
    result = CliRunner().invoke(app, [name, *extra, "--request-timeout", "soon"])
    assert result.exit_code == 2
    assert result.output.splitlines() == ["svctrace: error: --request-timeout 'soon' is not a duration",
                                          "  next: give e.g. --request-timeout 5s, 500ms or 1m"]


def test_namespace_default_is_default_for_a_snapshot() -> None:
    loaded = svctrace.sources.load_namespace(Source(OVERALL), None)
    assert loaded.namespace == "default" and loaded.collection is None
    assert svctrace.sources.load_namespace(Source(OVERALL), "ns4").namespace == "ns4"


@pytest.mark.parametrize(("argv", "message"), [
    (["svc", "--bogus"], "unknown flag: --bogus"),
    (["svc", "x", "--explai"], "unknown flag: --explai; did you mean --explain?"),
    (["svc"], "missing NAME"),
    (["trace"], "required flag --dst not set"),
    (["svc", "x", "-o", "yaml"], "invalid value for --output: 'yaml' is not one of 'tree', 'json'"),
    (["trace", "--dst", "1.2.3.4:80", "--mode", "ebpf"],
     "invalid value for --mode: 'ebpf' is not one of 'iptables', 'ipvs', 'nftables'"),
    (["completion", "tcsh"], "invalid value for SHELL: 'tcsh' is not one of 'bash', 'zsh', 'fish'"),
    (["bogus"], 'unknown command "bogus"'),
])
def test_usage_errors_read_like_kubectl(argv: list[str], message: str) -> None:
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    command = " ".join(["svctrace", *argv[:1]]) if argv[0] != "bogus" else "svctrace"
    assert result.output.splitlines() == [f"svctrace: error: {message}", f"  next: see '{command} --help'"]


def test_usage_errors_name_kubectl_svctrace_when_run_as_the_plugin() -> None:
    result = CliRunner().invoke(app, ["svc"], env={"KUBECTL_PLUGINS_CALLER": "/usr/bin/kubectl"})
    assert result.output.splitlines()[1] == "  next: see 'kubectl svctrace svc --help'"


def test_hints_suggest_commands_as_the_plugin_is_run(seen: list[tuple[str, Source, dict[str, Any]]]) -> None:
    plain = CliRunner().invoke(app, ["svc", ""])
    plugin = CliRunner().invoke(app, ["svc", ""], env={"KUBECTL_PLUGINS_CALLER": "kubectl"})
    assert "  next: svctrace svc NAME [-n NAMESPACE]" in plain.output.splitlines()
    assert "  next: kubectl svctrace svc NAME [-n NAMESPACE]" in plugin.output.splitlines()


def test_no_arguments_prints_the_help() -> None:
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 0 and "Commands:" in result.output and "svctrace: error" not in result.output


def test_demo_json_has_a_schema_version() -> None:
    result = CliRunner().invoke(app, ["demo", "-o", "json"])
    doc = json.loads(result.output)
    assert doc["schemaVersion"] == 1 and doc["kind"] == "ServicePathList"
    assert all(item["schemaVersion"] == 1 for item in doc["items"])


def test_trace_mode_is_passed_to_the_tracer() -> None:
    # The demo node runs iptables; forcing IPVS reads its (absent) IPVS table instead.
    result = CliRunner().invoke(app, ["trace", "--dst", "10.99.198.177:80", "--from", "demo", "--mode", "ipvs"])
    assert result.exit_code == 2
    assert result.output.startswith("svctrace: error: no IPVS virtual servers in ")


def test_an_unknown_proxy_mode_points_at_trace_mode(tmp_path: Path) -> None:
    snap = tmp_path / "snap"
    (snap / "node").mkdir(parents=True)
    (snap / "node" / "iptables-save.txt").write_text("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")
    unknown = CliRunner().invoke(app, ["trace", "--dst", "10.0.0.1:80", "--from", str(snap)])
    assert unknown.exit_code == 2 and "--mode iptables" in unknown.output
    forced = CliRunner().invoke(app, ["trace", "--dst", "10.0.0.1:80", "--from", str(snap), "--mode", "iptables"])
    assert forced.exit_code == 0, forced.output
