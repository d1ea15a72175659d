"""Storage end to end: the bundled sample replayed into PostgreSQL, and the CLI functions.

Database tests wait on real PostgreSQL I/O, always under a ``trio.fail_after`` deadline.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import cast

import attrs
import pytest
import trio
from fix_db import fetch, fetch_one
from fix_proxy import TcpProxy
from psycopg.conninfo import make_conninfo

from irisflow._config import Config, DatabaseConfig
from irisflow._errors import FilterError, UsageError
from irisflow._events import Candle, Event, Quote, Trade
from irisflow._migrate import load_migrations
from irisflow._pipeline import Pipeline
from irisflow._run import Runner
from irisflow._saved import watch_saved
from irisflow._storage_cli import (
    configured_dsn,
    filters_add,
    filters_list,
    filters_rm,
    migrate_command,
    require_dsn,
    saved_filters_for_run,
    store_sinks,
)
from irisflow.sinks._pg_tables import TABLES as SINK_TABLES
from irisflow.sinks.postgres import PostgresSink
from irisflow.testing import ListSink

SAMPLE = Path(__file__).parent.parent / "examples" / "binance-sample.jsonl"
TABLES = ["trades", "quotes", "candles", "tickers", "books", "book_updates", "gaps"]
DEADLINE = 60
SECRET = "Hunter2-Storage-Secret"
FAST = {
    "flush_interval": 0.01,
    "backoff_initial": 0.01,
    "backoff_max": 0.05,
    "connect_timeout": 2,
}

pg = pytest.mark.postgres


# Binance's depth5 and depth10 snapshots of one update share the books key (venue, symbol,
# update_id, ts), so which of the two is stored depends on how rows were batched: compare the
# keys of books, and whole rows everywhere else.
ROWS = dict.fromkeys(TABLES, "t::text") | {"books": "(t.venue, t.symbol, t.update_id, t.ts)::text"}


def table_state(dsn: str) -> dict[str, tuple[int, str]]:
    """Per table: the row count and a digest of every row (to compare contents)."""
    out = {}
    for name in TABLES:
        row = ROWS[name]
        count, digest = fetch(
            dsn,
            f"SELECT count(*), md5(coalesce(string_agg({row}, '|' ORDER BY {row}), ''))"
            f" FROM irisflow.{name} t",
        )[0]
        out[name] = (int(count), str(digest))
    return out


def truncate(dsn: str) -> None:
    fetch(dsn, f"TRUNCATE {', '.join(f'irisflow.{t}' for t in TABLES)}")


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` while the sink does real database I/O (the caller's deadline)."""
    while not condition():  # noqa: ASYNC110
        await trio.sleep(0.01)


async def replay_into(dsn: str, store: str, **options: object) -> PostgresSink:
    sinks, taps = store_sinks(dsn, store, **{**FAST, **options})
    with trio.fail_after(DEADLINE):
        await Runner(Pipeline(), sinks=sinks, taps=taps).replay(SAMPLE)
    return cast(PostgresSink, (sinks or taps)[0])


# --------------------------------------------------------------------------- the sink


@pg
async def test_replaying_the_sample_twice_stores_nothing_twice(migrated_db: str) -> None:
    first = await replay_into(migrated_db, "output")
    after_first = await trio.to_thread.run_sync(table_state, migrated_db)
    assert all(count > 0 for count, _ in after_first.values()), after_first
    assert first.statistics().rows_buffered == 0

    second = await replay_into(migrated_db, "all")
    assert await trio.to_thread.run_sync(table_state, migrated_db) == after_first
    stats = second.statistics()
    assert stats.rows_written == first.statistics().rows_written
    assert (stats.rows_buffered, stats.rows_rejected) == (0, 0)


def expected_rows(events: list[Event]) -> dict[str, int]:
    """Per table, the rows the decoded ``events`` should make: one per event, except candles
    (one row per bar: its updates overwrite it)."""
    counts = dict.fromkeys(TABLES, 0)
    bars = set()
    for event in events:
        if isinstance(event, Candle):
            bars.add((event.venue, event.symbol, event.interval, event.start))
        else:
            counts[SINK_TABLES[type(event)].name] += 1
    counts["candles"] = len(bars)
    return counts


@pg
async def test_the_sample_replayed_twice_stores_every_decoded_event_once(
    migrated_db: str,
) -> None:
    decoded: dict[str, int] | None = None
    for run in range(2):
        events = ListSink()
        sink = PostgresSink(migrated_db, **FAST)
        with trio.fail_after(DEADLINE):
            await Runner(Pipeline(), sinks=[events], taps=[sink]).replay(SAMPLE)
        expected = expected_rows(events.events)
        decoded = decoded or expected
        assert expected == decoded  # the same events both times
        state = await trio.to_thread.run_sync(table_state, migrated_db)
        assert {name: n for name, (n, _) in state.items()} == expected, run
        stats = sink.statistics()
        assert (stats.rows_rejected, stats.rows_buffered, stats.last_error) == (0, 0, None)
        assert stats.rows_written == len(events.events)
    assert decoded is not None
    # Binance sends a mini and a full ticker of one symbol in the same second: both are kept.
    assert decoded["tickers"] == 1188
    assert all(n > 0 for n in decoded.values()), decoded


@attrs.define
class Trigger:
    """A pass-through step that sets ``reached`` once ``at`` events went by."""

    at: int
    seen: int = 0
    reached: trio.Event = attrs.field(factory=trio.Event)

    def process(self, events: list[Event]) -> list[Event]:
        self.seen += len(events)
        if self.seen >= self.at:
            self.reached.set()
        return events

    def advance(self, now: int) -> list[Event]:
        return []


@pg
async def test_cut_mid_replay_stores_every_row_exactly_once(
    migrated_db: str, pg_proxy: TcpProxy
) -> None:
    await replay_into(migrated_db, "all")  # the reference: what a clean run stores
    reference = await trio.to_thread.run_sync(table_state, migrated_db)
    await trio.to_thread.run_sync(truncate, migrated_db)

    dsn = make_conninfo(pg_proxy.dsn(migrated_db), password=SECRET)
    sinks, taps = store_sinks(dsn, "all", batch_rows=200, max_buffered_rows=400, **FAST)
    sink = cast(PostgresSink, taps[0])
    trigger = Trigger(at=3000)
    runner = Runner(Pipeline([trigger]), sinks=sinks, taps=taps, buffer=2)
    done = trio.Event()

    async def run() -> None:
        await runner.replay(SAMPLE)
        done.set()

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await trigger.reached.wait()
            await pg_proxy.cut()
            await wait_for(lambda: sink.statistics().retries >= 3)
            assert not done.is_set()  # the replay waits on the full sink, losing nothing
            stats = sink.statistics()
            assert stats.last_error is not None
            assert SECRET not in stats.last_error
            pg_proxy.restore()
    assert await trio.to_thread.run_sync(table_state, migrated_db) == reference
    stats = sink.statistics()
    assert (stats.rows_buffered, stats.rows_rejected, stats.state) == (0, 0, "ok")


def test_store_sinks_modes() -> None:
    sinks, taps = store_sinks("postgresql://x@127.0.0.1/db")
    assert [type(s) for s in sinks] == [PostgresSink]
    assert taps == []
    sinks, taps = store_sinks("postgresql://x@127.0.0.1/db", "ALL")
    assert (sinks, [type(t) for t in taps]) == ([], [PostgresSink])
    with pytest.raises(UsageError, match="bad --store 'some': use output"):
        store_sinks("postgresql://x@127.0.0.1/db", "some")
    with pytest.raises(UsageError, match="batch_rows"):
        store_sinks("postgresql://x@127.0.0.1/db", batch_rows=0)


# --------------------------------------------------------------------------- which database


def test_dsn_precedence(tmp_path: Path) -> None:
    config = Config(database=DatabaseConfig(dsn="postgresql://from-config/db"))
    env = {"IRISFLOW_DATABASE_URL": "postgresql://from-env/db", "DATABASE_URL": "postgresql://x"}
    assert configured_dsn("postgresql://cli/db", config, environ=env, cwd=tmp_path) == (
        "postgresql://cli/db"
    )
    assert configured_dsn(None, config, environ=env, cwd=tmp_path) == "postgresql://from-env/db"
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://from-dotenv/db\n")
    assert configured_dsn(None, config, environ={}, cwd=tmp_path) == "postgresql://from-dotenv/db"
    (tmp_path / ".env").unlink()
    assert configured_dsn(None, config, environ={}, cwd=tmp_path) == "postgresql://from-config/db"
    assert configured_dsn(None, Config(), environ={}, cwd=tmp_path) is None
    with pytest.raises(UsageError, match=r"no database configured.*\[database\] dsn"):
        require_dsn(None, Config(), environ={}, cwd=tmp_path)


# --------------------------------------------------------------------------- migrate


@pg
def test_migrate_command_status_dry_run_and_apply(empty_db: str) -> None:
    dsn = make_conninfo(empty_db, password=SECRET)
    before = migrate_command(dsn, status=True)
    assert before[0].startswith("database ")
    assert re.search(r"^0001_core +pending$", "\n".join(before), re.MULTILINE)
    assert before[-1] == f"{len(load_migrations())} pending: run `irisflow migrate` to apply"

    plan = migrate_command(dsn, dry_run=True, to=2)
    assert plan[1:3] == ["would apply 0001_core", "would apply 0002_pipeline"]
    assert "left pending 0003_chain (past --to)" in plan
    assert fetch_one(empty_db, "SELECT to_regclass('irisflow.schema_migrations')") is None

    done = migrate_command(dsn)
    assert "applied 0001_core" in done
    after = migrate_command(dsn, status=True)
    assert after[-1] == "the schema is up to date"
    core = next(line for line in after if line.startswith("0001_core"))
    assert " applied 20" in core
    for line in before + plan + done + after:
        assert SECRET not in line
    assert before[0].endswith("password=***")


def test_migrate_command_refuses_status_with_other_options() -> None:
    with pytest.raises(UsageError, match="--status only shows"):
        migrate_command("postgresql://x@127.0.0.1/db", status=True, to=2)
    with pytest.raises(UsageError, match="--status only shows"):
        migrate_command("postgresql://x@127.0.0.1/db", status=True, dry_run=True)


# --------------------------------------------------------------------------- filters


def filters_story(dsn: str | None, config_dir: Path) -> None:
    lines = filters_add(
        dsn, "big", "price * qty > 100000", venues=["binance"], symbols=["btcusdt,ethusdt"],
        config_dir=config_dir,
    )  # fmt: skip
    assert lines[0].startswith("saved filter 'big' in ")
    assert lines[0].endswith(": price * qty > 100000")
    assert lines[1] == "applies to binance; btcusdt, ethusdt"
    lines = filters_add(dsn, "big", "price > 5", config_dir=config_dir)
    assert lines[-1] == (
        "replaced the previous 'big': price * qty > 100000 (binance; btcusdt, ethusdt)"
    )
    with pytest.raises(FilterError, match="did you mean 'price'"):
        filters_add(dsn, "bad", "prise > 5", config_dir=config_dir)
    rows = filters_list(dsn, config_dir=config_dir)
    assert [(r["name"], r["expr"], r["venues"], r["symbols"]) for r in rows] == [
        ("big", "price > 5", [], [])
    ]
    assert isinstance(rows[0]["updated_at"], str)
    with pytest.raises(UsageError, match="did you mean 'big'"):
        filters_rm(dsn, "bgi", config_dir=config_dir)
    assert filters_rm(dsn, "big", config_dir=config_dir)[0].startswith("removed saved filter 'big'")
    assert filters_list(dsn, config_dir=config_dir) == []


def test_filters_commands_with_the_file_store(tmp_path: Path) -> None:
    filters_story(None, tmp_path)
    assert (tmp_path / "filters.toml").is_file()


@pg
def test_filters_commands_with_the_database(migrated_db: str, tmp_path: Path) -> None:
    dsn = make_conninfo(migrated_db, password=SECRET)
    filters_story(dsn, tmp_path)
    assert not (tmp_path / "filters.toml").exists()
    assert SECRET not in "\n".join(filters_add(dsn, "x", "price > 1"))


def test_saved_filters_for_run_checks_names_first(tmp_path: Path) -> None:
    messages: list[str] = []
    filters_add(None, "big", "price > 5", config_dir=tmp_path)
    with pytest.raises(UsageError, match="did you mean 'big'"):
        saved_filters_for_run(
            None, ["bgi"], kinds={Trade}, warn=messages.append, config_dir=tmp_path
        )
    with pytest.raises(FilterError, match="does not produce"):
        saved_filters_for_run(
            None, ["big"], kinds={Quote}, warn=messages.append, config_dir=tmp_path
        )
    step, service = saved_filters_for_run(
        None, ["big"], kinds={Trade}, warn=messages.append, config_dir=tmp_path
    )
    assert [f.expr for f in step.active()] == ["price > 5"]
    assert isinstance(service, functools.partial)
    assert service.func is watch_saved
    assert service.args[1] is step
