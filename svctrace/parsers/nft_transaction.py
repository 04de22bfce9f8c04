"""knftables transaction text (``add rule ip kube-proxy services ...``), as kube-proxy's tests write their
expected rulesets, into svctrace.model.nft: the same tables as svctrace.parsers.nft_json builds from ``nft -j``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from svctrace.errors import InputError
from svctrace.model.nft import NftChain, NftElement, NftRuleset, NftSet
from svctrace.parsers.nft_json import TableBuilder, timeout_seconds
from svctrace.parsers.nft_render import new_element

TEXT_HINT = "the file should hold knftables transaction lines (`add table/chain/set/map/rule/element ...`)"

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\S+')
_COMMENT_TAIL = re.compile(r'\s+comment\s+"((?:[^"\\]|\\.)*)"\s*$')
_COMMENT_ANY = re.compile(r'\s+comment\s+"((?:[^"\\]|\\.)*)"')
_SINGLE_SET = re.compile(r"\{ ([^{},\s]+) \}")


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quotes and braces."""
    out: list[str] = []
    depth, quoted = 0, False
    cur: list[str] = []
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "{":
            depth += 1
        elif not quoted and ch == "}":
            depth -= 1
        if ch == sep and depth == 0 and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _parts(body: str, sep: str) -> Iterator[str]:
    """The non-empty parts of ``{ a SEP b SEP }`` (braces optional), split outside quotes and braces."""
    inner = body.strip()
    if inner.startswith("{") and inner.endswith("}"):
        inner = inner[1:-1]
    for part in _split_top(inner, sep):
        part = part.strip()
        if part:
            yield part


def _spec(body: str) -> dict[str, str]:
    """``{ type ipv4_addr ; flags dynamic,timeout ; comment "x" ; }`` as {keyword: value}."""
    out: dict[str, str] = {}
    for part in _parts(body, ";"):
        if part.startswith("type ") and " hook " in part:  # chain: type filter hook prerouting priority -110
            toks = part.split()
            out["type"] = toks[1]
            for key in ("hook", "priority", "device"):
                if key in toks:
                    out[key] = toks[toks.index(key) + 1]
            continue
        key, _, value = part.partition(" ")
        out[key] = value.strip()
    return out


def _unquote(s: str | None) -> str | None:
    if s is None:
        return None
    s = s.strip()
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == '"' else s


def _normalise_rule(text: str) -> str:
    """knftables rule text in the spelling `nft list` uses where kube-proxy's rules differ."""
    text = _SINGLE_SET.sub(r"\1", text)  # nft prints a one-element anonymous set without braces
    return re.sub(r"\s+,\s+", ", ", text)


def _elements(body: str) -> Iterator[NftElement]:
    for part in _parts(body, ","):
        comment = None
        m = _COMMENT_ANY.search(part)
        if m:
            comment = m.group(1)
            part = part[: m.start()] + part[m.end():]
        # " : " separates key and value; a bare ":" belongs to IPv6 addresses
        key, sep, value_text = part.partition(" : ")
        value = value_text.strip() if sep else None
        yield new_element(" ".join(key.split()), " ".join(value.split()) if value else None, comment)


def parse_nft_transaction(text: str, source: str) -> NftRuleset:
    """The ruleset a knftables transaction builds (``add table/chain/set/map/rule/element`` lines)."""
    tables: dict[tuple[str, str], TableBuilder] = {}
    pending_elements: list[tuple[int, TableBuilder, str, str]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        toks = line.split(None, 4)
        if len(toks) < 4:
            raise InputError(f"cannot read {line[:60]!r}: expected `add <object> <family> <table> ...`",
                             TEXT_HINT, path=source, line=lineno)
        verb, kind, family, tname = toks[:4]
        rest = toks[4] if len(toks) > 4 else ""
        if verb not in ("add", "create", "insert", "flush"):
            raise InputError(f"unsupported command {verb!r}", TEXT_HINT, path=source, line=lineno)
        tb = tables.setdefault((family, tname), TableBuilder(family, tname))
        if kind == "table":
            tb.comment = _unquote(_spec(rest).get("comment")) if rest else tb.comment
            continue
        name, _, body = rest.partition(" ")
        if not name:
            raise InputError(f"{kind} without a name", TEXT_HINT, path=source, line=lineno)
        if verb == "flush":
            if kind == "chain":
                tb.rules[name] = []
            elif kind in ("set", "map"):
                pending_elements = [p for p in pending_elements if p[2] != name]
            continue
        if kind == "chain":
            spec = _spec(body) if body.strip() else {}
            prio = spec.get("priority")
            tb.chains[name] = NftChain(
                name=name, type=spec.get("type"), hook=spec.get("hook"),
                priority=int(prio) if prio is not None and re.fullmatch(r"-?\d+", prio) else None,
                policy=spec.get("policy") or ("accept" if spec.get("hook") else None),
                comment=_unquote(spec.get("comment")))
            tb.rules.setdefault(name, [])
        elif kind in ("set", "map"):
            spec = _spec(body)
            type_ = spec.get("type", "")
            data = None
            if kind == "map" and " : " in type_:
                type_, data = (p.strip() for p in type_.split(" : ", 1))
            flags = tuple(f.strip() for f in spec.get("flags", "").split(",") if f.strip())
            s = NftSet(name=name, type=type_, is_map=kind == "map", data_type=data, flags=flags,
                       timeout=spec.get("timeout"), comment=_unquote(spec.get("comment")),
                       timeout_seconds=timeout_seconds(spec.get("timeout")))
            (tb.maps if kind == "map" else tb.sets)[name] = s
        elif kind == "rule":
            if not body.strip():
                raise InputError(f"rule in chain {name} has no statements", TEXT_HINT, path=source, line=lineno)
            comment = None
            m = _COMMENT_TAIL.search(body)
            if m:
                comment, body = m.group(1), body[: m.start()]
            tb.add_rule(name, None, _normalise_rule(" ".join(_TOKEN.findall(body))), comment,
                        prepend=verb == "insert")
        elif kind == "element":
            if not body.strip().startswith("{"):
                raise InputError(f"element for {name} is not in braces", TEXT_HINT, path=source, line=lineno)
            pending_elements.append((lineno, tb, name, body))
        else:
            raise InputError(f"unknown object {kind!r}", TEXT_HINT, path=source, line=lineno)
    # Elements last: knftables dumps may list them before their set or map.
    for lineno, tb, name, body in pending_elements:
        target = tb.maps.get(name) or tb.sets.get(name)
        if target is None:
            raise InputError(f"element for {name}, which no `add set` or `add map` declares", TEXT_HINT,
                             path=source, line=lineno)
        new = NftSet(target.name, target.type, target.is_map, target.data_type, target.flags, target.timeout,
                     target.comment, target.elements + tuple(_elements(body)), target.timeout_seconds)
        (tb.maps if target.is_map else tb.sets)[name] = new
    return NftRuleset(tuple(tb.build() for tb in tables.values()), source)
