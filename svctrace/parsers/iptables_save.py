"""``iptables-save`` / ``ip6tables-save`` text (and iptables-restore input) -> ``IptablesDump``.

Two stages, as in STYLE habit 1: ``split_rule`` cuts a rule into options and their words (quotes
handled the way iptables-restore handles them), and ``_RuleBuilder`` types each option and gives it
an owner: the basic rule, a match module or the target. A fast path takes iptables-save's own layout
a ``-m`` piece at a time (see ``_RuleBuilder.fast``), so a 430k-line dump parses in seconds.

Accepted: ``*table``, ``:CHAIN POLICY [pkts:bytes]``, ``-A CHAIN ...`` (optionally prefixed by
``[pkts:bytes]`` as ``iptables-save -c`` prints it), ``-N`` / ``-X`` / ``-F`` (restore inputs), ``COMMIT``,
``#`` comments and blank lines. Both kube-proxy's argument order (``-m comment --comment C -m tcp -p tcp
-d IP --dport P -j T``) and iptables-save's order (``-d IP/32 -p tcp -m comment --comment "C" -m tcp
--dport P -j T``) give the same matches. Modules and targets nobody here knows (Docker's, Calico's,
Cilium's, LOG, TRACE) are kept as written. Anything malformed raises ``InputError`` naming file:line.
"""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass, field

from svctrace.errors import InputError
from svctrace.model.dataplane import Chain, IptablesDump, Match, Option, Rule, Table

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
_IMPLICIT_PROTOCOL_MODULES = {
    "tcp": "tcp", "udp": "udp", "udplite": "udplite", "sctp": "sctp", "dccp": "dccp",
    "icmp": "icmp", "ipv6-icmp": "icmp6", "icmpv6": "icmp6",
}

_HEADER = re.compile(r"#\s*Generated by (?P<prog>[\w.-]+) v(?P<version>\S+)(?: \((?P<backend>[^)]*)\))?")
_COUNTERS = re.compile(r"\[(\d+):(\d+)\]\Z")


@dataclass(frozen=True, slots=True)
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


class _Fail(ValueError):
    """A problem in one line; ``parse`` adds the file and line number."""

    def __init__(self, message: str, hint: str = HINT_EDIT) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


_NO_QUOTES: frozenset[int] = frozenset()


def split_words(line: str) -> tuple[list[str], frozenset[int]]:
    """Split a line into words as iptables-restore does; returns the words and which were quoted.

    Double quotes group words (``--comment "a b"``); inside them a backslash escapes the next
    character; the closing quote ends the word. A quoted word is always a value, even ``"-x"``.
    """
    if '"' not in line:
        return line.split(), _NO_QUOTES
    if "\\" not in line:
        parts = line.split('"')
        if len(parts) % 2 == 0:
            raise _Fail("unterminated quote", HINT_RESAVE)
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
        raise _Fail("unterminated quote", HINT_RESAVE)
    parts.append("".join(buf))
    return parts


def _is_option(word: str) -> bool:
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
            if i >= n or i in quoted or not _is_option(words[i]):
                after = f"before {_short(words[i])}" if i < n else "at the end of the rule"
                raise _Fail(f"'!' must be followed by an option, found '!' {after}")
            word = words[i]
            negated = True
        elif i in quoted or not _is_option(word):
            raise _Fail(f"expected an option (-x or --xyz), found {_short(word)}")
        j = i + 1
        while j < n:
            w = words[j]
            if j not in quoted and (_is_option(w) or w == "!" and j + 1 < n and j + 1 not in quoted
                                    and _is_option(words[j + 1])):
                break
            j += 1
        if j == n and words[-1] == "!" and n - 1 not in quoted and j > i + 1:
            raise _Fail("'!' must be followed by an option, found '!' at the end of the rule")
        out.append((negated, word, tuple(words[i + 1:j])))
        i = j
    return out


def split_rule(line: str) -> tuple[str, list[RawOption]]:
    """``-A CHAIN opts...`` -> (chain, options): the exact, general splitter (the parser's slow path)."""
    words, quoted = split_words(line)
    if len(words) < 2 or words[0] != "-A" or 1 in quoted or _is_option(words[1]) or words[1] == "!":
        raise _Fail("-A without a chain name", HINT_RESAVE)
    return words[1], group_options(words, quoted, 2)


# ---------------------------------------------------------------------------------------------------
# Stage 2: type each option (basic, match module, option of a module, target) and give it an owner.

_MATCH, _BASIC, _JUMP, _COUNTERS_OPT, _OPT = range(5)
# (kind, name/module/target, values, payload, intrapositioned '!'); payload: the Option for _BASIC and
# _OPT, the module's known options for _MATCH, goto for _JUMP, (packets, bytes) for _COUNTERS_OPT.
_Typed = tuple[int, str, tuple[str, ...], object, bool]
_Draft = tuple[str, "frozenset[str] | None", list[Option]]  # a match being filled: module, known, options
# What a rule says, typed: basic, matches, target, goto, target options, counters from -c
_Assembled = tuple[tuple[Option, ...], tuple[Match, ...], "str | None", bool, tuple[Option, ...],
                   "tuple[int, int] | None"]
_RuleParts = tuple[str, tuple[Option, ...], tuple[Match, ...], "str | None", bool, tuple[Option, ...],
                   "tuple[int, int] | None"]  # the chain name, then _Assembled
# Cached answers meaning "the fast path cannot take this; ask the general one".
_NOT_FAST: tuple[Option, ...] = (Option(""),)
_NO_TARGET: tuple[str, tuple[Option, ...]] = ("", ())


class _RuleBuilder:
    """Types options and assembles rules, sharing identical Options and Matches across the dump.

    ``general`` handles any rule. ``fast`` handles iptables-save's own layout (basic options, then
    each ``-m`` with its options, then ``-j`` and its options) by cutting the text at " -m " and " -j "
    and caching each ``-m`` piece as a Match; whenever a piece is not that simple (kube-proxy's own
    order, quotes around " -m ", errors) it returns None and ``general`` decides.
    """

    __slots__ = ("_options", "_matches", "_pieces", "_impure", "_heads", "_targets", "_strings", "_groups",
                 "saw_ipv6_address", "plain")

    def __init__(self) -> None:
        self._options: dict[tuple[str, tuple[str, ...], bool], Option] = {}
        self._matches: dict[tuple[object, ...], Match] = {}
        self._pieces: dict[str, Match] = {}
        self._impure: set[str] = set()
        self._heads: dict[str, tuple[Option, ...]] = {}
        self._targets: dict[str, tuple[str, tuple[Option, ...]]] = {}
        self._strings: dict[str, str] = {}
        self._groups: dict[tuple[str, tuple[str, ...]], _Typed] = {}
        self.saw_ipv6_address = False
        self.plain = False  # True: the whole dump has no backslash or tab, so no line needs checking

    def intern(self, s: str) -> str:
        return self._strings.setdefault(s, s)

    def option(self, name: str, values: tuple[str, ...], negated: bool) -> Option:
        key = (name, values, negated)
        opt = self._options.get(key)
        if opt is None:
            opt = self._options[key] = Option(self.intern(name), values, negated)
        return opt

    # -- typing one option --------------------------------------------------------------------------

    def typed_group(self, name: str, values: tuple[str, ...]) -> _Typed:
        key = (name, values)
        typed = self._groups.get(key)
        if typed is None:
            typed = self._groups[key] = self._type(name, values)
        return typed

    def _type(self, name: str, values: tuple[str, ...]) -> _Typed:
        inverted = False
        if len(values) > 1 and values[0] == "!":
            # the old "--dport ! 80" spelling (iptables before 1.4.3 printed it)
            inverted, values = True, values[1:]
        if name not in _SPECIAL_OPTIONS:
            if name == "--comment" and len(values) > 1:
                # One value: an unquoted multi-word comment (kube-proxy's hand-written test dumps, which
                # iptables-restore rejects) runs up to the next option.
                values = (" ".join(values),)
            name = self.intern(name)
            return (_OPT, name, values, Option(name, values), inverted)
        if name in _MATCH_OPTIONS:
            if len(values) != 1 or inverted:
                raise _Fail(f"{name} takes one module name, found {len(values)} words")
            module = self.intern(values[0])
            return (_MATCH, module, values, MODULE_OPTIONS.get(module), False)
        short = BASIC_OPTIONS.get(name)
        if short is not None:
            if short == "-f":
                if values:
                    raise _Fail(f"-f takes no value, found {_short(values[0])}")
            elif len(values) != 1:
                raise _Fail(f"{name} takes one value, found {len(values)}")
            elif short in ("-s", "-d") and ":" in values[0]:
                self.saw_ipv6_address = True
            return (_BASIC, short, values, Option(short, values), inverted)
        if name in _JUMP_OPTIONS:
            if len(values) != 1 or inverted:
                raise _Fail(f"{name} takes one target name, found {len(values)} words")
            return (_JUMP, self.intern(values[0]), values, _JUMP_OPTIONS[name], False)
        if len(values) != 2 or not all(v.isdigit() for v in values):
            raise _Fail(f"{name} takes two numbers (packets bytes)")
        return (_COUNTERS_OPT, name, values, (int(values[0]), int(values[1])), False)

    def _typed_option(self, negated: bool, typed: _Typed) -> Option:
        opt: Option = typed[3]  # type: ignore[assignment]
        if negated is not typed[4]:
            return self.option(opt.name, opt.values, True)
        return opt

    # -- any rule -------------------------------------------------------------------------------------

    def general(self, line: str) -> _RuleParts:
        """Any ``-A`` line: split it exactly, type every option, give each its owner."""
        chain, raw = split_rule(line)
        typed_group = self.typed_group
        return (chain, *self.assemble([(neg, typed_group(name, values)) for neg, name, values in raw]))

    def assemble(self, groups: list[tuple[bool, _Typed]]) -> _Assembled:
        basic: list[Option] = []
        drafts: list[_Draft] = []
        target: str | None = None
        goto = False
        target_options: list[Option] = []
        target_at = -1  # len(drafts) when -j was seen: later -m modules may still take options
        protocol: str | None = None
        counters: tuple[int, int] | None = None
        for negated, typed in groups:
            kind, name, values, payload, inverted = typed
            if kind == _OPT:
                opt = self._typed_option(negated, typed)
                owner = _owner(name, drafts, target_at, protocol)
                if owner is not None:
                    owner.append(opt)
                elif target is not None:
                    target_options.append(opt)
                else:
                    raise _Fail(f"option {name} belongs to no match module (no -m before it, and no -p "
                                "that implies one)")
            elif kind == _MATCH:
                if negated:
                    raise _Fail("-m cannot be negated")
                drafts.append((name, payload, []))  # type: ignore[arg-type]
            elif kind == _BASIC:
                if name == "-p" and negated is inverted:
                    protocol = values[0]
                basic.append(self._typed_option(negated, typed))
            elif kind == _JUMP:
                if negated:
                    raise _Fail(f"a target ({name}) cannot be negated")
                if target is not None:
                    raise _Fail(f"two targets in one rule ({target} and {name})")
                target, goto, target_at = name, bool(payload), len(drafts)
            else:
                counters = payload  # type: ignore[assignment]
        matches = tuple(self._match(module, opts) for module, _known, opts in drafts)
        return tuple(basic), matches, target, goto, tuple(target_options), counters

    def _match(self, module: str, opts: list[Option]) -> Match:
        key = (module, *map(id, opts))  # Options are shared, so their identity stands for their value
        m = self._matches.get(key)
        if m is None:
            m = self._matches[key] = Match(module, tuple(opts))
        return m

    # -- iptables-save's layout -----------------------------------------------------------------------

    def fast(self, line: str) -> _RuleParts | None:
        """The same result as ``general`` for iptables-save's own layout, or None to ask ``general``."""
        sp = line.find(" ", 3)
        if sp <= 3 or line[3] == "-" or not self.plain and ("\\" in line or "\t" in line):
            return None
        tj = line.rfind(" -j ", sp)
        tg = line.rfind(" -g ", sp)
        if tj >= 0 and tg >= 0:
            return None
        cut = tj if tj >= 0 else tg
        pieces = line[sp:cut if cut >= 0 else None].split(" -m ")
        try:
            basic = self._heads.get(pieces[0])
            if basic is None:
                basic = self._heads[pieces[0]] = self._fast_head(pieces[0])
            if basic is _NOT_FAST:
                return None
            matches: tuple[Match, ...] = ()
            if len(pieces) > 1:
                cache = self._pieces
                found = []
                for piece in pieces[1:]:
                    m = cache.get(piece) or self._new_piece(piece)
                    if m is None:
                        return None
                    found.append(m)
                matches = tuple(found)
            if cut < 0:
                return line[3:sp], basic, matches, None, False, (), None
            tpart = line[cut + 4:]  # "TARGET --opt v ..."
            if " " not in tpart and '"' not in tpart and tpart[:1] not in ("-", "!"):  # the commonest case
                return line[3:sp], basic, matches, self._strings.setdefault(tpart, tpart), cut == tg, (), None
            target = self._targets.get(tpart)
            if target is None:
                target = self._targets[tpart] = self._fast_target(tpart)
            if target is _NO_TARGET:
                return None
        except _Fail:
            return None
        return line[3:sp], basic, matches, target[0], cut == tg, target[1], None

    def _fast_head(self, head: str) -> tuple[Option, ...]:
        """`` ! -s X -d Y -p tcp`` (basic options, each with one value) -> Options; _NOT_FAST if not."""
        if '"' in head:
            return _NOT_FAST
        words = head.split()
        out = []
        n = len(words)
        i = 0
        while i < n:
            negated = words[i] == "!"
            if negated:
                i += 1
            if i + 1 >= n:
                return _NOT_FAST
            short = BASIC_OPTIONS.get(words[i])
            value = words[i + 1]
            if short is None or short == "-f" or value == "!" or _is_option(value):
                return _NOT_FAST
            if (short == "-s" or short == "-d") and ":" in value:
                self.saw_ipv6_address = True
            out.append(Option(short, (value,), negated))
            i += 2
        return tuple(out)

    def _fast_target(self, tpart: str) -> tuple[str, tuple[Option, ...]]:
        """``"DNAT --to-destination 10.0.0.1:80"`` -> (target, its options); _NO_TARGET if not simple."""
        words, quoted = split_words(tpart)
        if not words or 0 in quoted or _is_option(words[0]) or words[0] == "!":
            return _NO_TARGET
        if len(words) == 3 and not quoted and words[1] not in _SPECIAL_OPTIONS and _is_option(words[1]) \
                and words[2] != "!" and not _is_option(words[2]):
            # one option with one value (DNAT --to-destination, MARK --set-xmark, REJECT --reject-with)
            return self.intern(words[0]), (Option(self.intern(words[1]), (words[2],)),)
        opts = []
        for negated, name, values in group_options(words, quoted, 1):
            if name in _SPECIAL_OPTIONS:  # -p after -j and the like: the general path decides
                return _NO_TARGET
            opts.append(self._typed_option(negated, self._type(name, values)))
        return self.intern(words[0]), tuple(opts)

    def _new_piece(self, piece: str) -> Match | None:
        if piece in self._impure:
            return None
        m = self._piece(piece)
        if m is None:
            self._impure.add(piece)
        else:
            self._pieces[piece] = m
        return m

    def _piece(self, piece: str) -> Match | None:
        """``"tcp --dport 80"`` (text after " -m ") as a Match, or None when the piece's options
        would not all be the module's own (an option a known module does not take, a basic option, a
        target): then only the whole rule can say who owns them."""
        if piece[:19] == 'comment --comment "' and piece[-1] == '"' and piece.count('"') == 2:
            # the commonest piece, and often unique ("S -> IP:port"): no need for the general splitter
            return Match("comment", (Option("--comment", (piece[19:-1],)),))
        module, _, rest = piece.partition(" ")
        if not module or '"' in module or _is_option(module) or module == "!":
            return None
        known = MODULE_OPTIONS.get(module)
        words, quoted = split_words(rest) if '"' in rest else (rest.split(), _NO_QUOTES)
        opts = []
        for negated, name, values in group_options(words, quoted):
            typed = self.typed_group(name, values)
            if typed[0] != _OPT or (known is not None and typed[1] not in known):
                return None
            opts.append(self._typed_option(negated, typed))
        return self._match(self.intern(module), opts)


def _owner(name: str, drafts: list[_Draft], target_at: int, protocol: str | None) -> list[Option] | None:
    """The options list of the match that takes ``name``; None: the target's (or nobody's).

    Walking back from the most recent ``-m``: the first module that is known to take the option, or
    that is unknown (iptables-save prints each module's options right after it), owns it.
    """
    lowest = target_at if target_at >= 0 else 0  # after -j, only modules loaded after it compete
    for k in range(len(drafts) - 1, lowest - 1, -1):
        _module, known, opts = drafts[k]
        if known is None or name in known:
            return opts
    if target_at < 0 and protocol is not None:
        module = _IMPLICIT_PROTOCOL_MODULES.get(protocol)
        if module is not None and name in MODULE_OPTIONS[module]:
            implicit: list[Option] = []
            drafts.append((module, MODULE_OPTIONS[module], implicit))
            return implicit
    if target_at < 0 and drafts:
        # A module we know that does not list this option (a newer iptables?): keep it with the
        # module it follows rather than lose it.
        return drafts[-1][2]
    return None


# ---------------------------------------------------------------------------------------------------
# The dump.


@dataclass(slots=True)
class _ChainDraft:
    name: str
    policy: str | None
    packets: int
    bytes: int
    declared: bool
    rules: list[Rule] = field(default_factory=list)


@dataclass(slots=True)
class _TableDraft:
    name: str
    line: int
    chains: dict[str, _ChainDraft] = field(default_factory=dict)

    def finish(self) -> Table:
        chains = {c.name: Chain(c.name, c.policy, c.packets, c.bytes, tuple(c.rules), c.declared)
                  for c in self.chains.values()}
        return Table(self.name, chains)


def _chain_declaration(text: str) -> tuple[str, str | None, int, int]:
    """``:NAME POLICY [pkts:bytes]`` -> (name, policy or None for '-', packets, bytes)."""
    parts = text[1:].split()
    if not parts:
        raise _Fail("chain declaration without a name", HINT_RESAVE)
    name = parts[0]
    if len(parts) < 2:
        raise _Fail(f"chain {name} has no policy (expected ':{name} ACCEPT|DROP|- [packets:bytes]')",
                    HINT_RESAVE)
    if len(parts) > 3:
        raise _Fail(f"unexpected text after the counters of chain {name}: {_short(' '.join(parts[3:]))}",
                    HINT_RESAVE)
    packets = nbytes = 0
    if len(parts) == 3 and parts[2] != "[0:0]":
        packets, nbytes = _counters(parts[2], f"chain {name}")
    return name, (None if parts[1] == "-" else parts[1]), packets, nbytes


def _counters(text: str, what: str) -> tuple[int, int]:
    m = _COUNTERS.match(text)
    if m is None:
        raise _Fail(f"bad counters {_short(text)} for {what} (expected [packets:bytes])", HINT_RESAVE)
    return int(m.group(1)), int(m.group(2))


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


class _Parser:
    """One pass over the lines; tables are finished at their COMMIT."""

    __slots__ = ("builder", "tables", "header", "current", "_last")

    def __init__(self) -> None:
        self.builder = _RuleBuilder()
        self.tables: dict[str, Table] = {}
        self.header: Header | None = None
        self.current: _TableDraft | None = None
        self._last: _ChainDraft | None = None  # the chain of the previous rule; reset when chains change

    def rule(self, line: str, number: int, counters: tuple[int, int] | None) -> None:
        table = self.current
        if table is None:
            raise _Fail("rule outside a table (no '*table' line before it)", HINT_RESAVE)
        builder = self.builder
        chain_name, basic, matches, target, goto, target_options, rule_counters = (
            builder.fast(line) or builder.general(line))
        chain = self._last
        if chain is None or chain.name != chain_name:  # iptables-save groups rules by chain
            chain = table.chains.get(chain_name)
            if chain is None:
                # iptables-restore would refuse this; keep the chain and record that it was implicit
                name = builder.intern(chain_name)
                chain = table.chains[name] = _ChainDraft(name, None, 0, 0, declared=False)
            self._last = chain
        rules = chain.rules
        rules.append(Rule(table.name, chain.name, len(rules) + 1, number, line, basic, matches, target, goto,
                          target_options, counters or rule_counters))

    def chain(self, line: str) -> None:
        if self.current is None:
            raise _Fail("chain declaration outside a table (no '*table' line before it)", HINT_RESAVE)
        name, policy, packets, nbytes = _chain_declaration(line)
        name = self.builder.intern(name)
        old = self.current.chains.get(name)
        if old is None:
            self.current.chains[name] = _ChainDraft(name, policy, packets, nbytes, declared=True)
        else:
            old.policy, old.packets, old.bytes, old.declared = policy, packets, nbytes, True

    def table(self, line: str, number: int) -> None:
        name = line[1:].strip()
        if not name:
            raise _Fail("'*' without a table name", HINT_RESAVE)
        if self.current is not None:
            raise _Fail(f"table {name} starts before table {self.current.name} (line {self.current.line}) "
                        "has its COMMIT", HINT_RESAVE)
        if name in self.tables:
            raise _Fail(f"table {name} appears twice",
                        "give each iptables-save output its own file (IPv4 and IPv6 apart)")
        self.current = _TableDraft(name, number)
        self._last = None

    def commit(self) -> None:
        if self.current is None:
            raise _Fail("COMMIT without a table", HINT_RESAVE)
        self.tables[self.current.name] = self.current.finish()
        self.current = None
        self._last = None

    def command(self, line: str) -> None:
        """``-N CHAIN`` declares, ``-X CHAIN`` deletes an empty chain, ``-F [CHAIN]`` flushes (restore inputs)."""
        table = self.current
        if table is None:
            raise _Fail(f"command outside a table: {_short(line)}", HINT_RESAVE)
        words = line.split()
        cmd, args = words[0], words[1:]
        self._last = None
        if cmd in ("-N", "--new-chain", "-X", "--delete-chain"):
            if len(args) != 1:
                raise _Fail(f"{cmd} takes one chain name")
            name = self.builder.intern(args[0])
            chain = table.chains.get(name)
            if cmd in ("-N", "--new-chain"):
                if chain is None:
                    table.chains[name] = _ChainDraft(name, None, 0, 0, declared=True)
            elif chain is not None:
                if chain.rules:
                    raise _Fail(f"-X {name} deletes a chain that has rules in this dump",
                                "iptables-restore would refuse this too; fix the file or re-run iptables-save")
                del table.chains[name]
            return
        if cmd in ("-F", "--flush"):
            if len(args) > 1:
                raise _Fail(f"{cmd} takes at most one chain name")
            for chain in table.chains.values():
                if not args or chain.name == args[0]:
                    chain.rules.clear()
            return
        raise _Fail(f"unsupported command {_short(cmd)} in a dump (only -A, -N, -X and -F are read)",
                    "give the output of iptables-save, which writes every rule as -A")

    def line(self, line: str, number: int) -> None:
        """Dispatch one stripped, non-blank line on its first character."""
        first = line[0]
        if first == "-":
            if line.startswith("-A ") or line == "-A":
                self.rule(line, number, None)
            else:
                self.command(line)
        elif first == ":":
            self.chain(line)
        elif first == "[":
            close = line.find("]")
            rest = line[close + 1:].lstrip() if close >= 0 else ""
            if not rest.startswith("-A"):
                raise _Fail(f"expected '[packets:bytes] -A CHAIN ...', found {_short(line)}", HINT_RESAVE)
            self.rule(rest, number, _counters(line[:close + 1], "the rule"))
        elif first == "#":
            if self.header is None:
                self.header = parse_header(line)
        elif first == "*":
            self.table(line, number)
        elif line == "COMMIT":
            self.commit()
        else:
            raise _Fail(f"not an iptables-save line: {_short(line)}",
                        "give the output of iptables-save (or ip6tables-save), not of iptables -L")


def parse(text: str, source: str = "<input>", family: int | None = None) -> IptablesDump:
    """Parse ``iptables-save`` output; ``family`` None detects IPv6 from the header or the addresses."""
    if family not in (None, 4, 6):
        raise ValueError(f"family must be 4, 6 or None, not {family!r}")
    p = _Parser()
    p.builder.plain = "\\" not in text and "\t" not in text
    number = 0
    rule, other = p.rule, p.line
    # A big dump is millions of small acyclic objects; the cyclic collector would walk them over and
    # over as they are made (a third of the time for 430k lines). Nothing here makes cycles.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if line[:3] == "-A ":  # most lines: skip the dispatch
                rule(line, number, None)
            elif line:
                other(line, number)
        if p.current is not None:
            number = p.current.line
            raise _Fail(f"table {p.current.name} has no COMMIT line (is the dump cut short?)", HINT_RESAVE)
    except _Fail as exc:
        raise InputError(exc.message, exc.hint, path=source, line=number) from None
    finally:
        if collecting:
            gc.enable()

    header = p.header
    if family is None:
        family = 6 if (header is not None and header.family == 6) or p.builder.saw_ipv6_address else 4
    return IptablesDump(family=family, tables=p.tables, source=source,
                        backend=header.backend if header else None,
                        version=header.version if header else None)
