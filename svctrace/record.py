"""``@record``: ``@dataclass(frozen=True, slots=True)`` for a fraction of its cost when the module is imported.

A frozen, slotted dataclass compiles six methods from source as its module is imported (about 0.5 ms a
class); svctrace defines over a hundred, which was a third of ``svctrace svc NAME --from demo``. A record
lets dataclasses do only the fields' bookkeeping (so ``fields``, ``replace``, ``asdict`` and
``field(default_factory=..., init=..., compare=..., hash=..., repr=...)`` work as before), shares
``__repr__``, the frozen ``__setattr__``/``__delattr__`` and the pickling pair, and compiles ``__init__``,
``__eq__`` and ``__hash__`` on their first call, from the same source a dataclass would, so they are as
fast from then on. The answers are the dataclass's: the same repr, equality only with the same class, the
same hash, ``FrozenInstanceError`` on assignment. Methods the class writes itself win, as with
``@dataclass``. Differences: keyword-only fields are refused, a class without a docstring gets none (not
one made from its signature), and ``__dataclass_params__`` describes the bookkeeping pass, not the record.
mypy reads a record as a frozen dataclass (``dataclass_transform``).
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:
    def dataclass_transform(**_: object) -> Callable[[Any], Any]:
        return lambda fn: fn

T = TypeVar("T")

_NO_VALUE: Any = object()  # the default of a parameter whose field has a default_factory


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, dataclasses.Field))
def record(cls: type[T]) -> type[T]:
    """A frozen, slotted dataclass of ``cls`` (as ``@dataclass(frozen=True, slots=True)``)."""
    doc = cls.__dict__.get("__doc__")
    if not doc:
        # dataclasses would write a class without a docstring one from inspect.signature, which parses text
        # signatures (a third of a record's cost); a record without a docstring keeps none.
        cls.__doc__ = "-"
    dataclasses.dataclass(cls, init=False, repr=False, eq=False)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if any(f.kw_only is True for f in fields):
        raise TypeError(f"{cls.__name__}: a record has no keyword-only fields; use @dataclass")
    names = tuple(f.name for f in fields)
    namespace = dict(cls.__dict__)
    for name in names:
        namespace.pop(name, None)  # a default as a class attribute would clash with its slot
    namespace["__doc__"] = doc
    namespace.pop("__dict__", None)
    namespace.pop("__weakref__", None)
    inherited = {s for base in cls.__mro__[1:-1] for s in base.__dict__.get("__slots__", ())}
    namespace["__slots__"] = tuple(n for n in names if n not in inherited)
    names_shown = tuple(f.name for f in fields if f.repr)
    if "__repr__" not in namespace:
        namespace["__repr__"] = _repr(names_shown)
    for name in ("__getstate__", "__setstate__"):
        if name not in namespace:
            namespace[name] = _getstate(names) if name == "__getstate__" else _setstate(names)
    for name in ("__setattr__", "__delattr__"):
        if name in namespace:
            raise TypeError(f"cannot overwrite attribute {name} in class {cls.__name__} (a record is frozen)")
    namespace["__setattr__"] = _frozen_setattr
    namespace["__delattr__"] = _frozen_delattr
    metaclass: type = type(cls)
    made: type[T] = metaclass(cls.__name__, cls.__bases__, namespace)
    made.__qualname__ = cls.__qualname__
    # __init__, __eq__ and __hash__ are compiled on their first call (many classes are never compared, some
    # never built in a run), as the same source a dataclass compiles, so they are as fast from then on.
    if "__init__" not in namespace:
        _compile_on_first_call(made, "__init__", lambda: _init_source(made, fields))
    if "__eq__" not in namespace:
        _compile_on_first_call(made, "__eq__", lambda: _eq_source(tuple(f.name for f in fields if f.compare)))
    # A class's own __eq__ leaves __hash__ = None in its namespace; a frozen dataclass still hashes its fields then.
    own_hash = namespace.get("__hash__", dataclasses.MISSING)
    if own_hash is dataclasses.MISSING or (own_hash is None and "__eq__" in namespace):
        hashed = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
        _compile_on_first_call(made, "__hash__", lambda: _hash_source(hashed))
    return made


Source = tuple[str, dict[str, Any]]  # a function's text, and the values its text names


def _compile_on_first_call(cls: type, name: str, source: Callable[[], Source]) -> None:
    """Give ``cls`` a method ``name`` that compiles the real one on its first call, installs it, and calls it."""

    def first_call(self: object, *args: Any, **kwargs: Any) -> Any:
        text, values = source()
        scope: dict[str, Any] = {}
        exec(text, {"_set": object.__setattr__, "_NO_VALUE": _NO_VALUE}, scope)  # noqa: S102 - our own text
        method = scope["_make"](**values)
        method.__qualname__ = f"{cls.__qualname__}.{name}"
        setattr(cls, name, method)  # another thread may do the same at once: both install the same method
        return method(self, *args, **kwargs)

    first_call.__qualname__ = f"{cls.__qualname__}.{name}"
    setattr(cls, name, first_call)


def _function(name: str, params: list[str], body: list[str], values: dict[str, Any]) -> Source:
    """``def _make(<values>): def <name>(<params>): <body>; return <name>`` (values become closure cells)."""
    text = (f"def _make({', '.join(values)}):\n"
            f" def {name}({', '.join(params)}):\n" + "\n".join(f"  {line}" for line in body or ["pass"]) + "\n"
            f" return {name}\n")
    return text, values


def _init_source(cls: type, fields: tuple[dataclasses.Field[Any], ...]) -> Source:
    """``__init__``: each field's value set through object.__setattr__, as a frozen dataclass does."""
    params, body, values = ["self"], [], {}
    for f in fields:
        value = f.name
        if f.default_factory is not dataclasses.MISSING:
            values[f"_factory_{f.name}"] = f.default_factory
            if f.init:
                params.append(f"{f.name}=_NO_VALUE")
                value = f"_factory_{f.name}() if {f.name} is _NO_VALUE else {f.name}"
            else:
                value = f"_factory_{f.name}()"
        elif f.default is not dataclasses.MISSING:
            values[f"_default_{f.name}"] = f.default
            if f.init:
                params.append(f"{f.name}=_default_{f.name}")
            else:
                value = f"_default_{f.name}"
        elif f.init:
            params.append(f.name)
        else:
            continue  # init=False and no default: left unset, as a dataclass leaves it
        body.append(f"_set(self, {f.name!r}, {value})")
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    return _function("__init__", params, body, values)


def _fields_tuple(obj: str, names: tuple[str, ...]) -> str:
    return "(" + "".join(f"{obj}.{n}," for n in names) + ")"


def _eq_source(names: tuple[str, ...]) -> Source:
    return _function("__eq__", ["self", "other"], [
        "if other.__class__ is self.__class__:",
        f" return {_fields_tuple('self', names)} == {_fields_tuple('other', names)}",
        "return NotImplemented"], {})


def _hash_source(names: tuple[str, ...]) -> Source:
    return _function("__hash__", ["self"], [f"return hash({_fields_tuple('self', names)})"], {})


def _repr(names: tuple[str, ...]) -> Callable[[object], str]:
    @reprlib.recursive_repr()
    def __repr__(self: object) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{self.__class__.__qualname__}({shown})"

    return __repr__


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _getstate(names: tuple[str, ...]) -> Callable[[object], list[Any]]:
    def __getstate__(self: object) -> list[Any]:
        return [getattr(self, n) for n in names]

    return __getstate__


def _setstate(names: tuple[str, ...]) -> Callable[[object, list[Any]], None]:
    def __setstate__(self: object, state: list[Any]) -> None:
        for name, value in zip(names, state, strict=True):
            object.__setattr__(self, name, value)

    return __setstate__
