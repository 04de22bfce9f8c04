"""libnftables JSON expressions (libnftables-json(5)) written as `nft list` prints them (checked against nft 1.0.6 on
kube-proxy's own ruleset), so a rule reads the same whether it came from JSON or from ``add rule`` text
(svctrace.parsers.nft_json reads the documents). An expression this module does not know is written as its JSON
(``<name {...}>``), never fatal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from svctrace.model.nft import NftElement
from svctrace.parsers.nft_statements import element

# Binary operators as `nft list` prints them.
_BINOPS = {"&": "&", "|": "|", "^": "^", "<<": "<<", ">>": ">>"}
_VERDICTS = ("accept", "drop", "continue", "return", "queue")


def _is_mark(expr: Any) -> bool:
    return isinstance(expr, Mapping) and (
        ("meta" in expr and expr["meta"].get("key") == "mark") or ("ct" in expr and expr["ct"].get("key") == "mark")
    )


def _value(v: Any, *, hex32: bool = False) -> str:
    """A right-hand value: address, number, prefix, range, anonymous set, set reference, list."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"0x{v:08x}" if hex32 else str(v)
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        return ",".join(_value(x, hex32=hex32) for x in v)
    if isinstance(v, Mapping):
        if "prefix" in v:
            return f"{v['prefix'].get('addr')}/{v['prefix'].get('len')}"
        if "range" in v:
            lo, hi = v["range"]
            return f"{_value(lo)}-{_value(hi)}"
        if "set" in v:
            items = v["set"]
            if not isinstance(items, list):
                return _value(items, hex32=hex32)
            return "{ " + ", ".join(_set_item(x) for x in items) + " }"
        if "elem" in v:
            return elem_key(v)
        return expression(v)
    return json.dumps(v)


def _set_item(item: Any) -> str:
    if isinstance(item, list) and len(item) == 2:  # anonymous map: [key, value]
        return f"{elem_key(item[0])} : {verdict_or_value(item[1])}"
    return elem_key(item)


def verdict_or_value(v: Any) -> str:
    if isinstance(v, Mapping) and len(v) == 1:
        (name, arg), = v.items()
        if name in ("jump", "goto") and isinstance(arg, Mapping):
            return f"{name} {arg.get('target')}"
        if name in _VERDICTS and arg is None:
            return str(name)
    return _value(v)


def expression(expr: Any) -> str:
    """One expression (left/right side or key) as `nft list` prints it."""
    if not isinstance(expr, Mapping):
        return _value(expr)
    if len(expr) != 1:
        return json.dumps(expr, separators=(",", ":"))
    (name, arg), = expr.items()
    if name == "payload" and isinstance(arg, Mapping):
        if "protocol" in arg:
            return f"{arg['protocol']} {arg.get('field')}"
        return f"@{arg.get('base')},{arg.get('offset')},{arg.get('len')}"
    if name == "meta" and isinstance(arg, Mapping):
        return f"meta {arg.get('key')}"
    if name == "ct" and isinstance(arg, Mapping):
        d = f" {arg['dir']}" if arg.get("dir") else ""
        return f"ct{d} {arg.get('key')}"
    if name == "fib" and isinstance(arg, Mapping):
        flags = arg.get("flags") or []
        flags = [flags] if isinstance(flags, str) else flags
        return f"fib {' . '.join(flags)} {arg.get('result')}"
    if name == "concat" and isinstance(arg, list):
        return " . ".join(expression(x) for x in arg)
    if name == "numgen" and isinstance(arg, Mapping):
        off = f" offset {arg['offset']}" if arg.get("offset") else ""
        return f"numgen {arg.get('mode')} mod {arg.get('mod')}{off}"
    if name in _BINOPS and isinstance(arg, list) and len(arg) == 2:
        hex32 = _is_mark(arg[0])
        return f"{expression(arg[0])} {_BINOPS[name]} {_value(arg[1], hex32=hex32)}"
    if name in ("prefix", "range", "set", "elem"):
        return _value(expr)
    return f"<{name} {json.dumps(arg, separators=(',', ':'))}>"


def _match(arg: Mapping[str, Any]) -> str:
    left, right, op = arg.get("left"), arg.get("right"), arg.get("op", "==")
    text = expression(left)
    hex32 = _is_mark(left) or (isinstance(left, Mapping) and any(
        k in _BINOPS and isinstance(v, list) and v and _is_mark(v[0]) for k, v in left.items()))
    value = _value(right, hex32=hex32)
    binop_left = isinstance(left, Mapping) and any(k in _BINOPS for k in left)
    if op in ("==", "in"):
        # nft prints the implicit == only after a binary operation (`meta mark & 0x4000 == 0x0`).
        return f"{text} == {value}" if binop_left else f"{text} {value}"
    return f"{text} {op} {value}"


def _nat(name: str, arg: Mapping[str, Any] | None, table_family: str) -> str:
    if not arg:
        return name
    parts = [name]
    fam = arg.get("family")
    if fam and table_family in ("inet", "bridge", "netdev"):
        parts.append(fam)
    addr, port = arg.get("addr"), arg.get("port")
    if addr is not None or port is not None:
        a = _value(addr) if addr is not None else ""
        if port is not None and ":" in a:
            a = f"[{a}]"
        parts.append("to " + a + (f":{_value(port)}" if port is not None else ""))
    flags = arg.get("flags")
    if flags:
        parts.append(",".join(flags) if isinstance(flags, list) else str(flags))
    return " ".join(parts)


def statement(stmt: Any, table_family: str = "ip") -> str:
    """One statement of a rule's ``expr`` list as `nft list` prints it."""
    if not isinstance(stmt, Mapping) or len(stmt) != 1:
        return f"<{json.dumps(stmt, separators=(',', ':'))}>"
    (name, arg), = stmt.items()
    try:
        if name == "match" and isinstance(arg, Mapping):
            return _match(arg)
        if name in ("jump", "goto") and isinstance(arg, Mapping):
            return f"{name} {arg.get('target')}"
        if name in _VERDICTS and arg is None:
            return str(name)
        if name == "reject":
            if not arg or (arg.get("type") == "icmp" and arg.get("expr") == "port-unreachable") or (
                    arg.get("type") == "icmpx" and arg.get("expr") == "port-unreachable"):
                return "reject"
            if arg.get("type") == "tcp reset":
                return "reject with tcp reset"
            return f"reject with {arg.get('type')} {arg.get('expr')}".rstrip()
        if name == "vmap" and isinstance(arg, Mapping):
            return f"{expression(arg.get('key'))} vmap {_value(arg.get('data'))}"
        if name == "map" and isinstance(arg, Mapping):
            return f"{expression(arg.get('key'))} map {_value(arg.get('data'))}"
        if name == "mangle" and isinstance(arg, Mapping):
            key = arg.get("key")
            return f"{expression(key)} set {_value(arg.get('value'), hex32=_is_mark(key))}"
        if name in ("dnat", "snat", "redirect"):
            return _nat(name, arg, table_family)
        if name == "masquerade":
            return _nat(name, arg, table_family)
        if name == "set" and isinstance(arg, Mapping):
            return f"{arg.get('op')} {arg.get('set')} {{ {expression(arg.get('elem'))} }}"
        if name == "counter":
            if isinstance(arg, Mapping):
                return f"counter packets {arg.get('packets', 0)} bytes {arg.get('bytes', 0)}"
            return "counter"
        if name == "notrack":
            return "notrack"
    except (AttributeError, TypeError, ValueError):
        pass
    return f"<{name} {json.dumps(arg, separators=(',', ':'))}>"


def render_rule(expr: list[Any] | tuple[Any, ...], table_family: str = "ip") -> str:
    """A rule's expression list as one `nft list` line (without the comment)."""
    return " ".join(statement(s, table_family) for s in expr)


def new_element(key: str, value: str | None, comment: str | None) -> NftElement:
    """A set or map element with its key and verdict typed."""
    typed = element(key, value)
    return NftElement(key, value, comment, typed.key, typed.verdict)


def elem_key(key: Any) -> str:
    if isinstance(key, Mapping) and "elem" in key:
        return elem_key(key["elem"].get("val"))
    if isinstance(key, Mapping) and "concat" in key:
        return " . ".join(_value(x) for x in key["concat"])
    return _value(key)


def elem_comment(key: Any) -> str | None:
    if isinstance(key, Mapping) and "elem" in key and isinstance(key["elem"], Mapping):
        c = key["elem"].get("comment")
        return str(c) if c is not None else None
    return None
