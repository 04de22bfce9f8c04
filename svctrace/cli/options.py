"""Options shared by several commands, declared once."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from svctrace.cli.names import complete_namespace


class OutputFormat(str, enum.Enum):
    tree = "tree"
    json = "json"


Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="tree (for people) or json (for scripts).")]
Explain = Annotated[bool, typer.Option("--explain", help="Add one plain sentence per hop: what it does and why.")]
FromSnapshot = Annotated[
    str | None,
    typer.Option("--from", help="Analyse a snapshot: a folder, a .tar.gz of one, or the word 'demo'.",
                 metavar="SNAPSHOT"),
]
Namespace = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="The namespace (default: the kubeconfig context's, else default).",
                 autocompletion=complete_namespace),
]
Kubeconfig = Annotated[
    str | None,
    typer.Option("--kubeconfig", help="Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).",
                 metavar="PATH"),
]
Context = Annotated[str | None, typer.Option("--context", help="The kubeconfig context to use.")]
NodeName = Annotated[
    str | None,
    typer.Option("--node", help="This node's name in the cluster (default: the Node whose address is local)."),
]
RequestTimeout = Annotated[
    float, typer.Option("--request-timeout", help="Seconds to wait for each API request.", min=0.1)]
Netns = Annotated[
    str | None,
    typer.Option("--netns", hidden=True, help="Read the dataplane of this named network namespace (testing).",
                 metavar="NAME"),
]
