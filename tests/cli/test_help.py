"""The help text, byte for byte: kubectl's layout on every typer version pyproject.toml allows.

Regenerate after an intended change with ``SVCTRACE_UPDATE_GOLDEN=1 python -m pytest tests/cli/test_help.py``
and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from svctrace.cli.app import app

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "help"
UPDATE = bool(os.environ.get("SVCTRACE_UPDATE_GOLDEN"))
COMMANDS = ["", "svc", "trace", "why-unreachable", "audit", "capture", "demo", "completion"]


def help_text(command: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(app, [*command.split(), "--help"], env=env)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_help_matches_the_golden_text(command: str) -> None:
    path = GOLDEN / f"{command or 'svctrace'}.txt"
    text = help_text(command)
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with SVCTRACE_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text()


@pytest.mark.parametrize("command", COMMANDS)
def test_help_reads_like_kubectl(command: str) -> None:
    text = help_text(command)
    lines = text.splitlines()
    assert "Usage:" in lines and lines[-4] == "Usage:"  # kubectl puts the usage last
    assert ("Options:" in lines) is (command != "completion")  # completion has only its argument
    # typer's own markers of its version: {NAME}, <str>, <float range>, TEXT, [default: ...], rich boxes.
    for marker in ("{", "<str>", "range>", " TEXT", "[default:", "[required]", "╭", "│"):
        assert marker not in text, (marker, command)
    assert all(len(line.expandtabs()) <= 80 for line in lines)
    for line in lines:  # an option is `    -x, --name=default:` with its help on tab-indented lines below
        if line.startswith("    -"):
            assert re.fullmatch(r"    (-\w, )?--[a-z-]+=('[^']*'|true|false|[\d.]+):", line), line


def test_usage_names_kubectl_svctrace_when_run_as_the_plugin() -> None:
    text = help_text("svc", env={"KUBECTL_PLUGINS_CALLER": "kubectl"})
    assert "  kubectl svctrace svc NAME [options]" in text.splitlines()
    assert "svctrace svc NAME" not in text.replace("kubectl svctrace svc NAME", "")


def test_usage_names_kubectl_svctrace_for_the_plugin_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECTL_PLUGINS_CALLER", raising=False)
    monkeypatch.setattr("sys.argv", ["/home/u/.krew/bin/kubectl-svctrace", "--help"])
    assert "  kubectl svctrace [options] COMMAND" in help_text("").splitlines()


def test_hidden_options_stay_hidden() -> None:
    assert "--netns" not in help_text("svc")
