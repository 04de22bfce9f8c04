"""nftables mode's dataplane: kube-proxy's ``ip kube-proxy`` / ``ip6 kube-proxy`` tables.

``nft -j list ruleset`` (libnftables JSON) and knftables transaction text (``add rule ...``) both become
these types. A rule keeps ``text``, the rule as ``nft list`` prints it (to show it), and ``stmts``, what
it does as typed statements (svctrace.model.matches), which the resolver and the tracer read; set and
map elements keep their text and their typed key and verdict the same way.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import field
from typing import Generic, TypeVar

from svctrace.model.actions import Element, ElementPart, Jump, Statement, Verdict
from svctrace.model.iptables import EndpointLine  # (text, address, port) read from text, as in iptables mode
from svctrace.record import record

KUBE_PROXY_TABLE = "kube-proxy"
LONG_SET = 16  # an anonymous set or map of more elements (and over 1 KB) is cut where its rule is shown per branch
_ANONYMOUS = re.compile(r"\{ ([^{}\"]*) \}")  # { a, b, c } without quotes or braces inside


def cut_long_sets(text: str, keep: str | None = None) -> str:
    """``text`` with each anonymous set or map of more than LONG_SET elements and over 1 KB cut to one element (the
    one whose value is ``keep``, else the first) and how many more there are: ``vmap { 1 : goto X, ... 4999 more }``.

    For a rule shown once per endpoint (a hop, a trace step): the numgen map of a Service of 5,000 endpoints is
    351 KB, and shown whole for each endpoint it made `svc -o json` 1.7 GB. The sets are found once per text."""
    if len(text) <= 1024:
        return text
    spans = _long_sets(text)
    if not spans:
        return text
    out: list[str] = []
    at = 0
    for start, end, first, count, by_value in spans:
        chosen = by_value.get(keep, first) if keep is not None else first
        out += [text[at:start], f"{{ {chosen}, ... {count - 1} more }}"]
        at = end
    return "".join(out) + text[at:]


@functools.lru_cache(maxsize=4)
def _long_sets(text: str) -> tuple[tuple[int, int, str, int, dict[str, str]], ...]:
    """(start, end, first element, element count, element by its value) of each set cut_long_sets cuts."""
    found = []
    for m in _ANONYMOUS.finditer(text):
        elements = m.group(1).split(", ")
        if len(elements) > LONG_SET and m.end() - m.start() > 1024:
            by_value = {e.partition(" : ")[2]: e for e in elements if " : " in e}
            found.append((m.start(), m.end(), elements[0], len(elements), by_value))
    return tuple(found)


@record
class NftRule:
    """One rule of a chain."""

    chain: str
    handle: int | None  # the kernel's handle (None when read from transaction text)
    index: int  # 1-based position in its chain
    text: str  # as `nft list` prints it, without the comment
    comment: str | None = None
    stmts: tuple[Statement, ...] = ()  # what it does, typed, in order

    @property
    def full_text(self) -> str:
        """The rule as `nft list` prints it, comment included."""
        if self.comment is None:
            return self.text
        return f'{self.text} comment "{self.comment}"'

    def shown_text(self, keep: str | None = None) -> str:
        """``full_text`` as a hop or step of one branch shows it: a long anonymous set or map cut to the element
        whose value is ``keep`` (cut_long_sets)."""
        return cut_long_sets(self.full_text, keep)


@record
class NftChain:
    """A chain; ``hook`` is set for base chains (attached to a netfilter hook)."""

    name: str
    rules: tuple[NftRule, ...] = ()
    type: str | None = None  # filter | nat | route (base chains)
    hook: str | None = None  # prerouting | input | forward | output | postrouting
    priority: int | None = None
    policy: str | None = None  # accept | drop (base chains)
    comment: str | None = None

    @property
    def is_base(self) -> bool:
        return self.hook is not None


H = TypeVar("H")


class _ByName(Mapping[str, NftChain], Generic[H]):
    """A mapping of chains whose names (and order) are those of ``_heads``."""

    __slots__ = ()
    _heads: Mapping[str, H]

    def __iter__(self) -> Iterator[str]:
        return iter(self._heads)

    def __len__(self) -> int:
        return len(self._heads)

    def __contains__(self, name: object) -> bool:
        return name in self._heads


class ChainHeads(_ByName[object]):
    """A big table's chains without their rules, where a chain that is only a name (all but the base chains
    of kube-proxy's table: 110,000 at 10k Services) is kept as its name and made an NftChain when asked for."""

    __slots__ = ("_heads",)

    def __init__(self, heads: Mapping[str, object]) -> None:
        self._heads = heads  # an NftChain, or anything else (the reader's) for a chain with nothing but its name

    def __getitem__(self, name: str) -> NftChain:
        got = self._heads[name]
        return got if isinstance(got, NftChain) else NftChain(name)

    def described(self) -> Iterator[NftChain]:
        """The chains with more than a name (a hook, type, priority, policy or comment)."""
        return (c for c in self._heads.values() if isinstance(c, NftChain))


class LazyChains(_ByName[NftChain]):
    """A table's chains whose rules are typed on first use (a 10,000-Service table has 200,000 rules and a
    Service needs a dozen chains); the last ``keep`` chains used stay typed."""

    __slots__ = ("_heads", "_load", "_typed", "_keep", "_count", "_lines")

    def __init__(self, heads: Mapping[str, NftChain], load: Callable[[str], tuple[NftRule, ...]],
                 keep: int = 50_000, count: Callable[[str], int] | None = None,
                 lines: Callable[[str], list[EndpointLine] | None] | None = None) -> None:
        self._heads = heads  # each chain without its rules
        self._load = load  # a chain's rules, typed
        self._typed: OrderedDict[str, NftChain] = OrderedDict()
        self._keep = keep
        self._count = count  # a chain's number of rules, without typing them
        self._lines = lines  # an endpoint chain's rules read without typing them (None: not of that shape)

    def endpoint_lines(self, name: str) -> list[EndpointLine] | None:
        """(text, address, port; None: the hairpin mark) of each rule of a chain whose rules are all of kube-proxy's
        two endpoint shapes, read without typing them; None when it is not such a chain, or not here."""
        if self._lines is None or name not in self._heads:
            return None
        return self._lines(name)

    def keep_at_most(self, n: int) -> None:
        """Keep at most the ``n`` chains used last typed (a sweep of every Service types each chain once)."""
        self._keep = n
        while len(self._typed) > n:
            self._typed.popitem(last=False)

    def heads(self) -> Mapping[str, NftChain]:
        """Every chain without its rules (name, hook, priority...): for questions that need no rule."""
        return self._heads

    def rule_count(self, name: str) -> int:
        if self._count is not None and name not in self._typed:
            return self._count(name)
        return len(self[name].rules)

    def __getitem__(self, name: str) -> NftChain:
        got = self._typed.get(name)
        if got is not None:
            self._typed.move_to_end(name)
            return got
        head = self._heads[name]
        got = NftChain(head.name, self._load(name), head.type, head.hook, head.priority, head.policy, head.comment)
        self._typed[name] = got
        if len(self._typed) > self._keep:
            self._typed.popitem(last=False)
        return got


@record
class NftElement:
    """A set element (``value`` None) or a map element ``key : value``.

    ``key`` is the element as `nft list` prints it (``172.30.0.41 . tcp . 80``); ``value`` is the verdict
    or data (``goto service-...``, ``drop``).
    """

    key: str
    value: str | None = None
    comment: str | None = None
    parts: tuple[ElementPart, ...] = ()  # the key typed, per component of the concatenation
    verdict: Verdict | Jump | None = None  # a verdict map's value, typed

    @property
    def typed(self) -> Element:
        return Element(self.parts, self.key, self.verdict)

    @property
    def text(self) -> str:
        comment = f' comment "{self.comment}"' if self.comment is not None else ""
        return f"{self.key}{comment}" + (f" : {self.value}" if self.value is not None else "")


@record
class NftSet:
    """A named set (``is_map`` False) or map (``is_map`` True, ``data_type`` the value type)."""

    name: str
    type: str  # key type, concatenations joined with " . " (ipv4_addr . inet_proto . inet_service)
    is_map: bool = False
    data_type: str | None = None  # maps: verdict, ipv4_addr, ...
    flags: tuple[str, ...] = ()
    timeout: str | None = None
    comment: str | None = None
    elements: tuple[NftElement, ...] = ()
    timeout_seconds: int | None = None  # ``timeout`` read as seconds

    def lookup(self, key: str) -> NftElement | None:
        """The element whose key is exactly ``key`` (as `nft list` prints it)."""
        for elem in self.elements:
            if elem.key == key:
                return elem
        return None


@record
class NftTable:
    family: str  # ip | ip6 | inet | ...
    name: str
    chains: Mapping[str, NftChain] = field(default_factory=dict)
    sets: Mapping[str, NftSet] = field(default_factory=dict)
    maps: Mapping[str, NftSet] = field(default_factory=dict)
    comment: str | None = None

    @property
    def ref(self) -> str:
        """``ip kube-proxy``: how nft names the table."""
        return f"{self.family} {self.name}"

    def chain(self, name: str) -> NftChain | None:
        return self.chains.get(name)

    def heads(self) -> Mapping[str, NftChain]:
        """The chains for questions about names, hooks and priorities: a big table's without typing its rules."""
        chains = self.chains
        return chains.heads() if isinstance(chains, LazyChains) else chains

    def rule_count(self, name: str) -> int:
        chains = self.chains
        return chains.rule_count(name) if isinstance(chains, LazyChains) else len(chains[name].rules)

    def endpoint_lines(self, name: str) -> list[EndpointLine] | None:
        """An endpoint chain of kube-proxy's two usual rules, read without typing it (LazyChains.endpoint_lines);
        None otherwise (a table read whole is typed already)."""
        chains = self.chains
        return chains.endpoint_lines(name) if isinstance(chains, LazyChains) else None

    def base_chains(self) -> list[NftChain]:
        """The chains attached to a netfilter hook (without their rules, in a big table)."""
        heads = self.heads()
        return [c for c in (heads.described() if isinstance(heads, ChainHeads) else heads.values()) if c.is_base]


@record
class NftRuleset:
    tables: tuple[NftTable, ...] = ()
    source: str = ""  # the file it was read from, or "live"

    def table(self, family: str, name: str = KUBE_PROXY_TABLE) -> NftTable | None:
        for t in self.tables:
            if t.family == family and t.name == name:
                return t
        return None

    def kube_proxy(self, ip_family: int) -> NftTable | None:
        """kube-proxy's table for an IP family (``ip kube-proxy`` or ``ip6 kube-proxy``)."""
        return self.table("ip6" if ip_family == 6 else "ip")
