"""Windows and bars, sans-IO: hand-computed results, the clock, gaps, lateness, properties.

Also the determinism promise: replaying the bundled recording closes the same windows with
the same results every time, and as a live run fed the same receive times (with idle ticks).
"""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline_helpers import T0, S, decoded, feed, gap, trade

from irisflow import Event, Gap, Pipeline, Runner, Trade, compile_filter, dumps_event
from irisflow._pipe import build_pipeline
from irisflow._windows import Late, Window, WindowStep
from irisflow.testing import ListSink

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "binance-sample.jsonl"


def windows(out: list[Event]) -> list[tuple[str, float, float, int]]:
    """(key, start s, end s, count) of the window results in ``out``."""
    return [
        (e.key, (e.start - T0) / S, (e.end - T0) / S, e.count) for e in out if isinstance(e, Window)
    ]


def by_symbol() -> Pipeline:
    return Pipeline(kinds={Trade}).key_by("symbol")


def test_tumbling_windows_per_key_close_when_the_watermark_passes() -> None:
    pipeline = by_symbol().window(tumbling="1m", lateness=0).agg("vwap")
    out = feed(
        pipeline,
        [
            trade(1, 100, 1),
            trade(2, 10, 1, symbol="ETHUSDT"),
            trade(59.999, 200, 3),
            trade(60, 300, 1),  # the watermark reaches 60 s: both first windows close
            trade(125, 1, 1, symbol="ETHUSDT"),  # closes [60, 120) of BTCUSDT
        ],
    )
    assert windows(out) == [
        ("BTCUSDT", 0, 60, 2),
        ("ETHUSDT", 0, 60, 1),
        ("BTCUSDT", 60, 120, 1),
    ]
    first = out[0]
    assert isinstance(first, Window)
    assert first.vwap == Decimal(175)  # type: ignore[attr-defined]  # (100 + 600) / 4
    assert (first.ts, first.recv_ts) == (T0 + 60 * S, T0 + 60 * S)  # due when the 60 s trade came
    assert (first.venue, first.symbol, first.complete, first.spec) == (
        "binance",
        "BTCUSDT",
        True,
        "tumbling 1m",
    )


def test_a_window_closes_on_the_receive_clock_when_no_later_event_comes() -> None:
    pipeline = by_symbol().window(tumbling="1m", lateness=0).agg("count")
    assert pipeline.process([trade(10, 100, recv=10.5)]) == []
    # Event time is assumed to go on with the receive clock: 50 s after 10.5 s of receive
    # time, the watermark stands at 60 s.
    assert pipeline.advance(T0 + round(60.4 * S)) == []
    out = pipeline.advance(T0 + 61 * S)
    assert windows(out) == [("BTCUSDT", 0, 60, 1)]
    assert out[0].recv_ts == T0 + round(60.5 * S)  # when it became due, not when advance ran


def test_results_do_not_depend_on_how_often_advance_runs() -> None:
    events = [trade(t, 100 + t, recv=t + 0.2) for t in (1, 30, 59, 61, 200, 201, 330)]
    rare = by_symbol().window(tumbling="1m").agg("vwap, ohlc")
    often = by_symbol().window(tumbling="1m").agg("vwap, ohlc")
    a = feed(rare, events)
    b: list[Event] = []
    now = T0
    for event in events:
        while now < event.recv_ts:  # a live run wakes every 0.25 s while idle
            b += often.advance(now)
            now += S // 4
        b += often.advance(event.recv_ts)
        b += often.process([event])
    assert a == b
    assert windows(a) == [("BTCUSDT", 0, 60, 3), ("BTCUSDT", 60, 120, 1), ("BTCUSDT", 180, 240, 2)]


def test_lateness_delays_closing_and_late_events_are_counted_or_emitted() -> None:
    pipeline = by_symbol().window(tumbling="1m", lateness="5s", late="emit").agg("count")
    out = feed(pipeline, [trade(50, 1), trade(62, 1), trade(58, 1)])
    assert windows(out) == []  # 62 - 5 < 60: still open, so the 58 s trade counts
    out = feed(pipeline, [trade(65, 1), trade(59, 1, trade_id=7)])
    assert windows(out)[0] == ("BTCUSDT", 0, 60, 2)
    late = out[1]
    assert isinstance(late, Late)
    assert (late.event.trade_id, late.watermark) == (7, T0 + 60 * S)
    step = pipeline.steps[-1]
    assert isinstance(step, WindowStep)
    assert step.statistics().late == 1


def test_late_events_are_dropped_by_default() -> None:
    pipeline = by_symbol().window(tumbling="1m").agg("count")
    out = feed(pipeline, [trade(1, 1), trade(61, 1), trade(2, 1)])
    assert windows(out) == [("BTCUSDT", 0, 60, 1)]
    assert [e.kind for e in out] == ["window"]


def test_sliding_windows() -> None:
    pipeline = by_symbol().window(sliding="2m", slide="1m").agg("sum(price)")
    out = feed(pipeline, [trade(30, 1), trade(90, 10), trade(150, 100), trade(400, 0)], flush=True)
    sums = {(e.start - T0) // S: e.sum_price for e in out if isinstance(e, Window)}  # type: ignore[attr-defined]
    assert sums == {-60: 1, 0: 11, 60: 110, 120: 100, 300: 0, 360: 0}


def test_session_windows_merge_when_an_event_bridges_them() -> None:
    pipeline = by_symbol().window(session="15s", lateness="30s").agg("count, first(price)")
    out = feed(pipeline, [trade(0, 1), trade(5, 2), trade(30, 3), trade(18, 4)])
    assert out == []
    # Sessions [0, 20) and [30, 45) until 18 s comes: within 15 s of 5 s and of 30 s, it
    # joins them into one session from 0 to 30 + 15.
    out = feed(pipeline, [trade(100, 9)])
    assert windows(out) == [("BTCUSDT", 0, 45, 4)]
    assert out[0].first_price == Decimal(1)  # type: ignore[attr-defined]


def test_bars_by_count_volume_and_notional() -> None:
    events = [trade(t, 10 * (t + 1), q) for t, q in enumerate([1, 2, 3, 4, 5])]
    counted = feed(Pipeline(kinds={Trade}).bars(count=2).agg("ohlc"), events, flush=True)
    assert [(e.count, e.complete) for e in counted] == [(2, True), (2, True), (1, False)]  # type: ignore[attr-defined]
    assert [e.close for e in counted] == [20, 40, 50]  # type: ignore[attr-defined]
    volume = feed(Pipeline(kinds={Trade}).bars(volume=3).agg("sum(qty)"), events)
    assert [e.sum_qty for e in volume] == [3, 3, 4, 5]  # type: ignore[attr-defined]  # 1+2, 3, 4, 5
    notional = feed(Pipeline(kinds={Trade}).bars(notional=100).agg("count"), events)
    # notionals 10, 40, 90, 160, 250: 10+40+90 >= 100, then 160, then 250
    assert [e.count for e in notional] == [3, 1, 1]  # type: ignore[attr-defined]
    assert [(e.start - T0) // S for e in notional] == [0, 3, 4]  # type: ignore[attr-defined]


def test_a_gap_marks_the_windows_it_overlaps_incomplete() -> None:
    pipeline = by_symbol().window(tumbling="1m", lateness="10s").agg("count")
    out = feed(
        pipeline,
        [
            trade(10, 1),
            gap(20, 25),  # inside [0, 60)
            trade(70, 1),
            trade(119, 1),
            gap(118, 125),  # overlaps [60, 120) and [120, 180), before [120, 180) has an event
            trade(130, 1),
            gap(140, 150, venue="coinbase"),  # another venue's hole
            trade(200, 1),
            trade(300, 1),
        ],
    )
    result = [((e.start - T0) // S, e.complete) for e in out if isinstance(e, Window)]  # type: ignore[attr-defined]
    assert result == [(0, False), (60, False), (120, False), (180, True)]
    assert sum(isinstance(e, Gap) for e in out) == 3  # gaps pass through


def test_idle_holds_the_clock_back_until_an_outage_is_reported() -> None:
    events: list[Event] = [trade(10, 1), gap(11, 100), trade(101, 1)]
    # The clock closes [0, 60) at 60 s, while the connection is down: complete, wrongly.
    prompt = feed(by_symbol().window(tumbling="1m").agg("count"), events)
    assert [e.complete for e in prompt if isinstance(e, Window)] == [True]
    # With 2 minutes of idle, the window waits; the gap at 100 s comes first and marks it.
    held = feed(by_symbol().window(tumbling="1m", idle="2m").agg("count"), events)
    assert [e.kind for e in held] == ["gap", "window"]
    assert [e.complete for e in held if isinstance(e, Window)] == [False]


def test_flush_emits_open_windows_as_incomplete() -> None:
    pipeline = by_symbol().window(tumbling="1m").agg("count")
    assert feed(pipeline, [trade(1, 1), trade(2, 1, symbol="ETHUSDT")]) == []
    out = pipeline.flush()
    assert windows(out) == [("BTCUSDT", 0, 60, 1), ("ETHUSDT", 0, 60, 1)]
    assert [e.complete for e in out] == [False, False]  # type: ignore[attr-defined]


def test_window_results_are_events_filters_and_json_lines_can_use() -> None:
    pipeline = by_symbol().window(tumbling="1m").agg("vwap").filter("vwap > 150")
    out = feed(pipeline, [trade(1, 100), trade(61, 200), trade(121, 100)])
    assert windows(out) == [("BTCUSDT", 60, 120, 1)]
    line = dumps_event(out[0]).decode()
    assert line.startswith('{"kind":"window","venue":"binance","symbol":"BTCUSDT"')
    assert '"start":"2026-01-01T00:01:00Z","end":"2026-01-01T00:02:00Z"' in line
    assert '"vwap":"200"' in line
    assert compile_filter("kind == 'window' and complete", [out[0].__class__])(out[0])


def test_the_same_aggregates_give_the_same_result_class() -> None:
    a = by_symbol().window(tumbling="1m").agg("vwap").steps[-1]
    b = by_symbol().window(tumbling="5m").agg("vwap").steps[-1]
    assert a.output_kinds == b.output_kinds  # type: ignore[attr-defined]


# -- properties ------------------------------------------------------------------------------

times = st.lists(st.integers(min_value=0, max_value=600_000), min_size=1, max_size=60)


def _events(ms: list[int], rnd: random.Random) -> list[Trade]:
    events = [
        trade(t / 1000, 1 + i % 7, 1, symbol=rnd.choice(["A", "B"]), trade_id=i)
        for i, t in enumerate(ms)
    ]
    rnd.shuffle(events)
    return events


@given(times, st.randoms(use_true_random=False), st.sampled_from(["1s", "10s", "1m", "7s"]))
def test_tumbling_counts_sum_to_the_input_and_nothing_is_lost_or_doubled(
    ms: list[int], rnd: random.Random, size: str
) -> None:
    events = _events(ms, rnd)
    pipeline = by_symbol().window(tumbling=size, lateness="10m").agg("sum(trade_id)")
    out = [e for e in feed(pipeline, events, flush=True) if isinstance(e, Window)]
    assert sum(e.count for e in out) == len(events)
    assert sum(e.sum_trade_id for e in out) == sum(range(len(events)))  # type: ignore[attr-defined]
    assert len({(e.key, e.start) for e in out}) == len(out)  # no window twice


@given(times, st.randoms(use_true_random=False))
def test_with_out_of_order_data_every_event_is_counted_or_late(
    ms: list[int], rnd: random.Random
) -> None:
    events = _events(ms, rnd)
    pipeline = by_symbol().window(tumbling="10s").agg("count")
    out = feed(pipeline, events, flush=True)
    step = pipeline.steps[-1]
    assert isinstance(step, WindowStep)
    assert sum(e.count for e in out if isinstance(e, Window)) + step.statistics().late == len(
        events
    )


@given(times, st.randoms(use_true_random=False), st.sampled_from(["1s", "10s", "1m"]))
def test_sliding_windows_with_size_equal_to_slide_are_tumbling_windows(
    ms: list[int], rnd: random.Random, size: str
) -> None:
    events = _events(ms, rnd)
    aggs = "vwap, ohlc, sum(trade_id)"
    tumbling = by_symbol().window(tumbling=size).agg(aggs)
    sliding = by_symbol().window(sliding=size, slide=size).agg(aggs)
    assert feed(tumbling, events, flush=True) == feed(sliding, events, flush=True)


@settings(max_examples=50)
@given(times, st.randoms(use_true_random=False))
def test_each_event_is_in_size_over_slide_sliding_windows(
    ms: list[int], rnd: random.Random
) -> None:
    events = _events(ms, rnd)
    pipeline = by_symbol().window(sliding="30s", slide="10s", lateness="10m").agg("count")
    out = [e for e in feed(pipeline, events, flush=True) if isinstance(e, Window)]
    assert sum(e.count for e in out) == 3 * len(events)


# -- determinism on the bundled recording ------------------------------------------------------

PIPES = [
    "filter kind == 'trade' | by symbol | window 1m | agg vwap, ohlcv, count, stddev(price)",
    "filter kind == 'trade' | by symbol | window 2m slide 30s lateness 1s | agg vwap, rate",
    "filter kind == 'trade' | by symbol | window session 3s | agg count, pct_change(price)",
    "filter kind == 'trade' | by symbol | window 10s | agg ohlc | rsi 5",
    "filter kind == 'trade' | by symbol | spike 0.1% in 30s",
    "select mid = (bid_price + ask_price) / 2 | by symbol | sample 5s",
]


def _kinds() -> frozenset[type[Event]]:
    from irisflow._cli import _replay_kinds

    return _replay_kinds(None)


async def _replay(text: str) -> list[Event]:
    sink = ListSink()
    await Runner(build_pipeline([], [text], _kinds()), sinks=[sink]).replay(SAMPLE)
    return sink.events


def _live_like(text: str) -> list[Event]:
    """The recording fed as a live run sees it: idle ticks every 0.25 s between reads."""
    pipeline = build_pipeline([], [text], _kinds())
    out: list[Event] = []
    now = None
    for recv_ts, events in decoded(SAMPLE):
        if now is not None:
            while now + S // 4 < recv_ts:
                now += S // 4
                out += pipeline.advance(now)
        now = recv_ts
        out += pipeline.advance(recv_ts)
        out += pipeline.process(events)
    return out + pipeline.flush()  # the run ends: what is still open comes out


@pytest.mark.parametrize("text", PIPES)
async def test_replay_is_deterministic_and_equals_a_live_like_run(text: str) -> None:
    first = await _replay(text)
    second = await _replay(text)
    assert first == second
    assert first == _live_like(text)
    assert any(e.kind != "gap" for e in first)


async def test_the_recording_gives_the_expected_minute_windows() -> None:
    out = await _replay(PIPES[0])
    result = [
        (e.key, (e.start - T0) // S, e.count, e.complete) for e in out if isinstance(e, Window)
    ]
    # The recording's gap (00:02:30.4 - 00:02:33.4) marks both 00:02 windows incomplete. The
    # recording ends within the default 1 s lateness of 00:05: the last minute is flushed open.
    assert result == [
        ("BTCUSDT", 0, 150, True),
        ("ETHUSDT", 0, 132, True),
        ("BTCUSDT", 60, 196, True),
        ("ETHUSDT", 60, 116, True),
        ("BTCUSDT", 120, 166, False),
        ("ETHUSDT", 120, 121, False),
        ("BTCUSDT", 180, 179, True),
        ("ETHUSDT", 180, 135, True),
        ("BTCUSDT", 240, 148, False),
        ("ETHUSDT", 240, 121, False),
    ]
