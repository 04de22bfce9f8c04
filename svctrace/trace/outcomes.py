"""Turning finished branches into outcomes, and the martian rule: the same for every proxy mode."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from svctrace.model.addresses import ip_value
from svctrace.model.trace import Outcome, format_address
from svctrace.record import record
from svctrace.trace.engine import LOOPBACK, Assumption, Branch, drop_irrelevant


def is_loopback(text: str) -> bool:
    v = ip_value(text)
    return v is not None and any(p.contains(*v) for p in LOOPBACK)


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


@record
class _Draft:
    """An outcome being merged: its assumptions kept apart from its text."""

    outcome: Outcome  # probability and conditions not filled in yet
    assumed: frozenset[Assumption]
    prob: float

    @property
    def key(self) -> tuple[object, ...]:
        o = self.outcome
        return (o.verdict, o.destination, o.masquerade, o.affinity, o.via)


def _draft(b: Branch, verdict: str, destination: str | None, masquerade: bool, notes: tuple[str, ...]) -> _Draft:
    marks = {f"if it matches: {w}" for w, _ in b.assumed} | {f"if it does not match: {w}" for w, _ in b.assumed}
    outcome = Outcome(verdict=verdict, destination=destination, probability=None, masquerade=masquerade,
                      uncertain=b.loose, path=b.path, notes=tuple(n for n in notes if n not in marks),
                      affinity=b.pinned, via=b.via)
    return _Draft(outcome, frozenset(b.assumed), b.prob)


def finish(branches: Iterable[Branch], ended: Iterable[tuple[Branch, str]], origin: str,
           is_local: Callable[[str], bool]) -> tuple[Outcome, ...]:
    """Outcomes of the branches that ended in a verdict and of those that left the rules, merged."""
    raw: list[_Draft] = []
    for b, verdict in ended:
        notes = b.notes
        if b.dnat:
            notes = (*notes, f"after DNAT to {format_address(b.dst, b.dport) if b.via is None else b.via}")
        raw.append(_draft(b, verdict, None, False, notes))
    for b in branches:
        notes = b.notes
        if b.snat and b.snat != "MASQUERADE":
            notes = (*notes, b.snat)
        if b.dnat:
            shown = format_address(b.dst, b.dport) if b.via is None else None
            raw.append(_draft(b, "DNAT", shown, b.snat is not None, notes))
            continue
        local = is_local(b.dst)
        where = "delivered to the node itself" if local else "forwarded unchanged"
        if origin == "node" and not local:
            where = "sent out unchanged"
        raw.append(_draft(b, "ACCEPT", None, b.snat is not None, (*notes, f"no rule rewrote the destination; {where}")))
    return merge_outcomes(raw)


def merge_outcomes(drafts: Iterable[_Draft]) -> tuple[Outcome, ...]:
    """Merge outcomes with the same verdict, destination, masquerade and affinity pin: under the same
    assumptions their shares add up; under the two sides of one assumption with the same share, the
    assumption did not matter and goes. Known probabilities first, most likely first."""
    merged: dict[tuple[object, ...], _Draft] = {}
    for d in drafts:
        k = (d.key, d.assumed)
        old = merged.get(k)
        if old is None:
            merged[k] = d
            continue
        keep = d if d.prob > old.prob else old
        merged[k] = _Draft(replace(keep.outcome, uncertain=old.outcome.uncertain or d.outcome.uncertain),
                           d.assumed, old.prob + d.prob)
    items = _drop_irrelevant(list(merged.values()))
    out = []
    for d in items:
        conditions = tuple(("if it matches: " if matched else "if it does not match: ") + what
                           for what, matched in sorted(d.assumed))
        out.append(replace(d.outcome, probability=None if conditions else d.prob, conditions=conditions,
                           conditional_probability=d.prob if conditions else None,
                           uncertain=d.outcome.uncertain or bool(conditions)))
    # Stable, and rounded so 0.3333333333 and 0.33333333335 count as equal: equal shares keep rule order
    # (kube-proxy lists endpoints in rule order).
    return tuple(sorted(out, key=lambda o: (o.probability is None, -round(o.share, 9))))


def _drop_irrelevant(items: list[_Draft]) -> list[_Draft]:
    def rebuild(shown: _Draft, twin: _Draft, rest: tuple[Assumption, ...]) -> _Draft:
        uncertain = shown.outcome.uncertain or twin.outcome.uncertain
        return _Draft(replace(shown.outcome, uncertain=uncertain), frozenset(rest), twin.prob)

    while True:
        merged = drop_irrelevant(items, state=lambda d: d.key, assumed=lambda d: tuple(sorted(d.assumed)),
                                 prob=lambda d: d.prob, rebuild=rebuild)
        # the same assumptions may now appear twice: their shares add up (and may pair up again)
        again: dict[tuple[object, ...], _Draft] = {}
        for d in merged:
            k = (d.key, d.assumed)
            old = again.get(k)
            again[k] = d if old is None else _Draft(old.outcome, d.assumed, old.prob + d.prob)
        if len(again) == len(items):
            return list(again.values())
        items = list(again.values())
