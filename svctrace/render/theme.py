"""Every style svctrace uses, named once (as rich names its default styles)."""

from __future__ import annotations

from rich.theme import Theme

STYLES = {
    "svc.title": "bold",
    "svc.kind": "cyan",
    "svc.mode": "magenta",
    "svc.node": "blue",
    "hop.address": "bold",
    "hop.type": "cyan",
    "hop.chain": "yellow",
    "hop.when": "italic",
    "hop.share": "bold green",
    "hop.masq": "magenta",
    "hop.affinity": "blue",
    "hop.explain": "dim italic",
    "ep.ready": "green",
    "ep.notready": "red",
    "ep.terminating": "yellow",
    "ep.pod": "default",
    "ep.node": "blue",
    "verdict.ok": "green",
    "verdict.reject": "bold red",
    "verdict.drop": "bold red",
    "verdict.partial": "bold yellow",
    "verdict.unknown": "yellow",
    "note": "yellow",
    "rule": "dim",
    "dns": "cyan",
}

THEME = Theme(STYLES)
