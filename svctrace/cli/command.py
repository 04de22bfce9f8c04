"""How a command is registered: its own parameters plus the shared flags, one error mapping, kubectl-style help.

Every command is a function ``fn(run: Run, <its own parameters>)`` registered with :func:`command`, which adds
``--from`` (``snapshot=True``) and the kubectl flags (``kubectl=True``) from :mod:`svctrace.cli.options`, builds
the :class:`Run` (the Environment and the :class:`~svctrace.sources.Source` with its ``LiveOptions``) once, and
leaves errors to :class:`SvctraceGroup`, which maps whatever any command raised to a message and an exit status.

Command modules import only typer and this package at import time, and the rest inside the command, so that
``--help``, ``--version`` and completion do not load the resolver, the collectors or the Kubernetes client.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import typer
import typer.core

from svctrace.cli.durations import parse_duration
from svctrace.cli.env import Environment, program_name
from svctrace.cli.errors import exit_status
from svctrace.cli.help import command_help, group_help
from svctrace.cli.options import COLLECT_FLAGS, KUBECTL_FLAGS, NODES_FLAGS, SNAPSHOT_FLAGS, SharedOption
from svctrace.errors import UsageError

if TYPE_CHECKING:
    from svctrace.sources import Loaded, Source

F = TypeVar("F", bound=Callable[..., None])


class Run:
    """What every command gets besides its own parameters: where to print, and where its Snapshot comes from."""

    def __init__(self, env: Environment, flags: dict[str, Any] | None = None) -> None:
        self.env = env
        self._flags = flags or {}
        self._source: Source | None = None

    @property
    def namespace(self) -> str | None:
        """``-n`` as given; the default (the context's, else ``default``) is worked out by svctrace.sources."""
        value: str | None = self._flags.get("namespace")
        return value

    def warn_partial(self, loaded: Loaded) -> None:
        """Say on stderr what a live collection could not read (its answer is partial); a snapshot says it itself."""
        if loaded.collection is not None:
            for warning in loaded.collection.api.warnings:
                self.env.say(f"warning: {warning}", "note")

    @property
    def source(self) -> Source:
        """``--from``'s snapshot, or the live cluster and node reached with the kubectl flags (built once)."""
        if self._source is None:
            self._source = _source(self._flags)
        return self._source


def env_of(ctx: object) -> Environment:
    """The Environment of a running command, from its typer context."""
    find_root = getattr(ctx, "find_root", None)
    obj = find_root().obj if callable(find_root) else None
    return obj if isinstance(obj, Environment) else Environment()


class SvctraceCommand(typer.core.TyperCommand):
    """A command whose help reads like kubectl's."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        formatter.write(command_help(self, ctx.command_path))


class SvctraceGroup(typer.core.TyperGroup):
    """The application: kubectl-style help, the program's name, and the one place errors become exit statuses."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        formatter.write(group_help(self, ctx, ctx.command_path))

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        env = extra.get("obj")
        if not isinstance(env, Environment):
            env = extra["obj"] = Environment()
        env.prog = program_name()  # whatever name a test runner passes: the user runs svctrace or kubectl svctrace
        try:
            result = super().main(args, env.prog, complete_var, standalone_mode=False,
                                  windows_expand_args=windows_expand_args, **extra)
            status = result if isinstance(result, int) else 0
        except BaseException as exc:  # noqa: BLE001 - exit_status re-raises what is not ours to map
            status = exit_status(env, exc)
        if not standalone_mode:
            return status
        sys.exit(status)


def _shared_parameters(options: tuple[SharedOption, ...]) -> list[inspect.Parameter]:
    return [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, annotation=o.annotation, default=o.default)
            for o in options]


def command(app: typer.Typer, name: str, *, kubectl: bool = False, snapshot: bool = False, collect: bool = False,
            nodes: bool = False) -> Callable[[F], F]:
    """Register ``fn(run, ...)`` as command ``name``, with ``--from``, the kubectl flags, ``--collect`` and its
    knobs, and the every-node flags appended as asked."""
    shared = ((SNAPSHOT_FLAGS if snapshot else ()) + (KUBECTL_FLAGS if kubectl else ())
              + (COLLECT_FLAGS if collect else ()) + (NODES_FLAGS if nodes else ()))
    shared_names = [o.name for o in shared]

    def register(fn: F) -> F:
        own = list(inspect.signature(fn, eval_str=True).parameters.values())
        if not own or own[0].name != "run":
            raise TypeError(f"command {name}: the first parameter must be `run: Run`")
        params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
                  *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[1:]),
                  *_shared_parameters(shared)]

        def invoke(ctx: typer.Context, **kwargs: Any) -> None:
            values = {n: kwargs.pop(n) for n in shared_names}
            fn(Run(env_of(ctx), values), **kwargs)

        invoke.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        invoke.__annotations__ = {p.name: p.annotation for p in params}
        invoke.__name__ = fn.__name__
        invoke.__doc__ = fn.__doc__
        app.command(name, cls=SvctraceCommand)(invoke)
        return fn

    return register


def _source(flags: dict[str, Any]) -> Source:
    """The command's Source: LiveOptions are built here, and only here, from the kubectl flags."""
    from svctrace.collectors.live import CollectOptions, LiveOptions
    from svctrace.sources import NodeChoice, Source

    spec = flags.get("from_")
    snapshot = None if spec is None else str(spec)
    if "request_timeout" not in flags:  # a command without the kubectl flags
        return Source(snapshot)
    kubeconfig = flags["kubeconfig"]
    request_timeout = parse_duration(flags["request_timeout"])
    assert request_timeout is not None  # only --timeout may be 0 (no limit)
    live = LiveOptions(kubeconfig=None if kubeconfig is None else str(kubeconfig), context=flags["context"],
                       namespace=flags["namespace"], node_name=flags["node"], timeout=request_timeout,
                       total_timeout=parse_duration(flags.get("timeout", "0"), "--timeout", zero_means_none=True),
                       netns=flags["netns"])
    collect = None
    if flags.get("collect"):
        start_timeout = parse_duration(flags["collect_timeout"], "--collect-timeout")
        assert start_timeout is not None
        collect = CollectOptions(image=flags["image"], privileged=flags["privileged"],
                                 namespace=flags["collector_namespace"], parallel=flags.get("parallel", 1),
                                 start_timeout=start_timeout)
    elif flags.get("image") or flags.get("privileged") or flags.get("collector_namespace"):
        raise UsageError("--image, --privileged and --collector-namespace shape the collector pod of --collect",
                         "add --collect (it reads the node through a short-lived collector pod)")
    selector = flags.get("nodes")
    nodes = NodeChoice(flags["node"], bool(flags.get("all_nodes") or selector), selector)
    return Source(snapshot, live, collect, nodes)
