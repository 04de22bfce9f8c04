"""Options declared once: those several commands share, and the kubectl flags every live command takes.

A command declares only its own parameters; :func:`svctrace.cli.command.command` appends ``--from``
(``snapshot=True``) and the kubectl flags (``kubectl=True``) from the tables below, so each is defined here once.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from svctrace.cli.names import complete_namespace
from svctrace.errors import UsageError


class OutputFormat(str, enum.Enum):
    tree = "tree"
    json = "json"


class TextOrJson(str, enum.Enum):
    text = "text"
    json = "json"


Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="tree (for people) or json (for scripts).",
                                              metavar="FORMAT")]
TextOutput = Annotated[TextOrJson, typer.Option("--output", "-o", help="text or json.", metavar="FORMAT")]
Explain = Annotated[bool, typer.Option("--explain", help="Add one plain sentence per hop: what it does and why.")]
# Paths are typed as Path so that shell completion (and kubectl's plugin completion) completes file names.
FromSnapshot = Annotated[
    Path | None,
    typer.Option("--from", help="Analyse a snapshot: a folder, a .tar.gz of one, one pasted dump (iptables-save or "
                                "-S, ipvsadm -Ln, nft list, ...) or the word 'demo'.", metavar="SNAPSHOT"),
]
Namespace = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="The namespace (default: the kubeconfig context's, else default).",
                 autocompletion=complete_namespace, metavar="NAMESPACE"),
]
Kubeconfig = Annotated[
    Path | None,
    typer.Option("--kubeconfig", help="Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).",
                 metavar="PATH"),
]
Context = Annotated[str | None, typer.Option("--context", help="The kubeconfig context to use.", metavar="NAME")]
NodeName = Annotated[
    str | None,
    typer.Option("--node", help="This node's name in the cluster (default: the Node whose address is local).",
                 metavar="NAME"),
]
RequestTimeout = Annotated[
    str, typer.Option("--request-timeout", metavar="DURATION",
                      help="How long to wait for each API request, like kubectl's: 5s, 500ms, 1m (a bare number "
                           "is seconds).")]
Netns = Annotated[
    str | None,
    typer.Option("--netns", hidden=True, help="Read the dataplane of this named network namespace (testing).",
                 metavar="NAME"),
]

DEFAULT_REQUEST_TIMEOUT = "5s"


@dataclass(frozen=True, slots=True)
class SharedOption:
    """One parameter appended to every command that takes it: its name, its typer declaration and its default."""

    name: str
    annotation: Any
    default: Any


SNAPSHOT_FLAGS = (SharedOption("from_", FromSnapshot, None),)
KUBECTL_FLAGS = (
    SharedOption("namespace", Namespace, None),
    SharedOption("kubeconfig", Kubeconfig, None),
    SharedOption("context", Context, None),
    SharedOption("node", NodeName, None),
    SharedOption("request_timeout", RequestTimeout, DEFAULT_REQUEST_TIMEOUT),
    SharedOption("netns", Netns, None),
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a kubectl-style duration: ``5s``, ``500ms``, ``1m30s``, or a bare number of seconds."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise UsageError(f"--request-timeout {text!r} is not a duration",
                             "give e.g. --request-timeout 5s, 500ms or 1m") from None
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise UsageError(f"--request-timeout {text!r} must be more than zero", "give e.g. --request-timeout 5s")
    return seconds
