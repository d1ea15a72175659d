"""Reorg retractions through the as-of join, spike and RSI (sans-IO).

Builders come from ``test_retractions``; every expectation is by hand or against the same
step fed the events without the retracted ones.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from test_retractions import CHAIN, REORG_HORIZON, S, native, retract, run, swap, transfer

from irisflow import Event, Pipeline, Retraction, Trade
from irisflow._chain import natural_key
from irisflow._join import AsofJoinStep, Joined
from irisflow._reorg import reorg_key
from irisflow._trackers import Rsi, RsiStep, Spike, SpikeStep
from irisflow._windows import window_class

# ------------------------------------------------------------------------------ join

JOIN = "join (kind == 'swap') within 10s"


def pairs(out: list[Event]) -> list[tuple[Any, ...]]:
    """``(left tx, right tx or None)`` of pairs, ``('withdrawn', left tx)`` of withdrawals."""
    found: list[tuple[Any, ...]] = []
    for e in out:
        if isinstance(e, Joined):
            j: Any = e
            found.append((j.left_tx_hash[-1:], j.right_tx_hash and j.right_tx_hash[-1:]))
        elif isinstance(e, Retraction) and e.target == "join":
            found.append(("withdrawn", e.tx_hash[-1:]))
    return found


def test_a_retracted_right_event_withdraws_its_pair_and_the_left_one_pairs_again() -> None:
    pipeline = Pipeline(kinds=CHAIN).pipe(JOIN)
    s1, s2, t4 = swap(1, 1, 10), swap(2, 3, 20), transfer(4, 4, 100)
    assert pairs(pipeline.process([s1, s2, t4])) == [("4", "2")]
    gone = retract(s2, 5)
    out = pipeline.process([gone])
    assert out[0] is gone
    assert pairs(out) == [("withdrawn", "4"), ("4", "1")]
    withdrawn, again = out[1], out[2]
    assert isinstance(withdrawn, Retraction)
    assert isinstance(again, Joined)
    assert (withdrawn.target, withdrawn.tx_hash, withdrawn.log_index) == ("join", t4.tx_hash, 4)
    assert natural_key(withdrawn) == reorg_key(again) == ("join", t4.tx_hash, 4)
    assert (withdrawn.ts, withdrawn.recv_ts) == (gone.ts, gone.recv_ts)
    assert again.lag == 3 * S
    # Later left events pair with the right event before the retracted one.
    assert pairs(pipeline.process([transfer(5, 6, 1)])) == [("5", "1")]
    step = pipeline.steps[-1]
    assert isinstance(step, AsofJoinStep)
    stats = step.statistics()
    assert (stats.joined, stats.withdrawn, stats.repaired, stats.unnamed) == (2, 1, 1, 0)


def test_right_events_are_kept_to_pair_again_after_time_moved_on() -> None:
    pipeline = Pipeline(kinds=CHAIN).pipe(JOIN)
    s1, s2, t3 = swap(1, 1, 10), swap(2, 5, 20), transfer(3, 6, 100)
    assert pairs(pipeline.process([s1, s2, t3])) == [("3", "2")]
    # Time moves on: a market join would keep only s2 of these (the base of what may come).
    pipeline.process([swap(4, 40, 1), transfer(5, 41, 1)])
    assert pairs(pipeline.process([retract(s2, 42)])) == [("withdrawn", "3"), ("3", "1")]


def test_a_pair_with_no_right_event_left_is_withdrawn_only() -> None:
    pipeline = Pipeline(kinds=CHAIN).pipe(JOIN)
    s1, t2 = swap(1, 1, 10), transfer(2, 2, 100)
    pipeline.process([s1, t2])
    assert pairs(pipeline.process([retract(s1, 3)])) == [("withdrawn", "2")]
    outer = Pipeline(kinds=CHAIN).pipe(JOIN + " outer")
    outer.process([s1, t2])
    assert pairs(outer.process([retract(s1, 3)])) == [("withdrawn", "2"), ("2", None)]


def test_a_retracted_left_event_is_withdrawn_or_never_comes_out() -> None:
    pipeline = Pipeline(kinds=CHAIN).pipe(JOIN + " lateness 30s")
    s1, t2, t3 = swap(1, 1, 10), transfer(2, 1, 100), transfer(3, 2, 100)
    assert pairs(pipeline.process([s1, t2, t3])) == [("2", "1")]  # t3 waits for the right stream
    assert pairs(pipeline.process([retract(t2, 3), retract(t3, 3)])) == [("withdrawn", "2")]
    assert pairs(pipeline.flush()) == []  # t3 was dropped while it waited
    assert pipeline.steps[-1].statistics().waiting == 0  # type: ignore[attr-defined]


def test_a_market_data_left_side_cannot_be_withdrawn() -> None:
    pipeline = Pipeline(kinds={Trade, *CHAIN}).pipe("join (kind == 'swap') within 10s")
    s1, s2 = swap(1, 1, 10), swap(2, 2, 20)
    trade = Trade("binance", "ETHUSDT", 3 * S, 3 * S, Decimal(1), Decimal(1), "buy", 1)
    (first,) = pipeline.process([s1, s2, trade])
    assert first.right_tx_hash == s2.tx_hash  # type: ignore[attr-defined]
    gone = retract(s2, 4)
    assert pipeline.process([gone]) == [gone]
    assert pipeline.steps[-1].statistics().unnamed == 1  # type: ignore[attr-defined]
    later = Trade("binance", "ETHUSDT", 5 * S, 5 * S, Decimal(1), Decimal(1), "buy", 2)
    (second,) = pipeline.process([later])
    assert second.right_tx_hash == s1.tx_hash  # type: ignore[attr-defined]


def test_join_pairs_are_forgotten_after_the_horizon() -> None:
    pipeline = Pipeline(kinds=CHAIN).pipe(JOIN)
    s1, t2 = swap(1, 1, 10), transfer(2, 2, 100)
    pipeline.process([s1, t2])
    far = REORG_HORIZON // S + 10
    gone = retract(t2, far + 1)
    assert pipeline.process([transfer(3, far, 1), gone]) == [gone]
    stats = pipeline.steps[-1].statistics()  # type: ignore[attr-defined]
    assert (stats.withdrawn, stats.expired) == (0, 1)


def test_market_joins_keep_no_reorg_state() -> None:
    step = AsofJoinStep("kind == 'trade' and symbol == 'B'", 10 * S, {Trade})
    trades = [
        Trade("x", "AB"[i % 2], i * S, i * S, Decimal(i + 1), Decimal(1), "buy", i)
        for i in range(20)
    ]
    step.process(trades)
    assert step._pairs is None
    assert step._right_at == {}
    assert Retraction not in step.output_kinds


# ------------------------------------------------------------------------------ spike

SPIKE = "spike 60% in 10s on amount"


def spikes(out: list[Event]) -> list[tuple[Any, ...]]:
    return [
        (e.direction, e.value, e.base, e.base_ts // S, e.tx_hash)
        for e in out
        if isinstance(e, Spike)
    ]


def test_a_spike_triggered_by_a_retracted_event_is_withdrawn() -> None:
    pipeline = Pipeline(kinds=CHAIN).pipe(SPIKE)
    p0, p1 = transfer(1, 0, 100), transfer(2, 11, 200)
    (spike,) = pipeline.process([p0, p1])
    assert isinstance(spike, Spike)
    assert (spike.tx_hash, spike.log_index) == (p1.tx_hash, 2)
    gone = retract(p1, 12)
    out = pipeline.process([gone])
    assert out[0] is gone
    (withdrawn,) = out[1:]
    assert isinstance(withdrawn, Retraction)
    assert (withdrawn.target, withdrawn.tx_hash, withdrawn.log_index) == ("spike", p1.tx_hash, 2)
    assert natural_key(withdrawn) == reorg_key(spike)
    assert (withdrawn.venue, withdrawn.symbol) == (spike.venue, spike.symbol)
    stats = pipeline.steps[-1].statistics()  # type: ignore[attr-defined]
    assert (stats.emitted, stats.withdrawn, stats.expired) == (1, 1, 0)


def test_a_retracted_event_is_never_a_base_again() -> None:
    def pipeline_over(events: list[Event]) -> list[tuple[Any, ...]]:
        return spikes(run(Pipeline(kinds=CHAIN).pipe(SPIKE), [events], flush=False))

    p0, p1, p2, p3 = (transfer(1, 0, 100), transfer(2, 12, 300), transfer(3, 25, 300),
                      transfer(4, 26, 500))  # fmt: skip
    # p1 (at 12 s) is p3's base (the latest at or before 16 s): +66.7 %, a spike.
    assert [s[:4] for s in pipeline_over([p0, p1, p2, p3])] == [
        ("up", 300, 100, 0),  # p1 over p0
        ("up", 500, 300, 12),
    ]
    # Retracted, the base is p0 again, kept though p2 had pushed it out of a window's reach.
    assert [s[:4] for s in pipeline_over([p0, p1, p2, retract(p1, 25.5), p3])] == [
        ("up", 300, 100, 0),
        ("up", 500, 100, 0),
    ]


def test_spike_over_transactions_and_market_data() -> None:
    pipeline = Pipeline(kinds=CHAIN).pipe("spike 50% in 10s on value_eth")
    tx1, tx2 = native(1, 0, 10), native(2, 11, 20)
    (spike,) = pipeline.process([tx1, tx2])
    assert (spike.tx_hash, spike.log_index) == (tx2.tx_hash, None)  # type: ignore[attr-defined]
    assert [e.kind for e in pipeline.process([retract(tx2, 12)])] == ["retraction", "retraction"]
    step = SpikeStep(Decimal(1), 10 * S, {Trade})
    trades = [
        Trade("x", "Y", i * S, i * S, Decimal(100 + 5 * i), Decimal(1), "buy", i) for i in range(30)
    ]
    found = [e for e in step.process(trades) if isinstance(e, Spike)]
    assert found
    assert all(s.tx_hash is None and s.log_index is None for s in found)
    assert step._fired is None
    assert step._where == {}
    assert all(not series.keys for series in step._series.values())


# ------------------------------------------------------------------------------ rsi

RSI = "window 1m lateness 0 | agg ohlc(amount), count | rsi 2"


def final_rsi(out: list[Event]) -> dict[int, tuple[Any, ...]]:
    """The last word on each bar's RSI: ``ts -> (rsi, avg_gain, avg_loss, close)``."""
    latest: dict[int, Rsi] = {}
    for e in out:
        if isinstance(e, Rsi):
            latest[e.ts] = e
    return {ts: (r.rsi, r.avg_gain, r.avg_loss, r.close) for ts, r in latest.items()}


def minutes(*closes: list[int]) -> list[Event]:
    """Transfers: minute ``i`` holds the amounts ``closes[i]``, ten seconds apart."""
    events: list[Event] = []
    for i, amounts in enumerate(closes):
        events += [transfer(100 * i + j, 60 * i + 10 * j + 1, a) for j, a in enumerate(amounts)]
    return events


def test_a_revised_bar_revises_the_rsi_values_after_it() -> None:
    events = minutes([10], [11], [13, 105], [12], [1], [2])
    doomed = events[3]  # minute 2's close (10.5 would be; 105 here)
    pipeline = Pipeline(kinds=CHAIN).pipe(RSI)
    before = run(pipeline, [events], flush=False)
    assert len([e for e in before if isinstance(e, Rsi)]) == 3  # minutes 2, 3 and 4
    gone = retract(doomed, 400)
    out = pipeline.process([gone])
    assert out[0] is gone
    revised = [e for e in out if isinstance(e, Rsi)]
    assert [(r.ts // S, r.revision, r.recv_ts) for r in revised] == [
        (180, 1, gone.recv_ts),  # minute 2: close 13, not 105
        (240, 1, gone.recv_ts),
        (300, 1, gone.recv_ts),
    ]
    without = Pipeline(kinds=CHAIN).pipe(RSI)
    expected = final_rsi(run(without, [[e for e in events if e is not doomed]], flush=False))
    assert final_rsi(before + out) == expected
    stats = pipeline.steps[-1].statistics()  # type: ignore[attr-defined]
    assert (stats.emitted, stats.revised, stats.withdrawn) == (3, 3, 0)


def test_an_emptied_bar_leaves_the_series_and_its_rsi_is_withdrawn() -> None:
    events = minutes([10], [11], [12], [14], [15])
    pipeline = Pipeline(kinds=CHAIN).pipe(RSI)
    before = run(pipeline, [events], flush=False)
    assert sorted(final_rsi(before)) == [180 * S, 240 * S]
    out = pipeline.process([retract(events[1], 300)])  # minute 1 had one transfer
    # Closes 10, 12, 14 now: minute 2's RSI (two changes needed) is gone, minute 3's changes.
    withdrawn = [(r.ts // S, r.revision) for r in out if isinstance(r, Rsi) and r.rsi is None]
    assert withdrawn == [(180, 1)]
    without = Pipeline(kinds=CHAIN).pipe(RSI)
    kept = [e for e in events if e is not events[1]]
    expected = final_rsi(run(without, [kept], flush=False))
    result = final_rsi(before + out)
    assert result.pop(180 * S)[0] is None
    assert result == expected
    stats = pipeline.steps[-1].statistics()  # type: ignore[attr-defined]
    assert (stats.withdrawn, stats.revised) == (1, 1)


Bar = window_class([("close", "number", "the last amount")])


def bar(minute: int, close: int | None, revision: int = 0) -> Event:
    start, end = minute * 60 * S, (minute + 1) * 60 * S
    value = None if close is None else Decimal(close)
    return Bar("alchemy", "USDC", end, end, "", start, end, 1, True, "tumbling 1m", revision,
               close=value)  # type: ignore[call-arg]  # fmt: skip


def test_rsi_revisions_of_forgotten_bars_are_counted() -> None:
    step = RsiStep({Bar, Retraction}, 2)
    horizon = REORG_HORIZON // (60 * S)
    step.process([bar(0, 10), bar(1, 11), bar(2, 12), bar(horizon + 5, 13)])
    assert step.process([bar(0, 9, revision=1)]) == []
    assert step.process([bar(2, 9, revision=1)]) == []
    assert step.statistics().expired == 2
    # A bar heard twice still counts once; a revision of the newest bar works.
    assert step.process([bar(horizon + 5, 13)]) == []
    (value,) = step.process([bar(horizon + 5, 12, revision=1)])
    assert isinstance(value, Rsi)
    assert (value.close, value.revision) == (12, 1)


def test_rsi_over_market_bars_keeps_no_snapshots() -> None:
    step = RsiStep({Bar}, 2)
    out = step.process([bar(i, 10 + i % 3) for i in range(10)])
    assert len(out) == 8
    assert step._bars is None
    # Without the bookkeeping, a revision is just a bar heard again: ignored.
    assert step.process([bar(9, 1, revision=1)]) == []
