"""Every next step svctrace prints names only options that exist.

The hints are found in the source: the ``hint`` of every SvctraceError and Finding, the notes the cli adds,
and the module constants they use. Flags inside backticks or double quotes belong to the command quoted there
(``kubectl get ns --show-labels``); every other ``--flag`` must be declared by some svctrace command.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from svctrace.cli.app import app

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "svctrace"
# Other programs' flags that hints name in prose rather than in a quoted command, each with its owner.
FOREIGN = {
    "--nodeport-addresses": "kube-proxy",
}
HINT_CALLS = {"Finding": 4, "PacketSource": 2}  # positional index of the hint/note argument
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
QUOTED = re.compile(r"`[^`]*`|\"[^\"]*\"")


def declared_options() -> set[str]:
    group = typer.main.get_command(app)
    found = {opt for p in group.params for opt in p.opts}
    for name in group.list_commands(None):  # type: ignore[arg-type]
        command = group.get_command(None, name)  # type: ignore[arg-type]
        assert command is not None
        found |= {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    return found


def _text(node: ast.AST | None, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left, constants), _text(node.right, constants)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.IfExp):
        return " | ".join(t for t in (_text(node.body, constants), _text(node.orelse, constants)) if t)
    return None


def _callee(node: ast.Call) -> str:
    func: Any = node.func
    return str(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))


def hints() -> Iterator[tuple[str, str]]:
    """(where, text) of every hint and next step in svctrace/."""
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        constants = {t.id: text for node in tree.body if isinstance(node, ast.Assign)
                     for t in node.targets if isinstance(t, ast.Name)
                     if (text := _text(node.value, {})) is not None}
        rel = path.relative_to(REPO)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = _callee(node)
                index = 1 if name.endswith("Error") else HINT_CALLS.get(name)
                if index is None:
                    continue
                args: list[ast.AST | None] = [*node.args, *[k.value for k in node.keywords
                                                            if k.arg in ("hint", "note")]]
                chosen = [args[index]] if len(node.args) > index else args[len(node.args):]
                for arg in chosen:
                    text = _text(arg, constants)
                    if text:
                        yield f"{rel}:{node.lineno}", text
            elif "cli" in rel.parts and isinstance(node, ast.JoinedStr | ast.Constant):
                text = _text(node, constants)
                if text and ("next:" in text or "Try:" in text or "analyse it with" in text):
                    yield f"{rel}:{node.lineno}", text


def flags_named(text: str) -> set[str]:
    return set(FLAG.findall(QUOTED.sub("", text)))


def test_hints_are_found() -> None:
    found = list(hints())
    # The scan sees the hints it is meant to check: errors, findings, cli notes.
    assert len(found) > 100
    texts = " ".join(t for _, t in found)
    assert "--from-pod NS/POD" in texts and "--kubeconfig PATH" in texts and "--mode iptables" in texts


def test_every_flag_in_a_hint_exists() -> None:
    options = declared_options() | set(FOREIGN)
    unknown = sorted(f"{where}: {flag} in {text!r}" for where, text in hints() for flag in flags_named(text)
                     if flag not in options)
    assert unknown == []


def test_the_check_catches_a_made_up_flag() -> None:
    assert flags_named("pass the mode with --proxy-mode ipvs") == {"--proxy-mode"}
    assert "--proxy-mode" not in declared_options()
    assert flags_named("run `kube-proxy --cleanup` then \"kubectl get --raw /\"") == set()
