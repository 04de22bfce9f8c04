"""Shell completion: scripts generated from the app, live names, and kubectl's plugin completion hook."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.completion

from svctrace.cli.command import Run, command
from svctrace.errors import UsageError

PROG = "svctrace"
COMPLETE_VAR = "_SVCTRACE_COMPLETE"
FILES = {"bash": "svctrace.bash", "zsh": "_svctrace", "fish": "svctrace.fish"}
# Cobra's ShellCompDirective values: kubectl's plugin completion protocol ends with ":<directive>".
DEFAULT_COMP = 0  # no candidates: the shell completes file names
NO_FILE_COMP = 4


class Shell(str, enum.Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def script(shell: str) -> str:
    """The completion script for one shell, generated from the app (it calls back into svctrace)."""
    if shell not in FILES:
        raise UsageError(f"no completion for shell {shell!r}", "choose bash, zsh or fish")
    typer.completion.completion_init()
    text: str = typer.completion.get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell)
    return text.rstrip("\n") + "\n"


def completion_command(
    run: Run,
    shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish.", metavar="SHELL")],
) -> None:
    """Print the shell completion script, e.g. `source <(svctrace completion bash)`."""
    sys.stdout.write(script(shell.value))


def write_all(folder: Path) -> list[Path]:
    """Write every shell's script into ``folder`` (the committed completions/)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for shell, name in FILES.items():
        path = folder / name
        path.write_text(script(shell))
        written.append(path)
    return written


def completions(args: list[str], incomplete: str) -> list[Any]:
    """click's completion items for the word being typed after ``svctrace ARGS...`` (value and type)."""
    from svctrace.cli.app import app

    typer.completion.completion_init()
    cli = typer.main.get_command(app)
    completer_class = typer.completion.shell_completion.get_completion_class("bash")
    if completer_class is None:
        return []
    completer = completer_class(cli, {}, PROG, COMPLETE_VAR)
    return list(completer.get_completions(args, incomplete))


def complete_words(args: list[str], incomplete: str) -> list[str]:
    """Candidates for the word being typed after ``svctrace ARGS...``, as the shell scripts would get them."""
    return [item.value for item in completions(args, incomplete)]


def completes_a_path(args: list[str], incomplete: str) -> bool:
    """Is the word being typed the value of a path option (``--from``, ``--kubeconfig``, ``capture -o``)?"""
    from svctrace.cli.app import app

    group: Any = typer.main.get_command(app)
    names = group.list_commands(None)
    name = next((word for word in args if word in names), None)
    command = group.get_command(None, name) if name else group
    if command is None:
        return False
    option = incomplete.split("=", 1)[0] if incomplete.startswith("--") and "=" in incomplete else (
        args[-1] if args else "")
    for param in command.params:
        if option in param.opts and param.param_type_name == "option":
            return getattr(param.type, "name", "") in ("path", "file", "directory")
    return False


def kubectl_complete() -> None:
    """``kubectl_complete-svctrace``: kubectl runs it with the words after ``kubectl svctrace``.

    Prints one candidate a line, then cobra's directive: file names for a path (``--from``, ``--kubeconfig``,
    ``capture -o``), none otherwise.
    """
    words = sys.argv[1:]
    incomplete = words[-1] if words else ""
    try:
        if completes_a_path(words[:-1], incomplete):
            print(f":{DEFAULT_COMP}")
            return
        items = completions(words[:-1], incomplete)
    except Exception:  # completion must never print a traceback into the user's shell
        items = []
    for item in items:
        print(item.value)
    print(f":{NO_FILE_COMP}")


def register(app: typer.Typer) -> None:
    command(app, "completion")(completion_command)


if __name__ == "__main__":  # regenerate the committed scripts: python -m svctrace.cli.completion
    for p in write_all(Path(__file__).resolve().parents[2] / "completions"):
        print(p)
