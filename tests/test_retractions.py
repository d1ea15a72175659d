"""Reorg retractions through windows, bars and the per-event steps (sans-IO).

Chain events are built by hand; a retraction names one by natural key. Each test compares with
what the step gives for the same events without the retracted one, or with hand-computed sums.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irisflow import (
    Confirmation,
    Event,
    Gap,
    Pipeline,
    Retraction,
    Swap,
    TokenTransfer,
    Trade,
    Transaction,
)
from irisflow._bars import BarStep
from irisflow._chain import scale
from irisflow._reorg import REORG_HORIZON, Ledger, carries_chain, reorg_key
from irisflow._trackers import RsiStep
from irisflow._windows import Window, WindowStep

S = 1_000_000_000
M = 60 * S
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
POOL = "0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640"
A = "0x" + "0a" * 20
B = "0x" + "0b" * 20
CHAIN = {TokenTransfer, Swap, Transaction, Retraction, Confirmation}


def transfer(n: int, t: float, amount: str | int, *, symbol: str = "USDC") -> TokenTransfer:
    """USDC transfer number ``n`` (its tx hash and log index) at ``t`` seconds."""
    raw = int(Decimal(amount) * 10**6)
    ts = round(t * S)
    return TokenTransfer(
        "alchemy", symbol, ts, ts, USDC, A, B, raw, f"0x{n:064x}", n, 6, scale(raw, 6)
    )  # fmt: skip


def swap(n: int, t: float, amount0: int) -> Swap:
    ts = round(t * S)
    return Swap(
        "alchemy", POOL, ts, ts, POOL, "uniswap_v3", A, B, amount0, -amount0, f"0x{n:064x}", n
    )  # fmt: skip


def native(n: int, t: float, eth: int) -> Transaction:
    ts = round(t * S)
    wei = eth * 10**18
    return Transaction(
        "alchemy", "ETH", ts, ts, f"0x{n:064x}", A, B, wei, scale(wei, 18), 21_000, n, "0x", False
    )  # fmt: skip


def retract(event: Any, t: float | None = None) -> Retraction:
    """The retraction of ``event``, received at ``t`` seconds (default: right after it)."""
    ts = event.ts + 1 if t is None else round(t * S)
    index = getattr(event, "log_index", None)
    return Retraction(event.venue, event.symbol, ts, ts, event.kind, event.tx_hash, index)


def windows(out: Iterable[Event]) -> list[tuple[Any, ...]]:
    """``(start s, end s, count, sum_amount, revision)`` of the window results in ``out``."""
    return [
        (e.start // S, e.end // S, e.count, getattr(e, "sum_amount", None), e.revision)
        for e in out
        if isinstance(e, Window)
    ]


def run(pipeline: Pipeline, batches: Sequence[Sequence[Event]], flush: bool = True) -> list[Event]:
    out: list[Event] = []
    for batch in batches:
        out += pipeline.process(list(batch))
    return out + (pipeline.flush() if flush else [])


def chain_pipeline(text: str) -> Pipeline:
    return Pipeline(kinds=CHAIN).pipe(text)


# ------------------------------------------------------------------------------ windows


def test_an_open_window_is_refolded_without_the_retracted_event() -> None:
    pipeline = chain_pipeline("window 1m lateness 0 | agg sum(amount), max(amount), count")
    a, b, c = transfer(1, 1, 5), transfer(2, 2, 700), transfer(3, 3, 12)
    gone = retract(b)
    out = run(pipeline, [[a, b, c], [gone], [transfer(4, 61, 1)]], flush=False)
    assert out[0] is gone  # passed on, for later steps and sinks
    (window,) = [e for e in out if isinstance(e, Window)]
    # Exact: as if b had never come, and still complete (the max could not be "undone").
    assert (window.count, window.sum_amount, window.max_amount) == (2, 17, 12)  # type: ignore[attr-defined]
    assert (window.complete, window.revision) == (True, 0)
    stats = pipeline.steps[-1].statistics()  # type: ignore[attr-defined]
    assert (stats.retracted, stats.revised, stats.expired) == (1, 0, 0)


def test_an_emitted_window_comes_out_again_as_a_revision() -> None:
    pipeline = chain_pipeline("window 1m lateness 0 | agg sum(amount), vwap(amount, amount)")
    a, b = transfer(1, 10, 500), transfer(2, 20, 700)
    first = run(pipeline, [[a, b, transfer(3, 65, 1)]], flush=False)
    assert windows(first) == [(0, 60, 2, 1200, 0)]
    gone = retract(b, 70)
    out = pipeline.process([gone])
    assert out[0] is gone
    (revised,) = out[1:]
    assert isinstance(revised, Window)
    assert windows(out) == [(0, 60, 1, 500, 1)]
    assert (revised.key, revised.start, revised.end, revised.ts) == ("", 0, M, M)
    assert revised.recv_ts == gone.recv_ts  # when the correction became known
    assert revised.vwap == 500  # type: ignore[attr-defined]
    # The last event goes too: the window comes out empty, aggregates as for no events.
    (empty,) = [e for e in pipeline.process([retract(a, 71)]) if isinstance(e, Window)]
    assert (empty.count, empty.revision, empty.complete) == (0, 2, True)
    assert (empty.sum_amount, empty.vwap) == (None, None)  # type: ignore[attr-defined]
    # Retracting it again changes nothing.
    assert [e.kind for e in pipeline.process([retract(a, 72)])] == ["retraction"]


def test_a_revision_keeps_the_completeness_it_first_had() -> None:
    pipeline = chain_pipeline("window 1m lateness 0 | agg count")
    a, b = transfer(1, 10, 5), transfer(2, 20, 7)
    gap = Gap("alchemy", "*", 30 * S, 30 * S, ("logs",), 25 * S, 30 * S, "lost")
    out = run(pipeline, [[a, b, gap, transfer(3, 65, 1)], [retract(b, 70)]], flush=False)
    assert [(w.count, w.complete, w.revision) for w in out if isinstance(w, Window)] == [
        (2, False, 0),
        (1, False, 1),
    ]


def test_sliding_windows_revise_every_window_that_counted_the_event() -> None:
    pipeline = chain_pipeline("window 1m slide 30s lateness 0 | agg sum(amount)")
    a, b = transfer(1, 40, 5), transfer(2, 50, 7)
    out = run(pipeline, [[a, b, transfer(3, 61, 100)], [retract(b, 62)], [transfer(4, 95, 1)]])
    # b is in [0, 60) (emitted at 61 s: revised) and [30, 90) (open: refolded in place).
    assert windows(out) == [
        (0, 60, 2, 12, 0),
        (0, 60, 1, 5, 1),
        (30, 90, 2, 105, 0),
        (60, 120, 2, 101, 0),
        (90, 150, 1, 1, 0),
    ]


def test_a_session_splits_when_the_event_that_bridged_it_is_retracted() -> None:
    pipeline = chain_pipeline("window session 10s lateness 0 | agg sum(amount)")
    a, bridge, c = transfer(1, 0, 5), transfer(2, 8, 7), transfer(3, 16, 100)
    out = run(pipeline, [[a, bridge, c], [retract(bridge, 17)]], flush=False)
    # Open [0, 26): the bridge goes, so [0, 10) (already due at watermark 16) and [16, 26).
    assert windows(out) == [(0, 10, 1, 5, 0)]
    out = pipeline.process([transfer(4, 40, 1)])
    assert windows(out) == [(16, 26, 1, 100, 0)]
    stats = pipeline.steps[-1].statistics()  # type: ignore[attr-defined]
    assert (stats.open, stats.emitted, stats.revised) == (1, 2, 0)


def test_an_emitted_session_that_shrinks_is_withdrawn_and_comes_out_anew() -> None:
    pipeline = chain_pipeline("window session 10s lateness 0 | agg sum(amount)")
    a, b, c = transfer(1, 0, 5), transfer(2, 4, 7), transfer(3, 8, 100)
    out = run(pipeline, [[a, b, c, transfer(4, 60, 1)]], flush=False)
    assert windows(out) == [(0, 18, 3, 112, 0)]
    out = pipeline.process([retract(b, 61)])  # the same span: revised in place
    assert windows(out) == [(0, 18, 2, 105, 1)]
    out = pipeline.process([retract(c, 62)])  # the last event goes: the span shrinks
    assert windows(out) == [(0, 18, 0, None, 2), (0, 10, 1, 5, 0)]
    out = pipeline.process([retract(a, 63)])  # and the new session can be revised in turn
    assert windows(out) == [(0, 10, 0, None, 1)]


def test_transactions_and_swaps_by_symbol() -> None:
    pipeline = chain_pipeline("by symbol | window 1m lateness 0 | agg count")
    tx1, tx2, sw = native(1, 1, 10), native(2, 2, 20), swap(3, 3, 10**6)
    out = run(pipeline, [[tx1, tx2, sw, retract(tx2), native(4, 61, 1)]], flush=False)
    assert retract(tx2).log_index is None  # a transaction is named by its hash alone
    assert sorted((w.key, w.count) for w in out if isinstance(w, Window)) == [
        (POOL, 1),
        ("ETH", 1),
    ]


def test_confirmations_pass_and_change_nothing() -> None:
    pipeline = chain_pipeline("window 1m lateness 0 | agg count")
    a = transfer(1, 1, 5)
    confirmation = Confirmation("moralis", "USDC", 2 * S, 2 * S, "token_transfer", a.tx_hash, 1)
    out = run(pipeline, [[a, confirmation, transfer(2, 61, 1)]], flush=False)
    assert out[0] is confirmation
    assert windows(out) == [(0, 60, 1, None, 0)]


def test_a_retraction_beyond_the_horizon_is_counted_not_applied() -> None:
    pipeline = chain_pipeline("window 1m lateness 0 | agg count")
    a, b = transfer(1, 1, 5), transfer(2, 2, 7)
    run(pipeline, [[a, b, transfer(3, 61, 1)]], flush=False)
    # 14 minutes past the window's end: still correctable.
    near = 60 + REORG_HORIZON // S - 60
    out = pipeline.process([transfer(4, near, 1), retract(b, near)])
    assert windows(out)[-1] == (0, 60, 1, None, 1)
    # Once event time is the horizon past its end, the window is forgotten.
    far = 60 + REORG_HORIZON // S
    gone = retract(a, far + 1)
    out = pipeline.process([transfer(5, far, 1), gone])
    assert out[-1] is gone  # passed on all the same
    assert all(w.start != 0 for w in out if isinstance(w, Window))
    stats = pipeline.steps[-1].statistics()  # type: ignore[attr-defined]
    assert (stats.retracted, stats.revised, stats.expired) == (1, 1, 1)
    # A retraction of an event never seen is neither.
    pipeline.process([retract(transfer(99, far, 1))])
    assert pipeline.steps[-1].statistics().expired == 1  # type: ignore[attr-defined]


def test_the_run_summary_reports_retractions_that_came_too_late() -> None:
    from irisflow._run import Runner

    pipeline = chain_pipeline("window 1m lateness 0 | agg count")
    a = transfer(1, 1, 5)
    run(pipeline, [[a, transfer(3, 61, 1)]], flush=False)
    far = 60 + REORG_HORIZON // S
    pipeline.process([transfer(5, far, 1), retract(a, far + 1)])
    notes = Runner(pipeline)._notes()
    assert any("1 retractions came too late" in note and "15m" in note for note in notes), notes


def test_the_ledger_is_bounded_by_count_too() -> None:
    ledger: Ledger[list[Any]] = Ledger(lambda holder: holder, memory=2)
    holders = [[("swap", f"0x{n}", n)] for n in range(3)]
    for end, holder in enumerate(holders):
        for key in holder:
            ledger.add(key, holder)
        ledger.keep(end, holder)
        ledger.expire(end)
    assert ledger.kept == 2
    assert len(ledger) == 2
    assert ledger.take(("swap", "0x0", 0)) == []
    assert ledger.expired == 1
    assert ledger.take(("swap", "0x2", 2)) == [holders[2]]


def test_trade_windows_do_no_reorg_bookkeeping() -> None:
    step = Pipeline(kinds={Trade}).pipe("window 1m slide 30s | agg vwap").steps[-1]
    assert isinstance(step, WindowStep)
    trades = [
        Trade("binance", "BTCUSDT", t * S, t * S, Decimal(100), Decimal(1), "buy", t)
        for t in range(0, 200, 7)
    ]
    step.process(trades)
    assert step._ledger is None
    assert all(acc.events is None for acc in step._open.values())
    assert Retraction not in step.output_kinds
    tumbling = Pipeline(kinds={Trade}).pipe("window 1m | agg vwap").steps[-1]
    tumbling.process(trades)
    assert tumbling._ledger is None  # type: ignore[attr-defined]
    assert all(acc.events is None for acc in tumbling._open.values())  # type: ignore[attr-defined]
    assert not carries_chain({Trade, Gap, Window})
    assert carries_chain({Trade, Retraction})


def test_chain_windows_forget_what_they_kept() -> None:
    pipeline = chain_pipeline("window 1m lateness 0 | agg count")
    step = pipeline.steps[-1]
    assert isinstance(step, WindowStep)
    pipeline.process([transfer(n, n * 30, 1) for n in range(1, 80)])
    assert step._ledger is not None
    # 79 events over 40 minutes: only those of windows within the horizon are indexed.
    assert 0 < len(step._ledger) <= (REORG_HORIZON // S + 120) // 30
    assert step._ledger.kept <= REORG_HORIZON // M + 1


# ------------------------------------------------------------------------------ exactness

SPECS = [
    "window 1m lateness 0",
    "window 1m slide 20s lateness 0",
    "window session 15s lateness 0",
]
AGGS = "agg sum(amount), min(amount), max(amount), first(amount), last(amount), count"


def final(out: Iterable[Event]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """The last word on each window: its latest revision, empty ones left out."""
    latest: dict[tuple[Any, ...], Window] = {}
    for e in out:
        if isinstance(e, Window):
            latest[(e.key, e.start, e.end)] = e
    names = ("count", "sum_amount", "min_amount", "max_amount", "first_amount", "last_amount")
    names += ("sum_count",)
    return {
        span: tuple(getattr(w, name, None) for name in names)
        for span, w in latest.items()
        if w.count
    }


@settings(max_examples=60, deadline=None)
@given(
    spec=st.sampled_from(SPECS),
    gaps=st.lists(st.integers(1, 25), min_size=1, max_size=25),
    amounts=st.data(),
)
def test_retracted_events_leave_no_trace(
    spec: str, gaps: list[int], amounts: st.DataObject
) -> None:
    """Windows over events, some later retracted, end as windows over the others."""
    times = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    events = [
        transfer(n, t, amounts.draw(st.integers(1, 50)), symbol="USDC" if n % 3 else "DAI")
        for n, t in enumerate(times, 1)
    ]
    doomed = amounts.draw(st.sets(st.integers(0, len(events) - 1)))
    # Each retraction comes some events after its own (in order of arrival).
    stream: list[Event] = []
    pending: list[tuple[int, Event]] = []
    for i, event in enumerate(events):
        stream.append(event)
        if i in doomed:
            pending.append((i + amounts.draw(st.integers(0, 6)), retract(event)))
        for due, retraction in [p for p in pending if p[0] <= i]:
            stream.append(retraction)
            pending.remove((due, retraction))
    stream += [r for _, r in pending]
    with_reorg = chain_pipeline(f"by symbol | {spec} | {AGGS}")
    kept = [e for i, e in enumerate(events) if i not in doomed]
    without = chain_pipeline(f"by symbol | {spec} | {AGGS}")
    assert final(run(with_reorg, [[e] for e in stream])) == final(run(without, [kept]))


def test_a_window_over_windows_takes_in_their_revisions() -> None:
    text = "window 1m lateness 0 | agg count, sum(amount) | window 5m lateness 0 | agg sum(count)"
    a, b, c = transfer(1, 10, 5), transfer(2, 20, 7), transfer(3, 70, 11)
    later = [transfer(4, 310, 1), transfer(5, 370, 1)]  # minute [300, 360) closes [0, 300)
    five = chain_pipeline(text)
    out = run(five, [[a, b, c, *later]], flush=False)
    assert [(w.start // S, w.sum_count) for w in out if isinstance(w, Window)] == [(0, 3)]  # type: ignore[attr-defined]
    # Minute [0, 60) is revised: the five minutes that counted it are revised in turn.
    out = five.process([retract(b, 371)])
    assert [(w.start // S, w.sum_count, w.revision) for w in out if isinstance(w, Window)] == [
        (0, 2, 1)
    ]
    # Emptied, it leaves them: as if it had never been.
    out = five.process([retract(a, 372)])
    assert [(w.start // S, w.sum_count, w.revision) for w in out if isinstance(w, Window)] == [
        (0, 1, 2)
    ]
    everything = [a, b, c, *later, retract(b, 371), retract(a, 372)]
    without = [c, *later]
    assert final(run(chain_pipeline(text), [everything])) == final(
        run(chain_pipeline(text), [without])
    )


# ------------------------------------------------------------------------------ bars


def test_an_open_bar_is_refolded_and_closes_later() -> None:
    pipeline = chain_pipeline("bars count 3 | agg sum(amount)")
    a, b, c, d = transfer(1, 1, 5), transfer(2, 2, 7), transfer(3, 3, 11), transfer(4, 4, 13)
    out = run(pipeline, [[a, b, retract(a), c]], flush=False)
    assert windows(out) == []  # two events left: not yet three
    out = pipeline.process([d])
    assert windows(out) == [(2, 4, 3, 31, 0)]  # the bar starts with b now


def test_an_emitted_bar_is_revised_with_its_span() -> None:
    step = chain_pipeline("bars volume 10 on amount | agg sum(amount), count").steps[-1]
    assert isinstance(step, BarStep)
    a, b, c = transfer(1, 1, 4), transfer(2, 2, 5), transfer(3, 3, 6)
    out = step.process([a, b, c])
    assert windows(out) == [(1, 3, 3, 15, 0)]
    out = step.process([retract(c, 5)])
    assert windows(out) == [(1, 3, 2, 9, 1)]  # same span: later bars keep their boundaries
    assert step.statistics().revised == 1  # type: ignore[attr-defined]


def test_an_emptied_open_bar_goes_away() -> None:
    pipeline = chain_pipeline("bars count 2 | agg count")
    a = transfer(1, 1, 4)
    out = run(pipeline, [[a, retract(a)], [transfer(2, 5, 1), transfer(3, 6, 1)]])
    assert [(w.start // S, w.count) for w in out if isinstance(w, Window)] == [(5, 2)]


# ------------------------------------------------------------------------------ other steps


def test_a_filter_passes_the_retractions_of_what_it_passed() -> None:
    pipeline = chain_pipeline("filter kind == 'token_transfer' and amount > 10")
    big, small, pool = transfer(1, 1, 50), transfer(2, 2, 5), swap(3, 3, 10)
    marks = [retract(big), retract(small), retract(pool)]
    out = pipeline.process([big, small, pool, *marks])
    assert out == [big, marks[0]]
    # A filter that accepts the marks themselves passes them all.
    everything = chain_pipeline("filter symbol == 'USDC' or kind == 'retraction'")
    assert everything.process([small, *marks]) == [small, *marks]
    # Market data: no bookkeeping.
    assert Pipeline(kinds={Trade}).filter("price > 1").steps[-1]._passed is None  # type: ignore[attr-defined]


def test_select_throttle_dedupe_and_sample_pass_marks_untouched() -> None:
    a, b = transfer(1, 1, 50), transfer(2, 1.5, 60)
    for text in ("select double = amount * 2", "throttle 10s", "dedupe 10s", "sample 5"):
        pipeline = chain_pipeline(f"by symbol | {text}")
        gone = retract(a)
        out = pipeline.process([a, gone, b, gone])
        assert [e for e in out if e.kind == "retraction"] == [gone, gone], text
        assert out[1] is gone, text
    selected = chain_pipeline("select double = amount * 2").process([a, retract(a)])
    assert selected[0].double == 100  # type: ignore[attr-defined]
    assert type(selected[1]) is Retraction


def test_sample_by_time_picks_the_latest_event_left() -> None:
    pipeline = chain_pipeline("sample 1m")
    a, b = transfer(1, 1, 5), transfer(2, 2, 7)
    out = run(pipeline, [[a, b, retract(b), transfer(3, 70, 1)]], flush=False)
    assert [e for e in out if e.kind == "token_transfer"] == [a]


def test_reorg_keys() -> None:
    a = transfer(1, 1, 5)
    assert reorg_key(a) == reorg_key(retract(a)) == ("token_transfer", a.tx_hash, 1)
    enriched = chain_pipeline("select double = amount * 2").process([a])[0]
    assert type(enriched) is not TokenTransfer
    assert reorg_key(enriched) == reorg_key(a)  # select's subclasses keep their key
    trade = Trade("binance", "BTCUSDT", 1, 1, Decimal(1), Decimal(1), "buy", 1)
    assert reorg_key(trade) is None


@pytest.mark.parametrize("text", ["window 1m | agg count", "bars count 2 | agg count"])
def test_marks_are_in_the_output_kinds_of_chain_steps(text: str) -> None:
    assert Retraction in chain_pipeline(text).output_kinds()


@pytest.mark.parametrize(
    "text",
    [
        "filter price > 1 | by symbol | window 1m | agg vwap",
        "by symbol | window session 5s | agg count",
        "by symbol | bars count 3 | agg ohlc | rsi 2",
        "by symbol | sample 1s",
        "spike 1% in 10s",
        "by symbol | join (symbol == 'B') within 5s",
        "select notional = price * qty | throttle 1s",
    ],
)
def test_market_pipelines_keep_no_reorg_state(text: str) -> None:
    pipeline = Pipeline(kinds={Trade}).pipe(text)
    trades = [
        Trade("binance", "AB"[t % 2], t * S, t * S, Decimal(100 + t % 7), Decimal(1), "buy", t)
        for t in range(120)
    ]
    run(pipeline, [trades])
    for step in pipeline.steps:
        for name in ("_ledger", "_pairs", "_fired", "_passed"):
            assert getattr(step, name, None) is None, (text, step, name)
        if isinstance(step, RsiStep):
            assert step._bars is None
        assert not getattr(step, "_chain", False), (text, step)
        assert not getattr(step, "_where", {}), (text, step)
        assert not getattr(step, "_right_at", {}), (text, step)
        assert Retraction not in (getattr(step, "output_kinds", None) or ()), (text, step)
