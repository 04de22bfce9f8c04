"""What the tests ask about this process's children."""

from __future__ import annotations

import os


def no_child_left() -> bool:
    """No child of this process is left, running or unreaped (a job stopped and waited for)."""
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False
