"""The pipeline language as text: parsing, type checking, carets, named pipelines."""

from __future__ import annotations

import contextlib
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pipeline_helpers import feed, trade

from irisflow import (
    Candle,
    Event,
    FilterError,
    FilterStep,
    Gap,
    Quote,
    Trade,
    UsageError,
)
from irisflow._aggregates import Agg
from irisflow._config import load_config
from irisflow._pipe import STEP_NAMES, build_pipeline, parse_pipe
from irisflow._pipeline import Pipeline
from irisflow._steps import PipelineError
from irisflow._windows import Window, WindowStep

KINDS = frozenset({Trade, Quote, Candle})
ISSUE = "filter price > 45000 | by symbol | window 1m | agg vwap, ohlc(price), count, sum(qty)"


def under_caret(message: str) -> str:
    """The text above the caret line of an error message, cut to the carets."""
    lines = message.splitlines()
    caret = lines[-1]
    start = caret.index("^")
    return lines[-2][start : start + caret.count("^")]


def test_the_example_of_the_issue() -> None:
    steps = parse_pipe(ISSUE, KINDS)
    assert [type(s).__name__ for s in steps] == ["FilterStep", "WindowStep"]
    window = steps[1]
    assert isinstance(window, WindowStep)
    (result,) = (k for k in window.output_kinds if issubclass(k, Window))
    names = {f.name for f in attrs.fields(result)}
    assert {"vwap", "open", "high", "low", "close", "count", "sum_qty", "key"} <= names


def test_text_and_python_api_build_the_same_pipeline() -> None:
    by_text = build_pipeline([], [ISSUE], {Trade})
    by_api = (
        Pipeline(kinds={Trade})
        .filter("price > 45000")
        .key_by("symbol")
        .window(tumbling="1m")
        .agg(Agg.vwap(), Agg.ohlc("price"), Agg.count(), Agg.sum("qty"))
    )
    events = [trade(t, 45000 + t, symbol=s) for t in range(0, 200, 7) for s in ("A", "B")]
    assert feed(by_text, events, flush=True) == feed(by_api, events, flush=True)


def test_every_step_parses() -> None:
    text = (
        "filter kind == 'trade' | select notional = price * qty, double = qty * 2"
        " | dedupe 10s on trade_id | by symbol | throttle 100ms | sample 2"
        " | window 5m slide 1m lateness 2s late emit idle 1s | agg vwap, n = count, ohlc"
        " | filter vwap > 0 | rsi 3 | spike 1% in 1m on rsi"
    )
    steps = parse_pipe(text, KINDS)
    assert len(steps) == 9
    assert [type(s).__name__ for s in parse_pipe("window session 30s | agg count", KINDS)] == [
        "WindowStep"
    ]
    assert parse_pipe("bars notional 1e6 on price * qty | agg ohlcv", KINDS)
    assert parse_pipe("bars count 100 | agg ohlc | sample 1m", KINDS)
    assert parse_pipe("key_by venue, symbol | join (kind == 'quote') within 1s outer", KINDS)


@pytest.mark.parametrize(
    ("text", "message", "marked"),
    [
        ("filter price > 1 | windw 1m", "unknown step 'windw' (did you mean 'window'?)", "windw"),
        ("window 1m | agg vwapp", "unknown aggregate 'vwapp' (did you mean 'vwap'?)", "vwapp"),
        ("window 1x | agg vwap", "bad window size '1x'", "1x"),
        (
            "window 1m latenes 2s",
            "unknown option 'latenes' of window (did you mean 'lateness'?)",
            "latenes",
        ),
        ("filter price > 1 || by symbol", "empty step", "|"),
        ("by symbol | agg vwap", "agg must come right after a window or bars step", "vwap"),
        (
            "window 1m slide 2m | agg count",
            "slide 2m is longer than its size 1m",
            "window 1m slide 2m",
        ),
        ("bars weight 10", "unknown bar measure 'weight'", "weight"),
        ("spike 2%", "spike takes a percent and a window", "2%"),
        ("sample 1 2", "sample takes a count or a duration", "1 2"),
        ("join venue == 'x' within 1s", "in brackets", "venue == 'x' within 1s"),
        (
            "window 1m | agg sum(price * qty)",
            "name the value of 'sum(price * qty)'",
            "sum(price * qty)",
        ),
    ],
)
def test_mistakes_point_at_the_step_with_a_caret(text: str, message: str, marked: str) -> None:
    with pytest.raises(PipelineError) as info:
        parse_pipe(text, KINDS)
    assert message in str(info.value)
    assert under_caret(str(info.value)) == marked
    assert str(info.value).splitlines()[-2].strip() == text


@pytest.mark.parametrize(
    ("text", "message", "marked"),
    [
        (
            "filter prise > 1 | by symbol",
            "unknown field 'prise' in filter 'prise > 1' (did you mean 'price'?)",
            "prise",
        ),
        ("by symbol | window 1m | agg sum(qyt)", "did you mean 'qty'?", "qyt"),
        ("select n = price * qty | filter n >> 1", "missing operand after '>'", ">"),
        (
            "filter kind == 'quote' | window 1m | agg sum(qty)",
            "field 'qty' in expression 'qty' belongs to trade events, which this stream does not"
            " produce (it produces quote events)",
            "qty",
        ),
        (
            "window 1m | agg vwap | filter price > 1",
            "field 'price' in filter 'price > 1' belongs to",
            "price",
        ),
    ],
)
def test_expression_mistakes_keep_their_caret_inside_the_pipe(
    text: str, message: str, marked: str
) -> None:
    with pytest.raises(FilterError) as info:
        parse_pipe(text, KINDS)
    assert message in str(info.value)
    assert under_caret(str(info.value)) == marked
    assert str(info.value).splitlines()[-2].strip() == text


def test_default_fields_that_are_missing_are_named() -> None:
    with pytest.raises(PipelineError, match="vwap uses price and qty by default") as info:
        parse_pipe("filter kind == 'quote' | window 1m | agg count, vwap", KINDS)
    assert under_caret(str(info.value)) == "vwap"


def test_window_results_have_their_own_fields_downstream() -> None:
    steps = parse_pipe("window 1m | agg vwap | filter vwap > 46000 and complete", KINDS)
    last = steps[-1]
    assert isinstance(last, FilterStep)
    assert {k.kind for k in last.output_kinds or ()} == {"window", "gap"}


def test_filters_come_first_then_the_named_pipeline_then_pipes(tmp_path: Path) -> None:
    path = tmp_path / "irisflow.toml"
    path.write_text(
        '[pipelines.minute-vwap]\npipe = "by symbol | window 1m | agg vwap"\n'
        '[pipelines.big]\npipe = "filter qty > 1"\n'
    )
    config = load_config(path)
    pipeline = build_pipeline(
        ["kind == 'trade'"], ["filter vwap > 100"], KINDS, config=config, pipeline="minute-vwap"
    )
    assert [type(s).__name__ for s in pipeline.steps] == ["FilterStep", "WindowStep", "FilterStep"]
    out = feed(pipeline, [trade(1, 50), trade(61, 150), trade(121, 1)])
    assert [e.vwap for e in out] == [150]  # type: ignore[attr-defined]


def test_unknown_pipeline_names_suggest_and_list(tmp_path: Path) -> None:
    path = tmp_path / "irisflow.toml"
    path.write_text(
        '[pipelines.minute-vwap]\npipe = "window 1m"\n[pipelines.big]\npipe = "filter qty > 1"\n'
    )
    config = load_config(path)
    with pytest.raises(UsageError) as info:
        build_pipeline([], [], KINDS, config=config, pipeline="minute-vwp")
    assert str(info.value).startswith("unknown pipeline 'minute-vwp' (did you mean 'minute-vwap'?;")
    assert "big, minute-vwap" in str(info.value)
    with pytest.raises(UsageError, match="no pipelines are defined"):
        build_pipeline([], [], KINDS, config=None, pipeline="x")


def test_errors_in_a_named_pipeline_say_which(tmp_path: Path) -> None:
    path = tmp_path / "irisflow.toml"
    path.write_text('[pipelines.bad]\npipe = "window 1m | agg vwapp"\n')
    with pytest.raises(PipelineError) as info:
        build_pipeline([], [], KINDS, config=load_config(path), pipeline="bad")
    assert str(info.value).startswith("pipeline 'bad' in ")
    assert under_caret(str(info.value)) == "vwapp"


def test_step_names() -> None:
    assert set(STEP_NAMES) >= {"filter", "select", "by", "throttle", "dedupe", "sample"}
    assert set(STEP_NAMES) >= {"window", "bars", "agg", "join", "spike", "rsi"}


@given(st.text(max_size=80))
def test_any_text_either_builds_or_is_a_usage_error(text: str) -> None:
    with contextlib.suppress(UsageError):
        parse_pipe(text, KINDS)


@given(
    st.lists(
        st.sampled_from(
            [
                "filter price > 1",
                "by symbol",
                "window 1m",
                "agg vwap",
                "agg count",
                "select n = qty * 2",
                "throttle 1s",
                "sample 3",
                "rsi",
                "spike 1% in 1m",
                "bars count 10",
                "filter vwap > 1",
                "join (kind == 'quote') within 1s",
            ]
        ),
        min_size=1,
        max_size=6,
    )
)
def test_any_chain_of_steps_either_builds_or_is_a_usage_error(steps: list[str]) -> None:
    text = " | ".join(steps)
    try:
        parse_pipe(text, KINDS)
    except UsageError as exc:
        refusal = str(exc)
    else:
        return
    assert "^" in refusal  # every refusal shows where


def test_output_kinds_follow_the_steps_even_when_steps_are_appended_by_hand() -> None:
    pipeline = Pipeline(kinds={Trade, Quote}).filter("kind == 'trade'")
    assert pipeline.output_kinds() == {Trade, Gap}

    class Passing:
        def process(self, events: list[Event]) -> list[Event]:
            return events

        def advance(self, now: int) -> list[Event]:
            return []

    pipeline.steps.append(Passing())  # no output_kinds: taken to pass on what it gets
    assert pipeline.output_kinds() == {Trade, Gap}
    more = build_pipeline([], ["window 1m | agg vwap"], pipeline.output_kinds())
    pipeline.steps.extend(more.steps)
    assert {k.kind for k in pipeline.output_kinds()} == {"window", "gap"}
    assert pipeline.timed  # a window is driven by the clock
    assert not Pipeline(kinds={Trade}).filter("price > 1").pipe("select n = qty * 2").timed
