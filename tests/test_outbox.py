"""The durable alert outbox: the file format, replay, compaction, and restarts of the sink."""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from irisflow._alert import Alert
from irisflow._errors import UsageError
from irisflow._outbox import FileOutbox, Outbox, OutboxItem
from irisflow._telegram import open_telegram
from irisflow.sinks.telegram import TelegramSink
from irisflow.testing._telegram import FakeTelegram

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
DIGEST = re.compile(r"^\w+ fired (\d+) times in .+?, last at \d\d:\d\d:\d\d UTC: ")


def make_alert(i: int, *targets: str, rule: str = "whale", text: str | None = None) -> Alert:
    return Alert(
        venue="binance",
        symbol="BTCUSDT",
        ts=T0 + i * 100_000_000,
        recv_ts=T0,
        rule=rule,
        severity="warning",
        text=f"<b>BTCUSDT</b> {rule} #{i}" if text is None else text,
        key=f"{rule}:{i}",
        targets=targets,
    )


def represented(plain: str) -> int:
    """How many alerts one delivered message stands for (a digest says so)."""
    match = DIGEST.match(plain)
    return int(match.group(1)) if match else 1


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_add_is_idempotent_per_key_and_chat(tmp_path: Path) -> None:
    with FileOutbox(tmp_path / "outbox.jsonl") as outbox:
        a, b = make_alert(1), make_alert(2)
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
        await outbox.mark_failed(a.key, "43", "chat disabled")
        await outbox.mark_sent("unknown", "42", 1)  # ignored
        assert await outbox.pending() == [OutboxItem(b, "42")]
        assert not await outbox.add(a, "42")  # done pairs are remembered
    ops = [(r["op"], r.get("chat")) for r in records(tmp_path / "outbox.jsonl")]
    assert ops == [
        ("add", "42"),
        ("add", "43"),
        ("add", "42"),
        ("sent", "42"),
        ("failed", "43"),
    ]


async def test_replay_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "outbox.jsonl"
    alerts = [make_alert(i, "42", text=f"<b>{i}</b> & ü 😀") for i in range(5)]
    with FileOutbox(path) as outbox:
        for alert in alerts:
            await outbox.add(alert, "42")
        await outbox.mark_sent(alerts[1].key, "42", 2)
    with FileOutbox(path) as outbox:
        pending = await outbox.pending()
        assert [item.alert for item in pending] == [alerts[0], *alerts[2:]]
        assert not await outbox.add(alerts[1], "42")
        assert repr(outbox) == f"<FileOutbox {str(path)!r} pending=4>"


async def test_a_torn_last_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    with FileOutbox(path) as outbox:
        await outbox.add(make_alert(1), "42")
    whole = path.read_bytes()
    with path.open("ab") as file:
        file.write(b'{"op":"add","chat":"42","alert":{"ven')  # the crash came mid-write
    with FileOutbox(path) as outbox:
        assert len(await outbox.pending()) == 1
        assert path.read_bytes() == whole
        await outbox.add(make_alert(2), "42")
    with FileOutbox(path) as outbox:
        assert len(await outbox.pending()) == 2


def test_a_corrupt_line_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    path.write_bytes(b'{"op":"sent","key":"k","chat":"42","message_id":1}\nnot json\n{}\n')
    with pytest.raises(UsageError, match=r"line 2 is not an outbox record.*move the file aside"):
        FileOutbox(path)
    path.write_bytes(b'{"op":"add","chat":"42","alert":{"venue":"x"}}\n')
    with pytest.raises(UsageError, match=r"line 1 .*required field missing @ \$\.alert\.symbol"):
        FileOutbox(path)


def test_one_process_at_a_time(tmp_path: Path) -> None:
    with FileOutbox(tmp_path / "outbox.jsonl"), pytest.raises(UsageError, match="in use"):
        FileOutbox(tmp_path / "outbox.jsonl")
    with FileOutbox(tmp_path / "outbox.jsonl"):
        pass  # the lock went with the first one


def test_an_unusable_place_is_a_usage_error_naming_the_path(tmp_path: Path) -> None:
    # XDG_DATA_HOME pointing at a file: the outbox directory cannot be made.
    file = tmp_path / "data"
    file.write_text("not a directory")
    path = file / "irisflow" / "outbox.jsonl"
    with pytest.raises(UsageError) as info:
        FileOutbox(path)
    text = str(info.value)
    assert text.startswith(f"cannot use {str(path)!r} as the alert outbox (Not a directory")
    assert "point XDG_DATA_HOME at a writable directory" in text
    assert isinstance(info.value.__cause__, NotADirectoryError)
    # The outbox path is a directory.
    (tmp_path / "box").mkdir()
    with pytest.raises(UsageError, match=r"\(Is a directory\); move that directory aside"):
        FileOutbox(tmp_path / "box")


async def test_closed_outbox_refuses_writes(tmp_path: Path) -> None:
    outbox = FileOutbox(tmp_path / "outbox.jsonl")
    outbox.close()
    outbox.close()
    with pytest.raises(UsageError, match="closed"):
        await outbox.add(make_alert(1), "42")


async def test_compaction_keeps_pending_and_recent_done(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    with FileOutbox(path, remember=100, fsync=False) as outbox:
        for i in range(3000):
            alert = make_alert(i)
            await outbox.add(alert, "42")
            if i % 1000:  # every thousandth stays pending
                await outbox.mark_sent(alert.key, "42", i)
        assert len(path.read_bytes().splitlines()) < 2 * (100 + 3) + 1100
    with FileOutbox(path, remember=100) as outbox:
        assert [item.key for item in await outbox.pending()] == [
            "whale:0",
            "whale:1000",
            "whale:2000",
        ]
        assert not await outbox.add(make_alert(2999), "42")  # recent: remembered
        assert await outbox.add(make_alert(5), "42")  # long ago: forgotten
    assert not (tmp_path / "outbox.jsonl.compact").exists()


def test_file_outbox_is_an_outbox(tmp_path: Path) -> None:
    with FileOutbox(tmp_path / "outbox.jsonl") as outbox:
        typed: Outbox = outbox
        assert typed is outbox


async def test_sink_restart_sends_what_was_pending_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.jsonl"
    fake = FakeTelegram(delay=0.5)  # slow replies: a message is in flight when we cancel
    alerts = [make_alert(i, "42", "-1001", rule=("whale", "spread")[i % 2]) for i in range(300)]
    with trio.fail_after(600):
        async with trio.open_nursery() as outer:
            url = await outer.start(fake.serve)
            async with open_telegram(fake.token, api_url=url) as telegram:
                with FileOutbox(path) as outbox:
                    first = TelegramSink(telegram, outbox, shutdown_timeout=5)
                    send, receive = trio.open_memory_channel[list[Alert]](1)

                    async def feed() -> None:
                        for i in range(0, 300, 10):
                            await send.send(alerts[i : i + 10])
                            await trio.sleep(0.2)

                    async with trio.open_nursery() as nursery:
                        await nursery.start(first.run, receive)
                        nursery.start_soon(feed)
                        await fake.wait_for_messages(5)
                        sends = [r for r in fake.requests if r.method == "sendMessage"]
                        assert len(sends) == 5  # the fifth is still being answered
                        nursery.cancel_scope.cancel()
                    stopped = first.statistics()
                    assert 0 < stopped.pending < 2 * 300
                    assert len(fake.messages) == 5
                    assert stopped.messages == 5  # the one in flight was ticked off

                with FileOutbox(path) as outbox:
                    assert len(await outbox.pending()) == stopped.pending
                    second = TelegramSink(telegram, outbox, shutdown_timeout=300)
                    send, receive = trio.open_memory_channel[list[Alert]](1)
                    async with trio.open_nursery() as nursery:
                        await nursery.start(second.run, receive)
                        # The rule engine replays alerts it already gave the first sink.
                        await send.send(alerts[:10])
                        await send.aclose()
                    assert await outbox.pending() == []
            outer.cancel_scope.cancel()

    # Nothing lost, nothing twice: every pair recorded is ticked off exactly once, and the
    # messages stand for exactly the alerts recorded.
    added: collections.Counter[tuple[str, str]] = collections.Counter()
    ticked: collections.Counter[tuple[str, str]] = collections.Counter()
    for record in records(path):
        if record["op"] == "add":
            added[(record["alert"]["key"], record["chat"])] += 1
        else:
            ticked[(record["key"], record["chat"])] += 1
    assert set(added.values()) == {1}
    assert ticked == added
    delivered: collections.Counter[str] = collections.Counter()
    for message in fake.messages:
        delivered[message.chat_id] += represented(message.plain)
    per_chat = collections.Counter(chat for _, chat in added)
    assert delivered == per_chat
    assert second.statistics().sent == stopped.pending
    assert second.statistics().duplicates == 20


async def test_pending_from_a_previous_run_gets_one_more_attempt(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.jsonl"
    with FileOutbox(path) as outbox:
        await outbox.add(make_alert(1), "42")
    fake = FakeTelegram()
    fake.fail_next(100, 500)
    with trio.fail_after(600):
        async with trio.open_nursery() as outer:
            url = await outer.start(fake.serve)
            async with open_telegram(fake.token, api_url=url, max_attempts=2) as telegram:
                with FileOutbox(path) as outbox:
                    sink = TelegramSink(telegram, outbox, retry_backoff=1)
                    send, receive = trio.open_memory_channel[list[Alert]](1)
                    async with trio.open_nursery() as nursery:
                        await nursery.start(sink.run, receive)
                        await send.send([make_alert(2, "42")])
                        await trio.sleep(30)
                        nursery.cancel_scope.cancel()
                    pending = await outbox.pending()
            outer.cancel_scope.cancel()
    # The old alert was tried once (two HTTP attempts) and given up; the new one is still
    # pending, for the next run to try.
    assert [item.key for item in pending] == ["whale:2"]
    failed = [r for r in records(path) if r["op"] == "failed"]
    assert [(r["key"], r["chat"]) for r in failed] == [("whale:1", "42")]
    assert str(failed[0]["reason"]).startswith("not delivered after a restart: ")
    assert sink.statistics().failed == 1
    assert sink.statistics().pending == 1
