"""Run a command and write its wall time, peak RSS and exit status to a file: ``_spawn.py OUT CMD...``.

Why a launcher: a process forked from a big parent (the bench runner holds a generated cluster) starts with
the parent's resident pages, and Linux keeps that high-water mark in ``ru_maxrss`` across exec. This
launcher is small when it forks, so the ``wait4`` figures it writes are the command's own.
"""

import os
import sys
import time


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - t0
    with open(out, "w") as f:
        f.write(f"{seconds} {usage.ru_maxrss * 1024} {os.waitstatus_to_exitcode(status)}\n")
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
