"""PostgresSink against the real PostgreSQL, with a cuttable proxy for outages.

These tests wait on real database I/O, always under a ``trio.fail_after`` deadline.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import attrs
import psycopg
import pytest
import trio
import trio.testing
from fix_db import fetch, fetch_one
from fix_proxy import TcpProxy
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from irisflow._errors import DatabaseError, UsageError
from irisflow._events import (
    Book,
    BookUpdate,
    Candle,
    Event,
    Gap,
    Quote,
    Ticker,
    Trade,
    to_datetime,
)
from irisflow.sinks._pg_tables import Table
from irisflow.sinks.postgres import PostgresSink

pytestmark = pytest.mark.postgres

T0 = 1_700_000_000_123_456_789  # ns; PostgreSQL keeps the microseconds
DEADLINE = 30
FAST = {"backoff_initial": 0.01, "backoff_max": 0.05, "connect_timeout": 2}
SECRET = "Hunter2-Sink-Secret"


def trade(i: int, *, symbol: str = "BTCUSDT", venue: str = "binance") -> Trade:
    return Trade(
        venue=venue,
        symbol=symbol,
        ts=T0 + i * 1_000_000,
        recv_ts=T0 + i * 1_000_000 + 3_000_000,
        price=Decimal("67000.10") + i,
        qty=Decimal("0.000123"),
        side="buy" if i % 2 else "sell",
        trade_id=i,
    )


def trades(start: int, stop: int) -> list[Trade]:
    return [trade(i) for i in range(start, stop)]


def candle(ts_ms: int, close: str, *, closed: bool) -> Candle:
    return Candle(
        venue="binance",
        symbol="BTCUSDT",
        ts=T0 + ts_ms * 1_000_000,
        recv_ts=T0 + ts_ms * 1_000_000,
        interval="1m",
        start=T0,
        end=T0 + 59_999_000_000,
        open=Decimal("1"),
        high=Decimal("3"),
        low=Decimal("0.5"),
        close=Decimal(close),
        volume=Decimal("10"),
        quote_volume=None,
        trades=None,
        closed=closed,
    )


def one_of_each() -> list[Event]:
    head: dict[str, Any] = {"venue": "binance", "symbol": "ETHUSDT", "ts": T0, "recv_ts": T0 + 1}
    d = Decimal
    return [
        Trade(**head, price=d("3000.5"), qty=d("1.25"), side="buy", trade_id=7),
        Quote(**head, bid_price=d("1"), bid_qty=d("2"), ask_price=d("3"), ask_qty=d("4")),
        Quote(
            **head, bid_price=d("1"), bid_qty=d("2"), ask_price=d("3"), ask_qty=d("4"),
            update_id=9,
        ),
        candle(0, "2.5", closed=False),
        Ticker(
            **head, window="24h", last=d("3000"), open=d("2900"), high=d("3100"), low=d("2800"),
            volume=d("12345.678"), quote_volume=d("37000000"), change=d("100"), trades=42,
        ),
        Book(**head, update_id=5, bids=((d("2999.9"), d("1")), (d("2999.8"), d("2"))), asks=()),
        BookUpdate(
            **head, first_update_id=6, last_update_id=8,
            bids=((d("2999.9"), d("0")),), asks=((d("3000.1"), d("0.5")),),
        ),
        Gap(
            venue="binance", symbol="*", ts=T0 + 5, recv_ts=T0 + 5, streams=("ethusdt@trade",),
            start=T0 - 30_000_000_000, end=T0 + 5, cause="connection closed (1006)",
        ),
    ]  # fmt: skip


async def feed(
    send: trio.MemorySendChannel[Sequence[Event]], batches: Sequence[Sequence[Event]]
) -> None:
    async with send:
        for batch in batches:
            await send.send(batch)


async def run_sink(dsn: str, batches: Sequence[Sequence[Event]], **options: Any) -> PostgresSink:
    """Run a sink over ``batches`` until it returns; return it for its statistics."""
    sink = PostgresSink(dsn, **{**FAST, **options})
    send, receive = trio.open_memory_channel[Sequence[Event]](4)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run, receive)
            nursery.start_soon(feed, send, batches)
    return sink


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` while the sink does real database I/O (under the test deadline)."""
    # The sink's counters change inside worker threads talking to PostgreSQL: nothing to wait
    # on but the clock, so poll (the caller's fail_after bounds it).
    while not condition():  # noqa: ASYNC110
        await trio.sleep(0.01)


def table_counts(dsn: str) -> dict[str, int]:
    names = ["trades", "quotes", "candles", "tickers", "books", "book_updates", "gaps"]
    return {n: fetch_one(dsn, f"SELECT count(*) FROM irisflow.{n}") for n in names}


def stored_trade_ids(dsn: str) -> list[int]:
    return [i for (i,) in fetch(dsn, "SELECT trade_id FROM irisflow.trades ORDER BY trade_id")]


# --------------------------------------------------------------------------- happy path


async def test_writes_every_kind(migrated_db: str) -> None:
    events = one_of_each()
    sink = await run_sink(migrated_db, [events[:3], events[3:]])
    stats = sink.statistics()
    assert (stats.state, stats.rows_written, stats.rows_buffered) == ("ok", len(events), 0)
    assert (stats.rows_duplicate, stats.rows_rejected, stats.events_skipped) == (0, 0, 0)
    assert table_counts(migrated_db) == {
        "trades": 1, "quotes": 2, "candles": 1, "tickers": 1, "books": 1, "book_updates": 1,
        "gaps": 1,
    }  # fmt: skip

    row = fetch(
        migrated_db,
        "SELECT venue, symbol, ts, recv_ts, price, qty, side, trade_id FROM irisflow.trades",
    )
    assert row == [
        (
            "binance", "ETHUSDT", to_datetime(T0), to_datetime(T0 + 1),
            Decimal("3000.5"), Decimal("1.25"), "buy", 7,
        )
    ]  # fmt: skip
    assert fetch(migrated_db, "SELECT update_id FROM irisflow.quotes ORDER BY 1") == [(9,), (None,)]
    assert fetch(
        migrated_db,
        "SELECT interval, start_ts, end_ts, close, closed, trades FROM irisflow.candles",
    ) == [("1m", to_datetime(T0), to_datetime(T0 + 59_999_000_000), Decimal("2.5"), False, None)]
    assert fetch(migrated_db, "SELECT window_len, change, vwap, trades FROM irisflow.tickers") == [
        ("24h", Decimal("100"), None, 42)
    ]
    assert fetch(
        migrated_db,
        "SELECT update_id, bid_prices, bid_qtys, ask_prices, ask_qtys FROM irisflow.books",
    ) == [(5, [Decimal("2999.9"), Decimal("2999.8")], [Decimal("1"), Decimal("2")], [], [])]
    assert fetch(
        migrated_db,
        "SELECT first_update_id, last_update_id, bid_qtys, ask_prices FROM irisflow.book_updates",
    ) == [(6, 8, [Decimal("0")], [Decimal("3000.1")])]
    assert fetch(migrated_db, "SELECT symbol, start_ts, streams, cause FROM irisflow.gaps") == [
        ("*", to_datetime(T0 - 30_000_000_000), ["ethusdt@trade"], "connection closed (1006)")
    ]


async def test_replaying_the_same_batches_stores_no_duplicates(migrated_db: str) -> None:
    batches = [one_of_each(), trades(0, 500), trades(500, 1000)]
    first = await run_sink(migrated_db, batches, batch_rows=300)
    counts = table_counts(migrated_db)
    assert counts["trades"] == 1001
    second = await run_sink(migrated_db, batches, batch_rows=300)
    assert table_counts(migrated_db) == counts
    total = sum(len(b) for b in batches)
    assert first.statistics().rows_written == second.statistics().rows_written == total
    # Every replayed row was recognised as stored (the open candle is rewritten: same data).
    assert second.statistics().rows_duplicate == total - 1


async def test_partly_stored_chunk_then_fresh_data(migrated_db: str) -> None:
    await run_sink(migrated_db, [trades(0, 100)])
    # Overlap (like a reconnect that replays its last chunk), then fresh rows.
    sink = await run_sink(migrated_db, [trades(50, 150), trades(150, 400)], batch_rows=100)
    assert stored_trade_ids(migrated_db) == list(range(400))
    stats = sink.statistics()
    assert (stats.rows_written, stats.rows_duplicate) == (350, 50)


async def test_candles_last_update_wins_until_closed(migrated_db: str) -> None:
    await run_sink(migrated_db, [[candle(1, "1.1", closed=False), candle(3, "1.3", closed=False)]])
    assert fetch_one(migrated_db, "SELECT close FROM irisflow.candles") == Decimal("1.3")
    # An older update (a replayed file) does not roll the bar back.
    await run_sink(migrated_db, [[candle(2, "1.2", closed=False)]])
    assert fetch_one(migrated_db, "SELECT close FROM irisflow.candles") == Decimal("1.3")
    # In one chunk: the closed bar wins over later open updates; then it is final.
    await run_sink(
        migrated_db,
        [
            [
                candle(4, "1.4", closed=False),
                candle(5, "1.5", closed=True),
                candle(6, "9", closed=False),
            ]
        ],
    )
    await run_sink(migrated_db, [[candle(7, "7.7", closed=False)]])
    assert fetch(migrated_db, "SELECT close, closed, count(*) OVER () FROM irisflow.candles") == [
        (Decimal("1.5"), True, 1)
    ]


@attrs.frozen
class Mystery(Event):
    """An event kind the sink has no table for."""

    kind = "mystery"


@attrs.frozen
class TaggedTrade(Trade):
    """A user's Trade subclass: stored as a trade."""

    tag: str = "x"


async def test_unknown_kinds_are_skipped_and_counted(migrated_db: str) -> None:
    odd = Mystery(venue="x", symbol="Y", ts=T0, recv_ts=T0)
    tagged = TaggedTrade(**attrs.asdict(trade(2)))
    sink = await run_sink(migrated_db, [[odd, trade(1), odd], [odd, tagged]])
    stats = sink.statistics()
    assert (stats.events_skipped, stats.rows_written) == (3, 2)
    assert stored_trade_ids(migrated_db) == [1, 2]


async def test_invalid_rows_are_rejected_alone(migrated_db: str) -> None:
    bad_text = attrs.evolve(trade(10), symbol="BTC\x00USDT")  # PostgreSQL text cannot hold NUL
    bad_type = attrs.evolve(trade(20), price="not a number")
    batch = [*trades(0, 10), bad_text, *trades(11, 20), bad_type, *trades(21, 40)]
    sink = await run_sink(migrated_db, [batch])
    stats = sink.statistics()
    assert (stats.rows_written, stats.rows_rejected, stats.state) == (38, 2, "ok")
    assert stats.last_error is not None
    assert "rejected a trade row" in stats.last_error
    assert stored_trade_ids(migrated_db) == [i for i in range(40) if i not in (10, 20)]


async def test_flush_on_channel_close(migrated_db: str) -> None:
    # Neither the size nor the interval would flush: closing the channel does.
    sink = await run_sink(migrated_db, [trades(0, 10)], batch_rows=10_000, flush_interval=3600)
    assert sink.statistics().rows_written == 10
    assert stored_trade_ids(migrated_db) == list(range(10))


async def test_flush_interval(migrated_db: str) -> None:
    sink = PostgresSink(migrated_db, batch_rows=10_000, flush_interval=0.05, **FAST)
    send, receive = trio.open_memory_channel[Sequence[Event]](0)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery, send:
            await nursery.start(sink.run, receive)
            await send.send(trades(0, 5))
            await wait_for(lambda: sink.statistics().rows_written == 5)
            assert stored_trade_ids(migrated_db) == list(range(5))


async def test_cancelled_run_still_flushes(migrated_db: str) -> None:
    sink = PostgresSink(migrated_db, batch_rows=10_000, flush_interval=3600, **FAST)
    send, receive = trio.open_memory_channel[Sequence[Event]](0)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run, receive)
            await send.send(trades(0, 7))
            await trio.testing.wait_all_tasks_blocked()
            assert sink.statistics().rows_buffered == 7
            nursery.cancel_scope.cancel()
    assert stored_trade_ids(migrated_db) == list(range(7))
    assert sink.statistics().rows_buffered == 0
    send.close()


async def test_missing_schema_is_a_usage_error(empty_db: str) -> None:
    sink = PostgresSink(empty_db, **FAST)
    _, receive = trio.open_memory_channel[Sequence[Event]](0)
    with (
        trio.fail_after(DEADLINE),
        pytest.raises(UsageError, match="run `irisflow migrate` first"),
    ):
        await sink.run(receive)  # raises before it would report started


def test_bad_settings_are_refused() -> None:
    with pytest.raises(UsageError, match="batch_rows <= max_buffered_rows"):
        PostgresSink("postgresql://x", batch_rows=10, max_buffered_rows=5)


# --------------------------------------------------------------------------- outages


def secret_dsn(proxy: TcpProxy, dsn: str) -> str:
    """The proxy DSN with a password (trust auth ignores it; it must never leak)."""
    return make_conninfo(proxy.dsn(dsn), password=SECRET)


async def test_outage_mid_stream_loses_and_duplicates_nothing(
    migrated_db: str, pg_proxy: TcpProxy
) -> None:
    sink = PostgresSink(
        secret_dsn(pg_proxy, migrated_db), batch_rows=50, flush_interval=0.01, down_after=3, **FAST
    )
    send, receive = trio.open_memory_channel[Sequence[Event]](0)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run, receive)
            for i in range(0, 200, 20):
                await send.send(trades(i, i + 20))
            await wait_for(lambda: sink.statistics().rows_written == 200)

            await pg_proxy.cut()
            for i in range(200, 400, 20):
                await send.send(trades(i, i + 20))
            await wait_for(lambda: sink.statistics().state == "down")
            stats = sink.statistics()
            assert stats.retries >= 3
            assert stats.rows_buffered > 0
            assert stats.last_error is not None
            assert SECRET not in stats.last_error

            pg_proxy.restore()
            # Overlap on purpose: the first rows after the outage were partly stored before.
            for i in range(380, 600, 20):
                await send.send(trades(i, i + 20))
            await wait_for(lambda: sink.statistics().state == "ok")
            await send.aclose()
    assert stored_trade_ids(migrated_db) == list(range(600))
    stats = sink.statistics()
    assert (stats.rows_buffered, stats.rows_written) == (0, 620)
    assert stats.rows_duplicate == 20


async def test_down_at_start_then_recovers(migrated_db: str, pg_proxy: TcpProxy) -> None:
    await pg_proxy.cut()
    sink = PostgresSink(pg_proxy.dsn(migrated_db), batch_rows=10, flush_interval=0.01, **FAST)
    send, receive = trio.open_memory_channel[Sequence[Event]](0)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run, receive)  # starts even though the database is down
            assert sink.statistics().state == "retrying"
            await send.send(trades(0, 30))
            await wait_for(lambda: sink.statistics().retries >= 3)
            assert stored_trade_ids(migrated_db) == []
            pg_proxy.restore()
            await send.aclose()
    assert stored_trade_ids(migrated_db) == list(range(30))
    assert sink.statistics().state == "ok"


async def test_full_buffer_pushes_back_while_down(migrated_db: str, pg_proxy: TcpProxy) -> None:
    await pg_proxy.cut()
    sink = PostgresSink(
        pg_proxy.dsn(migrated_db),
        batch_rows=100,
        max_buffered_rows=300,
        flush_interval=0.01,
        **FAST,
    )
    send, receive = trio.open_memory_channel[Sequence[Event]](0)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run, receive)
            for i in range(0, 300, 100):
                await send.send(trades(i, i + 100))
            await trio.testing.wait_all_tasks_blocked()
            # The sink holds 300 rows and has stopped reading: the producer blocks.
            with pytest.raises(trio.WouldBlock):
                send.send_nowait(trades(300, 400))
            stats = sink.statistics()
            assert (stats.rows_buffered, stats.backpressure, stats.rows_written) == (300, True, 0)
            assert stats.state in ("retrying", "down")

            pg_proxy.restore()
            await send.send(trades(300, 400))  # unblocks once the backlog is written
            await send.aclose()
    assert stored_trade_ids(migrated_db) == list(range(400))
    assert sink.statistics().backpressure is False


async def _run_directly(sink: PostgresSink, batches: Sequence[Sequence[Event]]) -> None:
    """Await ``sink.run`` itself (not in a nursery), so its error is not wrapped in a group."""
    send, receive = trio.open_memory_channel[Sequence[Event]](len(batches))
    with send:
        for batch in batches:
            send.send_nowait(batch)
    await sink.run(receive)


async def test_unwritten_rows_make_run_raise(migrated_db: str, pg_proxy: TcpProxy) -> None:
    await pg_proxy.cut()
    sink = PostgresSink(secret_dsn(pg_proxy, migrated_db), shutdown_timeout=0.3, **FAST)
    with trio.fail_after(DEADLINE), pytest.raises(DatabaseError) as err:
        await _run_directly(sink, [trades(0, 10), [candle(1, "1", closed=False)]])
    message = str(err.value)
    assert "PostgreSQL sink stopped with 11 rows not written (trade: 10, candle: 1)" in message
    assert SECRET not in "".join(traceback.format_exception(err.value))
    assert sink.statistics().rows_buffered == 11


async def test_unreachable_server_error_text_has_no_password(migrated_db: str) -> None:
    params = conninfo_to_dict(migrated_db)
    params.pop("hostaddr", None)
    dsn = make_conninfo(**{**params, "host": "127.0.0.1", "port": "1", "password": SECRET})
    sink = PostgresSink(dsn, shutdown_timeout=0.2, **FAST)
    with trio.fail_after(DEADLINE), pytest.raises(DatabaseError) as err:
        await _run_directly(sink, [trades(0, 3)])
    assert SECRET not in "".join(traceback.format_exception(err.value))
    stats = sink.statistics()
    assert stats.last_error is not None
    assert SECRET not in stats.last_error
    assert "could not connect" in stats.last_error
    assert SECRET not in repr(sink)


async def test_proxy_cut_resets_and_refuses(db_dsn: str, pg_proxy: TcpProxy) -> None:
    # The fixture itself: connections pass, die on cut, are refused until restored.
    dsn = pg_proxy.dsn(db_dsn)
    with trio.fail_after(DEADLINE):
        assert await trio.to_thread.run_sync(fetch_one, dsn, "SELECT 1") == 1
        await pg_proxy.cut()
        with pytest.raises(psycopg.OperationalError):
            await trio.to_thread.run_sync(fetch_one, dsn, "SELECT 1")
        assert pg_proxy.refused >= 1
        pg_proxy.restore()
        assert await trio.to_thread.run_sync(fetch_one, dsn, "SELECT 2") == 2
        await trio.testing.wait_all_tasks_blocked()  # the proxy sees the client leave
        assert pg_proxy.connections == 0


# --------------------------------------------------------------------------- rejects, refusals


def bad_trade(i: int) -> Trade:
    return attrs.evolve(trade(i), symbol="BTC\x00USDT")  # PostgreSQL text cannot hold NUL


def counting_stores(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count write attempts (each one a savepoint) by patching ``Table.store``."""
    calls: list[int] = []
    real = Table.store

    def store(self: Table, conn: Any, events: Sequence[Any]) -> int:
        calls.append(len(events))
        return real(self, conn, events)

    monkeypatch.setattr(Table, "store", store)
    return calls


async def test_a_kind_rejected_again_and_again_stops_being_bisected(
    migrated_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting_stores(monkeypatch)
    quote = one_of_each()[1]
    batches = [
        [bad_trade(i) for i in range(2000)] + [quote],
        trades(0, 10),  # after the cap, the kind is dropped as it arrives
    ]
    sink = await run_sink(migrated_db, batches, reject_limit=5, batch_rows=5000)
    stats = sink.statistics()
    assert stats.rows_rejected == 5
    assert stats.disabled_kinds == ("trade",)
    assert stats.events_skipped == 2000 - 5 + 10
    assert stats.rows_written == 1  # the quote: other kinds go on
    assert stats.last_error is not None
    assert "stopped writing trade rows: the last 5 were all rejected" in stats.last_error
    assert "irisflow migrate --status" in stats.last_error
    assert stored_trade_ids(migrated_db) == []
    assert table_counts(migrated_db)["quotes"] == 1
    # Bisecting 2000 bad rows down to each one would take ~4000 attempts.
    assert len(calls) < 40, len(calls)


async def test_rejects_between_accepted_rows_are_not_in_a_row(migrated_db: str) -> None:
    batch: list[Event] = []
    for i in range(0, 40, 2):
        batch += [bad_trade(i), trade(i + 1)]
    sink = await run_sink(migrated_db, [batch], reject_limit=2)
    stats = sink.statistics()
    assert (stats.rows_rejected, stats.rows_written, stats.disabled_kinds) == (20, 20, ())
    assert stored_trade_ids(migrated_db) == list(range(1, 40, 2))


@pytest.fixture
def nologin_role(pg_server_dsn: str) -> Iterator[str]:
    """A role that exists but may not log in (the server's trust auth accepts any password,
    so a wrong one cannot be shown; the refusal is the same kind of permanent error)."""
    role = f"irisflow_nologin_{os.getpid()}"
    ident = sql.Identifier(role)
    with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN PASSWORD 'irrelevant'").format(ident))
    try:
        yield role
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))


@pytest.mark.parametrize("refusal", ["bad port", "bad option", "role may not log in"])
async def test_a_dsn_the_server_refuses_fails_at_start(
    migrated_db: str, nologin_role: str, refusal: str
) -> None:
    changes = {
        "bad port": {"port": "99999"},
        "bad option": {"options": "-c irisflow_no_such_setting=1 -c no_such_setting=1"},
        "role may not log in": {"user": nologin_role},
    }[refusal]
    dsn = make_conninfo(migrated_db, password=SECRET, **changes)
    sink = PostgresSink(dsn, **FAST)
    send, receive = trio.open_memory_channel[Sequence[Event]](0)
    # Fails at once, before reporting started: no blind retries for the whole run (a sink
    # that started would wait on the open channel until the deadline).
    with trio.fail_after(5), pytest.raises(UsageError, match="refused the connection") as err:
        await sink.run(receive)
    assert "retrying will not help" in str(err.value)
    assert SECRET not in "".join(traceback.format_exception(err.value))
    send.close()
