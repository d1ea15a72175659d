"""Alert rules: parsing, checking, and what they fire, with explicit (hand-computed) times."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

from irisflow._alert import Alert, alert_key
from irisflow._config import AlertConfig, load_config
from irisflow._errors import FilterError, UsageError
from irisflow._events import Candle, Event, Gap, Quote, Trade
from irisflow._pipeline import FilterStep, Pipeline
from irisflow._rules import AlertStep, Rule, Template, build_rules, parse_duration

S = 1_000_000_000
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z
_ids = itertools.count(1)


def trade(
    price: object,
    t: float,
    *,
    symbol: str = "BTCUSDT",
    venue: str = "binance",
    qty: str = "1",
    recv: float | None = None,
) -> Trade:
    ts = T0 + round(t * S)
    return Trade(
        venue=venue,
        symbol=symbol,
        ts=ts,
        recv_ts=ts if recv is None else T0 + round(recv * S),
        price=Decimal(str(price)),
        qty=Decimal(qty),
        side="buy",
        trade_id=next(_ids),
    )


def quote(bid: object, t: float, *, symbol: str = "BTCUSDT") -> Quote:
    ts = T0 + round(t * S)
    bid_price = Decimal(str(bid))
    return Quote("binance", symbol, ts, ts, bid_price, Decimal(1), bid_price + 1, Decimal(1))


def candle(close: object, n: int, *, closed: bool = True, interval: str = "1m") -> Candle:
    start = T0 + n * 60 * S
    price = Decimal(str(close))
    return Candle(
        venue="binance",
        symbol="BTCUSDT",
        ts=start + 60 * S - 1,
        recv_ts=start + 60 * S,
        interval=interval,
        start=start,
        end=start + 60 * S - 1,
        open=price,
        high=price,
        low=price,
        close=price,
        volume=Decimal(1),
        closed=closed,
    )


def fired(step: AlertStep, events: Sequence[Event]) -> list[Alert]:
    """Feed one batch; check the events pass unchanged; return the alerts appended."""
    batch = list(events)
    out = step.process(batch)
    assert out[: len(batch)] == batch
    alerts = out[len(batch) :]
    assert all(isinstance(a, Alert) for a in alerts)
    return alerts  # type: ignore[return-value]


def run(step: AlertStep, events: Sequence[Event]) -> list[Alert]:
    """Feed events one batch each, advancing time before each as the Runner does."""
    alerts: list[Alert] = []
    for event in events:
        alerts += step.advance(event.recv_ts)  # type: ignore[arg-type]
        alerts += fired(step, [event])
    return alerts


def texts(alerts: Sequence[Alert]) -> list[str]:
    return [a.text for a in alerts]


# --------------------------------------------------------------------------------------------
# Durations and parsing


@pytest.mark.parametrize(
    ("text", "ns"),
    [("30s", 30 * S), ("5m", 300 * S), ("1h", 3600 * S), ("1h30m", 5400 * S), ("250ms", S // 4)],
)
def test_durations(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "hint"),
    [("5 min", "'5m'"), ("10", "'10s'"), ("2 hours", "'2h'"), ("1 sec", "'1s'")],
)
def test_bad_duration_suggests_the_spelling(text: str, hint: str) -> None:
    with pytest.raises(UsageError, match=f"did you mean {hint}"):
        parse_duration(text, what="cooldown")


@pytest.mark.parametrize("text", ["", "0s", "soon", "-5m", "5x"])
def test_bad_duration_says_how(text: str) -> None:
    with pytest.raises(UsageError, match=r"e\.g\. '30s', '5m'"):
        parse_duration(text)


def test_cli_expression_options_quotes_and_defaults() -> None:
    rule = Rule.parse(
        "price > 45000; cooldown=30s; severity=critical; targets=42,-1001;"
        " message='{symbol}; at {price}'; symbols=btcusdt",
        [Trade],
    )
    assert rule.name == "price > 45000"
    assert (rule.kind, rule.severity, rule.cooldown) == ("threshold", "critical", 30 * S)
    assert rule.targets == ("42", "-1001")
    assert rule.symbols == frozenset({"BTCUSDT"})
    assert rule.template.text == "{symbol}; at {price}"
    assert rule.kinds == frozenset({Trade})
    # A field compared with a single '=' is a condition, not an option.
    assert Rule.parse("symbol = 'BTCUSDT'", [Trade]).name == "symbol = 'BTCUSDT'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("price > 1; cooldwn=5m", r"unknown option 'cooldwn' \(did you mean 'cooldown'\?\)"),
        ("price > 1; cooldown=5 min", r"cooldown '5 min' \(did you mean '5m'\?\)"),
        ("price > 1; severity=warn", r"unknown severity 'warn' \(did you mean 'warning'\?\)"),
        ("kind=chnage; window=5m", r"unknown rule kind 'chnage' \(did you mean 'change'\?\)"),
        ("kind=trade", r"write the condition kind == 'trade'"),
        ("price > 1; qty > 2", "more than one condition"),
        ("price > 1; cooldown=1m; cooldown=2m", "given twice"),
        ("cooldown=5m", "needs a condition"),
        ("price > 1; window=5m", "'window' does not apply to threshold rules"),
        ("price > 1; threshold=5", r"put the number in the condition"),
        ("price > 1; targets=me", "neither a number nor an @channelusername"),
        ("price > 1; venues=binanse", r"unknown venue 'binanse' \(did you mean 'binance'\?\)"),
        ("kind=change; threshold=3", "change rules need a window"),
        ("kind=change; window=5m", "need a threshold in percent"),
        ("kind=rsi; threshold=70..30", "must be 'LOW..HIGH'"),
        ("kind=volume_spike; window=1m; period=1", "at least 2 windows"),
        ("kind=whale", "need a threshold in ETH or tokens"),
        ("symbol == 'X'; rearm=5", "a re-arm band"),
        ("kind=volume_spike; window=1m; rearm=5", "'rearm' does not apply to volume_spike"),
    ],
)
def test_bad_rules_are_usage_errors_with_hints(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Rule.parse(text, [Trade, Quote, Candle])


def test_condition_is_type_checked_against_the_stream() -> None:
    with pytest.raises(FilterError, match=r"unknown field 'prise'.*did you mean 'price'"):
        Rule.parse("prise > 45000", [Trade])
    with pytest.raises(UsageError, match="can never fire on this stream"):
        Rule.parse("bid_price > 45000", [Trade])
    with pytest.raises(UsageError, match=r"rsi rules read candle events.*produces trade"):
        Rule.parse("kind=rsi", [Trade])


def test_build_rules_from_cli_and_config(tmp_path: Path) -> None:
    path = tmp_path / "irisflow.toml"
    path.write_text(
        "[[alerts]]\nname = 'btc-45k'\ncondition = 'price > 45000'\ncooldown = '5m'\n"
        "symbols = ['btcusdt']\n\n"
        "[[alerts]]\nname = 'rsi'\nkind = 'rsi'\ncondition = 'true'\n"
    )
    config = load_config(path)
    notes: list[str] = []
    rules = build_rules(["qty > 10"], config, [Trade], warn=notes.append)
    assert [(r.name, r.source) for r in rules] == [
        ("qty > 10", "--alert 'qty > 10'"),
        ("btc-45k", f"config file {str(path)!r}"),
    ]
    # The config serves every stream: a rule this stream cannot fire is off, with a note.
    assert len(notes) == 1
    assert "alert 'rsi'" in notes[0]
    assert "off for this run" in notes[0]
    assert [r.name for r in build_rules([], config, [Trade, Candle])] == ["btc-45k", "rsi"]
    assert len(build_rules([], config)) == 2  # every kind: what `alerts list` shows
    with pytest.raises(UsageError, match="two alerts are named 'btc-45k'"):
        build_rules(["price > 1; name=btc-45k"], config, [Trade])


def test_config_errors_name_the_file_and_rule(tmp_path: Path) -> None:
    path = tmp_path / "irisflow.toml"
    path.write_text(
        "[[alerts]]\nname = 'big'\ncondition = 'price > 1'\nmessage = '{symbl} at {price}'\n"
    )
    with pytest.raises(UsageError) as info:
        build_rules([], load_config(path), [Trade])
    text = str(info.value)
    assert text.startswith(f"alert 'big' (config file {str(path)!r}): message template")
    assert "unknown field 'symbl' (did you mean 'symbol'?)" in text


def test_a_string_where_a_list_belongs_is_caught() -> None:
    spec = AlertConfig(name="a", condition="price > 1", symbols=tuple("BTCUSDT"))
    with pytest.raises(UsageError, match=r"symbols must be a list, e\.g\. symbols = \['BTCUSDT'\]"):
        Rule.from_config(spec, [Trade])


# --------------------------------------------------------------------------------------------
# Threshold crossings


def test_threshold_fires_when_it_becomes_true_not_while_it_stays_true() -> None:
    step = AlertStep([Rule.parse("price > 45000", [Trade])])
    prices = [44900, 45001, 45100, 45050, 44999, 44000, 45002, 45003]
    alerts = run(step, [trade(p, i) for i, p in enumerate(prices)])
    assert texts(alerts) == [
        "price > 45000: BTCUSDT on binance, price = 45001",
        "price > 45000: BTCUSDT on binance, price = 45002",
    ]
    first = alerts[0]
    assert (first.venue, first.symbol, first.ts, first.recv_ts) == (
        "binance",
        "BTCUSDT",
        T0 + S,
        T0 + S,
    )
    assert (first.rule, first.severity, first.count, first.targets) == (
        "price > 45000",
        "warning",
        1,
        (),
    )


def test_already_true_at_start_fires_once() -> None:
    step = AlertStep([Rule.parse("price > 45000", [Trade])])
    assert len(run(step, [trade(45500, 0), trade(45600, 1)])) == 1


def test_crossings_are_per_venue_and_symbol_and_per_rule() -> None:
    step = AlertStep(
        [
            Rule.parse("price > 100; message='{venue} {symbol} over 100'", [Trade]),
            Rule.parse("price > 200; message='{venue} {symbol} over 200'", [Trade]),
        ]
    )
    events = [
        trade(150, 0),
        trade(150, 1, symbol="ETHUSDT"),
        trade(150, 2, venue="kraken"),
        trade(250, 3),
        trade(160, 4, symbol="ETHUSDT"),
    ]
    assert texts(run(step, events)) == [
        "binance BTCUSDT over 100",
        "binance ETHUSDT over 100",
        "kraken BTCUSDT over 100",
        "binance BTCUSDT over 200",
    ]


def test_events_pass_through_unchanged() -> None:
    step = AlertStep([Rule.parse("price > 1", [Trade, Quote])])
    batch: list[Event] = [quote(5, 0), trade(2, 0), Gap("binance", "*", T0, T0, (), T0, T0, "x")]
    out = step.process(batch)
    assert out[:3] == batch
    assert all(a is b for a, b in zip(out, batch, strict=False))
    assert len(out) == 4
    quiet: list[Event] = [quote(5, 1), trade(3, 1)]
    assert step.process(quiet) is quiet  # nothing fired: the very same list


def test_rearm_band_is_hysteresis() -> None:
    step = AlertStep([Rule.parse("price > 45000; rearm=100", [Trade])])
    prices = [45001, 44950, 45010, 44901, 45020, 44900, 45030]
    alerts = run(step, [trade(p, i) for i, p in enumerate(prices)])
    # 44950 and 44901 are inside the band (re-arming needs <= 44900).
    assert [str(a.text.rsplit(" ", 1)[1]) for a in alerts] == ["45001", "45030"]

    step = AlertStep([Rule.parse("price < 100; rearm=1%", [Trade])])
    prices = [99, 100.5, 98, 101, 97]  # re-arms at >= 101
    assert [
        a.text.rsplit(" ", 1)[1] for a in run(step, [trade(p, i) for i, p in enumerate(prices)])
    ] == [
        "99",
        "97",
    ]


def test_rearm_condition_may_use_other_events() -> None:
    step = AlertStep([Rule.parse("price > 45000; rearm=bid_price < 44000", [Trade, Quote])])
    events: list[Event] = [
        trade(45001, 0),
        trade(44000, 1),  # the condition is false, but that does not re-arm this rule
        trade(45002, 2),
        quote(43999, 3),  # this does
        trade(45003, 4),
    ]
    assert [a.text.rsplit(" ", 1)[1] for a in run(step, events)] == ["45001", "45003"]


def test_scope_venues_and_symbols() -> None:
    step = AlertStep([Rule.parse("price > 1; venues=binance; symbols=ethusdt,solusdt", [Trade])])
    events = [
        trade(2, 0),
        trade(2, 1, symbol="ETHUSDT", venue="kraken"),
        trade(2, 2, symbol="ETHUSDT"),
        trade(2, 3, symbol="SOLUSDT"),
    ]
    assert [(a.venue, a.symbol) for a in run(step, events)] == [
        ("binance", "ETHUSDT"),
        ("binance", "SOLUSDT"),
    ]


# --------------------------------------------------------------------------------------------
# Cooldown and digests


def test_firings_within_the_cooldown_fold_into_one_digest() -> None:
    step = AlertStep([Rule.parse("price > 45000; cooldown=5m", [Trade])])
    events = [trade(45000.5, 0)]
    for k in range(12):  # 12 more crossings, at 20 s, 40 s, ... 240 s
        events += [trade(44000, 10 + 20 * k), trade(45001 + k, 20 + 20 * k)]
    alerts = run(step, events)
    assert texts(alerts) == ["price > 45000: BTCUSDT on binance, price = 45000.5"]
    assert step.advance(T0 + 299 * S) == []
    (digest,) = step.advance(T0 + 300 * S)
    assert isinstance(digest, Alert)
    assert digest.count == 12
    assert digest.text == (
        "price > 45000 fired 12 times in 4 min, last at 00:04:00 UTC: "
        "price > 45000: BTCUSDT on binance, price = 45012"
    )
    assert (digest.ts, digest.recv_ts) == (T0 + 240 * S, T0 + 300 * S)
    assert digest.key == alert_key("price > 45000", events[-1])
    assert digest.key != alerts[0].key
    assert step.statistics().fired == 1
    assert step.statistics().folded == 12
    assert step.statistics().digests == 1

    # A new cooldown began with the digest: one more firing comes at its end, on its own.
    assert run(step, [trade(44000, 305), trade(45100, 310)]) == []
    (single,) = step.advance(T0 + 600 * S)
    assert (single.count, single.text) == (1, "price > 45000: BTCUSDT on binance, price = 45100")
    # After a quiet cooldown the next firing goes at once.
    assert step.advance(T0 + 900 * S) == []
    assert len(run(step, [trade(44000, 950), trade(45200, 1000)])) == 1


def test_a_late_advance_still_emits_the_digest_before_the_next_alert() -> None:
    step = AlertStep([Rule.parse("price > 1; cooldown=1m", [Trade])])
    first = fired(step, [trade(2, 0), trade(0, 1), trade(2, 2), trade(0, 3), trade(3, 4)])
    assert [a.count for a in first] == [1]
    # No advance() in between: the batch at 70 s ends the cooldown (with a digest) first,
    # and the digest starts the next cooldown, into which the firing at 70 s folds.
    later = fired(step, [trade(0, 69), trade(4, 70)])
    assert [(a.count, a.recv_ts) for a in later] == [(2, T0 + 60 * S)]
    assert [(a.count, a.ts, a.recv_ts) for a in step.advance(T0 + 120 * S)] == [
        (1, T0 + 70 * S, T0 + 120 * S)
    ]


def test_cooldowns_are_per_symbol_and_flush_at_the_end() -> None:
    step = AlertStep([Rule.parse("price > 1; cooldown=1h", [Trade])])
    events = [trade(2, 0), trade(2, 1, symbol="ETHUSDT"), trade(0, 2), trade(5, 3)]
    assert [a.symbol for a in run(step, events)] == ["BTCUSDT", "ETHUSDT"]
    (digest,) = step.flush()
    assert (digest.symbol, digest.count, digest.recv_ts) == ("BTCUSDT", 1, T0 + 3 * S)
    assert step.flush() == []


def test_the_step_works_in_a_pipeline() -> None:
    kinds = [Trade, Quote]
    pipeline = Pipeline.from_filters(["symbol == 'BTCUSDT'"], kinds)
    pipeline.steps.append(AlertStep([Rule.parse("price > 1; cooldown=10s", kinds)]))
    assert isinstance(pipeline.steps[0], FilterStep)
    out = pipeline.process([trade(2, 0), trade(2, 0, symbol="ETHUSDT")])
    assert [e.kind for e in out] == ["trade", "alert"]
    pipeline.process([trade(0, 1), trade(3, 2)])
    assert [e.kind for e in pipeline.advance(T0 + 10 * S)] == ["alert"]
    pipeline.process([trade(0, 11), trade(4, 12)])
    assert [(e.kind, e.count) for e in pipeline.flush()] == [("alert", 1)]  # type: ignore[attr-defined]


def test_step_declares_what_it_emits_and_whether_it_is_timed() -> None:
    timed = AlertStep([Rule.parse("price > 1; cooldown=1m", [Trade])], kinds=[Trade, Gap])
    assert timed.output_kinds == frozenset({Trade, Gap, Alert})
    assert timed.timed
    untimed = AlertStep([Rule.parse("price > 1", [Trade])])
    assert untimed.output_kinds is None
    assert not untimed.timed


def test_threshold_value_is_the_compared_expression() -> None:
    step = AlertStep([Rule.parse("qty * price >= 100000; name=big", [Trade])])
    (alert,) = fired(step, [trade(50000, 0, qty="2.5")])
    assert alert.text == "big: BTCUSDT on binance, qty * price = 125000"
    step = AlertStep([Rule.parse("side == 'buy' and price > 1; name=b", [Trade])])
    (alert,) = fired(step, [trade(2, 0)])
    assert alert.text == "b: BTCUSDT on binance at 2026-01-01T00:00:00Z"


# --------------------------------------------------------------------------------------------
# Templates


def test_template_renders_fields_exactly() -> None:
    step = AlertStep(
        [Rule.parse("price > 1; message='{symbol} traded {qty} at {price} on {venue}'", [Trade])]
    )
    (alert,) = fired(step, [trade("45001.50000000", 3, qty="0.50000000")])
    assert alert.text == "BTCUSDT traded 0.5 at 45001.5 on binance"

    step = AlertStep(
        [
            Rule.parse(
                "price > 1; severity=critical; name=big; "
                "message='{{{rule}}} {severity} {kind}: {price:,.2f} at {ts:%H:%M:%S} ({ts}), "
                "value {value} of {measure}'",
                [Trade],
            )
        ]
    )
    (alert,) = fired(step, [trade("45001.5", 3.25)])
    assert alert.text == (
        "{big} critical trade: 45,001.50 at 00:00:03 (2026-01-01T00:00:03.250Z), "
        "value 45001.5 of price"
    )


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("{pric}", r"unknown field 'pric' \(did you mean 'price'\?\)"),
        ("{symbol:.2f}", r"format spec '\.2f' does not suit field 'symbol'"),
        ("{price.real}", r"must be a plain field name"),
        ("{}", r"must be a plain field name"),
        ("{price!r}", "no conversion"),
        ("{price", "malformed"),
        ("{bid_price}", r"unknown field 'bid_price'"),
    ],
)
def test_bad_templates_are_usage_errors(message: str, error: str) -> None:
    with pytest.raises(UsageError, match=error):
        Rule.parse(f"price > 1; message={message!r}", [Trade, Quote])


def test_template_missing_value_is_na() -> None:
    template = Template.parse("{a} and {b:.2f}")
    assert template.fields == ("a", "b")
    assert template.render({"a": None}) == "n/a and n/a"
    assert template.render({"a": True, "b": Decimal("1.005")}) == "true and 1.00"


# --------------------------------------------------------------------------------------------
# Percent change


def test_change_over_a_window_of_event_time() -> None:
    step = AlertStep([Rule.parse("kind=change; window=5m; threshold=3", [Trade])])
    events = [trade(100, 0), trade(101, 60), trade(103, 120), trade(102, 180), trade("104.03", 400)]
    alerts = run(step, events)
    # 103 is +3% on 100 (the oldest price, history younger than 5 min); at 400 s the price
    # as of 5 min before (100 s) is 101, and 104.03 is +3% on that.
    assert texts(alerts) == [
        "change 3 5m: BTCUSDT on binance moved +3.00% in 5m (100 → 103)",
        "change 3 5m: BTCUSDT on binance moved +3.00% in 5m (101 → 104.03)",
    ]


def test_change_directions_and_band() -> None:
    up_down = [trade(100, 0), trade(103, 60), trade("96.9", 120)]
    both = AlertStep([Rule.parse("kind=change; window=5m; threshold=3", [Trade])])
    assert [a.text.split(" moved ")[1][:6] for a in run(both, up_down)] == ["+3.00%", "-3.10%"]
    falls = AlertStep([Rule.parse("kind=change; window=5m; threshold=-3", [Trade])])
    assert [a.text.split(" moved ")[1][:6] for a in run(falls, up_down)] == ["-3.10%"]
    rises = AlertStep([Rule.parse("kind=change; window=5m; threshold=+3%", [Trade])])
    assert len(run(rises, up_down)) == 1

    banded = AlertStep([Rule.parse("kind=change; window=1h; threshold=3; rearm=1", [Trade])])
    prices = [100, 103, "102.5", 104, "101.9", 103]  # 2.5% stays inside the band, 1.9% leaves
    alerts = run(banded, [trade(p, 60 * i) for i, p in enumerate(prices)])
    assert [a.text.split(" moved ")[1][:6] for a in alerts] == ["+3.00%", "+3.00%"]


def test_change_follows_a_value_expression_and_quote_mids() -> None:
    step = AlertStep([Rule.parse("kind=change; window=1m; threshold=10", [Quote])])
    assert len(run(step, [quote(100, 0), quote(110, 30)])) == 0  # mid 100.5 -> 110.5: 9.95%
    assert len(run(step, [quote(111, 40)])) == 1  # mid 111.5: +10.95%
    step = AlertStep(
        [Rule.parse("kind=change; window=1m; threshold=50; value=qty * price", [Trade])]
    )
    assert len(run(step, [trade(10, 0, qty="1"), trade(10, 1, qty="2")])) == 1


# --------------------------------------------------------------------------------------------
# Volume spikes


def test_volume_spike_against_trailing_mean_and_stddev() -> None:
    step = AlertStep(
        [Rule.parse("kind=volume_spike; window=1m; period=5; threshold=2; name=vol", [Trade])]
    )
    history = [trade(1, 60 * i + 1, qty=q) for i, q in enumerate(["10", "12", "8", "11", "9"])]
    assert run(step, history) == []
    # Trailing windows 10, 12, 8, 11, 9: mean 10, sample variance (0+4+4+1+1)/4 = 2.5,
    # stddev 1.5811388; the limit is 10 + 2 * 1.5811388 = 13.162.
    burst = [trade(1, 300, qty="5"), trade(1, 310, qty="5"), trade(1, 320, qty="4")]
    alerts = run(step, burst)
    assert texts(alerts) == [
        "vol: BTCUSDT on binance volume 14 in 1m (mean 10, stddev 1.58114, z 2.53)"
    ]
    assert alerts[0].ts == burst[-1].ts
    assert run(step, [trade(1, 330, qty="1")]) == []  # once per window
    # Next window: trailing 12, 8, 11, 9, 15: mean 11, variance (1+9+0+4+16)/4 = 7.5,
    # stddev 2.7386128; limit 16.477.
    assert run(step, [trade(1, 361, qty="16")]) == []
    assert texts(run(step, [trade(1, 362, qty="1")])) == [
        "vol: BTCUSDT on binance volume 17 in 1m (mean 11, stddev 2.73861, z 2.19)"
    ]


def test_quiet_windows_count_as_zero_volume() -> None:
    step = AlertStep([Rule.parse("kind=volume_spike; window=1m; period=3; threshold=2", [Trade])])
    # Windows 0, 1, 2 hold 1, nothing, 1: mean 2/3, variance (1/9+4/9+1/9)/2 = 1/3,
    # stddev 0.57735; limit 0.6667 + 1.1547 = 1.8214.
    assert run(step, [trade(1, 0, qty="1"), trade(1, 150, qty="1")]) == []
    assert run(step, [trade(1, 185, qty="1.8")]) == []
    assert len(run(step, [trade(1, 186, qty="0.1")])) == 1


# --------------------------------------------------------------------------------------------
# RSI


def test_rsi_leaving_the_band_hand_computed() -> None:
    step = AlertStep([Rule.parse("kind=rsi; period=3; name=rsi", [Candle])])
    closes = [10, 11, 12, 11]  # changes +1 +1 -1: avg gain 2/3, loss 1/3, RSI 66.67
    assert run(step, [candle(c, i) for i, c in enumerate(closes)]) == []
    # 13 (+2): gain (2/3*2+2)/3 = 10/9, loss (1/3*2)/3 = 2/9, RSI = 100*10/12 = 83.33.
    assert texts(run(step, [candle(13, 4)])) == [
        "rsi: BTCUSDT on binance RSI(3) is 83.33, outside 30..70"
    ]
    # 14 (+1): gain 29/27, loss 4/27, RSI 87.88: still outside, no new alert.
    assert run(step, [candle(14, 5)]) == []
    # An open candle and a repeated closed one change nothing.
    assert run(step, [candle(1, 6, closed=False), candle(14, 5)]) == []
    # 10 (-4): gain 58/81, loss 116/81, RSI 33.33: back inside, re-armed.
    assert run(step, [candle(10, 6)]) == []
    # 8 (-2): gain 116/243, loss 394/243, RSI = 100*116/510 = 22.75.
    assert texts(run(step, [candle(8, 7)])) == [
        "rsi: BTCUSDT on binance RSI(3) is 22.75, outside 30..70"
    ]


def wilder_rsi(closes: Sequence[int], n: int) -> list[Fraction]:
    """RSI(n) after each close from the (n+1)th, computed with exact fractions."""
    changes = [Fraction(b - a) for a, b in itertools.pairwise(closes)]
    gains = [max(c, Fraction(0)) for c in changes]
    losses = [max(-c, Fraction(0)) for c in changes]
    gain, loss = sum(gains[:n]) / n, sum(losses[:n]) / n
    out = [100 - 100 / (1 + gain / loss)]
    for g, loss_i in zip(gains[n:], losses[n:], strict=True):
        gain = (gain * (n - 1) + g) / n
        loss = (loss * (n - 1) + loss_i) / n
        out.append(100 - 100 / (1 + gain / loss))
    return out


def test_rsi14_matches_wilders_formula() -> None:
    closes = [100 + (i * 37) % 11 + (i // 3) * (1 if i < 20 else -3) for i in range(40)]
    step = AlertStep([Rule.parse("kind=rsi; threshold=45..55; message='{rsi}'", [Candle])])
    alerts = run(step, [candle(c, i) for i, c in enumerate(closes)])
    # The rule fires where RSI(14) goes above 55 or below 45 from anywhere else.
    expected: list[str] = []
    previous = "inside"
    for value in wilder_rsi(closes, 14):
        state = "above" if value > 55 else "below" if value < 45 else "inside"
        if state not in ("inside", previous):
            expected.append(f"{Decimal(value.numerator) / Decimal(value.denominator):.2f}")
        previous = state
    assert len(expected) >= 2
    assert texts(alerts) == expected


# --------------------------------------------------------------------------------------------
# Whale transfers (on-chain kinds)

chain = pytest.importorskip("irisflow._chain")
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
A = "0x" + "0a" * 20
B = "0x" + "0b" * 20


def transfer(n: int, raw: int, *, log_index: int | None = None, t: float = 0) -> Event:
    ts = T0 + round(t * S)
    result: Event = chain.TokenTransfer(
        venue="moralis",
        symbol=USDC,  # the venue did not know the token: the rule's token table does
        ts=ts,
        recv_ts=ts,
        token=USDC,
        from_address=A,
        to_address=B,
        raw_amount=raw,
        tx_hash=f"0x{n:064x}",
        log_index=n if log_index is None else log_index,
    )
    return result


def transaction(n: int, eth: int, *, pending: bool, t: float = 0) -> Event:
    ts = T0 + round(t * S)
    result: Event = chain.Transaction(
        venue="alchemy",
        symbol="ETH",
        ts=ts,
        recv_ts=ts,
        tx_hash=f"0x{n:064x}",
        from_address=A,
        to_address=B,
        value_wei=eth * 10**18,
        value_eth=chain.scale(eth * 10**18, 18),
        gas=21_000,
        nonce=n,
        input="0x",
        pending=pending,
    )
    return result


def test_whale_transfers_fire_once_each() -> None:
    kinds = [chain.TokenTransfer, chain.Transaction]
    step = AlertStep([Rule.parse("kind=whale; threshold=1000; name=whale; targets=42", kinds)])
    events = [
        transfer(1, 1500 * 10**6),
        transfer(2, 500 * 10**6),  # below the threshold
        transfer(3, 2000 * 10**6, log_index=7),  # same block time as the first
        transaction(4, 2000, pending=True),
        transaction(4, 2000, pending=False, t=12),  # the same transaction, mined
    ]
    alerts = run(step, events)
    short = f"0x{1:064x}"
    assert alerts[0].text == f"whale: 1500 USDC from {A} to {B} on moralis (tx {short})"
    assert [(a.symbol, a.text.split()[1]) for a in alerts] == [
        ("USDC", "1500"),
        ("USDC", "2000"),
        ("ETH", "2000"),
    ]
    assert all(a.targets == ("42",) for a in alerts)
    # Transfers in one block share venue, symbol and time: the key still tells them apart.
    assert len({a.key for a in alerts}) == 3


def internal(n: int, index: int, eth: int) -> Event:
    result: Event = chain.InternalTransaction(
        venue="moralis",
        symbol="ETH",
        ts=T0,
        recv_ts=T0,
        tx_hash=f"0x{n:064x}",
        internal_index=index,
        from_address=A,
        to_address=B,
        value_wei=eth * 10**18,
        value_eth=chain.scale(eth * 10**18, 18),
    )
    return result


def test_whale_rules_fire_on_internal_transactions() -> None:
    kinds = [chain.Transaction, chain.InternalTransaction]
    step = AlertStep([Rule.parse("kind=whale; threshold=100; name=whale", kinds)])
    events = [
        internal(5, 0, 150),
        internal(5, 1, 50),  # below the threshold
        internal(5, 2, 300),  # same transaction, another call: a whale of its own
        internal(5, 0, 150),  # the confirmed copy of the first: not again
    ]
    alerts = run(step, events)
    assert [a.text.split()[1] for a in alerts] == ["150", "300"]
    assert alerts[0].text.startswith(f"whale: 150 ETH from {A} to {B} on moralis")


def test_a_reorg_withdraws_the_whale_alert_of_its_transfer() -> None:
    kinds = [chain.TokenTransfer, chain.Retraction]
    rule = "kind=whale; threshold=1000; name=whale; targets=42; cooldown=1h"
    step = AlertStep([Rule.parse(rule, kinds)])
    big, small = transfer(1, 1500 * 10**6), transfer(2, 500 * 10**6)

    def undo(event: Any, t: float) -> Event:
        ts = T0 + round(t * S)
        result: Event = chain.Retraction(
            event.venue, event.symbol, ts, ts, event.kind, event.tx_hash, event.log_index
        )
        return result

    (first,) = run(step, [big, small])
    out = run(step, [undo(small, 1), undo(big, 2), undo(big, 3)])
    (withdrawal,) = out  # not the small one (no alert), not twice; the cooldown holds none back
    assert isinstance(withdrawal, Alert)
    assert withdrawal.text == f"withdrawn (reorg): {first.text}"
    assert withdrawal.key == f"{first.key}:withdrawn"
    assert (withdrawal.targets, withdrawal.rule, withdrawal.ts) == (("42",), "whale", T0 + 2 * S)
    assert step.statistics().withdrawn == 1
    # Mined again in another block: a whale again (after its cooldown).
    (again,) = run(step, [transfer(1, 1500 * 10**6, t=7200)])
    assert again.text == first.text


def test_whale_rules_need_chain_events() -> None:
    with pytest.raises(
        UsageError, match="whale rules read internal_tx, token_transfer, transaction events"
    ):
        Rule.parse("kind=whale; threshold=1", [Trade])
    rule = Rule.parse("kind=whale; threshold=1; symbols=usdc", [chain.TokenTransfer])
    assert rule.symbols == frozenset({"USDC"})


def test_conditions_over_window_results() -> None:
    """A pipeline step's result kind (registered or not) can carry a rule."""

    @attrs.frozen
    class VwapResult(Event):
        kind: ClassVar[str] = "vwap_result"
        vwap: Decimal = attrs.field(metadata={"doc": "volume-weighted price"})
        count: int = attrs.field(metadata={"doc": "trades"})

    rule = Rule.parse("vwap > 100 and count >= 2; message='{symbol} vwap {vwap}'", [VwapResult])
    step = AlertStep([rule])
    results = [
        VwapResult("binance", "BTCUSDT", T0, T0, Decimal(v), n)
        for v, n in [(99, 5), (101, 1), (102, 3)]
    ]
    assert texts(fired(step, results)) == ["BTCUSDT vwap 102"]


# --------------------------------------------------------------------------------------------
# Mistakes are one-line usage errors; the config file and --alert agree


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind=change; window=1m; threshold=1e999999999", r"threshold '1e999999999' is out of"),
        ("kind=whale; threshold=-1e999999999", r"threshold '-1e999999999' is out of range"),
        ("kind=volume_spike; window=1m; threshold=1e-999999", r"'1e-999999' is out of range"),
        ("price > 1e999999999; rearm=1%", r"a number in it is out of range"),
        ("kind=change; window=1m; threshold=3; rearm=" + "9" * 1200, r"re-arm band '9+' is out"),
    ],
)
def test_huge_numbers_are_usage_errors_not_tracebacks(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Rule.parse(text, [Trade, chain.TokenTransfer])


def test_cli_targets_are_comma_separated_ids() -> None:
    rule = Rule.parse("price > 1; targets=1,2,3", [Trade])
    assert rule.targets == ("1", "2", "3")
    assert Rule.parse("price > 1; targets=7", [Trade]).targets == ("7",)
    # In the config file a string where a list belongs still gets the TOML advice.
    spec = AlertConfig(name="a", condition="price > 1", targets=("1", "2", "3"))
    with pytest.raises(UsageError, match=r"targets must be a list, e\.g\. targets = \['123'\]"):
        Rule.from_config(spec, [Trade])


def test_config_condition_defaults_to_true_except_for_threshold_rules(tmp_path: Path) -> None:
    path = tmp_path / "irisflow.toml"
    path.write_text(
        "[[alerts]]\nname = 'move'\nkind = 'change'\nwindow = '1m'\nthreshold = '3'\n\n"
        "[[alerts]]\nname = 'rsi'\nkind = 'rsi'\n"
    )
    config = load_config(path)
    assert [spec.condition for spec in config.alerts] == ["true", "true"]
    rules = build_rules([], config, [Trade, Candle])
    assert [str(rule.condition) for rule in rules] == ["true", "true"]
    # Same as on the command line.
    cli = Rule.parse("kind=change; window=1m; threshold=3; name=move", [Trade, Candle])
    assert cli.config is not None
    assert cli.config.condition == "true"
    assert rules[0].kinds == cli.kinds

    path.write_text("[[alerts]]\nname = 'btc'\nsymbols = ['BTCUSDT']\n")
    with pytest.raises(UsageError) as info:
        load_config(path)
    text = str(info.value)
    assert str(path) in text
    assert "alert 'btc': a threshold alert needs a condition, e.g. condition = 'price" in text
    with pytest.raises(UsageError, match="a threshold alert needs a condition"):
        AlertConfig(name="x", condition="  ")


def test_whale_rules_import_the_chain_module_once_not_per_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import builtins

    kinds = [chain.TokenTransfer, chain.Transaction]
    step = AlertStep([Rule.parse("kind=whale; threshold=1000; name=whale", kinds)])
    imports: list[str] = []
    real_import = builtins.__import__

    def counting_import(name: str, *args: object, **kwargs: object) -> object:
        imports.append(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", counting_import)
    alerts = run(step, [transfer(i, (500 + i * 200) * 10**6) for i in range(1, 6)])
    monkeypatch.undo()
    assert len(alerts) == 3
    assert imports == []
