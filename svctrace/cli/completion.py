"""Shell completion: scripts generated from the app, live names, and kubectl's plugin completion hook."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
import typer.completion

from svctrace.cli.errors import handled
from svctrace.errors import UsageError

PROG = "svctrace"
COMPLETE_VAR = "_SVCTRACE_COMPLETE"
FILES = {"bash": "svctrace.bash", "zsh": "_svctrace", "fish": "svctrace.fish"}
# Cobra's ShellCompDirectiveNoFileComp: kubectl's plugin completion protocol ends with ":<directive>".
NO_FILE_COMP = 4


def script(shell: str) -> str:
    """The completion script for one shell, generated from the app (it calls back into svctrace)."""
    if shell not in FILES:
        raise UsageError(f"no completion for shell {shell!r}", "choose bash, zsh or fish")
    typer.completion.completion_init()
    text: str = typer.completion.get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell)
    return text.rstrip("\n") + "\n"


@handled
def completion_command(
    ctx: typer.Context,
    shell: Annotated[str, typer.Argument(help="bash, zsh or fish.")],
) -> None:
    """Print the shell completion script, e.g. `source <(svctrace completion bash)`."""
    sys.stdout.write(script(shell))


def write_all(folder: Path) -> list[Path]:
    """Write every shell's script into ``folder`` (the committed completions/)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for shell, name in FILES.items():
        path = folder / name
        path.write_text(script(shell))
        written.append(path)
    return written


def complete_words(args: list[str], incomplete: str) -> list[str]:
    """Candidates for the word being typed after ``svctrace ARGS...``, as the shell scripts would get them."""
    from svctrace.cli.app import app

    typer.completion.completion_init()
    command = typer.main.get_command(app)
    completer_class = typer.completion.shell_completion.get_completion_class("bash")
    if completer_class is None:
        return []
    completer = completer_class(command, {}, PROG, COMPLETE_VAR)
    return [item.value for item in completer.get_completions(args, incomplete)]


def kubectl_complete() -> None:
    """``kubectl_complete-svctrace``: kubectl runs it with the words after ``kubectl svctrace``."""
    words = sys.argv[1:]
    incomplete = words[-1] if words else ""
    try:
        candidates = complete_words(words[:-1], incomplete)
    except Exception:  # completion must never print a traceback into the user's shell
        candidates = []
    for value in candidates:
        print(value)
    print(f":{NO_FILE_COMP}")


def register(app: typer.Typer) -> None:
    app.command("completion")(completion_command)


if __name__ == "__main__":  # regenerate the committed scripts: python -m svctrace.cli.completion
    for p in write_all(Path(__file__).resolve().parents[2] / "completions"):
        print(p)
