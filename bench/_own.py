"""Run a Python console script in this process and write its own peak RSS: ``_own.py OUT SCRIPT ARGS...``.

A live command runs the kernel's save tools (``iptables-save`` peaks at ~390 MB on a 10,000-Service node,
``nft`` at 1.7 GB), and ``wait4`` reports the largest process of the tree. Run through this, svctrace's own
peak (``RUSAGE_SELF``, written when the process that started exits, by os._exit or not) and its children's
(the tools, and ``audit``'s forked workers: ``RUSAGE_CHILDREN``) are written apart, as "SELF CHILDREN" in bytes.
"""

import atexit
import os
import resource
import runpy
import sys


def main() -> None:
    out, script = sys.argv[1], sys.argv[2]
    pid = os.getpid()

    def write() -> None:
        if os.getpid() != pid:  # a forked worker that exits normally is not the command
            return
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        with open(out, "w") as f:
            f.write(f"{own} {children}\n")

    atexit.register(write)
    real_exit = os._exit

    def leave(code: int) -> None:  # svctrace leaves by os._exit (no teardown), which runs no atexit handler
        write()
        real_exit(code)

    os._exit = leave
    sys.argv = sys.argv[2:]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
