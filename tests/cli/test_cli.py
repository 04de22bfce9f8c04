"""The command line through typer's runner: output, exit statuses and one-line errors."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from svctrace import __version__
from svctrace.cli.app import app
from svctrace.cli.env import make_console
from svctrace.cli.svc import split_name
from svctrace.demo import demo_path
from svctrace.errors import UsageError

DEMO = demo_path()
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OVERALL = str(FIXTURES / "overall")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"svctrace {__version__}\n"


def test_svc_tree_from_a_snapshot_folder(runner: CliRunner) -> None:
    result = runner.invoke(app, ["svc", "svc4", "-n", "ns4", "--from", OVERALL])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Service ns4/svc4  ClusterIP  iptables  node test-node"
    assert "├── 172.30.0.44:80/TCP  ClusterIP -> KUBE-SVC-4SW47YFZTEDKD3PK  (masquerade if source not in " \
           "10.0.0.0/8)" in lines
    assert sum(" 50%  KUBE-SEP-" in line for line in lines) == 4  # two endpoints, under two frontends
    assert "\x1b[" not in result.output  # no colour when not on a terminal


def test_svc_explain_adds_sentences(runner: CliRunner) -> None:
    plain = runner.invoke(app, ["svc", "ns6/svc6", "--from", OVERALL]).output
    explained = runner.invoke(app, ["svc", "ns6/svc6", "--from", OVERALL, "--explain"]).output
    assert "rejects new connections" not in plain
    assert "rejects new connections to 172.30.0.46:80" in " ".join(explained.split())  # wrapped text


def test_svc_json_follows_the_schema(runner: CliRunner) -> None:
    result = runner.invoke(app, ["svc", "ns5/svc5:p80", "--from", OVERALL, "-o", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["schemaVersion"] == 1 and doc["kind"] == "ServicePath"
    assert set(doc) == {"schemaVersion", "kind", "service", "mode", "node", "explain", "dns", "frontends",
                        "endpoints", "staleChains", "warnings", "missing"}
    lb = next(f for f in doc["frontends"] if f["type"] == "LoadBalancer")
    assert lb["verdict"] == "partial"
    fw = lb["hops"][0]
    assert fw["kind"] == "firewall" and fw["name"] == "KUBE-FW-NUKIZ6OKUXPJNT4C"
    assert fw["rules"][0] == {"table": "nat", "chain": "KUBE-SERVICES", "index": fw["rules"][0]["index"],
                              "rule": fw["rules"][0]["rule"]}
    assert fw["rules"][0]["rule"].startswith("-A KUBE-SERVICES -d 5.6.7.8/32")
    sep = fw["hops"][0]["hops"][0]["hops"][0]
    assert sep["endpoint"]["ip"] == "10.180.0.3" and sep["share"] == 1.0 and sep["verdict"] == "DNAT"
    assert set(sep["endpoint"]) == {"ip", "port", "protocol", "pod", "node", "zone", "local", "conditions",
                                    "inApi", "inDataplane"}


def test_svc_from_a_tarball_equals_the_folder(runner: CliRunner, tmp_path: Path) -> None:
    tarball = tmp_path / "snap.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(OVERALL, arcname="snap")
    from_dir = runner.invoke(app, ["svc", "ns2/svc2", "--from", OVERALL, "-o", "json"])
    from_tar = runner.invoke(app, ["svc", "ns2/svc2", "--from", str(tarball), "-o", "json"])
    assert from_tar.exit_code == 0, from_tar.output
    assert json.loads(from_tar.output)["frontends"] == json.loads(from_dir.output)["frontends"]


def test_live_without_a_kubeconfig_is_one_line(runner: CliRunner, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nope.yaml"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = runner.invoke(app, ["svc", "my-nginx"])
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[0].startswith("svctrace: error: ") and "kubeconfig" in lines[0]
    assert lines[1].startswith("  next: ") and "--from" in lines[1]
    assert "Traceback" not in result.output


def test_service_not_found_suggests_names(runner: CliRunner) -> None:
    result = runner.invoke(app, ["svc", "svc", "-n", "ns1", "--from", OVERALL])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        'svctrace: error: service "svc" not found in namespace "ns1"',
        "  next: did you mean svc1?",
    ]


def test_missing_snapshot_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["svc", "x", "--from", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.output.startswith(f"svctrace: error: {tmp_path / 'nope'}: no such folder or file\n")
    assert "Traceback" not in result.output


def test_malformed_dump_names_file_and_line(runner: CliRunner, tmp_path: Path) -> None:
    snap = tmp_path / "snap"
    (snap / "node").mkdir(parents=True)
    (snap / "node" / "iptables-save.txt").write_text("*nat\n:KUBE-SERVICES - [0:0]\n-A\nCOMMIT\n")
    result = runner.invoke(app, ["svc", "x", "--from", str(snap)])
    assert result.exit_code == 2
    first = result.output.splitlines()[0]
    assert first.startswith("svctrace: error: ") and "iptables-save.txt:3" in first


def test_bracketed_names_are_printed_literally(runner: CliRunner) -> None:
    result = runner.invoke(app, ["svc", "x[bold]y[red]", "-n", "ns1", "--from", OVERALL])
    assert result.exit_code == 2
    assert 'service "x[bold]y[red]" not found' in result.output


def test_debug_shows_the_traceback(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--debug", "svc", "nope", "-n", "ns1", "--from", OVERALL])
    assert result.exit_code == 1 and result.exception is not None  # the exception escapes with --debug
    assert type(result.exception).__name__ == "NotFoundError"


def test_internal_errors_exit_3_without_traceback(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    import svctrace.resolver as resolver_module

    def broken(*_args: object, **_kwargs: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(resolver_module, "resolve", broken)
    result = runner.invoke(app, ["svc", "svc1", "-n", "ns1", "--from", OVERALL])
    assert result.exit_code == 3
    assert result.output.splitlines()[0] == "svctrace: internal error: KeyError: 'boom'"


@pytest.mark.parametrize(("text", "namespace", "expected"), [
    ("web", None, (None, "web", None)),
    ("shop/web", None, ("shop", "web", None)),
    ("web:http", "shop", ("shop", "web", "http")),
    ("shop/web:8080", "shop", ("shop", "web", "8080")),
])
def test_split_name(text: str, namespace: str | None, expected: tuple[str, str, str | None]) -> None:
    assert split_name(text, namespace) == expected


def test_split_name_rejects_two_namespaces() -> None:
    with pytest.raises(UsageError):
        split_name("a/web", "b")


def _render(**kwargs: bool) -> str:
    from rich.text import Text

    buf = io.StringIO()
    make_console(buf, **kwargs).print(Text("x", "verdict.reject"))
    return buf.getvalue()


def _coloured(text: str) -> bool:
    return re.search(r"\x1b\[[0-9;]*(3[0-9]|9[0-7])[;m]", text) is not None


@pytest.fixture
def plain_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_colour_only_on_a_terminal(plain_env: pytest.MonkeyPatch) -> None:
    assert _coloured(_render(force_terminal=True))
    assert "\x1b[" not in _render(force_terminal=False)
    assert "\x1b[" not in _render()  # a StringIO is not a terminal


def test_no_color_removes_colour_as_rich_does(plain_env: pytest.MonkeyPatch) -> None:
    plain_env.setenv("NO_COLOR", "1")
    out = _render(force_terminal=True)
    assert not _coloured(out) and "x" in out  # bold may stay: NO_COLOR is about colour


@pytest.mark.parametrize(("value", "coloured"), [("1", True), ("", False)])
def test_force_color_colours_piped_output(plain_env: pytest.MonkeyPatch, value: str, coloured: bool) -> None:
    plain_env.setenv("FORCE_COLOR", value)
    assert _coloured(_render()) is coloured


def test_force_color_keeps_the_pipe_width(plain_env: pytest.MonkeyPatch) -> None:
    plain_env.setenv("FORCE_COLOR", "1")
    plain_env.delenv("COLUMNS", raising=False)
    assert make_console(io.StringIO()).width == 160


def test_an_answer_without_the_dataplane_says_so_once(runner: CliRunner, tmp_path: Path) -> None:
    # A snapshot of the API alone (no node/ files): every frontend's path is what the API asks for.
    snap = tmp_path / "api-only"
    shutil.copytree(DEMO / "api", snap / "api")
    text = runner.invoke(app, ["svc", "my-nginx-nodeport", "--from", str(snap)])
    assert text.exit_code == 0, text.output
    assert text.output.count("dataplane was not collected") == 1
    assert "dataplane unknown" in text.output
    doc = json.loads(runner.invoke(app, ["svc", "my-nginx-nodeport", "--from", str(snap), "-o", "json"]).output)
    assert [w for w in doc["warnings"] if "not collected" in w] == [
        "the node's dataplane was not collected: the paths shown are what the API asks kube-proxy to program, "
        "not what this node does"]
    assert {f["verdict"] for f in doc["frontends"]} == {"unknown"}
    assert all(not f["notes"] and all(not h["notes"] for h in f["hops"]) for f in doc["frontends"])
    assert sum(len(f["hops"]) for f in doc["frontends"]) == 4  # two endpoints behind each of two frontends
