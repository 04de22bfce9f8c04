"""What a rule does: typed target options (DNAT, SNAT, MARK, ...) and the statements that steer the walk.

An iptables rule is its matches followed by a verdict, a jump or an action; an nftables rule is any
sequence of matches, actions, lookups and verdicts, evaluated left to right (svctrace.trace.walk).
"""

from __future__ import annotations

from svctrace.model.addresses import Prefix
from svctrace.model.matches import MARK_FULL_MASK, Match
from svctrace.record import record

# ---------------------------------------------------------------------------------------------------
# What a rule does besides jumping: typed target options.


@record
class NatRange:
    """``--to-destination`` / ``--to-source`` / ``dnat to``: ``10.0.0.1-10.0.0.3:80-90``."""

    first_ip: str | None  # None for a ports-only range (``:80``)
    last_ip: str | None
    first_port: int | None  # None when no port is given: the packet's port is kept
    last_port: int | None

    @property
    def is_single(self) -> bool:
        """One address and at most one port: the shape kube-proxy writes."""
        return self.first_ip == self.last_ip and self.first_port == self.last_port

    def __str__(self) -> str:
        host = ""
        if self.first_ip is not None:
            host = self.first_ip if self.first_ip == self.last_ip else f"{self.first_ip}-{self.last_ip}"
        port = ""
        if self.first_port is not None:
            port = str(self.first_port) if self.first_port == self.last_port else f"{self.first_port}-{self.last_port}"
        if port:
            shown = f"[{host}]" if ":" in host else host
            return f"{shown}:{port}"
        return host


@record
class DnatAction:
    """DNAT (and REDIRECT, whose address is the receiving interface's: ``redirect`` True)."""

    ranges: tuple[NatRange, ...]  # () when the destination could not be read: see ``problem``
    redirect: bool = False
    flags: tuple[str, ...] = ()  # random, persistent
    problem: str | None = None  # why the destination is not known
    raw: str = ""  # the destination as written, when it could not be read

    @property
    def first(self) -> NatRange | None:
        return self.ranges[0] if self.ranges else None


@record
class SnatAction:
    """SNAT to an address, or MASQUERADE (``to`` None: the outgoing interface's address)."""

    masquerade: bool
    to: NatRange | None = None
    flags: tuple[str, ...] = ()  # random, random-fully, persistent


@record
class MarkAction:
    """MARK / CONNMARK / nft ``meta mark set``: ``op`` set | xset | or | and | xor | save | restore."""

    field: str  # mark | ctmark
    op: str
    value: int = 0
    mask: int = MARK_FULL_MASK

    def apply(self, mark: int, ctmark: int) -> tuple[int, int]:
        """(mark, ctmark) after the action."""
        if self.op == "save":
            return mark, (ctmark & ~self.mask) | (mark & self.mask)
        if self.op == "restore":
            return (mark & ~self.mask) | (ctmark & self.mask), ctmark
        current = ctmark if self.field == "ctmark" else mark
        if self.op == "xset":
            new = (current & ~self.mask) ^ self.value
        elif self.op == "set":
            new = (current & ~self.mask) | self.value
        elif self.op == "or":
            new = current | self.value
        elif self.op == "and":
            new = current & self.value
        else:
            new = current ^ self.value
        new &= MARK_FULL_MASK
        return (mark, new) if self.field == "ctmark" else (new, ctmark)

    @property
    def words(self) -> str:
        prefix = "conn" if self.field == "ctmark" else ""
        if self.op in ("save", "restore"):
            return f"CONNMARK {self.op}"
        if self.op in ("set", "xset"):
            return f"{prefix}mark set to {self.value:#x}" if self.mask == MARK_FULL_MASK else \
                f"{prefix}mark set to {self.value:#x}/{self.mask:#x}"
        sym = {"or": "|=", "and": "&=", "xor": "^="}[self.op]
        return f"{prefix}mark {sym} {self.value:#x}"


@record
class RejectAction:
    with_: str | None = None


@record
class NotrackAction:
    """NOTRACK / ``-j CT --notrack`` / nft ``notrack``: the connection is not tracked (so not NATed)."""


@record
class OtherAction:
    """A target extension's options svctrace does not interpret (LOG, CT --zone, ...), as written."""

    text: str


Action = DnatAction | SnatAction | MarkAction | RejectAction | NotrackAction | OtherAction


# ---------------------------------------------------------------------------------------------------
# What a rule does to the walk: verdicts, jumps and (nftables) map lookups. An iptables rule is its
# matches followed by one of these or an Action; an nftables rule is any sequence of matches, actions
# and these, evaluated left to right.


@record
class Verdict:
    """accept | drop | reject | return | continue | queue (iptables ACCEPT, DROP, REJECT, RETURN in lower case)."""

    word: str
    reject_with: str | None = None


@record
class Jump:
    """Jump to a chain (or go to it: falling off the end then returns to the caller's caller)."""

    chain: str
    goto: bool = False


# An element of an nftables set or map key, per component of a concatenation: an address prefix, an
# address range (version, first, last), a number range (ports, marks) or a word (protocol, fib type).
ElementPart = Prefix | tuple[int, int, int] | tuple[int, int] | str


@record
class Element:
    """One set element, or one map element with the verdict it maps to."""

    key: tuple[ElementPart, ...]
    text: str  # as `nft list` prints the key
    verdict: Verdict | Jump | None = None  # maps only


@record
class SetLookup:
    """nftables ``KEY @set`` / ``KEY { ... }``: is the packet's key in the set? (``!=``: not in it)."""

    keys: tuple[str, ...]  # selectors: "ip daddr", "meta l4proto", "th dport", "ip saddr", ...
    set_name: str | None  # a named set (its elements are in the table), or None: ``elements`` below
    elements: tuple[Element, ...] = ()
    negated: bool = False

    @property
    def text(self) -> str:
        what = f"@{self.set_name}" if self.set_name else "{ " + ", ".join(e.text for e in self.elements) + " }"
        return f"{' . '.join(self.keys)} {'!= ' if self.negated else ''}{what}"


@record
class MapLookup:
    """nftables ``KEY vmap @map`` / ``KEY vmap { k : verdict, ... }``: the verdict of the matching element."""

    keys: tuple[str, ...]
    map_name: str | None
    elements: tuple[Element, ...] = ()

    @property
    def text(self) -> str:
        what = f"@{self.map_name}" if self.map_name else \
            "{ " + ", ".join(f"{e.text} : {_verdict_text(e.verdict)}" for e in self.elements) + " }"
        return f"{' . '.join(self.keys)} vmap {what}"


@record
class Numgen:
    """nftables ``numgen random mod N [offset K] vmap { ... }``: a random number picks the element."""

    mod: int
    offset: int
    map_name: str | None
    elements: tuple[Element, ...] = ()

    @property
    def text(self) -> str:
        off = f" offset {self.offset}" if self.offset else ""
        return f"numgen random mod {self.mod}{off} vmap ..."


@record
class SetUpdate:
    """nftables ``update @set { KEY }`` / ``add @set ...``: records the client (session affinity)."""

    set_name: str
    keys: tuple[str, ...] = ()


@record
class UnknownStatement:
    """An nftables statement svctrace cannot evaluate; ``tail`` is the verdict the rule ends in, if any."""

    text: str
    tail: Verdict | Jump | None = None


def _verdict_text(v: Verdict | Jump | None) -> str:
    if v is None:
        return "?"
    if isinstance(v, Jump):
        return f"{'goto' if v.goto else 'jump'} {v.chain}"
    return v.word


Statement = Match | Action | Verdict | Jump | SetLookup | MapLookup | Numgen | SetUpdate | UnknownStatement
