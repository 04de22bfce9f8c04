"""The command line. ``main`` answers ``--version`` before importing typer, rich or any command, and starts a live
``svc``/``trace``'s node read before typer too (svctrace.cli.early)."""

from __future__ import annotations

import sys
from typing import NoReturn


def main() -> None:
    """Console-script entry point for ``svctrace`` and ``kubectl-svctrace``."""
    if sys.argv[1:] == ["--version"]:
        from svctrace import __version__

        sys.stdout.write(f"svctrace {__version__}\n")
        return
    import gc

    # A snapshot of a big cluster is millions of small objects that live until exit and hold no cycles;
    # the default collector would walk them all again and again while they are built (a third of the
    # time of a 10,000-Service audit). Young objects are still collected, only less often.
    gc.set_threshold(100_000, 50, 100)
    from svctrace.cli import early

    early.start(sys.argv[1:])  # a live svc or trace's node read, before typer is imported
    status: object = 0
    try:
        from svctrace.cli.app import app_for

        app_for(sys.argv[1:])()
    except SystemExit as exc:
        status = exc.code
    finally:
        early.stop()
    _leave(status)


def _leave(status: object) -> NoReturn:
    """Exit with ``status`` (as SystemExit would) once the output is flushed, without tearing the interpreter
    down: freeing a big cluster's millions of objects one by one takes 0.05-0.3 s after the answer is printed.
    Commands end their own threads, child processes and collector pods, their temporary files are unlinked, and
    a thread still stuck on a dead API server is not waited for. The ``atexit`` handlers still run: svctrace
    registers none, but what runs it may (the plugin's bootstrap removes its unpacked copy in one)."""
    import atexit
    import os

    atexit._run_exitfuncs()

    if status is None:
        code = 0
    elif isinstance(status, int):
        code = status
    else:
        sys.stderr.write(f"{status}\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away (| head) or a closed stream: nothing to flush to
            code = code or 1
    os._exit(code)
