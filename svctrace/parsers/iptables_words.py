"""Stage 1 of reading ``iptables-save`` text: cut a rule into options and their words.

Quotes are handled the way iptables-restore handles them; nothing here decides what an option means
(svctrace.parsers.iptables_options gives each option its owner, svctrace.parsers.iptables_typing types
it). Also: the header comment, and the raw ``Option`` / ``RawMatch`` shapes the later stages use.
"""

from __future__ import annotations

import re

from svctrace.record import record

HINT_RESAVE = "re-run iptables-save (or ip6tables-save) on the node and copy its output whole"
HINT_EDIT = "fix that line (or re-run iptables-save and copy its output whole)"

# Basic (built-in) rule options, long forms normalised to the short names Rule.basic uses.
BASIC_OPTIONS: dict[str, str] = {
    "-p": "-p", "--protocol": "-p",
    "-s": "-s", "--source": "-s", "--src": "-s",
    "-d": "-d", "--destination": "-d", "--dst": "-d",
    "-i": "-i", "--in-interface": "-i",
    "-o": "-o", "--out-interface": "-o",
    "-f": "-f", "--fragment": "-f",
}
_MATCH_OPTIONS = frozenset({"-m", "--match"})
_JUMP_OPTIONS = {"-j": False, "--jump": False, "-g": True, "--goto": True}
_COUNTER_OPTIONS = frozenset({"-c", "--set-counters"})
_SPECIAL_OPTIONS = frozenset(BASIC_OPTIONS) | _MATCH_OPTIONS | frozenset(_JUMP_OPTIONS) | _COUNTER_OPTIONS

_PORTS = ("--sport", "--source-port", "--dport", "--destination-port")

# The options each common match module accepts, so that an option goes to the module that owns it
# even when other options sit in between (``-m tcp -p tcp -d IP --dport P``). Modules not listed here
# take the options that follow them.
MODULE_OPTIONS: dict[str, frozenset[str]] = {
    name: frozenset(opts)
    for name, opts in {
        "comment": ("--comment",),
        "tcp": (*_PORTS, "--tcp-flags", "--syn", "--tcp-option"),
        "udp": _PORTS,
        "udplite": _PORTS,
        "sctp": (*_PORTS, "--chunk-types"),
        "dccp": (*_PORTS, "--dccp-types", "--dccp-option"),
        "icmp": ("--icmp-type",),
        "icmp6": ("--icmpv6-type",),
        "statistic": ("--mode", "--probability", "--every", "--packet"),
        "recent": ("--name", "--set", "--rcheck", "--update", "--remove", "--seconds", "--reap",
                   "--hitcount", "--rttl", "--mask", "--rsource", "--rdest"),
        "mark": ("--mark",),
        "connmark": ("--mark",),
        "conntrack": ("--ctstate", "--ctproto", "--ctorigsrc", "--ctorigdst", "--ctreplsrc", "--ctrepldst",
                      "--ctorigsrcport", "--ctorigdstport", "--ctreplsrcport", "--ctrepldstport",
                      "--ctstatus", "--ctexpire", "--ctdir"),
        "state": ("--state",),
        "addrtype": ("--src-type", "--dst-type", "--limit-iface-in", "--limit-iface-out"),
        "multiport": ("--sports", "--dports", "--ports", "--source-ports", "--destination-ports"),
        "set": ("--match-set", "--set", "--return-nomatch", "--update-counters", "--update-subcounters",
                "--packets-eq", "--packets-lt", "--packets-gt", "--bytes-eq", "--bytes-lt", "--bytes-gt"),
        "nfacct": ("--nfacct-name",),
        "physdev": ("--physdev-in", "--physdev-out", "--physdev-is-in", "--physdev-is-out",
                    "--physdev-is-bridged"),
        "limit": ("--limit", "--limit-burst"),
        "owner": ("--uid-owner", "--gid-owner", "--socket-exists", "--suppl-groups"),
        "mac": ("--mac-source",),
        "iprange": ("--src-range", "--dst-range"),
        "string": ("--algo", "--from", "--to", "--string", "--hex-string", "--icase"),
        "hashlimit": ("--hashlimit", "--hashlimit-upto", "--hashlimit-above", "--hashlimit-burst",
                      "--hashlimit-mode", "--hashlimit-srcmask", "--hashlimit-dstmask", "--hashlimit-name",
                      "--hashlimit-htable-size", "--hashlimit-htable-max", "--hashlimit-htable-expire",
                      "--hashlimit-htable-gcinterval", "--hashlimit-rate-match", "--hashlimit-rate-interval"),
        "socket": ("--transparent", "--nowildcard", "--restore-skmark"),
        "devgroup": ("--src-group", "--dst-group"),
        "rpfilter": ("--loose", "--validmark", "--accept-local", "--invert"),
        "ipvs": ("--ipvs", "--vproto", "--vaddr", "--vport", "--vdir", "--vmethod", "--vportctl"),
        "pkttype": ("--pkt-type",),
        "length": ("--length",),
        "tos": ("--tos",),
        "dscp": ("--dscp", "--dscp-class"),
        "ttl": ("--ttl-eq", "--ttl-gt", "--ttl-lt"),
        "hl": ("--hl-eq", "--hl-gt", "--hl-lt"),
        "connlimit": ("--connlimit-upto", "--connlimit-above", "--connlimit-mask", "--connlimit-saddr",
                      "--connlimit-daddr"),
        "connbytes": ("--connbytes", "--connbytes-dir", "--connbytes-mode"),
        "helper": ("--helper",),
        "policy": ("--dir", "--pol", "--strict", "--reqid", "--spi", "--proto", "--mode", "--tunnel-src",
                   "--tunnel-dst", "--next"),
        "time": ("--datestart", "--datestop", "--timestart", "--timestop", "--monthdays", "--weekdays",
                 "--kerneltz", "--contiguous"),
        "u32": ("--u32",),
        "bpf": ("--bytecode", "--object-pinned"),
        "cgroup": ("--path", "--cgroup"),
        "cpu": ("--cpu",),
        "quota": ("--quota",),
        "realm": ("--realm",),
        "esp": ("--espspi",),
        "ah": ("--ahspi",),
        "ecn": ("--ecn-tcp-cwr", "--ecn-tcp-ece", "--ecn-ip-ect"),
        "tcpmss": ("--mss",),
        "condition": ("--condition",),
        "rt": ("--rt-type", "--rt-segsleft", "--rt-len", "--rt-0-res", "--rt-0-addrs", "--rt-0-not-strict"),
        "frag": ("--fragid", "--fraglen", "--fragres", "--fragfirst", "--fragmore", "--fraglast"),
        "ipv6header": ("--header", "--soft"),
    }.items()
}

# ``-p tcp --dport 80`` without ``-m tcp``: iptables loads the protocol's match implicitly.
IMPLICIT_PROTOCOL_MODULES = {
    "tcp": "tcp", "udp": "udp", "udplite": "udplite", "sctp": "sctp", "dccp": "dccp",
    "icmp": "icmp", "ipv6-icmp": "icmp6", "icmpv6": "icmp6",
}

_HEADER = re.compile(r"#\s*Generated by (?P<prog>[\w.-]+) v(?P<version>\S+)(?: \((?P<backend>[^)]*)\))?")
_COUNTERS = re.compile(r"\[(\d+):(\d+)\]\Z")


@record
class Option:
    """One option of a rule as written: ``! --ctstate RELATED,ESTABLISHED`` is ``--ctstate``, negated."""

    name: str
    values: tuple[str, ...] = ()
    negated: bool = False

    @property
    def value(self) -> str:
        return self.values[0] if self.values else ""

    def __str__(self) -> str:
        neg = "! " if self.negated else ""
        return f"{neg}{self.name} {' '.join(self.values)}".rstrip()


@record
class RawMatch:
    """``-m MODULE`` and the options that belong to it, as written."""

    module: str
    options: tuple[Option, ...] = ()

    def option(self, name: str) -> Option | None:
        for opt in self.options:
            if opt.name == name:
                return opt
        return None

    def __str__(self) -> str:
        return " ".join((f"-m {self.module}", *map(str, self.options)))


@record
class Header:
    """What the ``# Generated by ...`` comment says."""

    program: str
    version: str
    backend: str  # "nf_tables" | "legacy"

    @property
    def family(self) -> int:
        return 6 if self.program.startswith("ip6") else 4


def parse_header(comment: str) -> Header | None:
    """Read ``# Generated by iptables-nft-save v1.8.9 (nf_tables) on ...``; None for other comments."""
    m = _HEADER.match(comment)
    if m is None:
        return None
    prog, backend = m.group("prog"), m.group("backend")
    if backend not in ("nf_tables", "legacy"):
        # iptables before 1.8 had only the legacy backend and said nothing; 1.8.x legacy says nothing
        # either, while every nf_tables build prints "(nf_tables)" or is called *-nft-save.
        backend = "nf_tables" if "-nft" in prog else "legacy"
    return Header(prog, m.group("version"), backend)


# ---------------------------------------------------------------------------------------------------
# Stage 1: cut a rule into options, each with its words, without deciding what they mean.

RawOption = tuple[bool, str, tuple[str, ...]]  # (negated, "--name", values)


class Fail(ValueError):
    """A problem in one line; ``parse`` adds the file and line number."""

    def __init__(self, message: str, hint: str = HINT_EDIT) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


NO_QUOTES: frozenset[int] = frozenset()


def split_words(line: str) -> tuple[list[str], frozenset[int]]:
    """Split a line into words as iptables-restore does; returns the words and which were quoted.

    Double quotes group words (``--comment "a b"``); inside them a backslash escapes the next
    character; the closing quote ends the word. A quoted word is always a value, even ``"-x"``.
    """
    if '"' not in line:
        return line.split(), NO_QUOTES
    if "\\" not in line:
        parts = line.split('"')
        if len(parts) % 2 == 0:
            raise Fail("unterminated quote", HINT_RESAVE)
    else:
        parts = _split_escaped(line)
    words: list[str] = []
    quoted: set[int] = set()
    for i, part in enumerate(parts):
        if i % 2 == 0:
            words.extend(part.split())
            continue
        before = parts[i - 1]
        if before and not before[-1].isspace():
            part = words.pop() + part  # x"y z" is one word, as in iptables-restore
        quoted.add(len(words))
        words.append(part)
    return words, frozenset(quoted)


def _split_escaped(line: str) -> list[str]:
    """Like ``line.split('"')`` but honouring backslash escapes inside quotes."""
    parts: list[str] = []
    buf: list[str] = []
    in_quote = False
    chars = iter(line)
    for ch in chars:
        if in_quote and ch == "\\":
            buf.append(next(chars, ""))
        elif ch == '"':
            parts.append("".join(buf))
            buf = []
            in_quote = not in_quote
        else:
            buf.append(ch)
    if in_quote:
        raise Fail("unterminated quote", HINT_RESAVE)
    parts.append("".join(buf))
    return parts


def is_option(word: str) -> bool:
    """``-x`` or ``--xyz`` (not ``-``, ``->`` or ``-1``): the start of the next option."""
    return len(word) > 1 and word[0] == "-" and (word[1].isalpha() or (word[1] == "-" and len(word) > 2))


def group_options(words: list[str], quoted: frozenset[int], start: int = 0) -> list[RawOption]:
    """Group words into options: each option takes the words up to the next option or ``! option``."""
    out: list[RawOption] = []
    n = len(words)
    i = start
    while i < n:
        word = words[i]
        negated = False
        if word == "!" and i not in quoted:
            i += 1
            if i >= n or i in quoted or not is_option(words[i]):
                after = f"before {short(words[i])}" if i < n else "at the end of the rule"
                raise Fail(f"'!' must be followed by an option, found '!' {after}")
            word = words[i]
            negated = True
        elif i in quoted or not is_option(word):
            raise Fail(f"expected an option (-x or --xyz), found {short(word)}")
        j = i + 1
        while j < n:
            w = words[j]
            if j not in quoted and (is_option(w) or w == "!" and j + 1 < n and j + 1 not in quoted
                                    and is_option(words[j + 1])):
                break
            j += 1
        if j == n and words[-1] == "!" and n - 1 not in quoted and j > i + 1:
            raise Fail("'!' must be followed by an option, found '!' at the end of the rule")
        out.append((negated, word, tuple(words[i + 1:j])))
        i = j
    return out


def split_rule(line: str) -> tuple[str, list[RawOption]]:
    """``-A CHAIN opts...`` -> (chain, options): the exact, general splitter (the parser's slow path)."""
    words, quoted = split_words(line)
    if len(words) < 2 or words[0] != "-A" or 1 in quoted or is_option(words[1]) or words[1] == "!":
        raise Fail("-A without a chain name", HINT_RESAVE)
    return words[1], group_options(words, quoted, 2)


def short(text: str, limit: int = 60) -> str:
    """``text`` quoted for a message, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
