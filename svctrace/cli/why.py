"""``svctrace why-unreachable TARGET``: the cause, the evidence and the next step, during an incident."""

from __future__ import annotations

import enum
import json
from typing import Annotated

import typer

from svctrace.cli.errors import ExitStatus, env_of, handled
from svctrace.cli.options import (
    Context,
    Explain,
    FromSnapshot,
    Kubeconfig,
    Namespace,
    Netns,
    NodeName,
    RequestTimeout,
)
from svctrace.cli.trace import choose_source
from svctrace.collectors.live import LiveOptions, live_all
from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.diagnosis.diagnose import diagnose
from svctrace.diagnosis.findings import REACHABLE
from svctrace.diagnosis.registry import Client
from svctrace.diagnosis.target import parse_target
from svctrace.model.snapshot import Snapshot
from svctrace.render.findings import diagnosis_to_dict, render_diagnosis


class TextOrJson(str, enum.Enum):
    text = "text"
    json = "json"


def client_for(snapshot: Snapshot, *, from_pod: str | None, src: str | None) -> Client:
    """The client the question is asked for; unknown when neither --from-pod nor --src is given."""
    if from_pod is None and src is None:
        return Client()
    family = 6 if src is not None and ":" in src else 4
    address, origin, _ = choose_source(snapshot, family, src=src, from_pod=from_pod, from_node=False,
                                       from_external=False)
    pod = None
    if from_pod is not None:
        ns, _, name = from_pod.rpartition("/")
        pod = snapshot.pod(ns or "default", name)
    return Client(src=address, pod=pod, origin=origin)


@handled
def why_command(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="NAME, NS/NAME, NAME:PORT, a DNS name, IP:PORT or a URL.",
                                          metavar="TARGET")],
    namespace: Namespace = None,
    from_pod: Annotated[str | None, typer.Option("--from-pod", help="Ask for this client pod (NS/POD).")] = None,
    src: Annotated[str | None, typer.Option("--src", help="Ask for this client address.")] = None,
    from_: FromSnapshot = None,
    output: Annotated[TextOrJson, typer.Option("--output", "-o", help="text or json.")] = TextOrJson.text,
    explain: Explain = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    node: NodeName = None,
    request_timeout: RequestTimeout = 5.0,
    netns: Netns = None,
) -> None:
    """Why a Service (or address) is unreachable: ranked findings with evidence and the next step.

    Exit status: 0 reachable, 1 unreachable or degraded, 2 a usage or collection error.
    """
    env = env_of(ctx)
    parsed = parse_target(target, namespace)
    if from_ is not None:
        snapshot = load_snapshot(from_)
        default_ns = namespace or "default"
    else:
        live = LiveOptions(kubeconfig=kubeconfig, context=context, namespace=namespace, node_name=node,
                           timeout=request_timeout, netns=netns)
        # An address can belong to a Service in any namespace; a name only needs its own.
        scope = None if parsed.kind == "address" else (parsed.namespace or namespace)
        collection = live_all(live, scope)
        snapshot = collection.snapshot
        default_ns = namespace or collection.api.target.namespace
    client = client_for(snapshot, from_pod=from_pod, src=src)
    diag = diagnose(snapshot, target, namespace=default_ns, client=client)
    if output is TextOrJson.json:
        env.stdout.print_json(json.dumps(diagnosis_to_dict(diag)))
    else:
        env.stdout.print(render_diagnosis(diag, explain=explain))
    if diag.verdict != REACHABLE:
        raise typer.Exit(int(ExitStatus.FINDINGS))


def register(app: typer.Typer) -> None:
    app.command("why-unreachable")(why_command)
