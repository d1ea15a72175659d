"""Small builders shared by the pipeline tests: events with round numbers, a driver."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

from irisflow import Candle, Event, Gap, Pipeline, Quote, Trade, get_venue, read_recording
from irisflow._feed import Frames

S = 1_000_000_000
"""One second in ns."""
T0 = 1_767_225_600 * S
"""2026-01-01T00:00:00Z, a minute boundary."""


def trade(
    t: float,
    price: str | int,
    qty: str | int = 1,
    *,
    symbol: str = "BTCUSDT",
    venue: str = "binance",
    recv: float | None = None,
    trade_id: int = 0,
    side: str = "buy",
) -> Trade:
    """A trade at ``T0 + t`` seconds (received ``recv`` seconds after T0, default the same)."""
    ts = T0 + round(t * S)
    recv_ts = ts if recv is None else T0 + round(recv * S)
    return Trade(venue, symbol, ts, recv_ts, Decimal(price), Decimal(qty), side, trade_id)


def quote(
    t: float, bid: str | int, ask: str | int, *, symbol: str = "BTC-USD", venue: str = "coinbase"
) -> Quote:
    ts = T0 + round(t * S)
    return Quote(venue, symbol, ts, ts, Decimal(bid), Decimal(1), Decimal(ask), Decimal(1))


def candle(index: int, close: str, *, symbol: str = "QQQQ", closed: bool = True) -> Candle:
    """A closed daily-like bar number ``index`` (one minute apart, for simplicity)."""
    start = T0 + index * 60 * S
    c = Decimal(close)
    return Candle(
        "test",
        symbol,
        start + 60 * S - 1,
        start + 60 * S,
        "1m",
        start,
        start + 60 * S - 1,
        c,
        c,
        c,
        c,
        Decimal(1),
        closed=closed,
    )


def gap(start: float, end: float, venue: str = "binance") -> Gap:
    s, e = T0 + round(start * S), T0 + round(end * S)
    return Gap(venue, "*", e, e, ("btcusdt@trade",), s, e, "test")


def feed(pipeline: Pipeline, events: Iterable[Event], *, flush: bool = False) -> list[Event]:
    """Drive ``pipeline`` as the runner does: advance to each event's receive time, then it."""
    out: list[Event] = []
    for event in events:
        out += pipeline.advance(event.recv_ts)
        out += pipeline.process([event])
    if flush:
        out += pipeline.flush()
    return out


def decoded(path: Path) -> list[tuple[int, list[Event]]]:
    """A recording as ``(recv_ts, events)`` batches, decoded as the runner decodes them."""
    decoders = {}
    batches: list[tuple[int, list[Event]]] = []
    for item in read_recording(path):
        if isinstance(item, Gap):
            batches.append((item.recv_ts, [item]))
            continue
        assert isinstance(item, Frames), item
        decoder = decoders.setdefault(item.venue, get_venue(item.venue).decoder())
        events: list[Event] = []
        errors: list[object] = []
        decoder.decode_batch(item.frames, item.recv_ts, events, errors)  # type: ignore[arg-type]
        assert not errors
        batches.append((item.recv_ts, events))
    return batches
