"""One exit-status enum and the one place that turns exceptions into messages and statuses."""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.text import Text

from svctrace.cli.env import Environment
from svctrace.errors import SvctraceError


class ExitStatus(enum.IntEnum):
    OK = 0
    FINDINGS = 1  # why-unreachable: unreachable or degraded
    ERROR = 2  # usage, input or collection error
    INTERNAL = 3  # a bug in svctrace


P = ParamSpec("P")
R = TypeVar("R")


def report(env: Environment, exc: SvctraceError) -> None:
    """Print ``svctrace: error: <what>`` and the next step, without markup (names may hold '[')."""
    env.stderr.print(Text(f"svctrace: error: {exc.message}"), soft_wrap=True)
    if exc.hint:
        env.stderr.print(Text(f"  next: {exc.hint}"), soft_wrap=True)


def handled(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a command, mapping svctrace errors to a message and exit status 2 (a traceback only with --debug).

    The command takes ``ctx: typer.Context``; its root context's ``obj`` is the Environment.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        env = env_of(kwargs.get("ctx"))
        try:
            return fn(*args, **kwargs)
        except SvctraceError as exc:
            if env.debug:
                raise
            report(env, exc)
            raise typer.Exit(int(ExitStatus.ERROR)) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug: say so in one line, the traceback is one flag away
            if env.debug:
                raise
            env.stderr.print(Text(f"svctrace: internal error: {type(exc).__name__}: {exc}"), soft_wrap=True)
            env.stderr.print(Text("  next: re-run with --debug for the traceback and report it"), soft_wrap=True)
            raise typer.Exit(int(ExitStatus.INTERNAL)) from None

    return wrapper


def env_of(ctx: object) -> Environment:
    """The Environment of a running command, from its typer context."""
    # typer hands commands its (possibly vendored) click Context, not always a typer.Context instance.
    find_root = getattr(ctx, "find_root", None)
    obj = find_root().obj if callable(find_root) else None
    return obj if isinstance(obj, Environment) else Environment()
