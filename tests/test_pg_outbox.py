"""The alert outbox in the real PostgreSQL (``irisflow.alerts``), and a restart end to end."""

from __future__ import annotations

import datetime as dt
import os
import re
import traceback
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import trio
import trio.testing
from fix_db import fetch, fetch_one
from fix_proxy import TcpProxy
from psycopg import sql
from psycopg.conninfo import make_conninfo

from irisflow._alert import Alert
from irisflow._alerting import AlertSink, TelegramSettings
from irisflow._config import Config
from irisflow._errors import DatabaseError, UsageError
from irisflow._events import Trade
from irisflow._outbox import Outbox, OutboxItem
from irisflow._pg_outbox import PostgresOutbox, open_postgres_outbox, row_id
from irisflow._pipeline import Pipeline
from irisflow._rules import AlertStep, build_rules
from irisflow._run import Runner
from irisflow.testing import FakeTelegram, trade

pytestmark = pytest.mark.postgres

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
TOKEN = "123456789:AAFakeTelegramTokenForTests_0123456"
PASSWORD = "Hunter2-Outbox-Secret"
DEADLINE = 60
DIGEST = re.compile(r"^.+? fired (\d+) times in .+?, last at \d\d:\d\d:\d\d UTC: ")


def make_alert(i: int, *targets: str, rule: str = "whale") -> Alert:
    return Alert(
        venue="binance",
        symbol="BTCUSDT",
        ts=T0 + i * 1_000_000_000,
        recv_ts=T0 + i * 1_000_000_000 + 5,
        rule=rule,
        severity="critical",
        text=f"BTCUSDT {rule} #{i} & ü 😀",
        key=f"{rule}:{i}",
        targets=targets,
    )


def trade_event(i: int) -> Trade:
    """Not an alert: the alert sink passes it by."""
    return Trade("binance", "BTCUSDT", T0 + i, T0 + i, Decimal(1), Decimal(1), "buy", i)


def rows(dsn: str) -> list[tuple[Any, ...]]:
    return fetch(
        dsn,
        "SELECT id, payload->>'state', sent_at IS NOT NULL, payload->>'chat'"
        " FROM irisflow.alerts ORDER BY id",
    )


async def test_the_outbox_protocol_in_postgres(migrated_db: str) -> None:
    a, b = make_alert(1, "42"), make_alert(2)
    with trio.fail_after(DEADLINE):
        async with open_postgres_outbox(migrated_db) as outbox:
            typed: Outbox = outbox
            assert typed is outbox
            assert await outbox.add(a, "42")
            assert not await outbox.add(a, "42")
            assert await outbox.add(a, "43")
            assert await outbox.add_many([(b, "42"), (b, "42"), (a, "42")]) == [True, False, False]
            assert await outbox.pending() == [
                OutboxItem(a, "42"),
                OutboxItem(a, "43"),
                OutboxItem(b, "42"),
            ]
            await outbox.mark_sent(a.key, "42", 17)
            await outbox.mark_failed(a.key, "43", "chat disabled: blocked (403)")
            await outbox.mark_sent("unknown", "42", 1)  # ignored
            assert await outbox.pending() == [OutboxItem(b, "42")]

        # A restart: the pending alert is still there, done pairs are still refused.
        async with open_postgres_outbox(migrated_db) as outbox:
            assert await outbox.pending() == [OutboxItem(b, "42")]
            assert not await outbox.add(a, "42")
            assert not await outbox.add(b, "42")

    assert rows(migrated_db) == [
        ("whale:1|42", "sent", True, "42"),
        ("whale:1|43", "failed", False, "43"),
        ("whale:2|42", "pending", False, "42"),
    ]
    (row,) = fetch(
        migrated_db,
        "SELECT rule, severity, venue, symbol, text, fired_at, payload->>'message_id',"
        " payload->'alert'->>'key' FROM irisflow.alerts WHERE id = %s",
        (row_id(a.key, "42"),),
    )
    fired = dt.datetime(2026, 1, 1, 0, 0, 1, tzinfo=dt.UTC)
    assert row == ("whale", "critical", "binance", "BTCUSDT", a.text, fired, "17", "whale:1")
    reason = fetch_one(
        migrated_db,
        "SELECT payload->>'reason' FROM irisflow.alerts WHERE id = %s",
        (row_id(a.key, "43"),),
    )
    assert reason == "chat disabled: blocked (403)"


async def test_outbox_names_are_held_and_kept_apart(migrated_db: str) -> None:
    with trio.fail_after(DEADLINE):
        async with open_postgres_outbox(migrated_db) as first:
            with pytest.raises(UsageError, match="in use by another irisflow process"):
                async with open_postgres_outbox(migrated_db):
                    pass
            async with open_postgres_outbox(migrated_db, name="eth") as other:
                assert await other.add(make_alert(1), "42")
                # Known to every outbox (the same alert to the same chat is sent once) ...
                assert not await first.add(make_alert(1), "42")
                # ... but pending only in the one that recorded it.
                assert await first.pending() == []
                assert len(await other.pending()) == 1


async def test_unmigrated_database_is_a_usage_error(empty_db: str) -> None:
    with (
        trio.fail_after(DEADLINE),
        pytest.raises(UsageError, match=r"no irisflow\.alerts table: run `irisflow migrate`"),
    ):
        async with open_postgres_outbox(empty_db):
            pass


async def test_a_reply_lost_with_the_connection_is_neither_lost_nor_doubled(
    migrated_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = PostgresOutbox._in_thread
    lost = [True]

    def flaky(self: PostgresOutbox, work: Any) -> Any:
        result = real(self, work)
        if lost and lost.pop():
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return result

    with trio.fail_after(DEADLINE):
        async with open_postgres_outbox(migrated_db, backoff=0.01) as outbox:
            monkeypatch.setattr(PostgresOutbox, "_in_thread", flaky)
            # The insert committed but its reply was lost: the retry must still say "new".
            assert await outbox.add_many([(make_alert(1), "42"), (make_alert(2), "42")]) == [
                True,
                True,
            ]
            assert lost == []
            assert await outbox.add(make_alert(1), "42") is False
            assert len(await outbox.pending()) == 2


async def test_reconnects_after_an_outage(migrated_db: str, pg_proxy: TcpProxy) -> None:
    dsn = make_conninfo(pg_proxy.dsn(migrated_db), password=PASSWORD)
    with trio.fail_after(DEADLINE):
        async with open_postgres_outbox(dsn, backoff=0.05) as outbox:
            assert await outbox.add(make_alert(1), "42")
            await pg_proxy.cut()
            await outbox.mark_sent("whale:1", "42", 5)  # waits in memory
            await wait_for(lambda: outbox.statistics().retries >= 2)
            assert outbox.statistics().buffered == 1
            pg_proxy.restore()
            assert await outbox.pending() == []
            assert pg_proxy.accepted >= 2
            stats = outbox.statistics()
            assert (stats.state, stats.buffered, stats.recorded_late) == ("ok", 0, 1)
            await pg_proxy.cut()
        # Opening while PostgreSQL is away is no error: the outbox keeps trying.
        async with open_postgres_outbox(dsn, backoff=0.01) as outbox:
            stats = outbox.statistics()
            assert stats.state == "retrying"
            assert stats.last_error is not None
            assert PASSWORD not in stats.last_error
            assert "***" in stats.last_error
            assert PASSWORD not in repr(outbox)
    assert rows(migrated_db) == [("whale:1|42", "sent", True, "42")]


async def wait_for(condition: Callable[[], bool], step: float = 0.01) -> None:
    """Poll ``condition`` while the outbox works in threads (under the caller's deadline)."""
    while not condition():  # noqa: ASYNC110
        await trio.sleep(step)


async def test_an_outage_longer_than_the_old_retry_budget_loses_nothing(
    migrated_db: str, pg_proxy: TcpProxy, mock_clock: trio.testing.MockClock
) -> None:
    # The outbox used to give up after 5 attempts (~7.5 s), which ended the whole run.
    mock_clock.autojump_threshold = 0.1  # virtual time; jumps only while no thread works
    dsn = make_conninfo(pg_proxy.dsn(migrated_db), password=PASSWORD)
    a, b, c, d = (make_alert(i) for i in range(1, 5))
    with trio.fail_after(600):
        async with open_postgres_outbox(dsn) as outbox:
            assert await outbox.add(a, "42")
            await pg_proxy.cut()
            started = trio.current_time()
            # Alerts keep flowing: answered from memory, recorded later.
            assert await outbox.add_many([(b, "42"), (c, "42"), (a, "42")]) == [True, True, False]
            await outbox.mark_sent(a.key, "42", 7)
            assert await outbox.store([d]) == 1
            assert await outbox.pending() == [OutboxItem(b, "42"), OutboxItem(c, "42")]
            await trio.sleep(120)
            stats = outbox.statistics()
            assert (stats.state, stats.buffered, stats.backpressure) == ("down", 3, False)
            assert stats.retries >= 5
            pg_proxy.restore()
            await wait_for(lambda: outbox.statistics().buffered == 0, step=1)  # the writer
            assert trio.current_time() - started > 60
            assert outbox.statistics().state == "ok"
            assert await outbox.pending() == [OutboxItem(b, "42"), OutboxItem(c, "42")]
    assert rows(migrated_db) == [
        ("whale:1|42", "sent", True, "42"),
        ("whale:2|42", "pending", False, "42"),
        ("whale:3|42", "pending", False, "42"),
        ("whale:4|", "stored", False, ""),
    ]


async def test_store_only_alert_sink_survives_a_long_outage(
    migrated_db: str, pg_proxy: TcpProxy, mock_clock: trio.testing.MockClock
) -> None:
    # `--alert --db` without Telegram: the run goes on through the outage and stores all.
    mock_clock.autojump_threshold = 0.1
    sink = AlertSink(None, dsn=make_conninfo(pg_proxy.dsn(migrated_db), password=PASSWORD))
    send, receive = trio.open_memory_channel[list[Any]](4)
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run, receive)
            async with send:
                await send.send([make_alert(1)])
                await pg_proxy.cut()
                for i in range(2, 12):
                    await send.send([make_alert(i), trade_event(i)])
                    await trio.sleep(5)  # 50 s of outage in all
                pg_proxy.restore()
    stored = fetch(migrated_db, "SELECT id, payload->>'state' FROM irisflow.alerts ORDER BY 1")
    assert sorted(stored) == sorted((f"whale:{i}|", "stored") for i in range(1, 12))


async def test_writes_not_recorded_at_shutdown_are_counted(
    migrated_db: str, pg_proxy: TcpProxy, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0.1
    dsn = make_conninfo(pg_proxy.dsn(migrated_db), password=PASSWORD)

    async def write_then_stop() -> None:
        async with open_postgres_outbox(dsn, shutdown_timeout=30) as outbox:
            assert await outbox.add(make_alert(1), "42")
            await pg_proxy.cut()
            assert await outbox.add_many([(make_alert(2), "42"), (make_alert(3), "42")])
            await outbox.mark_sent("whale:1", "42", 5)
            await outbox.mark_failed("whale:2", "42", "chat disabled")

    with trio.fail_after(600), pytest.raises(DatabaseError) as err:
        await write_then_stop()
    message = str(err.value)
    assert "stopped with 3 write(s) not recorded in PostgreSQL after trying for 30s" in message
    assert "(alerts to record: 2, delivered marks: 1, failed marks: 1)" in message
    assert PASSWORD not in "".join(traceback.format_exception(err.value))
    assert rows(migrated_db) == [("whale:1|42", "pending", False, "42")]


@pytest.fixture
def nologin_role(pg_server_dsn: str) -> Iterator[str]:
    """A role that may not log in (this server trusts any password on loopback, so a wrong
    password cannot be shown; the refusal is the same kind of permanent error)."""
    role = f"irisflow_outbox_nologin_{os.getpid()}"
    ident = sql.Identifier(role)
    fetch(pg_server_dsn, sql.SQL("DROP ROLE IF EXISTS {}").format(ident).as_string())
    fetch(pg_server_dsn, sql.SQL("CREATE ROLE {} NOLOGIN").format(ident).as_string())
    try:
        yield role
    finally:
        fetch(pg_server_dsn, sql.SQL("DROP ROLE IF EXISTS {}").format(ident).as_string())


@pytest.mark.parametrize("refusal", ["bad port", "role may not log in"])
async def test_a_dsn_the_server_refuses_fails_fast(
    migrated_db: str, nologin_role: str, refusal: str
) -> None:
    change = {"port": "99999"} if refusal == "bad port" else {"user": nologin_role}
    dsn = make_conninfo(migrated_db, password=PASSWORD, **change)
    # No retries: the old outbox took 5 attempts (~7.5 s) before failing.
    with trio.fail_after(3), pytest.raises(UsageError, match="refused the connection") as err:
        async with open_postgres_outbox(dsn):
            pytest.fail("opened")
    assert PASSWORD not in "".join(traceback.format_exception(err.value))


async def test_without_telegram_alerts_are_stored(migrated_db: str, tmp_path: Path) -> None:
    rules = build_rules(["price > 45000; symbols=btcusdt; name=btc"], Config(), [Trade])
    sink = AlertSink(None, dsn=migrated_db)
    with trio.fail_after(DEADLINE):
        await Runner(Pipeline([AlertStep(rules)]), sinks=[sink]).replay(
            recording(tmp_path / "trades.jsonl")
        )
    stored = fetch(
        migrated_db,
        "SELECT rule, symbol, text, payload->>'state', payload->>'chat', sent_at"
        " FROM irisflow.alerts ORDER BY fired_at",
    )
    assert len(stored) == 6
    assert stored[0] == (
        "btc",
        "BTCUSDT",
        "btc: BTCUSDT on binance, price = 45003",
        "stored",
        "",
        None,
    )


# --------------------------------------------------------------------------------------------
# End to end: replay -> rules -> AlertSink -> PostgreSQL outbox -> Telegram, with a restart


def recording(path: Path) -> Path:
    """BTCUSDT and ETHUSDT crossing their thresholds 6 times each, one trade a second."""
    lines = []
    for i in range(24):
        symbol = "BTCUSDT" if i % 2 == 0 else "ETHUSDT"
        high = (i // 2) % 2 == 1
        price = (
            (45001 + i if high else 44000) if symbol == "BTCUSDT" else (3001 + i if high else 2900)
        )
        payload = trade(
            symbol,
            price=price,
            qty="1",
            trade_id=i,
            time_ms=T0 // 10**6 + i * 1000,
            buyer_maker=True,
        )
        frame = orjson.dumps({"stream": f"{symbol.lower()}@trade", "data": payload}).decode()
        lines.append(orjson.dumps({"venue": "binance", "recv_ts": T0 + i * 10**9, "frame": frame}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def runner(dsn: str, url: str) -> tuple[Runner, AlertSink]:
    rules = build_rules(
        [
            "price > 45000; symbols=btcusdt; name=btc",
            "price > 3000; symbols=ethusdt; name=eth; targets=-1001",
        ],
        Config(),
        [Trade],
    )
    sink = AlertSink(TelegramSettings(TOKEN, "42", url), dsn=dsn, shutdown_timeout=5)
    return Runner(Pipeline([AlertStep(rules)]), sinks=[sink]), sink


async def test_replay_restart_loses_nothing_and_sends_nothing_twice(
    migrated_db: str, mock_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Virtual time that jumps only after 0.1 s of real idleness: database calls run in worker
    # threads, and the clock must not jump while one is under way.
    mock_clock.autojump_threshold = 0.1
    path = recording(tmp_path / "trades.jsonl")
    fake = FakeTelegram(token=TOKEN, delay=0.5)  # slow replies: one is in flight at the crash
    with trio.fail_after(600):
        async with trio.open_nursery() as outer:
            url = await outer.start(fake.serve)

            first, first_sink = runner(migrated_db, url)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(first.replay, path)
                await fake.wait_for_messages(1)
                nursery.cancel_scope.cancel()  # the process dies
            assert first_sink.telegram is not None
            left = first_sink.telegram.statistics()
            pending = fetch_one(
                migrated_db, "SELECT count(*) FROM irisflow.alerts WHERE sent_at IS NULL"
            )
            assert pending > 0
            recorded = fetch_one(migrated_db, "SELECT count(*) FROM irisflow.alerts")
            delivered_first = len(fake.messages)

            # The next run replays the same data: its rules fire the same alerts again.
            second, second_sink = runner(migrated_db, url)
            await second.replay(path)
            outer.cancel_scope.cancel()

    assert delivered_first >= 1
    states = rows(migrated_db)
    assert len(states) == 12  # 6 crossings of each symbol, one row per alert and chat
    assert {(state, sent) for _, state, sent, _ in states} == {("sent", True)}
    assert sum(chat == "42" for *_, chat in states) == 6
    # Every recorded alert reached its chat exactly once (a digest stands for several).
    delivered: dict[str, int] = {}
    for message in fake.messages:
        match = DIGEST.match(message.plain)
        delivered[message.chat_id] = delivered.get(message.chat_id, 0) + (
            int(match.group(1)) if match else 1
        )
    assert delivered == {"42": 6, "-1001": 6}
    assert second_sink.telegram is not None
    stats = second_sink.telegram.statistics()
    assert stats.duplicates == recorded  # what the first run recorded is not sent again
    assert stats.sent + left.sent == 12
    assert TOKEN.split(":")[1] not in str(fetch(migrated_db, "SELECT * FROM irisflow.alerts"))
