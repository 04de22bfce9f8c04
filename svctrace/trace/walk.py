"""The kernel walk, shared by every proxy mode: chains of typed statements, hooks in netfilter's order.

A mode gives the walker a ``Ruleset``: its chains (each rule a sequence of typed statements,
svctrace.model.matches), and which chains run on each hook at which priority. The walker does the rest
the same way for iptables and nftables: rules evaluated in order, a statement at a time; jumps, gotos
and verdicts; NAT; marks; map lookups; and, for the first packet of a connection (docs/tracer.md):

* from a pod or from outside: PREROUTING; routing; a local destination -> INPUT (then a mode's
  LOCAL_IN hook, IPVS); otherwise FORWARD and POSTROUTING.
* from the node itself: OUTPUT up to the nat chains; routing; the rest of OUTPUT; POSTROUTING; a local
  destination then loops back through lo: PREROUTING and INPUT again, but no nat chain (conntrack
  already holds both NAT bindings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from svctrace.model.actions import (
    DnatAction,
    Element,
    Jump,
    MapLookup,
    MarkAction,
    NotrackAction,
    Numgen,
    OtherAction,
    RejectAction,
    SetLookup,
    SetUpdate,
    SnatAction,
    UnknownStatement,
    Verdict,
)
from svctrace.model.addresses import Prefix
from svctrace.model.matches import Match
from svctrace.model.trace import Packet, TraceOptions, TraceResult, TraceStep, format_address
from svctrace.record import record
from svctrace.trace.engine import Branch, Matcher, NodeView, merge_branches, undecided
from svctrace.trace.outcomes import finish, martian

if TYPE_CHECKING:  # a type alias, for annotations only
    from svctrace.model.actions import Statement

Flow = str  # "return" (back to the caller), or how the hook ends: "accept", "drop", "reject"

# A hook at LOCAL_IN, after INPUT, for a mode that takes packets over there (IPVS): given a branch
# delivered locally, None leaves it delivered; otherwise the branches it becomes, each with "out" (sent on
# through LOCAL_OUT and POSTROUTING, as IPVS does after rewriting the destination), "local" (rewritten but
# still delivered on this node) or a verdict (DROP/REJECT) that ends it.
LocalIn = Callable[[Branch], "list[tuple[Branch, str]] | None"]

# Priorities of netfilter's NAT hooks: below (or at) DNAT, routing has not happened yet on OUTPUT.
NAT_DST_PRIORITY = -100


class RuleLike(Protocol):
    @property
    def index(self) -> int: ...


class ChainLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def policy(self) -> str | None: ...


@record
class HookChain:
    """A chain a hook runs: its table, name, priority, and whether it is a nat chain."""

    table: str
    chain: str
    priority: int
    nat: bool


class Ruleset(Protocol):
    """What the walker needs from a mode's rules."""

    def hook_chains(self, hook: str) -> Sequence[HookChain]:
        """The chains of a hook (prerouting, input, forward, output, postrouting) in the kernel's order."""

    def rules(self, table: str, chain: str) -> Sequence[object] | None:
        """The rules of a chain, or None when there is no such chain."""

    def statements(self, table: str, chain: str, rule: object) -> Sequence[Statement]:
        """What a rule does, in order."""

    def first_statement(self, table: str, chain: str, rule: object) -> Statement | None:
        """``statements(...)[0]`` when the rule has one, without building the rest (None: build them)."""

    def rule_step(self, table: str, chain: str, rule: object, action: str) -> TraceStep: ...

    def policy(self, table: str, chain: str) -> tuple[str, TraceStep] | None:
        """The verdict when the packet falls off a base chain, and the step that shows it; None: accept,
        nothing to show."""

    def verdict_word(self, word: str) -> str:
        """How a verdict is shown in a step (ACCEPT, DROP, RETURN or return)."""

    def element_verdicts(self, table: str, name: str) -> tuple[tuple[Element, ...], bool] | None:
        """A named set or map's elements and whether it is dynamic (filled at run time); None: no such set."""

    def target_is_chain(self, table: str, name: str) -> bool: ...


@dataclass
class Walker:
    ruleset: Ruleset
    node: NodeView
    matcher: Matcher
    loose_jumps: bool = False  # a jump to a missing chain: a no-op (nft refuses such rules; iptables does too)
    lost: float = 0.0
    steps: int = 0  # rules evaluated so far, for the work bound (TraceOptions.max_steps)
    record_match: bool = True  # a rule with no action still gets a "matched" step (iptables)
    kube_mark_masq: str | None = None  # the chain whose absence is stood in for by the masquerade mark
    nft_words: bool = False  # steps in nft's words: marks as the value they become, NAT as written
    nat_tables: frozenset[str] = field(default_factory=frozenset)
    # A jump to a chain a partial dump does not show that stands for a DNAT to one endpoint (iptables KUBE-SEP):
    # the branch is DNATed to an address the dump does not give.
    unseen_endpoint: Callable[[str], bool] | None = None
    # The ways the rules met so far split a connection, by the rule (or hook) that splits it, counted where the
    # branches split off leave the chain (a statistic rule jumping to an endpoint, a numgen map's gotos, the real
    # servers IPVS chose among): a Service of 5,000 endpoints is 5,000 outcomes, each traced on, and the bounds
    # grow with them, as an input's own size. Splits whose branches all go on in the chain (k rules that each
    # double every branch: 2^k) count for nothing: that blow-up stays bounded, and its cost with it.
    ways: dict[object, int] = field(default_factory=dict)
    ways_total: int = 0
    _split: int = 0  # alternatives the rule being run split branches into (run_chain decides whether they count)

    @property
    def options(self) -> TraceOptions:
        return self.node.options

    def split_by(self, key: object, ways: int) -> None:
        """``key`` (a rule, a hook) may split a connection ``ways`` ways."""
        before = self.ways.get(key, 0)
        if ways > before:
            self.ways[key] = ways
            self.ways_total += ways - before

    @property
    def max_states(self) -> int:
        """Live branches kept at once: TraceOptions.max_states, or two per way the rules split, if more."""
        return max(self.options.max_states, 2 * self.ways_total)

    @property
    def max_steps(self) -> int:
        """Rule evaluations before jumps are no longer followed: TraceOptions.max_steps, or 64 per way, if more."""
        return max(self.options.max_steps, 64 * self.ways_total)

    def merge(self, branches: list[Branch], where: str) -> list[Branch]:
        merged, lost = merge_branches(branches, self.max_states, where, self.node.warn)
        self.lost += lost
        return merged

    # -- chains -------------------------------------------------------------------------------------

    def run_chain(self, table: str, name: str, branches: list[Branch], depth: int,
                  stack: tuple[str, ...]) -> list[tuple[Branch, Flow]]:
        outer = self._split  # (the calling rule's splits, counted by its own chain once this one returns)
        try:
            return self._run_chain(table, name, branches, depth, stack)
        finally:
            self._split = outer

    def _run_chain(self, table: str, name: str, branches: list[Branch], depth: int,
                   stack: tuple[str, ...]) -> list[tuple[Branch, Flow]]:
        rules = self.ruleset.rules(table, name)
        done: list[tuple[Branch, Flow]] = []
        if rules is None:
            return [(b, "return") for b in branches]
        active = branches
        check = self.matcher.check
        for rule in rules:
            if not active:
                break
            # One branch whose first match fails goes on unchanged (as run_rule and merge would have it): a
            # KUBE-SERVICES of 10,000 rules is mostly this.
            if len(active) == 1:
                first = self.ruleset.first_statement(table, name, rule)
                if first is not None and _is_match(first) and check(first, active[0]) is False:  # type: ignore[arg-type]
                    self.steps += 1
                    continue
            stmts = self.ruleset.statements(table, name, rule)
            nxt: list[Branch] = []
            self._split = 0
            for br in active:
                c, d = self.run_rule(table, name, rule, stmts, br, depth, stack)
                nxt.extend(c)
                done.extend(d)
            if self._split and len(nxt) <= len(active):  # the branches split off left the chain
                self.split_by((table, name, getattr(rule, "index", id(rule))), self._split)
            active = self.merge(nxt, f"{table} {name} rule {getattr(rule, 'index', '?')}")
        done.extend((b, "return") for b in active)
        return done

    def run_rule(self, table: str, chain: str, rule: object, stmts: Sequence[Statement], br: Branch, depth: int,
                 stack: tuple[str, ...]) -> tuple[list[Branch], list[tuple[Branch, Flow]]]:
        """(branches that go on to the next rule, branches that ended with a flow)."""
        cont: list[Branch] = []
        done: list[tuple[Branch, Flow]] = []

        def step(b: Branch, action: str) -> Branch:
            return b.step(self.ruleset.rule_step(table, chain, rule, action))

        self.steps += 1
        pending: list[tuple[Branch, int]] = [(br, 0)]
        n = len(stmts)
        check = self.matcher.check
        while pending:
            cur, i = pending.pop()
            if i >= n:
                if self.record_match and not any(not _is_match(s) for s in stmts):
                    cur = step(cur, "matched")
                cont.append(cur)
                continue
            stmt = stmts[i]
            if _is_match(stmt):
                res = check(stmt, cur)  # type: ignore[arg-type]
                if res is True:
                    pending.append((cur, i + 1))
                elif res is False:
                    cont.append(cur)
                else:
                    self._split = max(self._split, len(res) - 1)
                    for b, matched in self._alternatives(cur, res, step):
                        if matched:
                            pending.append((b, i + 1))
                        else:
                            cont.append(b)
                continue
            c, d, go_on = self.act(table, chain, rule, stmt, cur, depth, stack, step)
            cont.extend(c)
            done.extend(d)
            pending.extend((b, i + 1) for b in go_on)
        return cont, done

    def _alternatives(self, cur: Branch, res: list, step: Callable[[Branch, str], Branch]  # type: ignore[type-arg]
                      ) -> list[tuple[Branch, bool]]:
        out = []
        for alt in res:
            b = replace(cur, prob=cur.prob * alt.factor) if alt.factor != 1.0 else cur
            if alt.pin is not None:
                b = replace(b, pinned=alt.pin)
            if alt.unpin is not None:
                b = replace(b, not_pinned=b.not_pinned | {alt.unpin})
            if alt.local is not None:
                b = replace(b, local_assumed=(*b.local_assumed, alt.local))
            if alt.assume is not None:
                b = b.assume(*alt.assume).note(
                    ("if it matches: " if alt.assume[1] else "if it does not match: ") + alt.assume[0])
            elif alt.note:
                b = b.note(alt.note)
            if alt.action:
                b = step(b, alt.action)
            out.append((b, alt.matched))
        return out

    # -- what a statement does ------------------------------------------------------------------------

    def act(self, table: str, chain: str, rule: object, stmt: Statement, cur: Branch, depth: int,
            stack: tuple[str, ...], step: Callable[[Branch, str], Branch]
            ) -> tuple[list[Branch], list[tuple[Branch, Flow]], list[Branch]]:
        """(branches that skip to the next rule, ended branches, branches that go on to the next statement)."""
        if isinstance(stmt, Verdict):
            return self.verdict(table, chain, stmt, cur, depth, stack, step)
        if isinstance(stmt, Jump):
            entered = step(cur, "goto" if stmt.goto else "jump")
            entered = replace(entered, path=(*entered.path[:-1], replace(entered.path[-1], target=stmt.chain)))
            c, d = self.jump(table, chain, stmt, entered, depth, stack)
            return c, d, []
        if isinstance(stmt, DnatAction):
            return [], [self.dnat(stmt, cur, step)], []
        if isinstance(stmt, SnatAction):
            how = "MASQUERADE" if stmt.masquerade else f"SNAT to {stmt.to if stmt.to is not None else '?'}"
            shown = how
            if self.nft_words:
                shown = " ".join(("masquerade" if stmt.masquerade else f"snat to {stmt.to}", *stmt.flags))
            return [], [(replace(step(cur, shown), snat=how), "accept")], []
        if isinstance(stmt, MarkAction):
            mark, ctmark = stmt.apply(cur.mark, cur.ctmark)
            words = stmt.words
            if stmt.op in ("set", "xset") or self.nft_words:  # say what the mark became
                conn = stmt.field == "ctmark"
                words = f"{'conn' if conn else ''}mark set to {ctmark if conn else mark:#x}"
            return [], [], [replace(step(cur, words), mark=mark, ctmark=ctmark)]
        if isinstance(stmt, NotrackAction):
            return [], [], [replace(step(cur, "conntrack disabled (NOTRACK)"), untracked=True)]
        if isinstance(stmt, SetUpdate):
            return [], [], [step(cur, f"record the client in @{stmt.set_name} (session affinity)")]
        if isinstance(stmt, RejectAction):
            return [], [(step(cur, self.ruleset.verdict_word("reject")), "reject")], []
        if isinstance(stmt, (MapLookup, Numgen)):
            c, d = self.lookup(table, chain, rule, stmt, cur, depth, stack, step)
            return c, d, []
        if isinstance(stmt, UnknownStatement):
            cont: list[Branch] = []
            done: list[tuple[Branch, Flow]] = []
            for b, matched in self._alternatives(cur, undecided(f"{stmt.text} (not modelled)"), step):
                if matched and stmt.tail is not None:
                    # Whatever it does, the rule may end in a verdict the tracer can still see.
                    c, d, g = self.act(table, chain, rule, stmt.tail, b, depth, stack, step)
                    cont.extend(c + g)
                    done.extend(d)
                else:
                    cont.append(b)
            return cont, done, []
        if isinstance(stmt, OtherAction):
            return self.other(table, chain, rule, stmt, cur, step)
        raise TypeError(f"not a statement: {stmt!r}")

    def other(self, table: str, chain: str, rule: object, stmt: OtherAction, cur: Branch,
              step: Callable[[Branch, str], Branch]) -> tuple[list[Branch], list[tuple[Branch, Flow]], list[Branch]]:
        """A target extension the walker knows only by name (iptables)."""
        target = stmt.text
        if target in _PASSIVE_TARGETS:
            return [], [], [step(cur, f"{target} (no effect on the verdict)")]
        if target in _UNMODELLED_TERMINAL:
            b = replace(step(cur, f"uncertain: target {target} not modelled"), loose=True)
            b = b.note(f"target {target} not modelled; assumed it lets the packet through")
            return [], [(b, "accept")], []
        if target == self.kube_mark_masq:
            # kube-proxy's own chain is missing from the dump: do what it would have done.
            mark = self.options.masquerade_mark
            b = step(cur, f"mark {mark:#x} (chain {target} not in the dump; assumed)")
            b = b.note(f"{table} {target} is not in the dump; assumed it sets mark {mark:#x}")
            return [], [], [replace(b, mark=cur.mark | mark)]
        if target.startswith("CT"):
            return [], [], [step(cur, "CT (connection template; no effect on the verdict)")]
        if target in ("MARK", "CONNMARK"):
            return [], [], [replace(step(cur, f"uncertain: {target} options not understood"), loose=True)]
        if target in _BUILTIN:
            self.node.warn(f"{table} {chain} rule {getattr(rule, 'index', '?')} jumps to built-in chain {target}")
        else:
            self.node.warn(f"{table} {chain} rule {getattr(rule, 'index', '?')} jumps to {target}, which is "
                           "neither a chain in this table nor a target svctrace knows; treated as a no-op")
        return [], [], [replace(step(cur, f"uncertain: target {target} not modelled"), loose=True)]

    def verdict(self, table: str, chain: str, v: Verdict, cur: Branch, depth: int, stack: tuple[str, ...],
                step: Callable[[Branch, str], Branch]
                ) -> tuple[list[Branch], list[tuple[Branch, Flow]], list[Branch]]:
        word = v.word
        if word == "continue":
            return [step(cur, "continue")], [], []
        if word in ("accept", "drop", "reject", "return"):
            return [], [(step(cur, self.ruleset.verdict_word(word)), word)], []
        if word == "queue":
            b = replace(step(cur, "uncertain: verdict queue not modelled"), loose=True)
            return [], [(b.note("queue not modelled; assumed it lets the packet through"), "accept")], []
        return [replace(step(cur, f"uncertain: verdict {word} not modelled"), loose=True)], [], []

    def jump(self, table: str, chain: str, j: Jump, b: Branch, depth: int,
             stack: tuple[str, ...]) -> tuple[list[Branch], list[tuple[Branch, Flow]]]:
        target = j.chain
        kind = "goto" if j.goto else "jump"
        if not self.ruleset.target_is_chain(table, target) and self.unseen_endpoint is not None \
                and self.unseen_endpoint(target):
            b = replace(b, dnat=True, via=target).note(
                f"{target} is not in the dump: it DNATs to an endpoint whose address the dump does not show")
            return [], [(b, "accept")]
        if not self.ruleset.target_is_chain(table, target):
            self.node.warn(f"{table} {chain} jumps to {target}, which is not in the table; treated as a no-op")
            return [replace(b, loose=True)], []
        over = self.steps > self.max_steps
        if target in stack or depth >= self.options.max_depth or over:
            if over:
                self.node.warn(f"more than {self.max_steps:,} rule evaluations: jumps were no longer "
                               "followed from here, so the outcomes after them are uncertain")
            elif target in stack:
                self.node.warn(f"{table} chain {target} jumps back into itself ({' -> '.join((*stack, target))}); "
                               "the kernel would refuse such rules")
            else:
                self.node.warn(f"jumps nested deeper than {self.options.max_depth} chains at {table} {target}")
            guarded = replace(b.path[-1], action=f"{kind} not followed ({'work limit' if over else 'loop guard'})")
            return [replace(b, loose=True, path=(*b.path[:-1], guarded))], []
        results = self.run_chain(table, target, [b], depth + 1, (*stack, target))
        cont = [x for x, flow in results if flow == "return" and not j.goto]
        # After a goto, falling off (or returning from) the target returns to *our* caller.
        done = [(x, flow) for x, flow in results if not (flow == "return" and not j.goto)]
        return cont, done

    def dnat(self, stmt: DnatAction, br: Branch, step: Callable[[Branch, str], Branch]) -> tuple[Branch, Flow]:
        first = stmt.first
        if first is None or (first.first_ip is None and not stmt.redirect):
            b = replace(step(br, "uncertain: DNAT destination not understood"), loose=True)
            return b.note(f"DNAT destination not understood{': ' + stmt.problem if stmt.problem else ''}"), "accept"
        port = first.first_port if first.first_port is not None else br.dport
        if stmt.redirect:
            ip = self.redirect_address()
            b = step(br, f"REDIRECT to {format_address(ip, port)}")
            b = b.note("REDIRECT rewrites to an address of the receiving interface; the node address shown may differ")
            return replace(b, dst=ip, dport=port, dnat=True), "accept"
        ip = first.first_ip or br.dst
        b = step(br, f"DNAT to {format_address(ip, port)}")
        if not first.is_single or len(stmt.ranges) > 1:
            b = b.note(f"DNAT picks one address/port out of {', '.join(map(str, stmt.ranges))}; the first is shown")
        return replace(b, dst=ip, dport=port, dnat=True), "accept"

    def redirect_address(self) -> str:
        packet = self.node.packet
        loopback = "::1" if packet.family == 6 else "127.0.0.1"
        if packet.origin == "node":
            return loopback
        fam = sorted(v for v in self.node.local if v[0] == packet.family)
        if not fam:
            return loopback
        return Prefix(fam[0][0], fam[0][1], 32 if fam[0][0] == 4 else 128).address

    def lookup(self, table: str, chain: str, rule: object, stmt: MapLookup | Numgen, br: Branch, depth: int,
               stack: tuple[str, ...], step: Callable[[Branch, str], Branch]
               ) -> tuple[list[Branch], list[tuple[Branch, Flow]]]:
        name = stmt.map_name
        if name is not None:
            found = self.ruleset.element_verdicts(table, name)
            if found is None:
                self.node.warn(f"{table} {chain} rule {getattr(rule, 'index', '?')} looks up @{name}, which is "
                               "not in the table")
                elements: tuple[Element, ...] = ()
            else:
                elements = found[0]
        else:
            elements = stmt.elements
        cont: list[Branch] = []
        done: list[tuple[Branch, Flow]] = []
        if isinstance(stmt, Numgen):
            return self.numgen(table, chain, stmt, elements, br, depth, stack, step)
        parts = self.matcher.key_parts(stmt.keys, br)
        if parts is None:
            for b, matched in self._alternatives(br, undecided(f"{stmt.text} (key not modelled)"), step):
                if not matched:
                    cont.append(b)
            return cont, done
        element = next((e for e in elements if self.matcher.element_hit(parts, e)), None)
        if element is None or element.verdict is None:
            return [br], []
        b = step(br, f"element {element.text} : {_verdict_text(element.verdict)}")
        return self.map_verdict(table, chain, element.verdict, b, depth, stack)

    def numgen(self, table: str, chain: str, stmt: Numgen, elements: tuple[Element, ...], br: Branch, depth: int,
               stack: tuple[str, ...], step: Callable[[Branch, str], Branch]
               ) -> tuple[list[Branch], list[tuple[Branch, Flow]]]:
        """``numgen random mod N``: each element's values take their share; values no element holds miss.

        The walk is over the elements (bounded by the table), never over the N values."""
        cont: list[Branch] = []
        done: list[tuple[Branch, Flow]] = []
        mod, offset = stmt.mod, stmt.offset
        if mod <= 0:
            return [replace(step(br, "uncertain: numgen modulus not understood"), loose=True)], []
        covered = 0
        for e in elements:
            part = e.key[0] if len(e.key) == 1 else None
            if not (isinstance(part, tuple) and len(part) == 2):
                continue
            lo, hi = max(part[0], offset), min(part[1], offset + mod - 1)
            if lo > hi:
                continue
            count = hi - lo + 1
            covered += count
            share = replace(br, prob=br.prob * count / mod)
            what = f"numgen {lo}" if count == 1 else f"numgen {lo}-{hi}"
            b = step(share, f"branch: {what}, probability {count}/{mod} taken")
            if e.verdict is None:
                cont.append(b)
                continue
            c, d = self.map_verdict(table, chain, e.verdict, b, depth, stack)
            cont.extend(c)
            done.extend(d)
        if len(cont) <= 1:  # the elements' branches left the chain: each a way (a Service's endpoints)
            self.split_by((table, chain, "numgen", stmt.mod, stmt.offset, stmt.map_name), len(done))
        if covered < mod:
            # numgen gave a value no element has: the lookup misses and the rule does not match.
            missing = mod - covered
            cont.append(step(replace(br, prob=br.prob * missing / mod),
                             f"numgen: {missing} of {mod} values have no element (probability {missing}/{mod})"))
        return cont, done

    def map_verdict(self, table: str, chain: str, v: Verdict | Jump, b: Branch, depth: int,
                    stack: tuple[str, ...]) -> tuple[list[Branch], list[tuple[Branch, Flow]]]:
        if isinstance(v, Jump):
            return self.jump(table, chain, v, b, depth, stack)
        if v.word == "continue":
            return [b], []
        if v.word in ("accept", "drop", "reject", "return"):
            return [], [(b.step(self._last_rule_step(b, self.ruleset.verdict_word(v.word))), v.word)]
        return [replace(b, loose=True).note(f"map verdict {v.word!r} not modelled")], []

    @staticmethod
    def _last_rule_step(b: Branch, action: str) -> TraceStep:
        last = b.path[-1]
        return TraceStep(last.table, last.chain, last.rule_index, last.rule_text, action)

    # -- hooks --------------------------------------------------------------------------------------

    def hook(self, hook: str, branches: list[Branch], *, nat: bool = True, after: int | None = None,
             upto: int | None = None) -> tuple[list[Branch], list[tuple[Branch, str]]]:
        """Walk a hook's chains (those with priority in (after, upto]): (branches going on, ended ones)."""
        ended: list[tuple[Branch, str]] = []
        for hc in self.ruleset.hook_chains(hook):
            if not branches:
                break
            if (after is not None and hc.priority <= after) or (upto is not None and hc.priority > upto):
                continue
            if hc.nat and not nat:
                continue
            if hc.nat:
                # The nat table only sees tracked packets, and NATs a connection once per direction: after
                # a DNAT in an earlier nat chain of this hook, later ones are not consulted.
                skip = [b for b in branches if b.untracked or (b.dnat and hook in ("prerouting", "output"))]
                walk = [b for b in branches if not (b.untracked or (b.dnat and hook in ("prerouting", "output")))]
            else:
                skip, walk = [], branches
            results = self.run_chain(hc.table, hc.chain, walk, 0, (hc.chain,))
            go_on: list[Branch] = list(skip)
            policy = self.ruleset.policy(hc.table, hc.chain)
            for b, flow in results:
                if flow == "return":
                    if policy is not None:
                        word, shown = policy
                        b = b.step(shown)
                        flow = word
                    else:
                        flow = "accept"
                if flow in ("drop", "reject"):
                    ended.append((b, flow.upper()))
                else:
                    go_on.append(b)
            branches = self.merge(go_on, f"{hc.table} {hc.chain}")
        return branches, ended


def _is_match(stmt: Statement) -> bool:
    return isinstance(stmt, (SetLookup, *_MATCH_TYPES))


def _verdict_text(v: Verdict | Jump) -> str:
    if isinstance(v, Jump):
        return f"{'goto' if v.goto else 'jump'} {v.chain}"
    return v.word


_MATCH_TYPES: tuple[type, ...] = tuple(getattr(Match, "__args__", ()))
_BUILTIN = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
# Targets that end the walk of the current table but whose effect the tracer does not model.
_UNMODELLED_TERMINAL = frozenset({"QUEUE", "NFQUEUE", "SYNPROXY", "TPROXY", "NETMAP", "CLUSTERIP", "TARPIT",
                                  "DNPT", "SNPT"})
# Targets that change nothing the tracer looks at and let the packet continue.
_PASSIVE_TARGETS = frozenset({"LOG", "NFLOG", "ULOG", "TRACE", "CLASSIFY", "DSCP", "TOS", "TTL", "HL",
                              "TCPMSS", "CHECKSUM", "AUDIT", "SET", "SECMARK", "CONNSECMARK", "IDLETIMER",
                              "LED", "RATEEST", "TEE", "HMARK", "ECN", "TCPOPTSTRIP", "IPV4OPTSSTRIP"})


# ---------------------------------------------------------------------------------------------------
# The path of the first packet through the hooks


def route_step(br: Branch, local: bool, via: str, hook_names: tuple[str, str]) -> Branch:
    where = "a local address" if local else "not a local address"
    action = f"route: deliver locally ({hook_names[0]})" if local else f"route: forward ({hook_names[1]})"
    return br.step(TraceStep("routing", via, None, f"{br.dst} is {where}", action))


def kernel_path(walker: Walker, packet: Packet, *, mode: str, local_in: LocalIn | None = None,
                hook_names: dict[str, str] | None = None) -> TraceResult:
    """One new connection through every hook, in netfilter's order; the outcomes and warnings."""
    node = walker.node
    options = node.options
    names = hook_names or {h: h for h in ("prerouting", "input", "forward", "output", "postrouting")}
    start = Branch(src=packet.src, dst=packet.dst, sport=packet.sport, dport=packet.dport,
                   in_iface=packet.in_interface)
    ended: list[tuple[Branch, str]] = []

    def run(hook: str, branches: list[Branch], **kw: object) -> list[Branch]:
        go_on, stopped = walker.hook(hook, branches, **kw)  # type: ignore[arg-type]
        ended.extend(stopped)
        return go_on

    def not_martian(branches: list[Branch], via: str) -> list[Branch]:
        kept = []
        for b in branches:
            reason = martian(b, packet.origin, node.is_local)
            if reason is None:
                kept.append(b)
            elif packet.family == 6 or options.route_localnet is False:
                why = "IPv6 never routes ::1 off the node" if packet.family == 6 else "route_localnet=0"
                ended.append((b.step(TraceStep("routing", via, None, reason, f"DROP (martian; {why})")), "DROP"))
            else:
                if options.route_localnet is None:
                    node.warn("assumed net.ipv4.conf.all.route_localnet=1 (kube-proxy sets it for localhost "
                              "NodePorts); with 0 the kernel drops this packet as a martian")
                kept.append(b.note(f"{reason}: needs route_localnet=1"))
        return kept

    def hand_over(branches: list[Branch]) -> list[Branch]:
        """Give locally delivered branches to ``local_in``; walk what it sends on through POSTROUTING."""
        if local_in is None:
            return branches
        kept: list[Branch] = []
        sent: list[Branch] = []
        for b in branches:
            got = local_in(b)
            if got is None:
                kept.append(b)
                continue
            walker.split_by(("local_in", b.dst, b.dport), len(got))  # IPVS: one way per real server
            for nb, flow in got:
                if flow == "out":
                    sent.append(replace(nb, out_iface=options.out_interface))
                elif flow == "local":
                    kept.append(nb)
                else:
                    ended.append((nb, flow))
        # The nat table is not consulted in OUTPUT again (conntrack holds the destination binding); the
        # source binding is made in POSTROUTING, where kube-proxy masquerades.
        sent = run("output", sent, after=NAT_DST_PRIORITY)
        return kept + run("postrouting", sent)

    hook_label = (names["input"], names["forward"])
    if packet.origin == "node":
        out = run("output", [start], upto=NAT_DST_PRIORITY)
        # Routing (again, after DNAT) picks the way out; a local destination leaves through lo.
        out = not_martian(out, names["output"])
        routed = [replace(b, out_iface="lo" if node.branch_local(b) else options.out_interface) for b in out]
        out = run("output", routed, after=NAT_DST_PRIORITY)
        out = run("postrouting", out)
        local = [replace(route_step(b, True, names["output"], hook_label), in_iface="lo", out_iface=None)
                 for b in out if node.branch_local(b)]
        away = [b for b in out if not node.branch_local(b)]
        local = run("prerouting", local, nat=False)
        local = run("input", local, nat=False)
        final = away + hand_over(local)
    else:
        pre = run("prerouting", [start])
        pre = not_martian(pre, names["prerouting"])
        to_local = [route_step(b, True, names["prerouting"], hook_label) for b in pre if node.branch_local(b)]
        forward = [replace(route_step(b, False, names["prerouting"], hook_label), out_iface=options.out_interface)
                   for b in pre if not node.branch_local(b)]
        to_local = run("input", to_local)
        forward = run("forward", forward)
        forward = run("postrouting", forward)
        final = forward + hand_over(to_local)
    outcomes = finish(final, ended, packet.origin, node.is_local)
    if walker.lost > 0:
        node.warn(f"outcome shares sum to {1 - walker.lost:.3g}: some branches were cut (max_states)")
    return TraceResult(packet=packet, mode=mode, outcomes=outcomes, warnings=tuple(node.warnings))
