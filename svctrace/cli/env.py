"""The environment a command runs in: its consoles and where snapshots come from (injected in tests)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import IO

from rich.console import Console

from svctrace.render.theme import THEME

# Wide enough that a KUBE-SEP chain, an endpoint and its pod fit on one line when output is piped.
PIPE_WIDTH = 160


def make_console(file: IO[str] | None = None, *, stderr: bool = False, width: int | None = None,
                 force_terminal: bool | None = None, no_color: bool | None = None) -> Console:
    """A console that colours only a terminal and honours NO_COLOR."""
    stream = file if file is not None else (sys.stderr if stderr else sys.stdout)
    is_tty = force_terminal if force_terminal is not None else stream.isatty()
    if no_color is None:
        no_color = bool(os.environ.get("NO_COLOR"))
    if width is None and not is_tty:
        width = int(os.environ.get("COLUMNS", PIPE_WIDTH))
    return Console(
        file=stream, theme=THEME, width=width, force_terminal=is_tty, no_color=no_color,
        color_system="auto" if is_tty and not no_color else None, highlight=False, markup=False,
        emoji=False, soft_wrap=False,
    )


@dataclass
class Environment:
    """Consoles and switches for one run of the CLI."""

    stdout: Console = field(default_factory=make_console)
    stderr: Console = field(default_factory=lambda: make_console(stderr=True))
    debug: bool = False
