"""``nft list ruleset`` / ``nft list table ...`` text (what nft prints by default), as users paste it.

The listing is cut into its tables, chains, sets and maps here and written as the knftables transaction
lines svctrace already reads (svctrace.parsers.nft_json ``parse_nft_transaction``), so its rules are read by
the one nft rule parser. kube-proxy's own table (``ip kube-proxy``, ``ip6 kube-proxy``) is nftables mode.
A node where kube-proxy runs in iptables mode on the nf_tables backend shows kube-proxy's chains in
``table ip nat`` / ``ip filter`` instead, in nft's translation of the iptables rules: those are turned back
into iptables rules (svctrace.parsers.nft_xt) and read as iptables mode, with a note that ``iptables-save``
prints them in their own words. Other tables (Docker's, firewalld's, a CNI's) are skipped with a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from svctrace.errors import InputError
from svctrace.model.snapshot import NodeFile
from svctrace.parsers.pasted import Pasted

_FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
# nft's named priorities (family ip/ip6/inet), as `nft list` prints them.
_PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
_HINT = "paste the output of `nft list table ip kube-proxy` (or `nft list ruleset`) whole"


@dataclass
class _Block:
    kind: str  # table | chain | set | map | other
    name: str
    line: int
    family: str | None = None  # tables
    spec: list[str] = field(default_factory=list)  # chains: type/policy/comment; sets: their properties
    rules: list[tuple[int, str]] = field(default_factory=list)  # chains: (line, rule text)
    children: list[_Block] = field(default_factory=list)  # tables: chains, sets, maps
    depth: int = 0  # sets and maps: open braces inside (elements = { ... })


def _priority(text: str) -> str:
    """``dstnat``, ``filter - 10``, ``-110`` -> the number."""
    words = text.split()
    if not words:
        return text
    base = _PRIORITIES.get(words[0])
    if base is None:
        return text
    if len(words) == 3 and words[1] in "+-" and words[2].isdigit():
        return str(base + int(words[2]) if words[1] == "+" else base - int(words[2]))
    return str(base)


def _chain_spec(line: str) -> list[str]:
    """``type nat hook prerouting priority dstnat; policy accept;`` -> its parts with numeric priorities."""
    out = []
    for part in line.split(";"):
        part = part.strip()
        if part.startswith("type ") and " priority " in part:
            head, _, prio = part.partition(" priority ")
            part = f"{head} priority {_priority(prio)}"
        if part:
            out.append(part)
    return out


def _strip_rule(text: str) -> str:
    """A listed rule without what the listing adds: ``# handle N``."""
    head, sep, tail = text.rpartition("# handle ")
    return head.rstrip() if sep and tail.strip().isdigit() else text


def _tables(lines: list[str], skip: set[int]) -> tuple[list[_Block], list[str]]:
    """The listing's tables (chains outside any table line go to an unnamed one), and what was said."""
    said: list[str] = []
    tables: list[_Block] = []
    stack: list[_Block] = []
    loose = _Block("table", "", 0)
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if number in skip or not line:
            continue
        top = stack[-1] if stack else None
        if top is not None and top.kind in ("set", "map", "other") and (top.depth or line != "}"):
            top.depth += line.count("{") - line.count("}")
            if top.depth < 0:  # `... }` closing the block on the same line as its last element
                top.depth = 0
                top.spec.append(line.rstrip("}").strip())
                stack.pop()
            else:
                top.spec.append(line)
            continue
        words = line.split()
        if line == "}":
            if not stack:
                said.append(f"line {number}: a '}}' that closes nothing (the paste starts inside a block); skipped")
            else:
                stack.pop()
            continue
        if line.endswith("{") and words[0] == "table" and len(words) >= 3:
            family, name = (words[1], words[2]) if words[1] in _FAMILIES else ("ip", words[1])
            block = _Block("table", name, number, family)
            tables.append(block)
            stack = [block]
            continue
        if line.endswith("{") and words[0] in ("chain", "set", "map") and len(words) >= 3:
            block = _Block(words[0], words[1], number)
            parent = stack[0] if stack else loose
            if not stack:
                stack = [loose]
                if loose not in tables:
                    tables.insert(0, loose)
            parent.children.append(block)
            stack = [parent, block]
            continue
        if line.endswith("{"):
            block = _Block("other", words[0], number)
            stack.append(block)
            continue
        if top is not None and top.kind == "chain":
            if words[0] == "type" and " hook " in line or words[0] in ("policy", "comment") and line.endswith(";"):
                top.spec += _chain_spec(line)
            else:
                top.rules.append((number, _strip_rule(line)))
            continue
        said.append(f"line {number} ({line[:40]!r}) is outside any chain; skipped")
    if stack and len(stack) > 1:
        said.append(f"the text stops inside {stack[-1].kind} {stack[-1].name} (line {stack[-1].line}): what "
                    "followed is not in the paste")
    return tables, said


def _loose_table(table: _Block) -> tuple[str, str]:
    """The family and name of chains listed without their table line: guessed from the chains, and said."""
    names = [c.name for c in table.children]
    if any("/" in n or n in ("services", "nat-prerouting", "filter-input", "service-ips") for n in names):
        return "ip", "kube-proxy"
    if any(n.startswith(("KUBE-SVC-", "KUBE-SEP-", "KUBE-MARK-", "KUBE-POSTROUTING", "PREROUTING", "POSTROUTING",
                         "CNI-DN")) for n in names) or any("type nat" in " ".join(c.spec) for c in table.children):
        return "ip", "nat"
    return "ip", "filter"


def _transaction(table: _Block) -> str:
    """The table as knftables transaction lines (``add table/chain/set/map/rule/element``)."""
    where = f"{table.family} {table.name}"
    out = [f"add table {where}"]
    for c in table.children:
        if c.kind == "chain":
            spec = " ; ".join(c.spec)
            out.append(f"add chain {where} {c.name}" + (f" {{ {spec} ; }}" if spec else ""))
            out += [f"add rule {where} {c.name} {text}" for _, text in c.rules]
        elif c.kind in ("set", "map"):
            _, sep, elements = " ".join(c.spec).partition("elements = ")
            out.append(f"add {c.kind} {where} {c.name} {{ " + " ; ".join(_set_props(c.spec)) + " ; }")
            if sep and elements.strip():
                out.append(f"add element {where} {c.name} {elements.strip()}")
    return "\n".join(out) + "\n"


def _set_props(spec: list[str]) -> list[str]:
    props = []
    for line in spec:
        if line.startswith("elements"):
            break
        props += [p.strip() for p in line.split(";") if p.strip()]
    return props


def read_nft_text(text: str, source: str, cut: int | None, commands: list[int]) -> Pasted:
    """The node files an ``nft list`` listing stands for (see the module's words)."""
    from svctrace.parsers.nft_transaction import parse_nft_transaction

    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    skip = set(commands)
    warnings: list[str] = []
    if cut is not None:
        skip.add(cut)
        warnings.append(f"the text stops mid-line at line {cut} ({lines[cut - 1].strip()[-40:]!r}): that line is "
                        "not read")
    tables, said = _tables(lines, skip)
    warnings += said
    kube: list[_Block] = []
    xt: list[_Block] = []
    for table in tables:
        if not table.name:
            table.family, table.name = _loose_table(table)
            warnings.append(f"chains listed without their table line (from line {table.children[0].line}): "
                            f"read as table {table.family} {table.name}, from their names and types")
        if table.name == "kube-proxy" and table.family in ("ip", "ip6"):
            kube.append(table)
        elif table.family in ("ip", "ip6") and any(c.name.startswith("KUBE-") for c in table.children):
            xt.append(table)
        else:
            warnings.append(f"table {table.family} {table.name} (line {table.line}) is not kube-proxy's; skipped")
    pasted = Pasted("nft-text", warnings=warnings)
    if kube:
        transaction = "".join(_transaction(t) for t in kube)
        try:
            pasted.parsed[NodeFile.NFT] = parse_nft_transaction(transaction, source)
        except InputError as exc:
            raise InputError(f"{source}: cannot read kube-proxy's table: {exc.message}", _HINT) from None
    if xt:
        from svctrace.parsers.nft_xt import xt_dump

        loose = any(t.line == 0 for t in xt)
        dump, xt_said = xt_dump(xt, source, partial=cut is not None or bool(said) or loose)
        pasted.parsed[NodeFile.IPTABLES] = dump
        pasted.warnings += [
            "kube-proxy's chains are in " + ", ".join(f"table {t.family} {t.name}" for t in xt)
            + ": kube-proxy runs in iptables mode on the nf_tables backend (not nftables mode); they are read "
            "back as iptables rules (`iptables-save` on the node prints them in their own words)", *xt_said]
    if not kube and not xt:
        raise InputError(f"{source}: no kube-proxy rules in this nft listing (no table ip kube-proxy, no KUBE-* "
                         "chains)", _HINT, path=None)
    return pasted
