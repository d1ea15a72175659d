"""Saved filters: both stores, the pipeline step, and live changes during a run.

Database tests wait on real PostgreSQL I/O, always under a ``trio.fail_after`` deadline; the
file-store tests run on Trio's autojump clock.
"""

from __future__ import annotations

import datetime as dt
import functools
import tomllib
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import orjson
import psycopg
import pytest
import trio
import trio.testing
from fix_db import fetch, fetch_one
from fix_proxy import TcpProxy
from hypothesis import given
from hypothesis import strategies as st

from irisflow._errors import FilterError, UsageError
from irisflow._events import Event, Gap, Quote, Trade
from irisflow._pipeline import Pipeline
from irisflow._run import Runner
from irisflow._saved import (
    CHANNEL,
    DatabaseFilterStore,
    FileFilterStore,
    FilterStore,
    SavedFilter,
    SavedFilterStep,
    _parse_toml,
    _toml_text,
    default_filters_path,
    load_saved_step,
    saved_filter,
    store_for,
    watch_saved,
)
from irisflow._venue import FeedOptions
from irisflow.testing import FakeBinance, ListSink, trade
from irisflow.venues.binance import BINANCE

DEADLINE = 30
T0 = 1_767_225_600_000_000_000


def a_trade(i: int, *, symbol: str = "BTCUSDT", venue: str = "binance") -> Trade:
    return Trade(
        venue=venue,
        symbol=symbol,
        ts=T0 + i,
        recv_ts=T0 + i,
        price=Decimal(100 + i),
        qty=Decimal(1),
        side="buy" if i % 2 else "sell",
        trade_id=i,
    )


def a_quote(symbol: str = "BTCUSDT") -> Quote:
    d = Decimal
    return Quote("binance", symbol, T0, T0, d(1), d(1), d(2), d(1))


GAP = Gap("binance", "*", T0, T0, ("btcusdt@trade",), T0 - 1, T0, "connection closed (1006)")


def ids(events: Sequence[Event]) -> list[int]:
    return [e.trade_id for e in events if isinstance(e, Trade)]


# --------------------------------------------------------------------------- checking


def test_saved_filter_is_checked_and_normalised() -> None:
    f = saved_filter(" big ", "price > 5", ["Binance", "binance"], ["btcusdt, ETHUSDT", "BTCUSDT"])
    assert f == SavedFilter("big", "price > 5", ("binance",), ("btcusdt", "ETHUSDT"))
    assert f.scope() == "binance; btcusdt, ETHUSDT"
    assert saved_filter("x", "price > 5").scope() == "everything"


def test_saved_filter_errors_say_what_to_do() -> None:
    with pytest.raises(UsageError, match=r"bad saved filter name 'a b'.*e\.g\. 'big-btc'"):
        saved_filter("a b", "price > 5")
    with pytest.raises(UsageError, match="unknown venue 'binanse' \\(did you mean 'binance'\\?\\)"):
        saved_filter("x", "price > 5", ["binanse"])
    with pytest.raises(FilterError, match="did you mean 'price'"):
        saved_filter("x", "prise > 5")
    with pytest.raises(UsageError, match="not valid text"):
        saved_filter("x", "symbol == '\ud800'")


# --------------------------------------------------------------------------- file store


def test_default_filters_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_filters_path(environ={"XDG_CONFIG_HOME": "/xdg"}) == Path(
        "/xdg/irisflow/filters.toml"
    )
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_filters_path(environ={}) == tmp_path / ".config/irisflow/filters.toml"
    assert default_filters_path(tmp_path / "conf") == tmp_path / "conf/filters.toml"
    store = store_for(None, config_dir=tmp_path)
    assert isinstance(store, FileFilterStore)
    assert store.path == tmp_path / "filters.toml"
    assert isinstance(store_for("postgresql://x@h/db"), DatabaseFilterStore)


async def crud(store: FilterStore) -> None:
    """The same add/list/get/remove story for either store."""
    assert await store.list() == []
    first = await store.add(saved_filter("big", "price > 5", ["binance"], ["BTCUSDT"]))
    assert first.replaced is None
    assert first.saved.updated_at is not None
    assert first.saved.updated_at.tzinfo is not None
    assert (first.saved.expr, first.saved.venues, first.saved.symbols) == (
        "price > 5",
        ("binance",),
        ("BTCUSDT",),
    )
    await store.add(saved_filter("all-quotes", "kind == 'quote'"))
    again = await store.add(saved_filter("big", "price > 6"))
    assert again.replaced is not None
    assert again.replaced.expr == "price > 5"
    assert [(f.name, f.expr, f.venues) for f in await store.list()] == [
        ("all-quotes", "kind == 'quote'", ()),
        ("big", "price > 6", ()),
    ]
    assert (await store.get("big")).expr == "price > 6"
    assert set(await store.find(["big", "nope"])) == {"big"}
    with pytest.raises(UsageError, match=r"no saved filter named 'bgi' in .*did you mean 'big'"):
        await store.get("bgi")
    with pytest.raises(UsageError, match=r"no saved filter named 'bgi'.*did you mean 'big'"):
        await store.remove("bgi")
    with pytest.raises(FilterError):
        await store.add(SavedFilter("bad", "pric > 5"))
    with pytest.raises(UsageError, match="unknown venue"):
        await store.add(SavedFilter("bad", "price > 5", ("nowhere",)))
    assert (await store.remove("big")).expr == "price > 6"
    assert [f.name for f in await store.list()] == ["all-quotes"]
    await store.remove("all-quotes")
    with pytest.raises(UsageError, match="there are none yet"):
        await store.remove("all-quotes")


async def test_file_store_crud(tmp_path: Path) -> None:
    store = FileFilterStore(tmp_path / "deep" / "filters.toml")
    await crud(store)
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["filters.toml"]  # no temp files


async def test_file_store_writes_readable_toml(tmp_path: Path) -> None:
    store = FileFilterStore(tmp_path / "filters.toml")
    await store.add(saved_filter("big.btc", 'symbol == "BTCUSDT"', ["binance"], ["BTCUSDT"]))
    data = tomllib.loads(store.path.read_text())
    entry = data["filters"]["big.btc"]
    assert entry["expr"] == 'symbol == "BTCUSDT"'
    assert entry["venues"] == ["binance"]
    assert isinstance(entry["updated_at"], dt.datetime)
    assert store.path.read_text().startswith("# irisflow saved filters.")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[filters.x\n", "is not valid TOML"),
        ('[filters.x]\nexpr = "a"\ncolour = 1\n', "colour"),
        ("[filters.x]\nexpr = 5\n", r"expr"),
        ('[filters.x]\nexpr = "a"\nvenues = "binance"\n', r"venues"),
    ],
)
async def test_file_store_reports_a_bad_file(tmp_path: Path, text: str, message: str) -> None:
    store = FileFilterStore(tmp_path / "filters.toml")
    store.path.write_text(text)
    with pytest.raises(UsageError, match=message) as err:
        await store.list()
    assert str(store.path) in str(err.value)


_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)


@given(
    name=_text.filter(bool),
    expr=_text,
    venues=st.lists(_text, max_size=3),
    symbols=st.lists(_text, max_size=3),
    micros=st.integers(0, 10**15),
)
def test_toml_round_trip(
    name: str, expr: str, venues: list[str], symbols: list[str], micros: int
) -> None:
    when = dt.datetime(2000, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)
    saved = SavedFilter(name, expr, tuple(venues), tuple(symbols), when)
    assert _parse_toml(_toml_text({name: saved}), Path("f.toml")) == {name: saved}


# --------------------------------------------------------------------------- the step


def step_of(*saved: SavedFilter, kinds: Any = None) -> SavedFilterStep:
    return SavedFilterStep.from_saved(saved, kinds=kinds)


def test_step_applies_each_filter_within_its_scope_only() -> None:
    step = step_of(
        SavedFilter("btc-buys", "side == 'buy'", symbols=("btcusdt",)),
        SavedFilter("kraken-cheap", "price < 103", venues=("kraken",)),
    )
    events: list[Event] = [a_trade(i) for i in range(4)]  # binance BTCUSDT: buys only
    events += [a_trade(i, symbol="ETHUSDT") for i in range(10, 14)]  # no filter covers them
    events += [a_trade(i, venue="kraken", symbol="XBT/USD") for i in range(4)]  # price < 103
    events += [a_trade(i, venue="kraken", symbol="BTCUSDT") for i in range(4)]  # both
    events.append(GAP)
    out = step.process(events)
    kraken_btc = [e for e in out if e.venue == "kraken" and e.symbol == "BTCUSDT"]
    assert ids([e for e in out if e.venue == "binance"]) == [1, 3, 10, 11, 12, 13]
    assert ids([e for e in out if e.symbol == "XBT/USD"]) == [0, 1, 2]
    assert ids(kraken_btc) == [1]
    assert out[-1] is GAP
    assert step.advance(T0) == []


def test_step_within_scope_behaves_like_filter() -> None:
    step = step_of(SavedFilter("p", "price > 101", symbols=("BTCUSDT",)))
    # A quote has no price: within the scope it does not pass; outside it is untouched.
    out = step.process([a_quote("BTCUSDT"), a_quote("ETHUSDT"), a_trade(5), a_trade(1)])
    assert [(e.kind, e.symbol) for e in out] == [("quote", "ETHUSDT"), ("trade", "BTCUSDT")]


def test_step_with_no_filter_in_force_passes_everything() -> None:
    step = SavedFilterStep(("gone",))
    events: list[Event] = [a_trade(1), GAP]
    assert step.process(events) is events
    assert step.active() == []


def test_replace_and_remove_swap_between_batches() -> None:
    step = step_of(SavedFilter("q", "side == 'buy'"), SavedFilter("r", "price < 200"))
    batch: list[Event] = [a_trade(i) for i in range(6)]
    assert ids(step.process(batch)) == [1, 3, 5]
    step.replace(SavedFilter("q", "side == 'sell'"))
    assert ids(step.process(batch)) == [0, 2, 4]
    assert step.current("q") == SavedFilter("q", "side == 'sell'")
    assert step.remove("q") is True
    assert step.remove("q") is False
    assert ids(step.process(batch)) == [0, 1, 2, 3, 4, 5]
    assert [f.name for f in step.active()] == ["r"]
    step.replace(SavedFilter("q", "price >= 104"))  # back again
    assert ids(step.process(batch)) == [4, 5]


def test_replace_with_a_bad_filter_changes_nothing() -> None:
    step = step_of(SavedFilter("q", "side == 'buy'", symbols=("BTCUSDT",)), kinds={Trade})
    with pytest.raises(FilterError, match="saved filter 'q': unknown field 'pric'"):
        step.replace(SavedFilter("q", "pric > 1"))
    with pytest.raises(FilterError, match="which this stream does not produce"):
        step.replace(SavedFilter("q", "bid_price > 1"))  # no quotes in this stream
    with pytest.raises(UsageError, match="unknown venue"):
        step.replace(SavedFilter("q", "price > 1", venues=("nowhere",)))
    with pytest.raises(ValueError, match="not 'other'"):
        step.replace(SavedFilter("other", "price > 1"))
    assert step.current("q") == SavedFilter("q", "side == 'buy'", symbols=("BTCUSDT",))
    assert ids(step.process([a_trade(0), a_trade(1)])) == [1]


def test_step_scope_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import irisflow._saved as saved_module

    monkeypatch.setattr(saved_module, "_MAX_ROUTES", 3)
    step = step_of(SavedFilter("q", "side == 'buy'", symbols=("S1",)))
    for n in range(10):
        step.process([a_trade(0, symbol=f"S{n}")])
        assert len(step._routes) <= 3
    assert step.process([a_trade(0, symbol="s1")]) == []  # symbols match ignoring case


async def test_load_saved_step_reports_unknown_names(tmp_path: Path) -> None:
    store = FileFilterStore(tmp_path / "filters.toml")
    await store.add(saved_filter("big", "price > 5"))
    step = await load_saved_step(store, ["big", "big"], kinds={Trade})
    assert step.names == ("big",)
    with pytest.raises(UsageError, match="did you mean 'big'"):
        await load_saved_step(store, ["bgi"])
    with pytest.raises(FilterError, match=r"saved filter 'big'.*this stream does not produce"):
        await load_saved_step(store, ["big"], kinds={Quote})


# --------------------------------------------------------------------------- live runs


def recording(path: Path, n: int) -> Path:
    """``n`` trades, one per socket read: BTCUSDT and ETHUSDT in turn, buy and sell in turn."""
    lines = []
    for i in range(n):
        symbol = "BTCUSDT" if i % 4 < 2 else "ETHUSDT"
        payload = trade(symbol, price="45000", qty="1", trade_id=i, time_ms=1_000 + i,
                        buyer_maker=i % 2 == 0)  # fmt: skip
        frame = orjson.dumps({"stream": f"{symbol.lower()}@trade", "data": payload}).decode()
        lines.append(orjson.dumps({"venue": "binance", "recv_ts": T0 + i, "frame": frame}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@attrs.define
class Recorded:
    """Wraps the step: logs each batch with the expression in force when it was processed."""

    step: SavedFilterStep
    name: str
    log: list[tuple[str | None, list[Event], list[Event]]] = attrs.field(factory=list)
    seen: int = 0
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def process(self, events: list[Event]) -> list[Event]:
        saved = self.step.current(self.name)
        out = self.step.process(list(events))
        self.log.append((saved.expr if saved else None, list(events), list(out)))
        self.seen += len(events)
        self._changed.set()
        self._changed = trio.Event()
        return out

    def advance(self, now: int) -> list[Event]:
        return self.step.advance(now)

    async def wait_seen(self, n: int) -> None:
        while self.seen < n:
            await self._changed.wait()

    def check(self, total: int, sink: ListSink, before: str, after: str) -> None:
        """Nothing lost or doubled, and each batch filtered by the filter then in force."""
        assert ids([e for _, batch, _ in self.log for e in batch]) == list(range(total))
        exprs = [expr for expr, _, _ in self.log]
        switch = exprs.index(after)
        assert switch > 0
        assert set(exprs[:switch]) == {before}
        assert set(exprs[switch:]) == {after}
        for expr, batch, out in self.log:
            side = expr.split("'")[1] if expr else None
            expected = [
                e
                for e in batch
                if not (isinstance(e, Trade) and e.symbol == "BTCUSDT") or e.side == side
            ]
            assert out == expected
        assert sink.events == [e for _, _, out in self.log for e in out]


def watcher_service(
    store: FilterStore, step: SavedFilterStep, messages: list[str], ready: trio.Event, **kw: Any
) -> Callable[[], Any]:
    async def service() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(watch_saved, store, step, warn=messages.append, **kw)
            )
            ready.set()

    return service


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (the caller's fail_after bounds it)."""
    while not condition():  # noqa: ASYNC110
        await trio.sleep(0.01)


async def live_change_through_a_replay(
    store: FilterStore, tmp_path: Path, change: Callable[[], Any]
) -> list[str]:
    """Replay 400 trades; switch 'q' from buys to sells while the pipeline is mid-stream."""
    total = 400
    await store.add(saved_filter("q", "side == 'buy'", ["binance"], ["BTCUSDT"]))
    step = await load_saved_step(store, ["q"], kinds={Trade})
    rec = Recorded(step, "q")
    sink = ListSink(hold=True)  # the pipeline stalls mid-stream until released
    messages: list[str] = []
    ready = trio.Event()
    runner = Runner(
        Pipeline([rec]),
        sinks=[sink],
        buffer=1,
        services=[watcher_service(store, step, messages, ready)],
    )
    done = trio.Event()

    async def run() -> None:
        await runner.replay(recording(tmp_path / "r.jsonl", total))
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await ready.wait()
        await rec.wait_seen(2)  # the held sink stalls the pipeline after 3 batches
        await change()
        with trio.fail_after(1):  # picked up within a second
            await wait_until(lambda: getattr(step.current("q"), "expr", None) == "side == 'sell'")
        assert not done.is_set()
        assert rec.seen < total
        sink.release()
    rec.check(total, sink, "side == 'buy'", "side == 'sell'")
    return messages


async def test_file_store_change_applies_mid_stream(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = FileFilterStore(tmp_path / "filters.toml")

    async def change() -> None:
        await store.add(saved_filter("q", "side == 'sell'", ["binance"], ["BTCUSDT"]))

    messages = await live_change_through_a_replay(store, tmp_path, change)
    assert messages == ["saved filter 'q' changed: side == 'sell' (applies to binance; BTCUSDT)"]


async def test_file_watcher_reports_bad_edits_and_follows_removal(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = FileFilterStore(tmp_path / "filters.toml")
    await store.add(saved_filter("q", "price > 5"))
    step = await load_saved_step(store, ["q"])
    messages: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(watch_saved, store, step, warn=messages.append))
        text = store.path.read_text()
        store.path.write_text(text.replace("price > 5", "pric > 5"))  # a hand edit
        await trio.sleep(3)
        assert step.current("q") is not None
        assert step.current("q").expr == "price > 5"  # type: ignore[union-attr]
        store.path.write_text("[filters.q\n")  # not TOML at all
        await trio.sleep(3)
        store.path.write_text("")  # emptied by hand
        await trio.sleep(1)
        assert step.current("q") is None
        await store.add(saved_filter("q", "price > 7"))
        await trio.sleep(1)
        assert step.current("q") == await store.get("q")
        nursery.cancel_scope.cancel()
    assert len(messages) == 4, messages
    assert "now reads 'pric > 5', which cannot be used (unknown field 'pric'" in messages[0]
    assert "still filtering with 'price > 5'" in messages[0]
    assert "is not valid TOML" in messages[1]
    assert messages[1].endswith("keeping the saved filters in force")
    assert messages[2].startswith("saved filter 'q' was removed from")
    assert messages[3] == "saved filter 'q' is back: price > 7 (applies to everything)"


# --------------------------------------------------------------------------- database


pg = pytest.mark.postgres


def listener_connections(dsn: str) -> int:
    return int(
        fetch_one(
            dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'irisflow-saved-filters'",
        )
    )


@pg
async def test_database_store_crud(migrated_db: str) -> None:
    with trio.fail_after(DEADLINE):
        await crud(DatabaseFilterStore(migrated_db))


@pg
async def test_database_store_without_schema_says_migrate(empty_db: str) -> None:
    with trio.fail_after(DEADLINE), pytest.raises(UsageError, match="run `irisflow migrate`"):
        await DatabaseFilterStore(empty_db).list()


@pg
async def test_database_store_announces_committed_changes(migrated_db: str) -> None:
    store = DatabaseFilterStore(migrated_db)

    def listen() -> psycopg.Connection[Any]:
        conn = psycopg.connect(migrated_db, autocommit=True)
        conn.execute(f"LISTEN {CHANNEL}")
        return conn

    def next_change(conn: psycopg.Connection[Any]) -> tuple[str, Any]:
        (note,) = list(conn.notifies(timeout=DEADLINE, stop_after=1))
        # Read on the listening connection: the change is visible once announced.
        row = conn.execute(
            "SELECT expr FROM irisflow.saved_filters WHERE name = %s", (note.payload,)
        ).fetchone()
        return note.payload, row[0] if row else None

    with trio.fail_after(DEADLINE):
        conn = await trio.to_thread.run_sync(listen)
        try:
            await store.add(saved_filter("big", "price > 5"))
            assert await trio.to_thread.run_sync(next_change, conn) == ("big", "price > 5")
            with pytest.raises(FilterError):
                await store.add(SavedFilter("big", "nonsense >"))
            await store.add(saved_filter("big", "price > 6"))
            assert await trio.to_thread.run_sync(next_change, conn) == ("big", "price > 6")
            await store.remove("big")
            assert await trio.to_thread.run_sync(next_change, conn) == ("big", None)
        finally:
            conn.close()


@pg
async def test_database_change_applies_mid_stream(migrated_db: str, tmp_path: Path) -> None:
    store = DatabaseFilterStore(migrated_db)

    async def change() -> None:
        await store.add(saved_filter("q", "side == 'sell'", ["binance"], ["BTCUSDT"]))

    with trio.fail_after(DEADLINE):
        messages = await live_change_through_a_replay(store, tmp_path, change)
    assert messages == ["saved filter 'q' changed: side == 'sell' (applies to binance; BTCUSDT)"]


@pg
async def test_live_watch_follows_the_database_without_reconnecting(migrated_db: str) -> None:
    """A live feed keeps flowing while the filter changes: no reconnect, nothing lost."""
    store = DatabaseFilterStore(migrated_db)
    fake = FakeBinance()
    messages: list[str] = []
    ready = trio.Event()
    with trio.fail_after(DEADLINE):
        await store.add(saved_filter("q", "side == 'buy'", ["binance"], ["BTCUSDT"]))
        step = await load_saved_step(store, ["q"], kinds={Trade})
        rec = Recorded(step, "q")
        sink = ListSink()
        runner = Runner(
            Pipeline([rec]), sinks=[sink], services=[watcher_service(store, step, messages, ready)]
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(fake.serve)
            plan = BINANCE.plan(["btcusdt", "ethusdt"], ["trade"], fake.url)
            done = trio.Event()

            async def run() -> None:
                await runner.watch([plan], FeedOptions(backoff_initial=0.01, backoff_cap=0.05))
                done.set()

            nursery.start_soon(run)
            await fake.wait_subscribed("btcusdt@trade")
            await ready.wait()
            sent = 0

            async def publish(n: int) -> None:
                nonlocal sent
                for i in range(sent, sent + n):
                    symbol = "btcusdt" if i % 4 < 2 else "ethusdt"
                    payload = trade(symbol.upper(), price="45000", qty="1", trade_id=i,
                                    time_ms=1_000 + i, buyer_maker=i % 2 == 0)  # fmt: skip
                    await fake.publish(f"{symbol}@trade", payload)
                sent += n
                await rec.wait_seen(sent)

            await publish(40)
            nursery.start_soon(
                store.add, saved_filter("q", "side == 'sell'", ["binance"], ["BTCUSDT"])
            )
            # Keep the feed flowing until the new filter is in force, then a bit more.
            while getattr(step.current("q"), "expr", None) != "side == 'sell'":
                await publish(4)
            await publish(40)
            runner.stop()
            await done.wait()
            nursery.cancel_scope.cancel()
    assert fake.connections_total == 1
    assert not any(isinstance(e, Gap) for e in sink.events)
    rec.check(sent, sink, "side == 'buy'", "side == 'sell'")
    assert messages == ["saved filter 'q' changed: side == 'sell' (applies to binance; BTCUSDT)"]


@pg
async def test_direct_database_edits_are_checked(migrated_db: str) -> None:
    store = DatabaseFilterStore(migrated_db)
    messages: list[str] = []

    def sql(query: str) -> Any:
        return trio.to_thread.run_sync(fetch, migrated_db, query)

    with trio.fail_after(DEADLINE):
        await store.add(saved_filter("q", "price > 5"))
        step = await load_saved_step(store, ["q"])
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(
                    watch_saved, store, step, warn=messages.append, resync_interval=0.2
                )
            )
            # A bad expression, announced: reported once, the old filter stays.
            await sql(
                "BEGIN; UPDATE irisflow.saved_filters SET expr = 'pric > 5' WHERE name = 'q';"
                f" NOTIFY {CHANNEL}, 'q'; COMMIT"
            )
            await wait_until(lambda: len(messages) == 1)
            assert step.current("q") is not None
            assert step.current("q").expr == "price > 5"  # type: ignore[union-attr]
            # Fixed without a NOTIFY: the periodic re-read finds it.
            await sql("UPDATE irisflow.saved_filters SET expr = 'price > 9' WHERE name = 'q'")
            await wait_until(lambda: getattr(step.current("q"), "expr", None) == "price > 9")
            # Emptied by hand, announced with '*': removed.
            await sql(f"BEGIN; DELETE FROM irisflow.saved_filters; NOTIFY {CHANNEL}, '*'; COMMIT")
            await wait_until(lambda: step.current("q") is None)
            nursery.cancel_scope.cancel()
    assert "now reads 'pric > 5', which cannot be used" in messages[0]
    assert "still filtering with 'price > 5'" in messages[0]
    assert messages[1:] == [
        "saved filter 'q' changed: price > 9 (applies to everything)",
        f"saved filter 'q' was removed from {store.where}: it no longer filters",
    ]


@pg
async def test_cancelling_the_listener_is_prompt_and_closes_its_connection(
    migrated_db: str,
) -> None:
    store = DatabaseFilterStore(migrated_db)
    with trio.fail_after(DEADLINE):
        await store.add(saved_filter("q", "price > 5"))
        step = await load_saved_step(store, ["q"])
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(functools.partial(watch_saved, store, step))
                assert await trio.to_thread.run_sync(listener_connections, migrated_db) == 1
                # Let the listener settle into waiting for notifications, then cancel.
                await trio.sleep(0.1)
                started = trio.current_time()
                scope.cancel()
        assert trio.current_time() - started < 1
        count = functools.partial(listener_connections, migrated_db)
        while await trio.to_thread.run_sync(count):  # noqa: ASYNC110  (PostgreSQL's view)
            await trio.sleep(0.02)


@pg
async def test_listener_rides_out_an_outage(migrated_db: str, pg_proxy: TcpProxy) -> None:
    direct = DatabaseFilterStore(migrated_db)
    proxied = DatabaseFilterStore(pg_proxy.dsn(migrated_db), connect_timeout=2)
    messages: list[str] = []
    with trio.fail_after(DEADLINE):
        await direct.add(saved_filter("q", "price > 5"))
        step = await load_saved_step(proxied, ["q"])
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(
                    watch_saved, proxied, step, warn=messages.append, retry_interval=0.05
                )
            )
            await pg_proxy.cut()
            await wait_until(lambda: len(messages) == 1)
            assert "keeping the filters in force and retrying" in messages[0]
            await direct.add(saved_filter("q", "price > 8"))  # the listener cannot hear this
            assert step.current("q").expr == "price > 5"  # type: ignore[union-attr]
            pg_proxy.restore()
            await wait_until(lambda: getattr(step.current("q"), "expr", None) == "price > 8")
            nursery.cancel_scope.cancel()
    assert messages[1:] == [
        "saved filter 'q' changed: price > 8 (applies to everything)",
        f"saved filters: {proxied.where} is back; following changes again",
    ]
