"""``@record`` answers as ``@dataclass(frozen=True, slots=True)`` does, method by method."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from svctrace.record import record


def _shape(deco: Callable[[Any], Any]) -> Any:
    class Port:
        """A class of every kind of field a record holds."""

        port: int
        name: str
        protocol: str | None = None
        tags: tuple[str, ...] = ()
        seen: list[int] = field(default_factory=list, compare=False)
        cache: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

        @property
        def label(self) -> str:
            return f"{self.port}/{self.name}"

    return deco(Port)


Record = _shape(record)
Dataclass = _shape(dataclass(frozen=True, slots=True))


@record
class Doubled:
    value: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", self.value * 2)


@record
class OwnEq:
    value: int
    ignored: int = 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OwnEq) and other.value == self.value

    def __repr__(self) -> str:
        return f"<{self.value}>"


@record
class Pickled:
    value: int
    items: tuple[int, ...] = ()


@pytest.mark.parametrize("args", [(80, "http"), (53, "dns", "UDP", ("a",)), (1, "x", None, (), [1, 2])])
def test_same_answers_as_a_frozen_slotted_dataclass(args: tuple[Any, ...]) -> None:
    mine, theirs = Record(*args), Dataclass(*args)
    assert repr(mine).split("(", 1)[1] == repr(theirs).split("(", 1)[1]
    assert hash(mine) == hash(theirs)
    assert mine == Record(*args) and mine != Record(args[0] + 1, *args[1:])
    assert mine != theirs  # another class, as for dataclasses
    assert Record.__slots__ == Dataclass.__slots__ and Record.__match_args__ == Dataclass.__match_args__
    assert dataclasses.asdict(mine) == dataclasses.asdict(theirs)
    assert [f.name for f in dataclasses.fields(mine)] == [f.name for f in dataclasses.fields(theirs)]
    assert mine.label == theirs.label and mine.cache == {} and not hasattr(mine, "__dict__")


def test_compare_false_fields_are_neither_compared_nor_hashed() -> None:
    assert Record(80, "http", seen=[1]) == Record(80, "http") and hash(Record(80, "http", seen=[1])) == hash(
        Record(80, "http"))
    assert Record(80, "http").seen is not Record(80, "http").seen  # a fresh list each time


def test_frozen_replace_copy_and_pickle() -> None:
    mine = Record(80, "http")
    with pytest.raises(dataclasses.FrozenInstanceError):
        mine.port = 81
    with pytest.raises(dataclasses.FrozenInstanceError):
        del mine.port
    assert dataclasses.replace(mine, port=81) == Record(81, "http")
    assert copy.copy(mine) == mine and copy.deepcopy(mine) == mine
    assert pickle.loads(pickle.dumps(Pickled(3, (1, 2)))) == Pickled(3, (1, 2))


def test_post_init_runs_and_own_methods_win() -> None:
    assert Doubled(2).value == 4 and Doubled(2) == Doubled(2) and {Doubled(1): 1}[Doubled(1)] == 1
    assert OwnEq(1, 5) == OwnEq(1, 6) and repr(OwnEq(1)) == "<1>"
    assert hash(OwnEq(1, 5)) == hash((1, 5))  # a frozen dataclass with its own __eq__ still hashes its fields


def test_keyword_only_fields_are_refused() -> None:
    class KwOnly:
        value: int = field(kw_only=True)

    with pytest.raises(TypeError, match="keyword-only"):
        record(KwOnly)
