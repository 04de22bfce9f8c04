"""``svctrace why-unreachable TARGET``: the cause, the evidence and the next step, during an incident."""

from __future__ import annotations

from typing import Annotated

import typer

from svctrace.cli.command import Run, command
from svctrace.cli.errors import ExitStatus
from svctrace.cli.options import Explain, TextOrJson, TextOutput


def why_command(
    run: Run,
    target: Annotated[str, typer.Argument(help="NAME, NS/NAME, NAME:PORT, a DNS name, IP:PORT or a URL.",
                                          metavar="TARGET")],
    from_pod: Annotated[str | None, typer.Option("--from-pod", help="Ask for this client pod (NS/POD).",
                                                 metavar="NS/POD")] = None,
    src: Annotated[str | None, typer.Option("--src", help="Ask for this client address.", metavar="IP")] = None,
    output: TextOutput = TextOrJson.text,
    explain: Explain = False,
) -> None:
    """Why a Service (or address) is unreachable: ranked findings with evidence and the next step.

    Exit status: 0 reachable, 1 unreachable or degraded, 2 a usage or collection error.
    """
    import json

    from svctrace.client import diagnosis_client
    from svctrace.diagnosis.diagnose import diagnose
    from svctrace.diagnosis.findings import REACHABLE
    from svctrace.diagnosis.target import parse_target
    from svctrace.render.findings import diagnosis_to_dict, render_diagnosis
    from svctrace.sources import load_namespace

    parsed = parse_target(target, run.namespace)
    # An address can belong to a Service in any namespace; a name only needs its own.
    loaded = load_namespace(run.source, run.namespace, scope=parsed.namespace,
                            every_namespace=parsed.kind == "address")
    run.warn_partial(loaded)
    client = diagnosis_client(loaded.snapshot, namespace=loaded.namespace, from_pod=from_pod, src=src)
    diag = diagnose(loaded.snapshot, target, namespace=loaded.namespace, client=client)
    if output is TextOrJson.json:
        run.env.stdout.print_json(json.dumps(diagnosis_to_dict(diag)))
    else:
        run.env.stdout.print(render_diagnosis(diag, explain=explain))
    if diag.verdict != REACHABLE:
        raise typer.Exit(int(ExitStatus.FINDINGS))


def register(app: typer.Typer) -> None:
    command(app, "why-unreachable", kubectl=True, snapshot=True)(why_command)
