"""The ``window_results`` table: windows, bars and the other pipeline results of the sink.

``window``, ``rsi``, ``spike``, ``join`` and ``late`` events share one table (0008):
:func:`result_row` says how each fills the key columns, every other field goes to the jsonb
``values`` (decimals and uint256 as strings, times as ISO-8601 UTC). :data:`RESULTS` is the
table, with the upsert rules the overview in ``_pg_tables.py`` describes.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs
import orjson
from psycopg.types.json import Jsonb

from .._events import Event
from .._join import Joined
from .._jsonl import iso_time
from .._trackers import Rsi, Spike
from .._windows import Late, Window
from ._pg_copy import make_table, pg_time

__all__ = ["RESULTS", "result_row"]

_I64 = 2**63
_ID_FIELDS = "trade_id update_id first_update_id last_update_id interval tx_hash log_index hash"
"""Fields that tell one event from others of its venue, symbol and time (as alert keys do)."""


def _json(value: Any) -> Any:
    """A field value as JSON: decimals and over-long ints as strings, events as objects."""
    cls = value.__class__
    if cls is Decimal:
        return str(value)
    if cls is int:
        return value if -_I64 <= value < _I64 else str(value)
    if value is None or cls is str or cls is bool or cls is float:
        return value
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    if isinstance(value, Event):
        return {"kind": value.kind, **_encode(value, _codecs(cls))}
    return str(value)


def _time_json(value: Any) -> Any:
    return iso_time(value) if value.__class__ is int else _json(value)


def _big_json(value: Any) -> Any:
    return str(value) if value.__class__ is int else _json(value)


_Codecs = tuple[tuple[str, Callable[[Any], Any]], ...]


def _encoder(meta: Any) -> Callable[[Any], Any]:
    return _time_json if meta.get("time") else _big_json if meta.get("bigint") else _json


def _codecs(cls: type[Any], skip: frozenset[str] = frozenset()) -> _Codecs:
    """``(field, encoder)`` for every field of ``cls`` outside ``skip``."""
    # str(): orjson wants plain str keys, and the names of built fields may be Located.
    fields = attrs.fields(cls)
    return tuple((str(f.name), _encoder(f.metadata)) for f in fields if f.name not in skip)


def _encode(event: Any, codecs: _Codecs) -> dict[str, Any]:
    return {name: encode(getattr(event, name)) for name, encode in codecs}


def _identity(event: Any, prefix: str = "") -> str:
    """``trade_id=7``: the id fields of an event (of its ``prefix``-ed copies in a join)."""
    ids = ((name, getattr(event, prefix + name, None)) for name in _ID_FIELDS.split())
    return " ".join(f"{name}={value}" for name, value in ids if value is not None)


Span = tuple[str, int, int, int | None, bool]
"""What a result puts in ``spec, window_start, window_end, count, incomplete``."""


def _window_span(e: Window) -> Span:
    return e.spec, e.start, e.end, e.count, not e.complete


_SPIKE_FROM = ("tx_hash", "log_index")
"""Spike fields that name the on-chain event it came from (sparse: see :data:`_SPARSE`)."""


def _rsi_span(e: Rsi) -> Span:
    return f"rsi {e.period}", e.ts, e.ts, None, False


def _spike_span(e: Spike) -> Span:
    return f"spike {e.threshold}% in {e.window}", e.base_ts, e.ts, None, False


def _join_span(e: Joined) -> Span:
    # One row per left event: its ids tell apart left events of one key at the same time.
    return f"join {_identity(e, 'left_')}".rstrip(), e.ts, e.ts, None, False


def _late_span(e: Late) -> Span:
    inner = getattr(e.event, "kind", "event")
    return f"late {inner} {_identity(e.event)}".rstrip(), e.ts, e.ts, None, False


_RESULT_KINDS: tuple[tuple[type[Event], Callable[[Any], Span], frozenset[str]], ...] = (
    (Window, _window_span, frozenset(attrs.fields_dict(Window))),
    (Rsi, _rsi_span, frozenset({"venue", "symbol", "ts", "recv_ts", "key", "revision"})),
    (Spike, _spike_span, frozenset({"venue", "symbol", "ts", "recv_ts", "key", *_SPIKE_FROM})),
    (Joined, _join_span, frozenset({"venue", "symbol", "ts", "recv_ts", "key"})),
    (Late, _late_span, frozenset({"venue", "symbol", "ts", "recv_ts", "key"})),
)
"""Each result kind: how it fills the span columns, and which fields are not in ``values``."""

_SPARSE: dict[str, Any] = {"revision": 0, "tx_hash": None, "log_index": None}
"""Result fields in ``values`` only when not these defaults: a window's or an RSI's revision
above 0 (reorgs), the on-chain event a spike came from. Results without them store what they
always did."""

_SHAPES: dict[type[Any], tuple[Callable[[Any], Span], _Codecs, tuple[str, ...]]] = {}


def _shape(cls: type[Any]) -> tuple[Callable[[Any], Span], _Codecs, tuple[str, ...]]:
    """The span function, the ``values`` encoders and the sparse fields of a result class
    (cached per class).

    Window and join steps make subclasses with one field per aggregate or side field: those
    fields go to ``values``.
    """
    found = _SHAPES.get(cls)
    if found is None:
        for base, span, columns in _RESULT_KINDS:
            if issubclass(cls, base):
                names = attrs.fields_dict(cls)
                sparse = tuple(n for n in _SPARSE if n in columns and n in names)
                found = _SHAPES[cls] = (span, _codecs(cls, columns), sparse)
                break
        else:
            raise TypeError(f"{cls.__name__} is not a pipeline result")
    return found


def result_row(e: Any) -> tuple[Any, ...]:
    """The ``window_results`` row of a window, bar, rsi, spike, join or late event."""
    span, codecs, sparse = _shape(e.__class__)
    spec, start, end, count, incomplete = span(e)
    encoded = _encode(e, codecs)
    for name in sparse:
        value = getattr(e, name)
        if value != _SPARSE[name]:
            encoded[name] = _json(value)
    values = Jsonb(encoded, orjson.dumps)
    return (
        e.kind, e.venue, e.symbol, e.key, spec, pg_time(start), pg_time(end),
        pg_time(e.ts), pg_time(e.recv_ts), count, values, incomplete, False,
    )  # fmt: skip


RESULTS = make_table(
    "window result",
    "window_results",
    result_row,
    "kind venue symbol key spec window_start:ts window_end:ts ts:ts recv_ts:ts count:int8"
    ' "values":jsonb incomplete:bool removed:bool',
    upsert_key=("kind", "venue", "symbol", "key", "spec", "window_start", "window_end"),
    # Within a chunk: a complete result beats an incomplete one, then the highest revision (a
    # correction after a reorg, in "values"), then the latest.
    order="incomplete, coalesce((\"values\"->>'revision')::int8, 0) DESC, recv_ts DESC",
    # Against the table: complete is final (only a complete recomputation replaces it), and an
    # unchanged result is not rewritten (so a replay counts it as a duplicate) unless a reorg
    # had withdrawn it (a join paired again comes back).
    upsert_where="(NOT excluded.incomplete OR irisflow.window_results.incomplete)"
    ' AND ((excluded."values", excluded.count, excluded.incomplete) IS DISTINCT FROM'
    ' (irisflow.window_results."values", irisflow.window_results.count,'
    " irisflow.window_results.incomplete) OR irisflow.window_results.removed)",
)
