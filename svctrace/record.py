"""``@record``: ``@dataclass(frozen=True, slots=True)`` for a fraction of its cost when the module is imported.

A frozen, slotted dataclass compiles six methods from source as its module is imported (about 0.5 ms a
class); svctrace defines over a hundred, which was a third of ``svctrace svc NAME --from demo``. A record
lets dataclasses do only the fields' bookkeeping (so ``fields``, ``replace``, ``asdict`` and
``field(default_factory=..., init=..., compare=..., hash=..., repr=...)`` work as before), shares
``__repr__``, the frozen ``__setattr__``/``__delattr__`` and the pickling pair, and makes ``__init__``,
``__eq__`` and ``__hash__`` on their first call, from the same source a dataclass would (``__init__`` from a
template shared by the classes of its shape), so they are as fast from then on. The answers are the
dataclass's: the same repr, equality only with the same class, the same hash, ``FrozenInstanceError`` on
assignment, the same errors for a wrong call. Methods the class writes itself win, as with ``@dataclass``.
Differences: keyword-only fields (and a field named ``self``, ``_set``, ``_NO_VALUE`` or ``_f<digits>``) are
refused, a class without a docstring gets none (not one made from its signature), a factory's parameter
shows another sentinel in ``inspect.signature``, and ``__dataclass_params__`` describes the bookkeeping
pass, not the record.
mypy reads a record as a frozen dataclass (``dataclass_transform``).
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import re
import reprlib
import sys
import types
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
    _check_parameters(cls.__name__, fields)
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
        _install_on_first_call(made, "__init__", lambda: _init_method(made, fields))
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

    def compiled() -> Callable[..., Any]:
        text, values = source()
        scope: dict[str, Any] = {}
        exec(text, {"_set": object.__setattr__, "_NO_VALUE": _NO_VALUE}, scope)  # noqa: S102 - our own text
        method: Callable[..., Any] = scope["_make"](**values)
        method.__qualname__ = f"{cls.__qualname__}.{name}"
        return method

    _install_on_first_call(cls, name, compiled)


def _install_on_first_call(cls: type, name: str, make: Callable[[], Callable[..., Any]]) -> None:
    """Give ``cls`` a method ``name`` that makes the real one on its first call, installs it, and calls it."""

    def first_call(self: object, *args: Any, **kwargs: Any) -> Any:
        method = make()
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


def _check_parameters(name: str, fields: tuple[dataclasses.Field[Any], ...]) -> None:
    """Refuse, as the class is made, the fields ``__init__`` could not take as a dataclass's does."""
    if any(f.kw_only is True for f in fields):
        raise TypeError(f"{name}: a record has no keyword-only fields; use @dataclass")
    reserved = [f.name for f in fields if f.name in ("self", *_INIT_GLOBALS) or re.fullmatch(r"_f\d+", f.name)]
    if reserved:
        raise TypeError(f"{name}: a record has no field named {reserved[0]}; use @dataclass")
    seen_default = False
    for f in fields:
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            seen_default = True
        elif seen_default:
            raise TypeError(f"non-default argument {f.name!r} follows default argument")


def _init_method(cls: type, fields: tuple[dataclasses.Field[Any], ...]) -> Callable[..., None]:
    """``__init__``: each field's value set through object.__setattr__, as a frozen dataclass does.

    The code is a template's, compiled once per shape (which fields are parameters, factories or fixed
    values, and whether there is a __post_init__) and renamed for this class: compiling is ~0.1 ms, and
    'svc --from demo' builds some sixty classes of twenty shapes. The renamed code is what compiling this
    class's own text gives (parameters and attribute names are its fields'); defaults are the function's
    __defaults__ and factories its closure cells, as a dataclass's are.
    """
    kinds, params, attributes, defaults, values = [], [], [], [], {}
    for i, f in enumerate(fields):
        if f.default_factory is not dataclasses.MISSING:
            kind, values[f"_f{i}"] = ("F" if f.init else "f"), f.default_factory
        elif f.default is not dataclasses.MISSING:
            kind = "P" if f.init else "d"
            if f.init:
                defaults.append(f.default)
            else:
                values[f"_f{i}"] = f.default
        elif f.init:
            kind = "P"
        else:
            kind = "-"  # init=False and no default: left unset, as a dataclass leaves it
        if kind == "F":
            defaults.append(_NO_VALUE)
        if f.init:
            params.append(f.name)
        kinds.append(kind)
        attributes.append(f.name)
    template = _init_template((tuple(kinds), hasattr(cls, "__post_init__")))
    names = {f"_r{i}": name for i, name in enumerate(attributes)}
    replaced: dict[str, Any] = {"co_varnames": tuple(names.get(v, v) for v in template.co_varnames),
                                "co_consts": tuple(names.get(c, c) if isinstance(c, str) else c
                                                   for c in template.co_consts)}
    if sys.version_info >= (3, 11):
        replaced["co_qualname"] = f"{cls.__qualname__}.__init__"
    code = template.replace(**replaced)
    cells = tuple(types.CellType(values[name]) for name in code.co_freevars)
    method: Callable[..., None] = types.FunctionType(code, _INIT_GLOBALS, "__init__", tuple(defaults) or None,
                                                     cells or None)
    method.__qualname__ = f"{cls.__qualname__}.__init__"
    return method


_INIT_GLOBALS = {"__builtins__": builtins, "_set": object.__setattr__, "_NO_VALUE": _NO_VALUE}


@functools.cache
def _init_template(shape: tuple[tuple[str, ...], bool]) -> types.CodeType:
    """The code of ``__init__`` for fields of these kinds, field ``i`` named ``_r{i}`` (as a parameter and as
    the attribute's name) and its factory or fixed value ``_f{i}``: P a parameter (with or without a
    default), F a parameter whose default calls a factory, f a factory, d a fixed value, - left unset."""
    kinds, post_init = shape
    params, body, free = ["self"], [], []
    for i, kind in enumerate(kinds):
        value = {"P": f"_r{i}", "F": f"_f{i}() if _r{i} is _NO_VALUE else _r{i}", "f": f"_f{i}()",
                 "d": f"_f{i}"}.get(kind)
        if value is None:
            continue
        if kind in "PF":
            params.append(f"_r{i}")
        if kind in "Ffd":
            free.append(f"_f{i}")
        body.append(f"_set(self, '_r{i}', {value})")
    if post_init:
        body.append("self.__post_init__()")
    text, _ = _function("__init__", params, body, dict.fromkeys(free))
    scope: dict[str, Any] = {}
    exec(text, dict(_INIT_GLOBALS), scope)  # noqa: S102 - our own text
    code: types.CodeType = scope["_make"].__code__
    return next(c for c in code.co_consts if isinstance(c, types.CodeType))


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
