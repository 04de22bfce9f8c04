"""Stage 2 of reading ``iptables-save`` text: give each option its owner (the rule, a match module, the target).

``RuleBuilder.general`` handles any rule; ``RuleBuilder.fast`` takes iptables-save's own layout a ``-m``
piece at a time and caches each piece, so a 430k-line dump is read in seconds. Both give the same
``RawRule``; svctrace.parsers.iptables_typing then types it.
"""

from __future__ import annotations

from svctrace.parsers.iptables_words import (
    _JUMP_OPTIONS,
    _MATCH_OPTIONS,
    _SPECIAL_OPTIONS,
    BASIC_OPTIONS,
    IMPLICIT_PROTOCOL_MODULES,
    MODULE_OPTIONS,
    NO_QUOTES,
    Fail,
    Option,
    RawMatch,
    group_options,
    is_option,
    short,
    split_rule,
    split_words,
)
from svctrace.record import record

_MATCH, _BASIC, _JUMP, _COUNTERS_OPT, _OPT = range(5)
# (kind, name/module/target, values, payload, intrapositioned '!'); payload: the Option for _BASIC and
# _OPT, the module's known options for _MATCH, goto for _JUMP, (packets, bytes) for _COUNTERS_OPT.
_Typed = tuple[int, str, tuple[str, ...], object, bool]
_Draft = tuple[str, "frozenset[str] | None", list[Option]]  # a match being filled: module, known, options
# What a rule says, typed: basic, matches, target, goto, target options, counters from -c
_Assembled = tuple[tuple[Option, ...], tuple[RawMatch, ...], "str | None", bool, tuple[Option, ...],
                   "tuple[int, int] | None"]
_RuleParts = tuple[str, tuple[Option, ...], tuple[RawMatch, ...], "str | None", bool, tuple[Option, ...],
                   "tuple[int, int] | None"]  # the chain name, then _Assembled
# Cached answers meaning "the fast path cannot take this; ask the general one".
_NOT_FAST: tuple[Option, ...] = (Option(""),)
_NO_TARGET: tuple[str, tuple[Option, ...]] = ("", ())


class RuleBuilder:
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
        self._matches: dict[tuple[object, ...], RawMatch] = {}
        self._pieces: dict[str, RawMatch] = {}
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
                raise Fail(f"{name} takes one module name, found {len(values)} words")
            module = self.intern(values[0])
            return (_MATCH, module, values, MODULE_OPTIONS.get(module), False)
        basic_name = BASIC_OPTIONS.get(name)
        if basic_name is not None:
            if basic_name == "-f":
                if values:
                    raise Fail(f"-f takes no value, found {short(values[0])}")
            elif len(values) != 1:
                raise Fail(f"{name} takes one value, found {len(values)}")
            elif basic_name in ("-s", "-d") and ":" in values[0]:
                self.saw_ipv6_address = True
            return (_BASIC, basic_name, values, Option(basic_name, values), inverted)
        if name in _JUMP_OPTIONS:
            if len(values) != 1 or inverted:
                raise Fail(f"{name} takes one target name, found {len(values)} words")
            return (_JUMP, self.intern(values[0]), values, _JUMP_OPTIONS[name], False)
        if len(values) != 2 or not all(v.isdigit() for v in values):
            raise Fail(f"{name} takes two numbers (packets bytes)")
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
                    raise Fail(f"option {name} belongs to no match module (no -m before it, and no -p "
                                "that implies one)")
            elif kind == _MATCH:
                if negated:
                    raise Fail("-m cannot be negated")
                drafts.append((name, payload, []))  # type: ignore[arg-type]
            elif kind == _BASIC:
                if name == "-p" and negated is inverted:
                    protocol = values[0]
                basic.append(self._typed_option(negated, typed))
            elif kind == _JUMP:
                if negated:
                    raise Fail(f"a target ({name}) cannot be negated")
                if target is not None:
                    raise Fail(f"two targets in one rule ({target} and {name})")
                target, goto, target_at = name, bool(payload), len(drafts)
            else:
                counters = payload  # type: ignore[assignment]
        matches = tuple(self._match(module, opts) for module, _known, opts in drafts)
        return tuple(basic), matches, target, goto, tuple(target_options), counters

    def _match(self, module: str, opts: list[Option]) -> RawMatch:
        key = (module, *map(id, opts))  # Options are shared, so their identity stands for their value
        m = self._matches.get(key)
        if m is None:
            m = self._matches[key] = RawMatch(module, tuple(opts))
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
            matches: tuple[RawMatch, ...] = ()
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
        except Fail:
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
            basic = BASIC_OPTIONS.get(words[i])
            value = words[i + 1]
            if basic is None or basic == "-f" or value == "!" or is_option(value):
                return _NOT_FAST
            if (basic == "-s" or basic == "-d") and ":" in value:
                self.saw_ipv6_address = True
            out.append(Option(basic, (value,), negated))
            i += 2
        return tuple(out)

    def _fast_target(self, tpart: str) -> tuple[str, tuple[Option, ...]]:
        """``"DNAT --to-destination 10.0.0.1:80"`` -> (target, its options); _NO_TARGET if not simple."""
        words, quoted = split_words(tpart)
        if not words or 0 in quoted or is_option(words[0]) or words[0] == "!":
            return _NO_TARGET
        if len(words) == 3 and not quoted and words[1] not in _SPECIAL_OPTIONS and is_option(words[1]) \
                and words[2] != "!" and not is_option(words[2]):
            # one option with one value (DNAT --to-destination, MARK --set-xmark, REJECT --reject-with)
            return self.intern(words[0]), (Option(self.intern(words[1]), (words[2],)),)
        opts = []
        for negated, name, values in group_options(words, quoted, 1):
            if name in _SPECIAL_OPTIONS:  # -p after -j and the like: the general path decides
                return _NO_TARGET
            opts.append(self._typed_option(negated, self._type(name, values)))
        return self.intern(words[0]), tuple(opts)

    def _new_piece(self, piece: str) -> RawMatch | None:
        if piece in self._impure:
            return None
        m = self._piece(piece)
        if m is None:
            self._impure.add(piece)
        else:
            self._pieces[piece] = m
        return m

    def _piece(self, piece: str) -> RawMatch | None:
        """``"tcp --dport 80"`` (text after " -m ") as a Match, or None when the piece's options
        would not all be the module's own (an option a known module does not take, a basic option, a
        target): then only the whole rule can say who owns them."""
        if piece[:19] == 'comment --comment "' and piece[-1] == '"' and piece.count('"') == 2:
            # the commonest piece, and often unique ("S -> IP:port"): no need for the general splitter
            return RawMatch("comment", (Option("--comment", (piece[19:-1],)),))
        module, _, rest = piece.partition(" ")
        if not module or '"' in module or is_option(module) or module == "!":
            return None
        known = MODULE_OPTIONS.get(module)
        words, quoted = split_words(rest) if '"' in rest else (rest.split(), NO_QUOTES)
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
        module = IMPLICIT_PROTOCOL_MODULES.get(protocol)
        if module is not None and name in MODULE_OPTIONS[module]:
            implicit: list[Option] = []
            drafts.append((module, MODULE_OPTIONS[module], implicit))
            return implicit
    if target_at < 0 and drafts:
        # A module we know that does not list this option (a newer iptables?): keep it with the
        # module it follows rather than lose it.
        return drafts[-1][2]
    return None


@record
class RawRule:
    """A rule's options as written, each with its owner, before typing: what the parser's stages 1 and 2
    make of one ``-A`` line (the tests of option ownership read this)."""

    chain: str
    basic: tuple[Option, ...]
    matches: tuple[RawMatch, ...]
    target: str | None
    goto: bool
    target_options: tuple[Option, ...]
    counters: tuple[int, int] | None

    def _basic(self, name: str) -> Option | None:
        return next((o for o in self.basic if o.name == name), None)

    @property
    def protocol(self) -> Option | None:
        return self._basic("-p")

    @property
    def source(self) -> Option | None:
        return self._basic("-s")

    @property
    def destination(self) -> Option | None:
        return self._basic("-d")

    @property
    def in_interface(self) -> Option | None:
        return self._basic("-i")

    @property
    def out_interface(self) -> Option | None:
        return self._basic("-o")

    def match(self, module: str) -> RawMatch | None:
        return next((m for m in self.matches if m.module == module), None)

    def option(self, name: str, module: str | None = None) -> Option | None:
        for m in self.matches:
            if module is None or m.module == module:
                opt = m.option(name)
                if opt is not None:
                    return opt
        return None

    def target_option(self, name: str) -> Option | None:
        return next((o for o in self.target_options if o.name == name), None)

    @property
    def dport(self) -> Option | None:
        return self.option("--dport") or self.option("--destination-port")


def raw_rule(line: str, builder: RuleBuilder | None = None) -> RawRule:
    """One ``-A`` line (without counters) as its raw, owned options; raises Fail on malformed text."""
    b = builder or RuleBuilder()
    return RawRule(*(b.fast(line) or b.general(line)))
