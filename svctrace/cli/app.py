"""The svctrace application: one typer app, one module per command, registered in this order."""

from __future__ import annotations

from typing import Annotated

import typer
import typer.completion

from svctrace import __version__
from svctrace.cli import audit, capture, completion, demo, svc, trace, why
from svctrace.cli import main as main
from svctrace.cli.command import SvctraceGroup, env_of

app = typer.Typer(
    name="svctrace",
    cls=SvctraceGroup,
    help="Explain how a Kubernetes Service's traffic flows through this node's kube-proxy rules.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"svctrace {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show a traceback on errors.")] = False,
) -> None:
    """Explain how a Kubernetes Service's traffic flows through this node's kube-proxy rules."""
    env_of(ctx).debug = debug


for module in (svc, demo, trace, why, capture, audit, completion):
    module.register(app)

# Lets the generated completion scripts call back into svctrace (_SVCTRACE_COMPLETE=complete_bash ...).
typer.completion.completion_init()
