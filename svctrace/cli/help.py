"""Help text laid out the way kubectl lays out its own, whatever typer's formatter does in the version installed.

kubectl prints the description, then ``Options:`` (``--flag=default:`` with the help on the next, tab-indented
line), then ``Usage:``; a plugin's help should read the same next to ``kubectl get --help``. Wrapped at a fixed
80 columns, like kubectl's help when it is not on a terminal, so the text is the same everywhere (and testable).
"""

from __future__ import annotations

import enum
import inspect
import textwrap
from typing import Any

WIDTH = 80
_HELP_INDENT = "\t"
_HELP_WIDTH = WIDTH - 8  # a tab is 8 columns


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    lines: list[str] = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        if lines:
            lines.append("")
        lines += textwrap.wrap(" ".join(paragraph.split()), width, initial_indent=indent,
                               subsequent_indent=indent, break_on_hyphens=False, break_long_words=False)
    return lines


def _default(param: Any) -> str:
    value = param.default
    if callable(value):
        value = None
    if isinstance(value, enum.Enum):
        value = value.value
    if param.is_flag:
        return "false" if not value else "true"
    if value is None:
        return "''"
    if isinstance(value, float | int):
        return str(value)
    return f"'{value}'"


def _option_lines(param: Any) -> list[str]:
    names = ", ".join(sorted(param.opts, key=len))
    head = f"    {names}={_default(param)}:"
    body = _wrap(param.help or "", _HELP_WIDTH, _HELP_INDENT)
    choices = getattr(param.type, "choices", None)
    if choices and not any(str(c) in (param.help or "") for c in choices):
        body += _wrap(f"One of: {', '.join(str(c) for c in choices)}.", _HELP_WIDTH, _HELP_INDENT)
    return [head, *body]


def _argument_lines(param: Any) -> list[str]:
    return [f"    {param.metavar or param.name.upper()}:", *_wrap(getattr(param, "help", None) or "", _HELP_WIDTH,
                                                                   _HELP_INDENT)]


def usage(command: Any, path: str) -> str:
    """``svctrace svc NAME [options]``: required flags and the arguments, then ``[options]``."""
    words = [path]
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "option" and param.required:
            longest = max(param.opts, key=len)
            words.append(f"{longest} {param.metavar or param.name.upper()}")
        elif param.param_type_name == "argument":
            name = param.metavar or param.name.upper()
            words.append(name if param.required else f"[{name}]")
    words.append("[options]")
    return " ".join(words)


def command_help(command: Any, path: str) -> str:
    """One command's help: description, arguments, options, usage."""
    lines = _wrap(command.help or "", WIDTH)
    arguments = [p for p in command.params if p.param_type_name == "argument" and not getattr(p, "hidden", False)]
    options = [p for p in command.params if p.param_type_name == "option" and not p.hidden
               and "--help" not in p.opts]
    if arguments:
        lines += ["", "Arguments:"]
        for param in arguments:
            lines += _argument_lines(param) + [""]
        lines.pop()
    if options:
        lines += ["", "Options:"]
        for param in options:
            lines += _option_lines(param) + [""]
        lines.pop()
    lines += ["", "Usage:", f"  {usage(command, path)}", ""]
    root = path.rsplit(" ", 1)[0]
    lines.append(f"Use \"{root} --help\" for the other commands and the global options (--debug).")
    return "\n".join(lines) + "\n"


def group_help(group: Any, ctx: Any, path: str) -> str:
    """The application's help: description, commands, global options, usage."""
    lines = _wrap(group.help or "", WIDTH)
    commands = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    shown = [(name, cmd) for name, cmd in commands if cmd is not None and not cmd.hidden]
    if shown:
        lines += ["", "Commands:"]
        width = max(len(name) for name, _ in shown) + 2
        for name, cmd in shown:
            summary = " ".join(inspect.cleandoc(cmd.help or "").split("\n\n")[0].split()).rstrip(".")
            wrapped = textwrap.wrap(summary, WIDTH - width - 2, break_on_hyphens=False) or [""]
            lines.append(f"  {name.ljust(width)}{wrapped[0]}")
            lines += [" " * (width + 2) + more for more in wrapped[1:]]
    options = [p for p in group.params if p.param_type_name == "option" and not p.hidden and "--help" not in p.opts]
    if options:
        lines += ["", "Options:"]
        for param in options:
            lines += _option_lines(param) + [""]
        lines.pop()
    lines += ["", "Usage:", f"  {path} [options] COMMAND", "",
              f"Use \"{path} COMMAND --help\" for more information about a command."]
    return "\n".join(lines) + "\n"
