"""How fast does PostgresSink store trades, next to a hand-written binary COPY?

Feeds the same Trade events (200k by default) through :class:`PostgresSink` and, in the same
run and database, through one raw ``COPY irisflow.trades ... FROM STDIN (FORMAT BINARY)`` of
ready-made rows (datetimes already built: the best case for the raw side). Runs alternate, the
table is emptied before each, and the median and best rows/s are printed with their ratio.

Targets: sink >= 100k rows/s and >= 0.7 x raw. A third run feeds the same events again, so
every row is already stored: that measures the duplicate-safe staging path. A fourth replays
the same trades from a recording file (``irisflow replay FILE --db``): reading and decoding
included.

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

from irisflow._events import Trade, to_datetime
from irisflow._migrate import migrate
from irisflow._pipeline import Pipeline
from irisflow._run import Runner
from irisflow.sinks.postgres import PostgresSink

COLUMNS = "venue, symbol, ts, recv_ts, price, qty, side, trade_id"
TYPES = ["text", "text", "timestamptz", "timestamptz", "numeric", "numeric", "text", "int8"]


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
    print(f"  {name:6s} {n / seconds:10,.0f} rows/s  ({seconds * 1000:.0f} ms)")


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
                to_datetime(t.ts),
                to_datetime(t.recv_ts),
                t.price,
                t.qty,
                t.side,
                t.trade_id,
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
            measure("raw", lambda: run_raw(dsn, rows), args.rows, dsn, times)
            measure(
                "file", lambda: run_replay(dsn, recording, args.batch_rows), args.rows, dsn, times
            )
            measure("sink", lambda: run_sink(dsn, trades, args.batch_rows), args.rows, dsn, times)
            # The same events again: every row is already stored (a replayed file).
            measure(
                "replay",
                lambda: run_sink(dsn, trades, args.batch_rows),
                args.rows,
                dsn,
                times,
                fresh=False,
            )
        raw_med, sink_med = (args.rows / statistics.median(times[k]) for k in ("raw", "sink"))
        raw_best, sink_best = (args.rows / min(times[k]) for k in ("raw", "sink"))
        print(f"raw COPY     median {raw_med:10,.0f} rows/s   best {raw_best:10,.0f} rows/s")
        print(f"PostgresSink median {sink_med:10,.0f} rows/s   best {sink_best:10,.0f} rows/s")
        print(f"ratio sink/raw: median {sink_med / raw_med:.2f}   best {sink_best / raw_best:.2f}")
        file_med = args.rows / statistics.median(times["file"])
        file_best = args.rows / min(times["file"])
        print(f"replay FILE --db median {file_med:10,.0f} rows/s   best {file_best:10,.0f} rows/s")
        print(
            f"ratio replay/raw: median {file_med / raw_med:.2f}   best {file_best / raw_best:.2f}"
        )
        replay_med = args.rows / statistics.median(times["replay"])
        print(f"replay (all rows already stored, ON CONFLICT path) median {replay_med:,.0f} rows/s")
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


if __name__ == "__main__":
    main()
