"""Trackers: spike/drop and Wilder's RSI, against hand-computed and published values."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from pipeline_helpers import T0, S, candle, feed, gap, trade

from irisflow import Candle, Event, Pipeline, Trade
from irisflow._aggregates import DIVISION
from irisflow._steps import PipelineError
from irisflow._trackers import Rsi, Spike

# ---------------------------------------------------------------------------------- RSI

# StockCharts ChartSchool, "Relative Strength Index (RSI)", the worked example spreadsheet
# cs-rsi.xls: QQQQ daily closes and the 14-day RSI column (published to 4 decimals).
# https://chartschool.stockcharts.com/table-of-contents/technical-indicators-and-overlays/
#   technical-indicators/relative-strength-index-rsi
STOCKCHARTS_CLOSES = [
    "44.3389", "44.0902", "44.1497", "43.6124", "44.3278", "44.8264", "45.0955", "45.4245",
    "45.8433", "46.0826", "45.8931", "46.0328", "45.6140", "46.2820", "46.2820", "46.0028",
    "46.0328", "46.4116", "46.2222", "45.6439", "46.2122", "46.2521", "45.7137", "46.4515",
    "45.7835", "45.3548", "44.0288", "44.1783", "44.2181", "44.5672", "43.4205", "42.6628",
    "43.1314",
]  # fmt: skip
STOCKCHARTS_RSI_14 = [
    "70.5328", "66.3186", "66.5498", "69.4063", "66.3552", "57.9749", "62.9296", "63.2571",
    "56.0593", "62.3771", "54.7076", "50.4228", "39.9898", "41.4605", "41.8689", "45.4632",
    "37.3040", "33.0795", "37.7730",
]  # fmt: skip


def rsi_values(pipeline: Pipeline, events: list[Event]) -> list[Rsi]:
    out = feed(pipeline, events)
    return [e for e in out if isinstance(e, Rsi)]


def test_rsi_reproduces_the_stockcharts_worked_example() -> None:
    bars = [candle(i, close) for i, close in enumerate(STOCKCHARTS_CLOSES)]
    values = rsi_values(Pipeline(kinds={Candle}).rsi(14), bars)
    # The first RSI needs 15 closes (14 changes): one value for each close from the 15th on.
    assert len(values) == len(STOCKCHARTS_CLOSES) - 14 == len(STOCKCHARTS_RSI_14)
    assert [str(v.rsi.quantize(Decimal("0.0001"))) for v in values] == STOCKCHARTS_RSI_14
    # The first averages are plain means of the first 14 gains and losses.
    gains = losses = Decimal(0)
    for a, b in itertools.pairwise(STOCKCHARTS_CLOSES[:15]):
        change = Decimal(b) - Decimal(a)
        gains, losses = gains + max(change, Decimal(0)), losses + max(-change, Decimal(0))
    assert (values[0].avg_gain, values[0].avg_loss) == (
        DIVISION.divide(gains, 14),
        DIVISION.divide(losses, 14),
    )
    assert values[0].ts == bars[14].ts
    assert (values[0].key, values[0].period) == ("test/QQQQ/1m", 14)


def test_rsi_by_hand_with_period_two() -> None:
    # changes +1, -0.5, +1.5. First averages: gain (1 + 0) / 2 = 0.5, loss (0 + 0.5) / 2 = 0.25,
    # RS 2, RSI 100 - 100/3. Then gain (0.5·1 + 1.5) / 2 = 1, loss (0.25·1 + 0) / 2 = 0.125,
    # RS 8, RSI 100 - 100/9.
    bars = [candle(i, c) for i, c in enumerate(["10", "11", "10.5", "12"])]
    values = rsi_values(Pipeline(kinds={Candle}).rsi(2), bars)
    assert [v.rsi for v in values] == [
        Decimal(100) - DIVISION.divide(100, 3),
        Decimal(100) - DIVISION.divide(100, 9),
    ]
    assert (values[1].avg_gain, values[1].avg_loss) == (Decimal(1), Decimal("0.125"))


def test_rsi_edges_rising_and_flat() -> None:
    rising = rsi_values(Pipeline(kinds={Candle}).rsi(2), [candle(i, str(i)) for i in range(4)])
    assert [v.rsi for v in rising] == [100, 100]
    flat = rsi_values(Pipeline(kinds={Candle}).rsi(2), [candle(i, "5") for i in range(4)])
    assert [v.rsi for v in flat] == [50, 50]


def test_rsi_uses_closed_bars_once_per_series() -> None:
    events: list[Event] = [
        candle(0, "10"),
        candle(1, "99", closed=False),  # still forming: ignored
        candle(1, "11"),
        candle(1, "11"),  # the same bar again (a resend): ignored
        candle(0, "10", symbol="OTHER"),
        candle(2, "10.5"),
        candle(3, "12"),
    ]
    values = rsi_values(Pipeline(kinds={Candle}).rsi(2), events)
    assert [v.rsi for v in values] == [
        Decimal(100) - DIVISION.divide(100, 3),
        Decimal(100) - DIVISION.divide(100, 9),
    ]


def test_rsi_over_irisflows_own_window_results() -> None:
    trades = [trade(60 * i + 1, close) for i, close in enumerate(["10", "11", "10.5", "12", "1"])]
    pipeline = Pipeline(kinds={Trade}).key_by("symbol").window(tumbling="1m").agg("ohlc").rsi(2)
    values = rsi_values(pipeline, trades)
    assert [v.key for v in values] == ["BTCUSDT", "BTCUSDT"]
    assert values[-1].rsi == Decimal(100) - DIVISION.divide(100, 9)


def test_rsi_needs_a_close() -> None:
    with pytest.raises(PipelineError, match="rsi tracks 'close' by default"):
        Pipeline(kinds={Trade}).rsi()
    assert Pipeline(kinds={Trade}).rsi(3, on="price")  # any number field will do


# ---------------------------------------------------------------------------------- spike


def spikes(events: list[Event], pipeline: Pipeline | None = None) -> list[Spike]:
    pipeline = pipeline or Pipeline(kinds={Trade}).spike("2%", "10s")
    return [e for e in feed(pipeline, events) if isinstance(e, Spike)]


def pct(value: str, base: str) -> Decimal:
    return DIVISION.divide((Decimal(value) - Decimal(base)) * 100, Decimal(base))


def test_spike_compares_with_the_value_one_window_earlier_and_rearms() -> None:
    found = spikes(
        [
            trade(0, "100"),
            trade(5, "101"),  # less than 10 s of history: not checked
            trade(11, "102.5"),  # base: the 0 s price 100 -> +2.5 %
            trade(12, "103"),  # +3 %: still the same move, not reported again
            trade(14, "101"),  # +1 %: back inside, re-armed
            trade(16, "103.5"),  # base: the 5 s price 101 -> +2.475...%
            trade(30, "99"),  # base: the 16 s price 103.5 -> -4.34...%
        ]
    )
    assert [(s.direction, s.ts, s.base, s.change_pct) for s in found] == [
        ("up", T0 + 11 * S, Decimal(100), Decimal("2.5")),
        ("up", T0 + 16 * S, Decimal(101), pct("103.5", "101")),
        ("down", T0 + 30 * S, Decimal("103.5"), pct("99", "103.5")),
    ]
    assert found[0].base_ts == T0
    assert (found[0].key, found[0].window, found[0].threshold) == ("binance/BTCUSDT", "10s", 2)


def test_spike_keeps_symbols_apart() -> None:
    found = spikes(
        [
            trade(0, "100"),
            trade(0, "3000", symbol="ETHUSDT"),
            trade(11, "3000", symbol="ETHUSDT"),
            trade(11, "103"),
        ]
    )
    assert [(s.symbol, s.change_pct) for s in found] == [("BTCUSDT", Decimal(3))]


def test_spike_on_another_value_and_gaps_pass() -> None:
    pipeline = Pipeline(kinds={Trade}).spike(50, "1m", on="qty")
    out = feed(pipeline, [trade(0, "1", "2"), gap(1, 2), trade(61, "1", "1")])
    assert [e.kind for e in out] == ["gap", "spike"]
    assert out[1].direction == "down"  # type: ignore[attr-defined]


def test_spike_mistakes() -> None:
    with pytest.raises(PipelineError, match="spike tracks 'price' by default"):
        Pipeline(kinds={Candle}).spike(2, "1m")
    with pytest.raises(PipelineError, match="spike threshold must be a positive number"):
        Pipeline(kinds={Trade}).spike("-2", "1m")
