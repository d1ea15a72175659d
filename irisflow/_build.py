"""Fast constructors for frozen event classes: the decoders' per-message allocation.

A frozen attrs class sets each field in ``__init__`` through ``object.__setattr__``, because its
own ``__setattr__`` refuses writes. That is a method call per field, about four times the cost
of a plain slot store; for a nine-field :class:`~irisflow.Trade` it was most of the time a
decoder spends on a message. :func:`fast_constructor` builds the same instance in a cheaper way:

1. a private subclass that adds no slots and restores ``object``'s ``__setattr__`` and
   ``__delattr__``, so its attribute stores are plain slot stores;
2. a function generated once per class (as attrs and dataclasses generate ``__init__``:
   source text made of the field names, compiled) that makes an instance of that subclass,
   stores every field, and then sets the instance's ``__class__`` to the event class. The
   layouts are identical, so CPython allows the switch.

What comes out is an instance of the event class itself: frozen, equal and hashing as one built
by ``__init__`` (the tests check this field by field). Only classes whose fields have no
validators, converters or factories qualify, which holds for every kind a venue decodes;
anything else raises :class:`TypeError` when the constructor is made, not when it runs.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from ._events import Book, BookUpdate, Candle, Quote, Ticker, Trade

__all__ = [
    "build_book",
    "build_book_update",
    "build_candle",
    "build_quote",
    "build_ticker",
    "build_trade",
    "fast_constructor",
]

_T = TypeVar("_T")


def fast_constructor(cls: type[_T]) -> Callable[..., _T]:
    """A function taking the arguments of ``cls(...)`` (positional or by name) that returns the
    same frozen instance, faster.

    Raises:
        TypeError: ``cls`` is not an attrs class whose fields can simply be set in order (a
            validator, converter, factory default, alias, keyword-only field, init hook or hash
            cache would be skipped or misplaced).
    """
    if not attrs.has(cls):
        raise TypeError(f"{cls.__name__} is not an attrs class")
    fields = attrs.fields(cls)
    for hook in ("__attrs_pre_init__", "__attrs_post_init__", "_attrs_cached_hash"):
        if hasattr(cls, hook):
            raise TypeError(f"{cls.__name__} has {hook}, which a fast constructor would skip")
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    params: list[str] = []
    for field in fields:
        default = field.default
        if (
            field.validator is not None
            or field.converter is not None
            or not field.init
            or field.kw_only
            or field.alias != field.name
            or isinstance(default, attrs.Factory)  # type: ignore[arg-type]
        ):
            raise TypeError(f"field {field.name!r} of {cls.__name__} needs attrs' __init__")
        if default is attrs.NOTHING:
            params.append(field.name)
        else:
            namespace[f"_default_{field.name}"] = default
            params.append(f"{field.name}=_default_{field.name}")
    # The generated source below holds nothing but these names (attrs field names, which are
    # identifiers by construction: checked again here) and fixed text; no user text reaches it.
    if not all(f.name.isidentifier() and not keyword.iskeyword(f.name) for f in fields):
        raise TypeError(f"{cls.__name__} has a field name that is not an identifier")
    namespace["_filler"] = type(
        f"_{cls.__name__}Filler",
        (cls,),
        {
            "__slots__": (),
            # Both: CPython takes the plain slot store only when neither is overridden.
            "__setattr__": object.__setattr__,
            "__delattr__": object.__delattr__,
            "__module__": cls.__module__,
        },
    )
    stores = "".join(f"    o.{field.name} = {field.name}\n" for field in fields)
    source = (
        f"def build({', '.join(params)}):\n"
        "    o = _new(_filler)\n"
        f"{stores}"
        "    o.__class__ = _cls\n"
        "    return o\n"
    )
    exec(compile(source, f"<irisflow fast constructor of {cls.__qualname__}>", "exec"), namespace)
    build: Callable[..., _T] = namespace["build"]
    build.__qualname__ = build.__name__ = f"build_{cls.__name__}"
    build.__doc__ = f"Build a {cls.__name__} (same arguments, same result as the class)."
    return build


# The market-data kinds every venue decoder builds, once for all of them.
build_trade = fast_constructor(Trade)
build_quote = fast_constructor(Quote)
build_candle = fast_constructor(Candle)
build_ticker = fast_constructor(Ticker)
build_book = fast_constructor(Book)
build_book_update = fast_constructor(BookUpdate)
