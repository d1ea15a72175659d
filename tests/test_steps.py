"""select, throttle, dedupe and sample, sans-IO, against hand-computed expectations."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pipeline_helpers import T0, S, feed, gap, quote, trade

from irisflow import Event, FilterError, Pipeline, Quote, Trade, dumps_event
from irisflow._steps import PipelineError, parse_duration


def test_select_adds_typed_fields_and_keeps_the_kind() -> None:
    pipeline = Pipeline(kinds={Trade, Quote}).select(
        "notional = price * qty", mid="(bid_price + ask_price) / 2"
    )
    t, q, g = pipeline.process([trade(1, "100", "2.5"), quote(1, "10", "12"), gap(0, 1)])
    assert isinstance(t, Trade)
    assert (t.kind, t.price, t.notional, t.mid) == ("trade", 100, Decimal(250), None)  # type: ignore[attr-defined]
    assert isinstance(q, Quote)
    assert (q.kind, q.notional, q.mid) == ("quote", None, Decimal(11))  # type: ignore[attr-defined]
    assert g.kind == "gap"
    assert dumps_event(t).endswith(b'"notional":"250.0","mid":null}')


def test_filters_after_select_are_type_checked_against_the_new_fields() -> None:
    pipeline = Pipeline(kinds={Trade}).select(notional="price * qty").filter("notional > 100")
    assert [
        e.trade_id for e in pipeline.process([trade(1, 10, 20, trade_id=1), trade(2, 10, 5)])
    ] == [1]  # type: ignore[attr-defined]
    with pytest.raises(FilterError, match=r"unknown field 'notionl'.*did you mean 'notional'"):
        Pipeline(kinds={Trade}).select(notional="price * qty").filter("notionl > 1")
    with pytest.raises(FilterError, match="cannot compare notional"):
        Pipeline(kinds={Trade}).select(notional="price * qty").filter("notional == 'x'")


def test_select_division_by_zero_gives_none() -> None:
    (t,) = Pipeline(kinds={Trade}).select(inverse="1 / qty").process([trade(1, 10, 0)])
    assert t.inverse is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("price = qty * 2", "trade events already have a field 'price'"),
        ("a = 1, a = 2", "field 'a' is computed twice"),
        ("price * qty", "select needs NAME = EXPRESSION"),
        ("kind = 'x'", "bad field name 'kind'"),
    ],
)
def test_select_mistakes(assignment: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        Pipeline(kinds={Trade}).select(assignment)


def test_throttle_passes_at_most_one_event_per_key_per_interval() -> None:
    pipeline = Pipeline(kinds={Trade}).key_by("symbol").throttle("1s")
    events = [
        trade(0, 1, trade_id=1),
        trade(0.5, 1, trade_id=2),
        trade(0.6, 1, symbol="ETHUSDT", trade_id=3),
        trade(1.0, 1, trade_id=4),  # 1 s after the last one that passed
        trade(1.9, 1, trade_id=5),
        gap(2, 3),
        trade(2.1, 1, trade_id=6),
    ]
    out = feed(pipeline, events)
    assert [getattr(e, "trade_id", "gap") for e in out] == [1, 3, 4, "gap", 6]


def test_dedupe_drops_the_same_event_heard_twice() -> None:
    a = trade(1, 100, trade_id=7)
    again = trade(1, 100, trade_id=7, recv=1.3)  # another connection, later
    pipeline = Pipeline(kinds={Trade}).dedupe("10s")
    assert pipeline.process([a, again, trade(1, 100, trade_id=8)]) == [a, trade(1, 100, trade_id=8)]


def test_dedupe_on_expressions_within_the_interval() -> None:
    pipeline = Pipeline(kinds={Trade}).dedupe("5s", on=["trade_id"])
    events = [trade(0, 1, trade_id=1), trade(4, 2, trade_id=1), trade(9, 3, trade_id=1)]
    # 4 s after the first: a repeat; 9 s: 5 s after the last one seen, so new again.
    assert [e.price for e in pipeline.process(events)] == [1, 3]  # type: ignore[attr-defined]


def test_sample_every_nth_event_per_key() -> None:
    pipeline = Pipeline(kinds={Trade}).key_by("symbol").sample(3)
    events = [trade(i, 1, trade_id=i, symbol="A" if i % 2 else "B") for i in range(10)]
    # B: 0 2 4 6 8 -> 0, 6; A: 1 3 5 7 9 -> 1, 7
    assert [e.trade_id for e in pipeline.process(events)] == [0, 1, 6, 7]  # type: ignore[attr-defined]


def test_sample_by_time_emits_the_latest_event_per_key_per_interval() -> None:
    pipeline = Pipeline(kinds={Trade}).key_by("symbol").sample("10s")
    events: list[Event] = [
        trade(1, 1, trade_id=1),
        trade(9, 2, trade_id=2),
        trade(8, 3, trade_id=3),
    ]
    assert feed(pipeline, events) == []
    out = feed(pipeline, [trade(12, 4, trade_id=4)])
    assert [e.trade_id for e in out] == [2]  # type: ignore[attr-defined]  # latest by event time
    assert [e.trade_id for e in pipeline.advance(T0 + 21 * S)] == [4]  # type: ignore[attr-defined]


def test_durations() -> None:
    assert parse_duration("1m") == 60 * S
    assert parse_duration("1.5s") == 1_500_000_000
    assert parse_duration("250ms") == 250_000_000
    assert parse_duration("2h") == 7200 * S
    for bad in ("1", "0s", "-1s", "1x", "m"):
        with pytest.raises(PipelineError, match="bad duration"):
            parse_duration(bad)
