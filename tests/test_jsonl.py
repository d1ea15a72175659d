"""Events as JSON lines."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

import attrs
import orjson

from irisflow import Event, Trade, dumps_event, encode_events, iso_time


def test_kind_first_decimals_as_text_times_as_iso() -> None:
    trade = Trade(
        "binance",
        "BTCUSDT",
        1767225600122000000,
        1767225600123456789,
        Decimal("94250.01000000"),
        Decimal("0.0053"),
        "buy",
        5,
    )
    line = dumps_event(trade)
    assert line.startswith(b'{"kind":"trade",')
    data = orjson.loads(line)
    assert data["price"] == "94250.01000000"
    assert data["ts"] == "2026-01-01T00:00:00.122Z"
    assert data["recv_ts"] == "2026-01-01T00:00:00.123456789Z"
    assert encode_events([trade, trade]) == line + b"\n" + line + b"\n"


def test_iso_time_precision_follows_the_value() -> None:
    assert iso_time(0) == "1970-01-01T00:00:00Z"
    assert iso_time(1_500_000) == "1970-01-01T00:00:00.001500Z"
    assert iso_time(7) == "1970-01-01T00:00:00.000000007Z"


@attrs.frozen
class Later(Event):
    kind: ClassVar[str] = "later"
    when: int | None = attrs.field(default=None, metadata={"time": True})
    big: int | None = attrs.field(default=None, metadata={"bigint": True})


def test_optional_times_and_big_integers() -> None:
    data = orjson.loads(dumps_event(Later("v", "S", 0, 0, None, 2**200)))
    assert data["when"] is None
    assert data["big"] == str(2**200)
    assert orjson.loads(dumps_event(Later("v", "S", 0, 0, 5, None)))["when"].endswith("005Z")
