"""As-of join: hand-built events of two venues, out-of-order arrival, and two recordings."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from pipeline_helpers import T0, S, feed, gap, quote, trade

from irisflow import Event, FilterError, Pipeline, Quote, Runner, Trade
from irisflow._join import AsofJoinStep, Joined
from irisflow._pipe import build_pipeline
from irisflow.testing import ListSink, book_ticker, frame_text
from irisflow.testing import trade as binance_trade

SPREAD = (
    "by symbol | join (venue == 'coinbase') within 2s map 'BTC-USD' = 'BTCUSDT'"
    " | select spread = left_price - right_ask_price"
)


def joined(out: list[Event]) -> list[Joined]:
    return [e for e in out if isinstance(e, Joined)]


def test_each_left_event_pairs_with_the_latest_right_event_within_the_tolerance() -> None:
    pipeline = build_pipeline([], [SPREAD], {Trade, Quote})
    out = feed(
        pipeline,
        [
            quote(1, "99", "101"),
            trade(2, "100.5"),
            quote(3, "100", "102"),
            trade(3.5, "103"),
            trade(4, "3000", symbol="ETHUSDT"),  # no right side for ETHUSDT
            trade(10, "104"),  # the latest quote is 7 s old: no pair
            gap(11, 12),
        ],
    )
    pairs = joined(out)
    assert [(p.left_price, p.right_ask_price, p.lag) for p in pairs] == [
        (Decimal("100.5"), Decimal(101), 1 * S),
        (Decimal(103), Decimal(102), S // 2),
    ]
    assert [p.spread for p in pairs] == [Decimal("-0.5"), Decimal(1)]  # type: ignore[attr-defined]
    first = pairs[0]
    assert (first.kind, first.key, first.venue, first.symbol) == (
        "join",
        "BTCUSDT",
        "binance",
        "BTCUSDT",
    )
    assert (first.ts, first.right_venue, first.right_symbol) == (T0 + 2 * S, "coinbase", "BTC-USD")
    assert out[-1].kind == "gap"
    step = next(s for s in pipeline.steps if isinstance(s, AsofJoinStep))
    assert step.statistics().joined == 2
    assert step.statistics().unmatched == 2


def test_a_left_event_waits_for_the_right_stream_within_the_lateness() -> None:
    events = [
        quote(8.5, "1", "2"),
        trade(10, "100", recv=10),
        quote(9.5, "3", "4"),  # event time before the trade, heard after it
    ]
    events[2] = Quote("coinbase", "BTC-USD", T0 + round(9.5 * S), T0 + round(10.2 * S),
                      Decimal(3), Decimal(1), Decimal(4), Decimal(1))  # fmt: skip
    eager = build_pipeline(
        [],
        ["by symbol | join (kind == 'quote') within 2s map 'BTC-USD' = 'BTCUSDT'"],
        {Trade, Quote},
    )
    assert [p.right_ask_price for p in joined(feed(eager, events))] == [Decimal(2)]
    patient = build_pipeline(
        [],
        ["by symbol | join (kind == 'quote') within 2s lateness 1s map 'BTC-USD' = 'BTCUSDT'"],
        {Trade, Quote},
    )
    assert joined(feed(patient, events)) == []  # waiting: the quotes have reached 9.5 s only
    out = patient.advance(T0 + round(11.2 * S))  # 1 s of quiet: the watermark reaches 10 s
    assert [p.right_ask_price for p in joined(out)] == [Decimal(4)]


def test_outer_keeps_unmatched_left_events() -> None:
    pipeline = Pipeline(kinds={Trade, Quote}).join("kind == 'quote'", within="1s", outer=True)
    out = feed(pipeline, [trade(1, "100"), quote(1.5, "1", "2"), trade(2, "101")])
    assert [(p.left_price, p.right_bid_price, p.lag) for p in joined(out)] == [
        (Decimal(100), None, None),
        (Decimal(101), Decimal(1), S // 2),
    ]


def test_flush_releases_waiting_left_events() -> None:
    pipeline = Pipeline(kinds={Trade, Quote}).join("kind == 'quote'", within="1s", lateness="1m")
    assert feed(pipeline, [quote(0.5, "1", "2"), trade(1, "100")]) == []
    assert [p.lag for p in joined(pipeline.flush())] == [S // 2]


def test_join_results_are_type_checked_downstream() -> None:
    with pytest.raises(
        FilterError, match=r"unknown field 'right_bid_prise'.*did you mean 'right_bid_price'"
    ):
        build_pipeline(
            [], ["join (kind == 'quote') within 1s | filter right_bid_prise > 1"], {Trade, Quote}
        )
    with pytest.raises(FilterError, match="can never pass"):
        build_pipeline([], ["join (kind == 'candle') within 1s"], {Trade, Quote})


def _recording(path: Path, lines: list[tuple[int, str]]) -> Path:
    path.write_bytes(
        b"".join(
            orjson.dumps({"venue": "binance", "recv_ts": recv, "frame": frame}) + b"\n"
            for recv, frame in lines
        )
    )
    return path


async def test_two_recordings_with_different_symbols_joined_on_a_mapped_key(
    tmp_path: Path,
) -> None:
    # Recording one: BTCUSDT trades every second; recording two: BTCUSDC best quotes every
    # 1.5 s (as a second connection would have heard them). Replayed together, merged in receive
    # order, as `irisflow replay btcusdt.jsonl btcusdc.jsonl` does.
    ms = T0 // 1_000_000
    trades = [
        (
            (ms + 1000 * i + 5) * 1_000_000,
            frame_text(
                binance_trade(
                    "btcusdt",
                    price=94000 + i,
                    qty="0.5",
                    trade_id=i,
                    time_ms=ms + 1000 * i,
                    buyer_maker=False,
                ),
                "btcusdt@trade",
            ),
        )
        for i in range(1, 9)
    ]
    quotes = [
        (
            (ms + 1500 * i) * 1_000_000,
            frame_text(
                book_ticker(
                    "btcusdc", update_id=i, bid=93990 + i, bid_qty=1, ask=93995 + i, ask_qty=1
                ),
                "btcusdc@bookTicker",
            ),
        )
        for i in range(6)
    ]
    files = [
        _recording(tmp_path / "btcusdt.jsonl", trades),
        _recording(tmp_path / "btcusdc.jsonl", quotes),
    ]

    text = (
        "by symbol | join (symbol == 'BTCUSDC') within 1s map 'BTCUSDC' = 'BTCUSDT'"
        " | select premium = left_price - right_ask_price"
    )
    sink = ListSink()
    pipeline = build_pipeline(["kind in ['trade', 'quote']"], [text], {Trade, Quote})
    await Runner(pipeline, sinks=[sink]).replay(files)
    pairs = joined(sink.events)
    # Trade i at i s pairs with the quote heard last at or before it, if at most 1 s old:
    # quotes at 0, 1.5, 3, 4.5, 6, 7.5 s -> trades 1 (q0), 2 (q1), 3 (q2), 4 (q2), 5 (q3),
    # 6 (q4), 7 (q4), 8 (q5).
    expected_quote = {1: 0, 2: 1, 3: 2, 4: 2, 5: 3, 6: 4, 7: 4, 8: 5}
    assert [(p.left_trade_id, p.right_update_id) for p in pairs] == list(expected_quote.items())
    assert [p.premium for p in pairs] == [  # type: ignore[attr-defined]
        Decimal(94000 + i) - Decimal(93995 + q) for i, q in expected_quote.items()
    ]
    assert all(p.key == "BTCUSDT" for p in pairs)
