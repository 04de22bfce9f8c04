"""The command line. ``main`` answers ``--version`` before importing typer, rich or any command."""

from __future__ import annotations

import sys


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
    from svctrace.cli.app import app

    app()
