"""Options declared once: those several commands share, and the kubectl flags every live command takes.

A command declares only its own parameters; :func:`svctrace.cli.command.command` appends ``--from``
(``snapshot=True``) and the kubectl flags (``kubectl=True``) from the tables below, so each is defined here once.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

from svctrace.cli.durations import DEFAULT_TIMEOUT
from svctrace.cli.names import complete_namespace
from svctrace.record import record


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
    typer.Option("--node", help="The node to answer for: with --collect, the node read through a collector pod; "
                                "with --from, a node of a multi-node capture; on a node, its name in the cluster "
                                "(default: the Node whose address is local).", metavar="NAME"),
]
RequestTimeout = Annotated[
    str, typer.Option("--request-timeout", metavar="DURATION",
                      help="How long each API request may take, all of it (connecting and every byte of the "
                           "answer), like kubectl's: 5s, 500ms, 1m (a bare number is seconds).")]
Timeout = Annotated[
    str, typer.Option("--timeout", metavar="DURATION",
                      help="How long the whole live collection (every API request and this node's reads) may "
                           "take: 2m, 90s; 0 means no limit. Collector pods (--collect) are bounded by "
                           "--collect-timeout and their own read budget instead, so they are always deleted.")]
Netns = Annotated[
    str | None,
    typer.Option("--netns", hidden=True, help="Read the dataplane of this named network namespace (testing).",
                 metavar="NAME"),
]

Collect = Annotated[
    bool,
    typer.Option("--collect", help="Read the node's rules through the API: creates a short-lived, read-only "
                                   "collector pod on each node read (pinned to it, host network, NET_ADMIN), "
                                   "deleted when done. Needs --node, --all-nodes or --from-pod."),
]
Image = Annotated[
    str | None,
    typer.Option("--image", help="The collector pod's image (default: the kube-proxy DaemonSet's, already on "
                                 "every node).", metavar="IMAGE"),
]
Privileged = Annotated[
    bool, typer.Option("--privileged", help="Run the collector pod privileged (default: only NET_ADMIN and "
                                            "NET_RAW).")]
CollectorNamespace = Annotated[
    str | None,
    typer.Option("--collector-namespace", help="Where collector pods are created (default: the context's "
                                               "namespace).", metavar="NAMESPACE"),
]
CollectTimeout = Annotated[
    str, typer.Option("--collect-timeout", metavar="DURATION",
                      help="How long a collector pod may take to start: 60s, 2m.")]
AllNodes = Annotated[
    bool,
    typer.Option("--all-nodes", help="Answer for every node: with --collect, one collector pod per node; with "
                                     "--from, each node of a multi-node capture. Exit status 1 if a node fails."),
]
NodeSelector = Annotated[
    str | None,
    typer.Option("--nodes", help="Only the nodes with these labels, like kubectl's -l (implies --all-nodes).",
                 metavar="SELECTOR"),
]
Parallel = Annotated[
    int, typer.Option("--parallel", help="Read at most N nodes at once.", metavar="N", min=1)]

DEFAULT_REQUEST_TIMEOUT = "5s"
DEFAULT_COLLECT_TIMEOUT = "60s"
DEFAULT_PARALLEL = 4


@record
class SharedOption:
    """One parameter appended to every command that takes it: its name, its typer declaration and its default."""

    name: str
    annotation: Any
    default: Any


def _shared(*rows: tuple[str, Any, Any]) -> tuple[SharedOption, ...]:
    return tuple(SharedOption(*row) for row in rows)


SNAPSHOT_FLAGS = _shared(("from_", FromSnapshot, None))
KUBECTL_FLAGS = _shared(("namespace", Namespace, None), ("kubeconfig", Kubeconfig, None), ("context", Context, None),
                        ("node", NodeName, None), ("request_timeout", RequestTimeout, DEFAULT_REQUEST_TIMEOUT),
                        ("timeout", Timeout, DEFAULT_TIMEOUT),
                        ("netns", Netns, None))
# --collect and its knobs: svc, trace, why-unreachable, audit, capture.
COLLECT_FLAGS = _shared(("collect", Collect, False), ("image", Image, None), ("privileged", Privileged, False),
                        ("collector_namespace", CollectorNamespace, None),
                        ("collect_timeout", CollectTimeout, DEFAULT_COLLECT_TIMEOUT))
# Every node at once: svc, why-unreachable, audit, capture.
NODES_FLAGS = _shared(("all_nodes", AllNodes, False), ("nodes", NodeSelector, None),
                      ("parallel", Parallel, DEFAULT_PARALLEL))
