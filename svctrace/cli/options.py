"""Options shared by several commands, declared once."""

from __future__ import annotations

import enum
from typing import Annotated

import typer


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
Namespace = Annotated[str | None, typer.Option("--namespace", "-n", help="The Service's namespace.")]
