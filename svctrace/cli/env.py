"""The environment a command runs in: its consoles and the name it is run by (injected in tests)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO

from rich.console import Console

from svctrace.render.theme import THEME

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
    # force_terminal and no_color left None let rich read FORCE_COLOR, TTY_COMPATIBLE and NO_COLOR itself.
    return Console(
        file=stream, theme=THEME, width=width, force_terminal=force_terminal, no_color=no_color,
        color_system="auto", highlight=False, markup=False, emoji=False, soft_wrap=False,
    )


@dataclass
class Environment:
    """Consoles and switches for one run of the CLI."""

    stdout: Console = field(default_factory=make_console)
    stderr: Console = field(default_factory=lambda: make_console(stderr=True))
    debug: bool = False
    prog: str = PROG

    def print_json(self, doc: object) -> None:
        """``doc`` on stdout as rich's print_json lays it out (indent 2, not ASCII-escaped), highlighted where
        colours are shown. Elsewhere (a pipe, a file) it is written as json.dumps gives it, which is what rich
        prints there, without rendering it as text: a 10,000-Service audit's 3 MB took rich 0.7 s and 70 MB."""
        if self.stdout.color_system is None:
            self.stdout.file.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
            self.stdout.file.flush()
        else:
            self.stdout.print_json(data=doc)
