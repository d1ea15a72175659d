"""Events as JSON lines: ``kind`` first, decimals as strings, times as ISO-8601 UTC.

One explicit cattrs converter for this format (never the global one). cattrs generates a
specialised unstructure function per event class once; after that an event costs one generated
function call plus ``orjson.dumps``.
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_unstructure_fn, override

from ._events import Event, is_time_field

__all__ = ["dumps_event", "encode_events", "iso_time", "make_converter"]

_EPOCH = _dt.datetime(1970, 1, 1)


@functools.lru_cache(maxsize=64)
def _second(seconds: int) -> str:
    # Events of a stream share their seconds: format each second once.
    return (_EPOCH + _dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def iso_time(ns: int) -> str:
    """``ns`` since the epoch as ISO-8601 UTC with a ``Z``, to ms, µs or ns as needed."""
    seconds, frac = divmod(ns, 1_000_000_000)
    base = _second(seconds)
    if frac == 0:
        return base + "Z"
    if frac % 1_000_000 == 0:
        return f"{base}.{frac // 1_000_000:03d}Z"
    if frac % 1000 == 0:
        return f"{base}.{frac // 1000:06d}Z"
    return f"{base}.{frac:09d}Z"


def _iso_or_none(value: int | None) -> str | None:
    # Optional times (the right side of an outer join that found nothing) stay null.
    return None if value is None else iso_time(value)


def _bigint(value: int | None) -> str | None:
    return None if value is None else str(value)


def make_converter() -> cattrs.Converter:
    """The converter for the JSON lines format."""
    conv = cattrs.Converter()
    conv.register_unstructure_hook(Decimal, str)

    def factory(cls: type[Event]) -> Callable[[Event], dict[str, Any]]:
        overrides: dict[str, Any] = {}
        for f in attrs.fields(cls):
            if is_time_field(cls, f.name):
                overrides[f.name] = override(unstruct_hook=_iso_or_none)
            elif f.metadata.get("bigint"):  # uint256 and friends: orjson stops at 64 bits
                overrides[f.name] = override(unstruct_hook=_bigint)
        inner = make_dict_unstructure_fn(cls, conv, **overrides)
        kind = cls.kind

        def unstructure(event: Event) -> dict[str, Any]:
            return {"kind": kind, **inner(event)}

        return unstructure

    conv.register_unstructure_hook_factory(
        lambda t: isinstance(t, type) and issubclass(t, Event), factory
    )
    return conv


_CONVERTER = make_converter()


def dumps_event(event: Event) -> bytes:
    """One event as a JSON object (no newline)."""
    return orjson.dumps(_CONVERTER.unstructure(event, type(event)))


def encode_events(events: Iterable[Event]) -> bytes:
    """Events as JSON lines, each ending in a newline, ready for one write."""
    unstructure = _CONVERTER.unstructure
    dumps = orjson.dumps
    return b"".join([dumps(unstructure(e, type(e))) + b"\n" for e in events])
