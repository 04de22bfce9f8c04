"""Completion scripts are generated from the app and kept current; names complete from the source."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from svctrace.cli import completion
from svctrace.cli.completion import FILES, complete_words, kubectl_complete, script

REPO = Path(__file__).resolve().parents[2]
OVERALL = str(REPO / "tests" / "fixtures" / "overall")


@pytest.mark.parametrize("shell", sorted(FILES))
def test_committed_scripts_are_current(shell: str) -> None:
    committed = (REPO / "completions" / FILES[shell]).read_text()
    assert committed == script(shell), "regenerate with: python -m svctrace.cli.completion"


def test_scripts_call_back_into_svctrace() -> None:
    assert "_SVCTRACE_COMPLETE=complete_bash" in script("bash")
    assert "_SVCTRACE_COMPLETE=complete_fish" in script("fish")
    assert "_SVCTRACE_COMPLETE=complete_zsh" in script("zsh")


def test_commands_and_options_complete() -> None:
    assert "svc" in complete_words([], "s") and "demo" in complete_words([], "d")
    assert "--explain" in complete_words(["svc", "x"], "--ex")


def test_namespaces_and_services_complete_from_a_snapshot() -> None:
    assert complete_words(["svc", "--from", OVERALL, "-n"], "ns") == [f"ns{i}" for i in range(1, 7)]
    assert complete_words(["svc", "--from", OVERALL, "-n", "ns4"], "s") == ["svc4"]


def test_live_completion_failure_is_silent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert complete_words(["svc", "-n"], "") == []


def test_kubectl_plugin_completion_protocol(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["kubectl_complete-svctrace", "svc", "--from", OVERALL, "-n", "ns"])
    kubectl_complete()
    out = capsys.readouterr().out.splitlines()
    assert out == [f"ns{i}" for i in range(1, 7)] + [":4"]


def test_unknown_shell_is_a_usage_error() -> None:
    with pytest.raises(completion.UsageError):
        script("powershell")


def test_names_complete_from_the_live_cluster(tmp_path: Path) -> None:
    from svctrace.demo import demo_path
    from tests.harness.apiserver import FakeApiServer

    with FakeApiServer.from_manifests(sorted((demo_path() / "api").iterdir())) as server:
        kubeconfig = str(server.write_kubeconfig(tmp_path / "kubeconfig"))
        assert complete_words(["svc", "--kubeconfig", kubeconfig, "-n"], "") == ["default", "kube-system", "nginx-ns"]
        assert complete_words(["svc", "--kubeconfig", kubeconfig, "-n", "default"], "my") == [
            "my-nginx", "my-nginx-nodeport", "mysql"]
        # one LIST per completion, and nothing but reads
        assert [(r.method, r.path) for r in server.requests] == [
            ("GET", "/api/v1/namespaces"), ("GET", "/api/v1/namespaces/default/services")]


def _kubectl_completion(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                        *words: str) -> list[str]:
    monkeypatch.setattr(sys, "argv", ["kubectl_complete-svctrace", *words])
    kubectl_complete()
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("words", [
    ["svc", "x", "--from", ""],
    ["svc", "x", "--from", "snap"],
    ["svc", "x", "--from=snap"],
    ["trace", "--kubeconfig", "~/.ku"],
    ["capture", "-o", ""],
    ["capture", "--output", "out"],
])
def test_kubectl_plugin_completion_completes_files_for_paths(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str],
                                                             words: list[str]) -> None:
    # No candidates and cobra's ShellCompDirectiveDefault: kubectl's shell completes file names.
    assert _kubectl_completion(monkeypatch, capsys, *words) == [":0"]


def test_kubectl_plugin_completion_of_flags_is_not_files(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert _kubectl_completion(monkeypatch, capsys, "svc", "x", "--ex") == ["--explain", ":4"]


def test_completion_offers_the_shells(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert complete_words(["completion"], "") == ["bash", "zsh", "fish"]
    assert _kubectl_completion(monkeypatch, capsys, "completion", "z") == ["zsh", ":4"]


def test_shell_scripts_complete_files_for_paths() -> None:
    # No candidates for a path: the bash script's `-o default` (and zsh's and fish's fallbacks) complete files.
    from svctrace.cli.completion import completes_a_path

    for args in (["svc", "x", "--from"], ["audit", "--kubeconfig"], ["capture", "-o"]):
        assert complete_words(args, "") == [] and completes_a_path(args, ""), args
    assert not completes_a_path(["svc", "x", "-o"], "") and complete_words(["svc", "x", "-o"], "") == ["tree", "json"]
    assert completes_a_path(["svc", "x"], "--from=sn")
    assert "complete -o default -F" in script("bash")
