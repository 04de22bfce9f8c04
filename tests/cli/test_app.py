"""A run that names its command gets an app of that command alone; it answers as the whole app does."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from svctrace.cli import app as app_module
from svctrace.cli.app import COMMANDS, app, app_for, make_app


def names(built: typer.Typer) -> list[str]:
    group: Any = typer.main.get_command(built)
    return list(group.list_commands(None))


def test_commands_lists_each_command_and_its_module_in_help_order() -> None:
    assert names(app) == list(COMMANDS)
    for name in COMMANDS:
        assert names(make_app(name)) == [name]


@pytest.mark.parametrize("args", [[], ["--help"], ["--debug", "svc", "x"], ["sv", "x"], ["svc.", "x"]])
def test_whatever_names_no_command_first_gets_every_command(args: list[str]) -> None:
    assert app_for(args) is app


def test_shell_completion_gets_every_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_SVCTRACE_COMPLETE", "complete_bash")
    assert app_for(["svc"]) is app


def test_app_is_built_once() -> None:
    assert app_module.app is app and app_for(["--help"]) is app


@pytest.mark.parametrize("args", [
    ["svc", "my-nginx", "--from", "demo"],
    ["svc", "my-nginx", "--from", "demo", "-o", "json", "--explain"],
    ["svc", "--help"],
    ["svc"],
    ["svc", "--bogus", "x"],
    ["trace", "--from", "demo"],
    ["trace", "--dst", "10.99.198.177:80", "--from", "demo:nftables", "-o", "json"],
    ["why-unreachable", "my-nginx", "--from", "demo"],
    ["audit", "-A", "--from", "demo"],
    ["demo", "--mode", "bogus"],
    ["completion", "zsh"],
    ["capture", "--help"],
])
def test_one_command_answers_as_the_whole_app(args: list[str]) -> None:
    alone, whole = CliRunner().invoke(app_for(args), args), CliRunner().invoke(app, args)
    assert app_for(args) is not app
    assert (alone.exit_code, alone.stdout, alone.stderr) == (whole.exit_code, whole.stdout, whole.stderr)
