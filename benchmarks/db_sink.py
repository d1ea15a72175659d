"""How fast does PostgresSink store trades, next to a hand-written binary COPY?

Feeds the same Trade events (200k by default) through :class:`PostgresSink` and, in the same
run and database, through one raw ``COPY irisflow.trades ... FROM STDIN (FORMAT BINARY)`` of
ready-made rows. The raw rows send their times the way the sink does (binary ``timestamptz`` as
int8 microseconds since 2000, see ``pg_time`` in ``irisflow/sinks/_pg_copy.py``), computed
beforehand: the best case for the raw side, and the same wire format, so the ratio compares
the sink's own overhead. Runs alternate, the table is emptied before each, and the median and
best rows/s are printed with their ratio.

Each round measures:

* ``raw COPY``: the hand-written baseline;
* ``sink``: the events through :class:`PostgresSink` into an empty table;
* ``sink, all duplicates``: the same events again, every row already stored (the
  duplicate-safe staging path);
* ``replay FILE --db``: the same trades replayed from a recording file, reading and decoding
  included (into an empty table).

Targets (printed at the end, each with whether it is met): ``sink`` >= 100k rows/s and
>= 0.7 x ``raw COPY``.

Usage::

    python benchmarks/db_sink.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
                                 [--rows 200000] [--repeat 5] [--batch-rows 20000]

The DSN names a server (default ``IRISFLOW_TEST_DSN`` or the one above); the benchmark works
in a fresh database ``irisflow_bench_<pid>`` that it drops at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import trio
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from irisflow._events import Trade
from irisflow._migrate import migrate
from irisflow._pipeline import Pipeline
from irisflow._run import Runner
from irisflow.sinks._pg_copy import TS, pg_time
from irisflow.sinks.postgres import PostgresSink

COLUMNS = "venue, symbol, ts, recv_ts, price, qty, side, trade_id, aggregate"
TYPES = ["text", "text", TS, TS, "numeric", "numeric", "text", "int8", "bool"]
"""COPY types: times as the sink sends them (int8 us since 2000, read as binary timestamptz)."""

RAW, SINK, DUPLICATES, FILE = "raw COPY", "sink", "sink, all duplicates", "replay FILE --db"
TARGET_RATE = 100_000
"""rows/s the sink must reach."""
TARGET_RATIO = 0.7
"""The least sink / raw COPY ratio."""


def make_trades(n: int) -> list[Trade]:
    base = 1_700_000_000_000_000_000
    return [
        Trade(
            venue="binance",
            symbol=("BTCUSDT", "ETHUSDT", "SOLUSDT")[i % 3],
            ts=base + i * 1_000_000,  # whole ms, as Binance sends them
            recv_ts=base + i * 1_000_000 + 4_567_000,
            price=Decimal("67012.34") + Decimal(i % 1000) / 100,
            qty=Decimal("0.00123") * (1 + i % 7),
            side="buy" if i % 2 else "sell",
            trade_id=1_000_000 + i,
        )
        for i in range(n)
    ]


def truncate(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE irisflow.trades")
        conn.execute("CHECKPOINT")


def count(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM irisflow.trades").fetchone()
        return int(row[0]) if row else 0


def run_raw(dsn: str, rows: list[tuple[Any, ...]]) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = time.perf_counter()
        with (
            conn.transaction(),
            conn.cursor() as cur,
            cur.copy(f"COPY irisflow.trades ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(TYPES)
            for row in rows:
                copy.write_row(row)
        return time.perf_counter() - start


def run_sink(dsn: str, trades: list[Trade], batch_rows: int) -> float:
    elapsed = 0.0

    async def main() -> None:
        nonlocal elapsed
        sink = PostgresSink(dsn, batch_rows=batch_rows, max_buffered_rows=max(batch_rows, 200_000))
        send, receive = trio.open_memory_channel[list[Trade]](16)
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run, receive)
            start = time.perf_counter()
            async with send:
                for i in range(0, len(trades), 1000):
                    await send.send(trades[i : i + 1000])
        elapsed = time.perf_counter() - start
        stats = sink.statistics()
        assert stats.rows_written == len(trades), stats

    trio.run(main)
    return elapsed


def write_recording(path: Path, trades: list[Trade]) -> None:
    """The trades as a Binance recording: what ``irisflow replay FILE --db`` reads."""
    lines = []
    for i, t in enumerate(trades):
        data = {
            "e": "trade",
            "E": t.ts // 1_000_000,
            "s": t.symbol,
            "t": t.trade_id,
            "p": str(t.price),
            "q": str(t.qty),
            "T": t.ts // 1_000_000,
            "m": t.side == "sell",
            "M": True,
        }
        frame = orjson.dumps({"stream": f"{t.symbol.lower()}@trade", "data": data}).decode()
        # Frames of one socket read share their receive time: 100 trades a read here.
        recv_ts = trades[i - i % 100].recv_ts
        lines.append(orjson.dumps({"venue": "binance", "recv_ts": recv_ts, "frame": frame}))
    path.write_bytes(b"\n".join(lines) + b"\n")


def run_replay(dsn: str, recording: Path, batch_rows: int) -> float:
    """``irisflow replay FILE --db``: read, decode, run the pipeline, store."""
    sink = PostgresSink(dsn, batch_rows=batch_rows, max_buffered_rows=max(batch_rows, 200_000))
    runner = Runner(Pipeline(), sinks=[sink], signals=False)
    start = time.perf_counter()
    trio.run(runner.replay, recording)
    return time.perf_counter() - start


def measure(
    name: str,
    fn: Callable[[], float],
    n: int,
    dsn: str,
    out: dict[str, list[float]],
    *,
    fresh: bool = True,
) -> None:
    if fresh:
        truncate(dsn)
    seconds = fn()
    stored = count(dsn)
    assert stored == n, f"{name}: stored {stored} of {n} rows"
    out.setdefault(name, []).append(seconds)
    print(f"  {name:22s} {n / seconds:10,.0f} rows/s  ({seconds * 1000:.0f} ms)")


def report(times: dict[str, list[float]], n: int) -> None:
    """Median and best of each measurement, the ratios to raw COPY, and the targets."""
    median = {name: n / statistics.median(seconds) for name, seconds in times.items()}
    best = {name: n / min(seconds) for name, seconds in times.items()}
    print()
    print(f"{'':22s} {'median':>12s} {'best':>12s} {'median/raw':>11s} {'best/raw':>9s}")
    for name in (RAW, SINK, DUPLICATES, FILE):
        print(
            f"{name:22s} {median[name]:>12,.0f} {best[name]:>12,.0f}"
            f" {median[name] / median[RAW]:>11.2f} {best[name] / best[RAW]:>9.2f}"
        )
    print("rows/s; every run stored all rows")
    print()
    targets = [
        (f"sink >= {TARGET_RATE:,} rows/s (median)", median[SINK] >= TARGET_RATE),
        (
            f"sink >= {TARGET_RATIO} x raw COPY (median ratio)",
            median[SINK] / median[RAW] >= TARGET_RATIO,
        ),
    ]
    for text, met in targets:
        print(f"target {text}: {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get(
            "IRISFLOW_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch-rows", type=int, default=20_000)
    args = parser.parse_args()

    name = f"irisflow_bench_{os.getpid()}"
    params = conninfo_to_dict(args.dsn)
    dsn = make_conninfo(args.dsn, dbname=name)
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrate(dsn)
        trades = make_trades(args.rows)
        rows = [
            (
                t.venue,
                t.symbol,
                pg_time(t.ts),
                pg_time(t.recv_ts),
                t.price,
                t.qty,
                t.side,
                t.trade_id,
                t.aggregate,
            )
            for t in trades
        ]
        recording = Path(tempfile.mkdtemp()) / "trades.jsonl"
        write_recording(recording, trades)
        print(
            f"{args.rows:,} trades, batch_rows={args.batch_rows}, "
            f"server {params.get('host', 'local')}:{params.get('port', 5432)}"
        )
        times: dict[str, list[float]] = {}
        for i in range(args.repeat):
            print(f"round {i + 1}")
            measure(RAW, lambda: run_raw(dsn, rows), args.rows, dsn, times)
            measure(
                FILE, lambda: run_replay(dsn, recording, args.batch_rows), args.rows, dsn, times
            )
            measure(SINK, lambda: run_sink(dsn, trades, args.batch_rows), args.rows, dsn, times)
            # The same events again: every row is already stored (a replayed file).
            measure(
                DUPLICATES,
                lambda: run_sink(dsn, trades, args.batch_rows),
                args.rows,
                dsn,
                times,
                fresh=False,
            )
        report(times, args.rows)
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


if __name__ == "__main__":
    main()
