"""The children a test forks: which they are, and whether each has ended and been waited for."""

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
