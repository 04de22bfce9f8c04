"""The environment a command runs in: its consoles and the name it is run by (injected in tests)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

# Wide enough that a KUBE-SEP chain, an endpoint and its pod fit on one line when output is piped.
PIPE_WIDTH = 160
PROG = "svctrace"
PLUGIN_PROG = "kubectl svctrace"


def program_name(argv0: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``kubectl svctrace`` when kubectl runs svctrace as its plugin, else ``svctrace``."""
    environ = os.environ if environ is None else environ
    argv0 = sys.argv[0] if argv0 is None else argv0
    if "KUBECTL_PLUGINS_CALLER" in environ or os.path.basename(argv0).startswith("kubectl-svctrace"):
        return PLUGIN_PROG
    return PROG


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def make_console(file: IO[str] | None = None, *, stderr: bool = False, width: int | None = None,
                 force_terminal: bool | None = None, no_color: bool | None = None) -> Console:
    """A console that colours a terminal, or whatever FORCE_COLOR says, and honours NO_COLOR, as rich does.

    Output that is not a terminal is laid out PIPE_WIDTH (or $COLUMNS) wide, even when colour is forced.
    """
    stream = file if file is not None else (sys.stderr if stderr else sys.stdout)
    if width is None and not (force_terminal or _isatty(stream)):
        width = int(os.environ.get("COLUMNS", PIPE_WIDTH))
    from rich.console import Console

    from svctrace.render.theme import THEME

    # force_terminal and no_color left None let rich read FORCE_COLOR, TTY_COMPATIBLE and NO_COLOR itself.
    return Console(
        file=stream, theme=THEME, width=width, force_terminal=force_terminal, no_color=no_color,
        color_system="auto", highlight=False, markup=False, emoji=False, soft_wrap=False,
    )


class Environment:
    """Consoles and switches for one run of the CLI. A console is made when first used: rich's import (25 ms)
    would otherwise come before a live command starts the node's saves."""

    def __init__(self, stdout: Console | None = None, stderr: Console | None = None, debug: bool = False,
                 prog: str = PROG) -> None:
        self._stdout = stdout
        self._stderr = stderr
        self.debug = debug
        self.prog = prog

    @property
    def stdout(self) -> Console:
        if self._stdout is None:
            self._stdout = make_console()
        return self._stdout

    @property
    def stderr(self) -> Console:
        if self._stderr is None:
            self._stderr = make_console(stderr=True)
        return self._stderr

    def stderr_is_terminal(self) -> bool:
        """Whether stderr is a terminal as rich decides it; where it plainly is not (not a tty, and no variable
        that rich reads says otherwise), without making the console."""
        if self._stderr is None and not _isatty(sys.stderr) \
                and not any(os.environ.get(k) for k in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")):
            return False
        return self.stderr.is_terminal

    def say(self, text: str, style: str = "") -> None:
        """One line on stderr, as written (no markup: names may hold '['), wrapped as the terminal wraps it."""
        from rich.text import Text

        self.stderr.print(Text(text, style), soft_wrap=True)

    def print_json(self, doc: object) -> None:
        """``doc`` on stdout as rich's print_json lays it out (indent 2, not ASCII-escaped), highlighted where
        colours are shown. Elsewhere (a pipe, a file) it is written as json.dumps gives it, which is what rich
        prints there, without rendering it as text: a 10,000-Service audit's 3 MB took rich 0.7 s and 70 MB."""
        if self.stdout.color_system is None:
            self.stdout.file.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
            self.stdout.file.flush()
        else:
            self.stdout.print_json(data=doc)
