"""Revisions in PostgreSQL: a corrected window or RSI replaces its stored row.

Real database I/O, always under a ``trio.fail_after`` deadline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import pytest
import trio
from fix_db import fetch
from test_retractions import CHAIN, retract, transfer

from irisflow import Event, Pipeline, Retraction, Window
from irisflow._trackers import Rsi
from irisflow.sinks.postgres import PostgresSink

pytestmark = pytest.mark.postgres

DEADLINE = 30
FAST = {"backoff_initial": 0.01, "backoff_max": 0.05, "connect_timeout": 2}
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, s


async def run_sink(dsn: str, batches: Sequence[Sequence[Event]]) -> PostgresSink:
    sink = PostgresSink(dsn, **FAST, chain="eth-mainnet")  # type: ignore[arg-type]
    send, receive = trio.open_memory_channel[Sequence[Event]](4)

    async def feed() -> None:
        async with send:
            for batch in batches:
                await send.send(batch)

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run, receive)
            nursery.start_soon(feed)
    return sink


def stored(dsn: str) -> list[tuple[Any, ...]]:
    return fetch(
        dsn,
        "SELECT kind, extract(epoch FROM window_start)::int8, count,"
        " (\"values\"->>'sum_amount'), (\"values\"->>'revision'), \"values\"->>'rsi'"
        " FROM irisflow.window_results ORDER BY kind, window_start",
    )


async def test_a_revision_replaces_the_stored_window(migrated_db: str) -> None:
    pipeline = Pipeline(kinds=CHAIN).pipe("window 1m lateness 0 | agg sum(amount)")
    a, b = transfer(1, T0 + 10, 500), transfer(2, T0 + 20, 700)
    first = pipeline.process([a, b, transfer(3, T0 + 65, 1)])
    await run_sink(migrated_db, [first])
    assert stored(migrated_db) == [("window", T0, 2, "1200", None, None)]  # revision 0: absent
    revised = pipeline.process([retract(b, T0 + 70)])
    sink = await run_sink(migrated_db, [revised])
    assert stored(migrated_db) == [("window", T0, 1, "500", "1", None)]
    assert sink.statistics().marks == 1  # the retraction itself went to the chain tables
    emptied = pipeline.process([retract(a, T0 + 71)])
    await run_sink(migrated_db, [emptied])
    assert stored(migrated_db) == [("window", T0, 0, None, "2", None)]


async def test_the_highest_revision_wins_within_a_chunk(migrated_db: str) -> None:
    pipeline = Pipeline(kinds=CHAIN).pipe("window 1m lateness 0 | agg sum(amount)")
    a, b = transfer(1, T0 + 10, 500), transfer(2, T0 + 20, 700)
    out = pipeline.process([a, b, transfer(3, T0 + 65, 1), retract(b, T0 + 70)])
    original, revision = [e for e in out if isinstance(e, Window)]
    assert (original.revision, revision.revision) == (0, 1)
    # Whatever the order in the chunk, and even with a later receive time on the original.
    late_original = attrs.evolve(original, recv_ts=revision.recv_ts + 1_000_000_000)
    await run_sink(migrated_db, [[revision, late_original]])
    assert stored(migrated_db) == [("window", T0, 1, "500", "1", None)]


async def test_a_revised_rsi_replaces_the_stored_value(migrated_db: str) -> None:
    pipeline = Pipeline(kinds=CHAIN).pipe("window 1m lateness 0 | agg ohlc(amount) | rsi 2")
    events = [
        transfer(1, T0 + 1, 10),
        transfer(2, T0 + 61, 11),
        transfer(3, T0 + 121, 13),
        transfer(4, T0 + 131, 9),  # minute 2 closes lower: retracted, it closes at 13
        transfer(5, T0 + 181, 1),
    ]
    first = pipeline.process(events)
    (value,) = [e for e in first if isinstance(e, Rsi)]
    await run_sink(migrated_db, [first])
    revised = pipeline.process([retract(events[3], T0 + 190)])
    (again,) = [e for e in revised if isinstance(e, Rsi)]
    assert (again.ts, again.revision) == (value.ts, 1)
    assert again.rsi != value.rsi
    await run_sink(migrated_db, [revised])
    rows = [r for r in stored(migrated_db) if r[0] == "rsi"]
    assert rows == [("rsi", T0 + 180, None, None, "1", str(again.rsi))]


def withdrawn_rows(dsn: str) -> list[tuple[Any, ...]]:
    return fetch(
        dsn,
        "SELECT kind, \"values\"->>'left_tx_hash', \"values\"->>'right_tx_hash',"
        " \"values\"->>'tx_hash', removed FROM irisflow.window_results ORDER BY kind",
    )


async def test_a_withdrawn_join_is_marked_removed_and_a_new_pairing_clears_it(
    migrated_db: str,
) -> None:
    from test_retractions import swap

    join = "join (kind == 'swap') within 10s"
    # Left event t2 pairs with s1; a reorg takes s1 back; nothing is left to pair t2 with.
    pipeline = Pipeline(kinds=CHAIN).pipe(join)
    s1, t2 = swap(1, T0 + 1, 10), transfer(2, T0 + 2, 100)
    await run_sink(migrated_db, [pipeline.process([s1, t2])])
    assert withdrawn_rows(migrated_db) == [("join", t2.tx_hash, s1.tx_hash, None, False)]
    sink = await run_sink(migrated_db, [pipeline.process([retract(s1, T0 + 3)])])
    assert withdrawn_rows(migrated_db) == [("join", t2.tx_hash, s1.tx_hash, None, True)]
    # The join passes no swaps on, so s1's own retraction names no stored row; the withdrawal
    # does.
    stats = sink.statistics()
    assert (stats.marks, stats.marks_unmatched) == (2, 1)

    # Another run: t4 pairs with s3, a reorg takes s3 back and t4 pairs again with s1'.
    again = Pipeline(kinds=CHAIN).pipe(join)
    s1b, s3, t4 = swap(11, T0 + 10, 10), swap(3, T0 + 12, 20), transfer(4, T0 + 13, 100)
    await run_sink(migrated_db, [again.process([s1b, s3, t4])])
    out = again.process([retract(s3, T0 + 14)])
    assert [e.kind for e in out] == ["retraction", "retraction", "join"]
    await run_sink(migrated_db, [out])
    rows = withdrawn_rows(migrated_db)
    assert ("join", t4.tx_hash, s1b.tx_hash, None, False) in rows  # paired again: not removed
    assert ("join", t2.tx_hash, s1.tx_hash, None, True) in rows


async def test_a_withdrawn_spike_is_marked_removed(migrated_db: str) -> None:
    pipeline = Pipeline(kinds=CHAIN).pipe("spike 50% in 10s on amount")
    p0, p1 = transfer(1, T0, 100), transfer(2, T0 + 11, 200)
    spikes = pipeline.process([p0, p1])
    assert [e.kind for e in spikes] == ["spike"]
    await run_sink(migrated_db, [spikes])
    assert withdrawn_rows(migrated_db) == [("spike", None, None, p1.tx_hash, False)]
    await run_sink(migrated_db, [pipeline.process([retract(p1, T0 + 12)])])
    assert withdrawn_rows(migrated_db) == [("spike", None, None, p1.tx_hash, True)]
    # A second withdrawal of the same spike changes nothing; one of a spike never stored
    # names no row.
    again = retract(p1, T0 + 13)
    withdrawal = Retraction(p1.venue, p1.symbol, again.ts, again.ts, "spike", p1.tx_hash, 2)
    other = Retraction(p1.venue, p1.symbol, again.ts, again.ts, "spike", p0.tx_hash, 1)
    sink = await run_sink(migrated_db, [[withdrawal, other]])
    assert withdrawn_rows(migrated_db) == [("spike", None, None, p1.tx_hash, True)]
    stats = sink.statistics()
    assert (stats.marks, stats.marks_unmatched) == (2, 1)
