"""A live ``svc NAME`` or ``trace``'s node read, started before typer is imported.

On a big node the kernel's save is most of what ``svc`` and ``trace`` wait for, and a command can start it
only once its arguments are parsed: typer, click and the command's modules take 50-70 ms to import first.
``start`` looks at the arguments before any of that, without a parser. Where they are plainly a live ``svc
NAME`` or ``trace`` of this node, run as root, it starts the node read that command asks for
(svctrace.collectors.live.start_early). The command takes that read when it asks for the same one (the same
network namespace, tables and --timeout), and any other is stopped (``stop``, before the process ends).

A wrong guess costs a few processes started in vain, never another answer: the command's own parsing decides
what is read, and an option this scan does not know stops it from guessing at all.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

# Each option of `svc` and `trace`, by what the scan does with it (tests/cli/test_early.py checks that every
# option the two commands have is in one of these):
# not a live read of this node, or no read at all: nothing is started
ELSEWHERE = frozenset({"--from", "--collect", "--all-nodes", "--nodes", "--from-pod", "--help", "-h", "--image",
                       "--privileged", "--collector-namespace", "--collect-timeout", "--parallel"})
# flags without a value
FLAGS = frozenset({"--explain", "--from-node", "--from-external", "--kube-proxy-test"})
# options with a value (--netns and --timeout shape the read; the others do not)
VALUED = frozenset({"-n", "--namespace", "--kubeconfig", "--context", "--node", "--request-timeout", "--timeout",
                    "--netns", "--port", "-o", "--output", "--dst", "--proto", "--src", "--in-interface", "--mode"})
_GLUED = ("-n", "-o")  # short options click also reads glued to their value: -nkube-system, -ojson


def plan(args: Sequence[str]) -> tuple[str | None, tuple[str, ...], float | None] | None:
    """(netns, tables, --timeout in seconds) of the read ``svctrace ARGS`` will make, when the arguments say so
    plainly; None otherwise. It imports nothing before it knows (help and usage errors stay light)."""
    if not args or args[0] not in ("svc", "trace"):
        return None
    values: dict[str, str] = {}
    positional: list[str] = []
    rest = list(args[1:])
    i = 0
    while i < len(rest):
        token = rest[i]
        i += 1
        if token == "--":
            positional += rest[i:]
            break
        if not token.startswith("-") or token == "-":
            positional.append(token)
            continue
        name, eq, value = token.partition("=")
        if name in FLAGS and not eq:
            continue
        if name not in VALUED:
            glued = name[:2] if not name.startswith("--") and not eq else None
            if glued in _GLUED and len(name) > 2:
                values[glued] = name[2:]
                continue
            return None  # ELSEWHERE, or an option this scan does not know
        if not eq:
            if i >= len(rest):
                return None
            value = rest[i]
            i += 1
        values[name] = value
    if args[0] == "svc":
        # a NAME with a dot or a colon may be an address: that reads every namespace and every table
        if len(positional) != 1 or "." in positional[0] or ":" in positional[0]:
            return None
        from svctrace.collectors.live import SERVICE_TABLES

        tables: tuple[str, ...] = SERVICE_TABLES
    else:
        if positional:
            return None
        from svctrace.parsers.commands import ALL_TABLES

        tables = ALL_TABLES
    from svctrace.cli.durations import DEFAULT_TIMEOUT, parse_duration
    from svctrace.errors import UsageError

    try:
        timeout = parse_duration(values.get("--timeout", DEFAULT_TIMEOUT), "--timeout", zero_means_none=True)
    except UsageError:
        return None  # the command says what is wrong with it
    return values.get("--netns"), tables, timeout


def start(args: Sequence[str]) -> None:
    """Start the read ``plan`` finds, as root (elsewhere the saves are not run at all), unless the shell is only
    asking for completions."""
    geteuid = getattr(os, "geteuid", None)  # (none on Windows, where a laptop reads snapshots and collector pods)
    if geteuid is None or geteuid() != 0 or any(var.endswith("_COMPLETE") for var in os.environ):
        return
    planned = plan(args)
    if planned is None:
        return
    from svctrace.collectors.live import start_early

    try:
        start_early(*planned)
    except Exception:  # noqa: BLE001 - the command's own read meets it again, and says what it is
        stop()


def stop() -> None:
    """Stop the early read if no command took it."""
    import sys

    live = sys.modules.get("svctrace.collectors.live")
    if live is not None:
        live.stop_early()
