"""The svctrace application: one typer app, one module per command, registered in this order.

``app`` (built when first imported from here) has every command: help, completion and tests use it. A run
that names its command first gets an app of that command alone (:func:`app_for`): typer turns every
registered command's signature into click parameters on each run, ~10 ms for all of them, and a run of
``svc`` uses one command's.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Annotated

import typer
import typer.completion

from svctrace import __version__
from svctrace.cli import main as main
from svctrace.cli.command import SvctraceGroup, env_of

# Each command and the module that registers it (svctrace.cli.<module>), in the order help lists them.
COMMANDS = {"svc": "svc", "demo": "demo", "trace": "trace", "why-unreachable": "why", "capture": "capture",
            "audit": "audit", "completion": "completion"}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"svctrace {__version__}")
        raise typer.Exit()


def main_callback(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show a traceback on errors.")] = False,
) -> None:
    """Explain how a Kubernetes Service's traffic flows through this node's kube-proxy rules."""
    env_of(ctx).debug = debug


def make_app(only: str | None = None) -> typer.Typer:
    """The application: every command, or only the command ``only``."""
    built = typer.Typer(
        name="svctrace",
        cls=SvctraceGroup,
        help="Explain how a Kubernetes Service's traffic flows through this node's kube-proxy rules.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    built.callback()(main_callback)
    for name, module in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(f"svctrace.cli.{module}").register(built)
    # Lets the generated completion scripts call back into svctrace (_SVCTRACE_COMPLETE=complete_bash ...).
    typer.completion.completion_init()
    return built


def app_for(args: Sequence[str]) -> typer.Typer:
    """The application that runs ``svctrace ARGS``: the named command's alone when ARGS begin with one, and no
    shell completion is asked for; every command otherwise (help, a global option first, a mistyped name)."""
    if args and args[0] in COMMANDS and not any(var.endswith("_COMPLETE") for var in os.environ):
        return make_app(args[0])
    full: typer.Typer = globals().get("app") or __getattr__("app")
    return full


def __getattr__(name: str) -> typer.Typer:
    """``app``: every command, built on first use and kept."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    built = globals()["app"] = make_app()  # found as a module attribute from now on
    return built
