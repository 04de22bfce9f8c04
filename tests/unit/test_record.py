"""``@record`` answers as ``@dataclass(frozen=True, slots=True)`` does, method by method."""

from __future__ import annotations

import copy
import dataclasses
import inspect
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


def _wrong_calls(cls: Any) -> list[str]:
    out = []
    for args, kwargs in [((), {}), ((1,), {}), ((1, "a", "b", (), [], 9), {}), ((1, "a"), {"nope": 1}),
                         ((1, "a"), {"port": 2}), ((1, "a"), {"cache": {}})]:
        with pytest.raises(TypeError) as info:
            cls(*args, **kwargs)
        out.append(str(info.value))
    return out


def test_a_wrong_call_is_the_same_error() -> None:
    assert _wrong_calls(Record) == _wrong_calls(Dataclass)
    assert "_shape.<locals>.Port.__init__() missing 2 required positional arguments: 'port' and 'name'" in \
        _wrong_calls(Record)


def test_init_is_the_dataclass_s_own_parameters_and_defaults() -> None:
    Record(1, "a")  # its first call makes it
    mine, theirs = inspect.signature(Record.__init__), inspect.signature(Dataclass.__init__)
    assert list(mine.parameters) == list(theirs.parameters) == ["self", "port", "name", "protocol", "tags", "seen"]
    assert [p.default for p in mine.parameters.values()][:5] == [p.default for p in theirs.parameters.values()][:5]
    code = Record.__init__.__code__
    assert Record.__init__.__qualname__ == getattr(code, "co_qualname", Record.__init__.__qualname__) == \
        "_shape.<locals>.Port.__init__"


def test_classes_of_one_shape_share_a_template_and_keep_their_own_names_and_values() -> None:
    @record
    class A:
        x: int
        y: str = "a"
        z: tuple[int, ...] = field(default_factory=tuple)

    @record
    class B:
        p: int
        q: str = "b"
        r: list[int] = field(default_factory=lambda: [7])

    a, b = A(1), B(2, q="c")
    assert (a.x, a.y, a.z) == (1, "a", ()) and (b.p, b.q, b.r) == (2, "c", [7])
    assert A.__init__.__code__.co_code == B.__init__.__code__.co_code
    assert A.__init__.__code__.co_varnames == ("self", "x", "y", "z")
    assert B.__init__.__code__.co_varnames == ("self", "p", "q", "r")


def test_fields_a_dataclass_would_refuse_or_a_record_cannot_take_are_refused_as_the_class_is_made() -> None:
    class Misordered:
        a: int = 0
        b: int

    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument"):
        record(Misordered)
    for name in ("self", "_set", "_f1"):
        reserved = type("Reserved", (), {"__annotations__": {name: "int"}})
        with pytest.raises(TypeError, match=f"no field named {name}"):
            record(reserved)
