"""One exit-status enum and the one place that turns exceptions into messages and statuses.

:func:`exit_status` is called by the application's group (``svctrace.cli.command.SvctraceGroup.main``) for
whatever any command, or the parsing of its command line, raised; no command handles errors itself.
"""

from __future__ import annotations

import enum
import errno
import importlib
import re
from typing import Any

import typer

from svctrace.cli.env import Environment
from svctrace.errors import SvctraceError

# typer 0.27+ vendors click; its exceptions live beside typer.BadParameter whichever click that is.
_exc: Any = importlib.import_module(typer.BadParameter.__module__)

# typer 0.27+ has its own Exit and Abort; before, they were click's.
_EXIT = (typer.Exit, getattr(_exc, "Exit", typer.Exit))
_ABORT = (KeyboardInterrupt, typer.Abort, getattr(_exc, "Abort", typer.Abort))
# What a write says when the disk it goes to is full: the output (or capture's file) could not be written.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NO_ARGS = getattr(_exc, "NoArgsIsHelpError", ())

_COMMAND_WORDS = re.compile(
    r"(?<![\w./-])(?<!kubectl )svctrace (?=svc|trace|why-unreachable|audit|capture|demo|completion|--)")


class ExitStatus(enum.IntEnum):
    OK = 0
    FINDINGS = 1  # why-unreachable and audit: unreachable, degraded or findings
    ERROR = 2  # usage, input or collection error
    INTERNAL = 3  # a bug in svctrace
    INTERRUPTED = 130  # Ctrl-C, as a shell reports it


def for_prog(env: Environment, text: str) -> str:
    """``text`` with the commands it suggests spelled as the user runs svctrace (``kubectl svctrace svc ...``)."""
    return text if env.prog == "svctrace" else _COMMAND_WORDS.sub(f"{env.prog} ", text)


def report(env: Environment, message: str, hint: str | None) -> None:
    """Print ``svctrace: error: <what>`` and the next step, without markup (names may hold '[')."""
    env.say(f"svctrace: error: {for_prog(env, message)}")
    if hint:
        env.say(f"  next: {for_prog(env, hint)}")


def exit_status(env: Environment, exc: BaseException) -> int:
    """Say what went wrong in one line and a next step, and return the exit status (``--debug`` re-raises)."""
    if isinstance(exc, _EXIT):
        return int(exc.exit_code)
    if isinstance(exc, _ABORT):
        return int(ExitStatus.INTERRUPTED)
    if isinstance(exc, _NO_ARGS) and exc.ctx is not None:  # `svctrace` alone: the help, as kubectl does
        env.stdout.file.write(exc.ctx.get_help() + "\n")
        return int(ExitStatus.OK)
    if isinstance(exc, SvctraceError):
        if env.debug:
            raise exc
        report(env, exc.message, exc.hint)
        for note in exc.notes:
            env.say(f"note: {for_prog(env, note)}")
        return int(ExitStatus.ERROR)
    if isinstance(exc, _exc.UsageError):
        path = exc.ctx.command_path if exc.ctx is not None else env.prog
        report(env, usage_message(exc), f"see '{path} --help'")
        return int(ExitStatus.ERROR)
    if isinstance(exc, _exc.ClickException):
        report(env, _sentence(exc.format_message()), None)
        return int(ExitStatus.ERROR)
    if isinstance(exc, OSError) and exc.errno in _FULL:  # the machine's, not svctrace's
        report(env, f"cannot write: {exc.strerror or exc}", "free some space, or write the output elsewhere")
        return int(ExitStatus.ERROR)
    if isinstance(exc, Exception):  # a bug: say so in one line, the traceback is one flag away
        if env.debug:
            raise exc
        env.say(f"svctrace: internal error: {type(exc).__name__}: {exc}")
        env.say("  next: re-run with --debug for the traceback and report it")
        return int(ExitStatus.INTERNAL)
    raise exc


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].lower() + text[1:]


def _param_name(param: Any) -> str:
    if param is None:
        return "a value"
    if getattr(param, "param_type_name", "") == "argument":
        return str(param.metavar or param.name).upper()
    longs = [o for o in param.opts if o.startswith("--")]
    return str((longs or param.opts)[0])


def usage_message(exc: Any) -> str:
    """A command-line mistake in kubectl's words: unknown flag, invalid value, missing argument."""
    if isinstance(exc, _exc.NoSuchOption):
        maybe = f"; did you mean {' or '.join(sorted(exc.possibilities))}?" if exc.possibilities else ""
        return f"unknown flag: {exc.option_name}{maybe}"
    if isinstance(exc, _exc.MissingParameter):
        name = _param_name(exc.param)
        if getattr(exc.param, "param_type_name", "") == "argument":
            return f"missing {name}"
        return f"required flag {name} not set"
    if isinstance(exc, _exc.BadParameter):
        return f"invalid value for {_param_name(exc.param)}: {_sentence(exc.message)}"
    if isinstance(exc, _exc.BadOptionUsage):
        return _sentence(exc.message)
    message = _sentence(exc.message)
    unknown = re.fullmatch(r"no such command '(.+)'", message)
    if unknown:
        return f'unknown command "{unknown.group(1)}"'
    return message
