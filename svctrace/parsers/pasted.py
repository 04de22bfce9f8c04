"""Text users paste, read whatever the file is called: the format is decided from the content.

A file given to ``--from`` that is not a snapshot folder or tarball is one pasted dump: ``iptables-save`` /
``ip6tables-save`` (also restore input, ``-c`` counters, a shell prompt line, a blank line between tables),
``iptables -S`` / ``iptables -t nat -S`` (no table header: the table comes from the pasted command line, else
from the chains, and the answer says so), a fragment of ``-A`` lines (a grep, notes between them),
``ipvsadm -Ln`` (also ``--stats`` and ``--rate``), ``ipvsadm -Sn``, ``nft list ruleset`` / ``nft list table``
text, or ``nft -j`` JSON. Listings that abbreviate rules (``iptables -L``) and logs are refused with the
line that says so and what to run instead.

Pastes are often cut short: the last line of a text that does not end with a newline is taken as cut and
not read, a table without COMMIT is closed where the text stops, and lines that are not rules (notes,
``...``, diagrams) are skipped. Each of these is said in a warning naming the line, and the dump is marked
partial, so chains it does not show are "not in the dump" rather than missing from the node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from svctrace.errors import InputError
from svctrace.model.snapshot import NodeFile

HINT_IPTABLES = "paste the output of `iptables-save` (or `iptables -t nat -S`) on the node, whole"

# A shell prompt (``root@node:~#``, ``$``, ``>``, ``#``) and sudo before one of the commands that print rules.
_COMMAND = re.compile(
    r"^(?:\S*[#$>%]\s*)?(?:sudo\s+(?:-\S+\s+)*)?"
    r"(?P<cmd>(?:ip6?tables(?:-legacy|-nft)?(?:-save|-restore)?|ipvsadm|nft|ipset|conntrack)(?:\s.*)?)$")
_LOG = re.compile(r"^(?:[A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d \S+ [^\s:]+:|[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ )")
_LISTING = re.compile(r"^(?:Chain \S+ \((?:policy \w+|\d+ references)"
                      r"|\s*(?:num\s+)?(?:pkts\s+bytes\s+)?target\s+prot\s+opt)")
_IPT_LIST_FLAG = re.compile(r"(?:^|\s)(?:-[a-zA-Z]*L[a-zA-Z]*|--list)(?=\s|$)")
_IPT_S_FLAG = re.compile(r"(?:^|\s)(?:-[a-zA-Z]*S[a-zA-Z]*|--list-rules)(?=\s|$)")
_TABLE_FLAG = re.compile(r"(?:^|\s)(?:-t\s*|--table[=\s]+)(\w+)")
_IPT_LINE = re.compile(r"^(?:\*\w+$|:\S+ \S+|(?:\[\d+:\d+\]\s*)?-A \S+|-[PNXF] \S+|COMMIT$)")
_NFT_BLOCK = re.compile(r"^(?:table|chain|set|map|flowtable)\s+\S+(?:\s+\S+)?\s*\{\s*$")
_IPVS_LIST = re.compile(r"^(?:IP Virtual Server version|Prot LocalAddress:Port|(?:TCP|UDP|SCTP)\s+\S+:\d+(?:\s|$)"
                        r"|FWM\s+\d+\s|\s*->\s)")
_IPVS_SAVE = re.compile(r"^-[Aa]\s+(?:-[tuf]|--(?:tcp|udp|sctp|fwmark)-service)\s")
_V6_ADDRESS = re.compile(r"\s-[sd] [0-9A-Fa-f]*:[0-9A-Fa-f:]*[/\s]")

# What says a headerless iptables rule belongs to nat or to filter (its chain, or its target).
_NAT_CHAINS = ("PREROUTING", "POSTROUTING", "KUBE-SVC-", "KUBE-SEP-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-",
               "KUBE-XLB-", "KUBE-MARK-", "KUBE-POSTROUTING", "KUBE-LOAD-BALANCER", "KUBE-NODE-PORT")
_NAT_TARGETS = frozenset({"DNAT", "SNAT", "MASQUERADE", "REDIRECT", "KUBE-MARK-MASQ", "KUBE-MARK-DROP"})
_FILTER_CHAINS = ("INPUT", "FORWARD", "KUBE-FORWARD", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL",
                  "KUBE-NODEPORTS-HC")
_FILTER_TARGETS = frozenset({"REJECT", "ACCEPT", "DROP"})


@dataclass
class Pasted:
    """What one pasted file holds, as node files (text) and values already parsed, and what was said."""

    format: str  # iptables-save | iptables-S | iptables-fragment | ipvsadm-Ln | ipvsadm-Sn | nft-text | nft-json
    files: dict[str, str] = field(default_factory=dict)  # NodeFile value -> text
    parsed: dict[str, object] = field(default_factory=dict)  # NodeFile value -> parsed value
    warnings: list[str] = field(default_factory=list)


def _refuse(message: str, hint: str, source: str, line: int) -> InputError:
    return InputError(message, hint, path=source, line=line)


def _command(line: str) -> str | None:
    """The command a pasted prompt line ran (``iptables -t nat -S``), or None."""
    m = _COMMAND.match(line.strip())
    return m.group("cmd") if m else None


def read_pasted(text: str, source: str) -> Pasted:
    """The node files one pasted dump stands for; the format is decided from the text alone."""
    stripped = text.lstrip()
    if not stripped:
        raise _refuse("the file is empty", HINT_IPTABLES, source, 1)
    if stripped.startswith("{") and '"nftables"' in stripped[:4096]:
        return Pasted("nft-json", files={NodeFile.NFT: text})
    lines = text.split("\n")
    first = next(n for n, raw in enumerate(lines, 1) if raw.strip())
    if stripped.startswith(("apiVersion:", "kind:", "items:", "{", "---")):
        raise _refuse("not a snapshot folder or tarball, nor a rule dump: Kubernetes objects (or other YAML/JSON)",
                      "put the objects in the api/ folder of a snapshot, beside its node/ files (docs/snapshot.md)",
                      source, first)
    if lines and lines[-1] == "":
        lines.pop()
    commands: dict[int, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if _LOG.match(line):
            raise _refuse("a log (journal or klog lines), not a rule dump: what a log shows kube-proxy writing is "
                          "not what the node holds (it may have failed)",
                          "run `iptables-save` on the node and pass its output", source, number)
        cmd = _command(line)
        if cmd is not None:
            commands[number] = cmd
            if cmd.startswith("ip") and cmd.split()[0].startswith(("iptables", "ip6tables")) \
                    and _IPT_LIST_FLAG.search(cmd) and not _IPT_S_FLAG.search(cmd):
                raise _refuse(f"an `iptables -L` listing ({cmd.split('|')[0].strip()}), not iptables-save "
                              "or -S output: -L abbreviates matches, so its rules cannot be read exactly",
                              "run `iptables-save` (or `iptables -t nat -S`) on the node and pass that",
                              source, number)
            continue
        if _LISTING.match(raw):
            raise _refuse("an `iptables -L` listing, not iptables-save or -S output: -L abbreviates matches, "
                          "so its rules cannot be read exactly",
                          "run `iptables-save` (or `iptables -t nat -S`) on the node and pass that", source, number)
    content = [(n, raw) for n, raw in enumerate(lines, 1) if n not in commands and raw.strip()]
    if any(_NFT_BLOCK.match(raw.strip()) for _, raw in content):
        from svctrace.parsers.nft_text import read_nft_text

        return read_nft_text(text, source, _cut_line(text, lines), sorted(commands))
    if any(_IPVS_SAVE.match(raw.strip()) for _, raw in content):
        return Pasted("ipvsadm-Sn", files={NodeFile.IPVSADM: _blank(lines, set(commands))})
    if any(_IPVS_LIST.match(raw) for _, raw in content) and not any(_IPT_LINE.match(r.strip()) for _, r in content):
        from svctrace.parsers.ipvs import parse_ipvsadm_list

        table, said = parse_ipvsadm_list(_blank(lines, set(commands)), source, cut=_cut_line(text, lines))
        return Pasted("ipvsadm-Ln", parsed={NodeFile.IPVSADM: table}, warnings=list(said))
    return _read_iptables(text, lines, commands, source)


def _cut_line(text: str, lines: list[str]) -> int | None:
    """The number of the last line when the text stops without a newline (the paste may end mid-line)."""
    if text.endswith("\n") or not lines:
        return None
    last = lines[-1].strip()
    if last == "COMMIT" or last.startswith(("# Completed", "}")):
        return None
    return len(lines)


def _blank(lines: list[str], skip: set[int]) -> str:
    """The text with the lines in ``skip`` left empty, so every other line keeps its number."""
    return "\n".join("" if n in skip else raw for n, raw in enumerate(lines, 1)) + "\n"


def _said_lines(numbers: list[int], lines: list[str]) -> str:
    first = numbers[0]
    shown = lines[first - 1].strip()
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    if len(numbers) == 1:
        return f"line {first} ({shown!r}) is not an iptables rule; not read"
    return f"line {first} ({shown!r}) and {len(numbers) - 1} more lines are not iptables rules (notes, diagrams); " \
           "not read"


def infer_table(lines: list[str]) -> tuple[str, str]:
    """The table of headerless iptables rules (nat or filter), and the evidence in words."""
    nat: list[str] = []
    filt: list[str] = []
    for raw in lines:
        words = raw.strip().split()
        if len(words) < 2 or words[0] not in ("-A", "-N", "-P") and not words[0].startswith("["):
            continue
        if words[0].startswith("["):
            words = words[1:]
        chain = words[1] if len(words) > 1 else ""
        target = words[words.index("-j") + 1] if "-j" in words[:-1] else ""
        if chain.startswith(_NAT_CHAINS) or target in _NAT_TARGETS or target.startswith("KUBE-SVC-"):
            nat.append(chain)
        elif chain.startswith(_FILTER_CHAINS) or target in _FILTER_TARGETS:
            filt.append(chain)
    if len(filt) > len(nat):
        return "filter", f"its chains ({', '.join(sorted(set(filt))[:3])}) and targets are filter's"
    if nat:
        return "nat", f"its chains ({', '.join(sorted(set(nat))[:3])}) and targets are nat's"
    return "nat", "nothing in it says which table; kube-proxy's Service rules are nat's"


def _read_iptables(text: str, lines: list[str], commands: dict[int, str], source: str) -> Pasted:
    from svctrace.parsers import iptables_save

    warnings: list[str] = []
    gaps: list[str] = []
    skip = set(commands)
    notes = [n for n, raw in enumerate(lines, 1)
             if n not in commands and raw.strip() and not raw.strip().startswith("#")
             and not _IPT_LINE.match(raw.strip())]
    cut = _cut_line(text, lines)
    if cut is not None and cut not in skip:
        skip.add(cut)
        notes = [n for n in notes if n != cut]
        shown = lines[cut - 1].strip()
        warnings.append(f"the text stops mid-line at line {cut} ({shown[-40:]!r}): that line is not read "
                        "(end the file with a newline if it is whole)")
        gaps.append(f"it stops at line {cut}")
    if notes:
        if not any(_IPT_LINE.match(raw.strip()) for n, raw in enumerate(lines, 1) if n not in skip):
            first = notes[0]
            raise _refuse(f"not a snapshot folder or tarball, nor a rule dump svctrace reads: "
                          f"{lines[first - 1].strip()[:60]!r}",
                          "svctrace reads iptables-save, iptables -S, ipvsadm -Ln/-Sn and nft list output; "
                          + HINT_IPTABLES, source, first)
        skip.update(notes)
        elided = any(lines[n - 1].strip() in ("...", "…") for n in notes)
        warnings.append(_said_lines(notes, lines)
                        + ("; where the text has '...' it elides rules, which are not in the dump" if elided else ""))
        gaps.append("lines between the rules are not rules")
    if commands:
        first = min(commands)
        warnings.append(f"line {first} is the command that printed the dump ({commands[first][:60]!r}); not read"
                        + ("; grep shows only the rules that match" if "grep" in commands[first] else ""))
    kept = [raw for n, raw in enumerate(lines, 1) if n not in skip]
    stripped = [raw.strip() for raw in kept]
    has_table = any(s.startswith("*") for s in stripped)
    cmd_text = " ".join(commands.values())
    table: str | None = None
    if not has_table:
        flag = _TABLE_FLAG.search(cmd_text)
        if flag is not None:
            table, why = flag.group(1), f"the pasted command says -t {flag.group(1)}"
        elif commands and any(_IPT_S_FLAG.search(c) for c in commands.values()):
            table, why = "filter", "the pasted command gives no -t, which means filter"
        else:
            table, why = infer_table(kept)
        warnings.append(f"no table header (*{table}): read as the {table} table, since {why}")
        if any(_IPT_S_FLAG.search(c) for c in commands.values()) or any(s.startswith("-P ") for s in stripped):
            fmt = "iptables-S"
        else:
            fmt = "iptables-fragment"
            gaps.append("it is a fragment (no table header)")
    else:
        fmt = "iptables-save"
    clean = _blank(lines, skip)
    open_table = _open_table(stripped)
    if open_table is not None:
        clean += "COMMIT\n"
        warnings.append(f"table {open_table} has no COMMIT: the text stops inside it, so its rules after line "
                        f"{_last_line(lines, skip)} are not in the dump")
        gaps.append(f"table {open_table} is cut short")
    if any(" | grep" in c or c.startswith("grep") for c in commands.values()):
        gaps.append("it is filtered by grep")
    restore = has_table and _restore_input(stripped)
    if restore:
        warnings.append("this looks like iptables-restore input (no built-in chains, no iptables-save header): "
                        "rules kube-proxy wrote, not necessarily all the node holds; the jumps kube-proxy makes "
                        "from the built-in chains, apart from its restore input, are assumed")
    six = "ip6tables" in cmd_text or any(s.startswith("# Generated by ip6tables") for s in stripped) or bool(
        _V6_ADDRESS.search(clean))
    partial = "; ".join(gaps) if gaps else None
    dump = iptables_save.parse(clean, source, family=6 if six else 4, table=table, partial=partial)
    if restore:  # read again with kube-proxy's jumps from the built-in chains (the text was checked above)
        dump = iptables_save.parse(with_builtin_jumps(clean), source, family=6 if six else 4, partial=partial)
    name = NodeFile.IP6TABLES if six else NodeFile.IPTABLES
    return Pasted(fmt, parsed={name: dump}, warnings=warnings)


def _restore_input(stripped: list[str]) -> bool:
    """kube-proxy's restore input: tables with KUBE- chains but no built-in chain and no iptables-save header."""
    return (not any(s.startswith((":PREROUTING", ":INPUT", ":OUTPUT", ":FORWARD", ":POSTROUTING")) for s in stripped)
            and not any(s.startswith("# Generated") for s in stripped)
            and any(s.startswith(":KUBE-SERVICES") for s in stripped))


# The jumps kube-proxy ensures from the built-in chains with `iptables -I`, outside its restore input (v1.28's
# iptablesJumpChains and iptablesKubeletJumpChains; docs/eras.md): table, chain, rule, in the order a node shows.
_NEW = "-m conntrack --ctstate NEW -m comment --comment"
_JUMPS = f"""
filter INPUT {_NEW} "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
filter INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS
filter INPUT {_NEW} "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
filter INPUT -j KUBE-FIREWALL
filter FORWARD {_NEW} "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
filter FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
filter FORWARD {_NEW} "kubernetes service portals" -j KUBE-SERVICES
filter FORWARD {_NEW} "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
filter OUTPUT {_NEW} "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
filter OUTPUT {_NEW} "kubernetes service portals" -j KUBE-SERVICES
filter OUTPUT -j KUBE-FIREWALL
nat PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
nat OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
nat POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
""".strip().splitlines()


def with_builtin_jumps(text: str) -> str:
    """Restore input with the built-in chains and kube-proxy's jumps from them, for the chains it declares."""
    out: list[str] = []
    table = None
    declared: set[str] = set()
    lines = text.split("\n")
    for i, raw in enumerate(lines):
        s = raw.strip()
        if s.startswith("*"):
            table = s[1:]
            declared = {x.strip()[1:].split()[0] for x in lines[i + 1:] if x.strip().startswith(":")}
            out.append(raw)
            jumps = [j.split(" ", 2)[1:] for j in _JUMPS
                     if j.startswith(table + " ") and j.rsplit(" ", 1)[1] in declared]
            out += [f":{hook} ACCEPT [0:0]" for hook in dict.fromkeys(hook for hook, _ in jumps)]
            out += [f"-A {hook} {rule}" for hook, rule in jumps]
            continue
        out.append(raw)
    return "\n".join(out)


def _open_table(stripped: list[str]) -> str | None:
    current = None
    for s in stripped:
        if s.startswith("*"):
            current = s[1:].strip()
        elif s == "COMMIT":
            current = None
    return current


def _last_line(lines: list[str], skip: set[int]) -> int:
    return max((n for n, raw in enumerate(lines, 1) if n not in skip and raw.strip()), default=1)
