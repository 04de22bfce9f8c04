"""The processes a test makes: the children it forks (which they are, and whether each has ended and been waited
for), and a script that runs svctrace's entry point in a fresh interpreter and reports on it."""

from __future__ import annotations

import os

import pytest


def record_forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of the children this process forks from now on (``os.fork`` is patched for the test)."""
    forked: list[int] = []
    real = os.fork

    def fork() -> int:
        pid = real()
        if pid:
            forked.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return forked


def all_reaped(pids: list[int]) -> bool:
    """Each of these children has ended and been waited for: none is running or left unreaped. (Only these:
    a wait for any child would take another test's child from its own wait.)"""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue  # waited for already
        return False  # still running, or ended without being waited for (waited for now)
    return True


def main_probe(setup: str, report: str) -> str:
    """A script (``python -c SCRIPT JSON_ARGS``) that runs the console-script entry point in a fresh interpreter
    (``setup`` first), writes the value of the expression ``report`` on stderr, and exits with main()'s status."""
    return f"""
import json, os, sys
sys.argv = ["svctrace", *json.loads(sys.argv[1])]
{setup}
def leave(code):  # main() ends with os._exit, which would end this probe before it reports
    raise SystemExit(code)
os._exit = leave
from svctrace.cli import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
sys.stderr.write({report})
sys.exit(code)
"""
