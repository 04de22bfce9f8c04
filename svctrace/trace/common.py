"""What every tracing engine shares: turning finished branches into outcomes, and the martian rule."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable, Iterable
from dataclasses import replace
from typing import Any, ClassVar, Protocol, TypeVar

from svctrace.model.trace import Outcome, TraceStep, format_address

LOOPBACK_NETS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class Branch(Protocol):
    """The state of one possible path of a packet, as each engine's branch type records it."""

    @property
    def src(self) -> str: ...
    @property
    def dst(self) -> str: ...
    @property
    def dport(self) -> int: ...
    @property
    def dnat(self) -> bool: ...
    @property
    def snat(self) -> str | None: ...
    @property
    def pinned(self) -> str | None: ...
    @property
    def uncertain(self) -> bool: ...
    @property
    def prob(self) -> float: ...
    @property
    def path(self) -> tuple[TraceStep, ...]: ...
    @property
    def notes(self) -> tuple[str, ...]: ...


def is_loopback(text: str) -> bool:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    return any(n.version == ip.version and ip in n for n in LOOPBACK_NETS)


def martian(br: Branch, origin: str, is_local: Callable[[str], bool]) -> str | None:
    """Why routing would refuse a loopback address crossing a real interface, or None."""
    if origin == "node":
        # Only a loopback source sent off the node (a localhost NodePort DNATed to a remote pod).
        if is_loopback(br.src) and not is_local(br.dst):
            return f"loopback source {br.src} would leave the node towards {br.dst}"
        return None
    if is_loopback(br.dst):
        return f"loopback destination {br.dst} arriving from outside the node"
    if is_loopback(br.src):
        return f"loopback source {br.src} arriving from outside the node"
    return None


def finish(branches: Iterable[Branch], ended: Iterable[tuple[Branch, str]], origin: str,
           is_local: Callable[[str], bool]) -> tuple[Outcome, ...]:
    """Outcomes of the branches that ended in a verdict and of those that left the rules, merged."""
    raw: list[Outcome] = []
    for b, verdict in ended:
        notes = b.notes
        if b.dnat:
            notes = (*notes, f"after DNAT to {format_address(b.dst, b.dport)}")
        raw.append(Outcome(verdict=verdict, destination=None, probability=b.prob, masquerade=False,
                           uncertain=b.uncertain, path=b.path, notes=notes, affinity=b.pinned))
    for b in branches:
        notes = b.notes
        if b.snat and b.snat != "MASQUERADE":
            notes = (*notes, b.snat)
        if b.dnat:
            raw.append(Outcome(verdict="DNAT", destination=format_address(b.dst, b.dport), probability=b.prob,
                               masquerade=b.snat is not None, uncertain=b.uncertain, path=b.path, notes=notes,
                               affinity=b.pinned))
            continue
        local = is_local(b.dst)
        where = "delivered to the node itself" if local else "forwarded unchanged"
        if origin == "node" and not local:
            where = "sent out unchanged"
        raw.append(Outcome(verdict="ACCEPT", destination=None, probability=b.prob, masquerade=b.snat is not None,
                           uncertain=b.uncertain, path=b.path,
                           notes=(*notes, f"no rule rewrote the destination; {where}"), affinity=b.pinned))
    return merge_outcomes(raw)


def merge_outcomes(outcomes: Iterable[Outcome]) -> tuple[Outcome, ...]:
    """Merge outcomes with the same verdict, destination, masquerade and affinity pin; most likely first."""
    merged: dict[tuple[object, ...], Outcome] = {}
    for o in outcomes:
        k = (o.verdict, o.destination, o.masquerade, o.affinity)
        old = merged.get(k)
        if old is None:
            merged[k] = o
            continue
        keep = o if o.probability > old.probability else old
        merged[k] = replace(keep, probability=old.probability + o.probability,
                            uncertain=old.uncertain or o.uncertain)
    # Stable, and rounded so 0.3333333333 and 0.33333333335 count as equal: equal shares keep rule order
    # (kube-proxy lists endpoints in rule order).
    return tuple(sorted(merged.values(), key=lambda o: -round(o.probability, 9)))


class Mergeable(Protocol):
    """A branch that can be merged with others in the same state (a dataclass with a key and a probability)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def prob(self) -> float: ...
    def key(self) -> Hashable: ...


M = TypeVar("M", bound=Mergeable)


def merge_branches(branches: list[M], cap: int, where: str, warn: Callable[[str], None]) -> tuple[list[M], float]:
    """Branches in the same state merged (probabilities summed), at most ``cap`` kept; and the share dropped."""
    if len(branches) < 2:
        return branches, 0.0
    by_key: dict[Hashable, M] = {}
    for br in branches:
        k = br.key()
        old = by_key.get(k)
        if old is None:
            by_key[k] = br
        else:
            keep = br if br.prob > old.prob else old
            by_key[k] = replace(keep, prob=old.prob + br.prob)
    merged = list(by_key.values())
    if len(merged) <= cap:
        return merged, 0.0
    merged.sort(key=lambda b: -b.prob)
    dropped = merged[cap:]
    share = sum(b.prob for b in dropped)
    warn(f"too many branches at {where}: {len(dropped)} least likely ones (share {share:.3g}) were not traced "
         "further")
    return merged[:cap], share
