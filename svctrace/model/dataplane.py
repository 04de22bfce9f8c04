"""The node's dataplane as parsed from its dumps: iptables tables, chains and rules.

A rule keeps every option it was written with, in order, so that rules written by CNIs, Docker or
people (unknown modules and targets) are shown as they are. Convenience accessors answer the few
questions the resolver and tracer ask of kube-proxy's rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})


@dataclass(frozen=True, slots=True)
class Option:
    """One option of a rule: ``! --ctstate RELATED,ESTABLISHED`` is name ``--ctstate``, negated."""

    name: str
    values: tuple[str, ...] = ()
    negated: bool = False

    @property
    def value(self) -> str:
        return self.values[0] if self.values else ""

    def __str__(self) -> str:
        neg = "! " if self.negated else ""
        return f"{neg}{self.name} {' '.join(self.values)}".rstrip()


@dataclass(frozen=True, slots=True)
class Match:
    """``-m MODULE`` and the options that belong to it."""

    module: str
    options: tuple[Option, ...] = ()

    def option(self, name: str) -> Option | None:
        for opt in self.options:
            if opt.name == name:
                return opt
        return None


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``-A CHAIN ...`` line."""

    table: str
    chain: str
    index: int  # 1-based position in its chain, as `iptables -L --line-numbers` counts
    line: int  # line number in the dump it came from (0 when built in code)
    text: str  # the rule as written in the dump, without counters
    basic: tuple[Option, ...] = ()  # -p, -s, -d, -i, -o, -f (with negation)
    matches: tuple[Match, ...] = ()
    target: str | None = None
    goto: bool = False  # -g instead of -j
    target_options: tuple[Option, ...] = ()
    counters: tuple[int, int] | None = None  # [packets:bytes] when dumped with -c

    def _basic(self, name: str) -> Option | None:
        for opt in self.basic:
            if opt.name == name:
                return opt
        return None

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

    def match(self, module: str) -> Match | None:
        for m in self.matches:
            if m.module == module:
                return m
        return None

    def option(self, name: str, module: str | None = None) -> Option | None:
        """The first option called ``name`` (in ``module`` if given) among the rule's matches."""
        for m in self.matches:
            if module is not None and m.module != module:
                continue
            opt = m.option(name)
            if opt is not None:
                return opt
        return None

    def target_option(self, name: str) -> Option | None:
        for opt in self.target_options:
            if opt.name == name:
                return opt
        return None

    @property
    def comment(self) -> str | None:
        opt = self.option("--comment", "comment")
        return opt.value if opt is not None else None

    @property
    def dport(self) -> Option | None:
        return self.option("--dport") or self.option("--destination-port")

    @property
    def probability(self) -> float | None:
        opt = self.option("--probability", "statistic")
        if opt is None:
            return None
        try:
            return float(opt.value)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    policy: str | None = None  # ACCEPT/DROP for built-in chains, None for user chains ("-")
    packets: int = 0
    bytes: int = 0
    rules: tuple[Rule, ...] = ()
    # False when no ``:CHAIN`` line declared it and only ``-A CHAIN`` lines did (hand-written dumps);
    # iptables-restore would refuse such a dump, so a renderer may want to say so.
    declared: bool = True

    @property
    def builtin(self) -> bool:
        return self.policy is not None


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    chains: Mapping[str, Chain] = field(default_factory=dict)

    def chain(self, name: str) -> Chain | None:
        return self.chains.get(name)


@dataclass(frozen=True, slots=True)
class IptablesDump:
    """Everything one ``iptables-save`` (or ``ip6tables-save``) printed."""

    family: int = 4  # 4 or 6
    tables: Mapping[str, Table] = field(default_factory=dict)
    source: str = ""  # the file or command it came from, for messages
    backend: str | None = None  # "legacy" | "nf_tables" | None when the header does not say
    version: str | None = None  # iptables version from the header comment

    def table(self, name: str) -> Table | None:
        return self.tables.get(name)

    def chain(self, table: str, name: str) -> Chain | None:
        t = self.tables.get(table)
        return t.chains.get(name) if t is not None else None

    @property
    def rule_count(self) -> int:
        return sum(len(c.rules) for t in self.tables.values() for c in t.chains.values())
