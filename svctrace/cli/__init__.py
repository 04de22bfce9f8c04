"""The command line. ``main`` answers ``--version`` before importing typer, rich or any command."""

from __future__ import annotations

import sys


def main() -> None:
    """Console-script entry point for ``svctrace`` and ``kubectl-svctrace``."""
    if sys.argv[1:] == ["--version"]:
        from svctrace import __version__

        sys.stdout.write(f"svctrace {__version__}\n")
        return
    from svctrace.cli.app import app

    app()
