"""A YAML api/ file -> its documents (pure), bounded in depth and alias expansion.

Apart from svctrace.parsers.k8s_documents so that PyYAML is imported only when a YAML file is read.
"""

from __future__ import annotations

from typing import Any

import yaml

from svctrace.errors import InputError
from svctrace.parsers.limits import MAX_DEPTH, MAX_YAML_NODES

# The C loader is several times faster on big `kubectl get -A` dumps; both are the safe loader.
_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _BoundedLoader(_YamlLoader):  # type: ignore[misc]
    """The safe loader, refusing a document nested too deep or whose aliases expand too far."""

    source = ""

    def construct_document(self, node: Any) -> Any:
        _check_yaml_nodes(node, self.source)
        return super().construct_document(node)


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_yaml_nodes(root: Any, source: str) -> None:
    """Refuse a document whose aliases expand past MAX_YAML_NODES or that nests past MAX_DEPTH.

    Sizes and depths are computed once per node (an alias points at a node already seen), so a "billion
    laughs" is measured in as many steps as it has lines, not expanded.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    todo: list[tuple[Any, bool]] = [(root, False)]
    while todo:
        node, done = todo.pop()
        key = id(node)
        if key in size:
            continue
        kids = _children(node)
        if not done:
            todo.append((node, True))
            todo.extend((k, False) for k in kids if id(k) not in size)
            continue
        size[key] = 1 + sum(size[id(k)] for k in kids)
        depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
        if size[key] > MAX_YAML_NODES:
            raise InputError(f"YAML whose aliases expand to more than {MAX_YAML_NODES:,} values; refused",
                             "kubectl never writes aliases; export the objects again with `kubectl get ... -o json`",
                             path=source)
        if depth[key] > MAX_DEPTH:
            line = node.start_mark.line + 1 if getattr(node, "start_mark", None) is not None else None
            raise InputError(f"YAML nested more than {MAX_DEPTH} deep; refused",
                             "no Kubernetes object nests this deep; check that this is the right file",
                             path=source, line=line)


_NODE_EVENTS = (yaml.ScalarEvent, yaml.AliasEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)


def _count_yaml_nodes(text: str, source: str) -> None:
    """Refuse a file of more than MAX_YAML_NODES values before PyYAML builds them (each costs ~500 bytes)."""
    count = 0
    for event in yaml.parse(text, Loader=_YamlLoader):
        if isinstance(event, _NODE_EVENTS):
            count += 1
            if count > MAX_YAML_NODES:
                line = event.start_mark.line + 1 if event.start_mark is not None else None
                raise InputError(f"more than {MAX_YAML_NODES:,} YAML values; refused",
                                 "YAML is read whole and slowly: export the objects with `kubectl get ... -o json`, "
                                 "which svctrace reads item by item", path=source, line=line)


def decode_yaml(text: str, source: str) -> list[Any]:
    """The documents of a YAML file (``---``-separated), bounded in depth and alias expansion."""
    loader = type("_Loader", (_BoundedLoader,), {"source": source})
    try:
        _count_yaml_nodes(text, source)
        return list(yaml.load_all(text, Loader=loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(p for p in (exc.context, exc.problem) if p) or "malformed YAML"
        raise InputError(f"not valid YAML: {what}", "check the file is complete `kubectl get ... -o yaml` output",
                         path=source, line=line) from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "malformed YAML"
        raise InputError(f"not valid YAML: {first}", "check the file is complete `kubectl get ... -o yaml` output",
                         path=source) from None
    except RecursionError:
        raise InputError("not read: YAML nested deeper than svctrace reads",
                         "no Kubernetes object nests this deep; check that this is the right file",
                         path=source) from None
