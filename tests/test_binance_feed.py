"""The Binance subscriber and the runner against a real fake Binance server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing

from irisflow._errors import ConnectError, VenueError
from irisflow._events import Event, Gap, Quote, Trade
from irisflow._feed import ConnectionState, Overflow
from irisflow._pipeline import Pipeline
from irisflow._run import Runner
from irisflow._venue import FeedOptions, Plan
from irisflow.testing import FakeBinance, ListSink, book_ticker, trade
from irisflow.venues.binance import BINANCE, BinanceControl

FAST = FeedOptions(backoff_initial=0.01, backoff_cap=0.05, stale_timeout=30, ack_timeout=5)
T0 = 1767225600000


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    server = FakeBinance()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


def plan_for(fake: FakeBinance, symbols: list[str], channels: list[str]) -> Plan:
    return BINANCE.plan(symbols, channels, fake.url)


def a_trade(n: int, price: str = "94250.01", symbol: str = "BTCUSDT") -> dict[str, object]:
    return trade(symbol, price=price, qty="0.5", trade_id=n, time_ms=T0 + n, buyer_maker=n % 2 == 0)


async def start_watch(
    nursery: trio.Nursery, runner: Runner, plan: Plan, options: FeedOptions = FAST
) -> trio.Event:
    done = trio.Event()

    async def go() -> None:
        await runner.watch([plan], options)
        done.set()

    nursery.start_soon(go)
    return done


async def test_subscribes_with_lower_case_streams_and_filters_trades(fake: FakeBinance) -> None:
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline.from_filters(["price > 45000"], {Trade}), sinks=[sink])
        plan = plan_for(fake, ["BTCUSDT"], ["trade"])
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan)
            await fake.wait_subscribed("btcusdt@trade")
            await fake.publish("btcusdt@trade", a_trade(1, "44000.5"))
            await fake.publish("btcusdt@trade", a_trade(2, "46000"))
            await fake.publish("btcusdt@trade", a_trade(3, "45000.01"))
            await sink.wait_for(2)
            runner.stop()
            await done.wait()
        assert [e.trade_id for e in sink.events if isinstance(e, Trade)] == [2, 3]
        request = fake.requests[0]
        assert request["method"] == "SUBSCRIBE"
        assert request["params"] == ["btcusdt@trade"]
        assert isinstance(request["id"], int)


async def test_drop_reconnects_resubscribes_and_emits_a_gap(fake: FakeBinance) -> None:
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        plan = plan_for(fake, ["btcusdt"], ["trade"])
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan)
            await fake.wait_subscribed("btcusdt@trade")
            await fake.publish("btcusdt@trade", a_trade(1))
            await sink.wait_for(1)
            await fake.drop_all()
            await fake.wait_connections(1)
            await fake.wait_subscribed("btcusdt@trade")
            await fake.publish("btcusdt@trade", a_trade(2))
            await sink.wait_for(3)
            runner.stop()
            await done.wait()
        first, gap, second = sink.events
        assert isinstance(gap, Gap)
        assert gap.streams == ("btcusdt@trade",)
        assert gap.start <= gap.end
        assert "lost" in gap.cause or "closed" in gap.cause
        assert (first.trade_id, second.trade_id) == (1, 2)  # type: ignore[attr-defined]
        assert fake.connections_total == 2
        assert [r["params"] for r in fake.requests] == [["btcusdt@trade"], ["btcusdt@trade"]]
        assert runner.status.feeds[0].reconnects == 1
        assert runner.status.feeds[0].gaps == 1


async def test_close_code_and_server_shutdown_reconnect(fake: FakeBinance) -> None:
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan_for(fake, ["btcusdt"], ["trade"]))
            await fake.wait_subscribed("btcusdt@trade")
            await fake.close_all(1001, "going away")
            await fake.wait_subscribed("btcusdt@trade")
            await fake.send_server_shutdown()
            await sink.wait_for(2)
            runner.stop()
            await done.wait()
        causes = [e.cause for e in sink.events if isinstance(e, Gap)]
        assert "1001" in causes[0]
        assert "shutdown" in causes[1]


async def test_stale_connection_is_replaced(
    fake: FakeBinance, autojump_clock: trio.testing.MockClock
) -> None:
    autojump_clock.autojump_threshold = 0.02  # jump only once loopback I/O has settled
    with trio.fail_after(120):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        options = FeedOptions(backoff_initial=0.01, backoff_cap=0.02, stale_timeout=30)
        async with trio.open_nursery() as nursery:
            done = await start_watch(
                nursery, runner, plan_for(fake, ["btcusdt"], ["trade"]), options
            )
            await fake.wait_subscribed("btcusdt@trade")
            fake.stall()
            await trio.sleep(31)  # virtual time: past the stale timeout
            assert runner.status.feeds[0].reconnects >= 1
            fake.unstall()
            await sink.wait_for(1)
            runner.stop()
            await done.wait()
        (gap,) = sink.events
        assert isinstance(gap, Gap)
        assert gap.cause == "stale: no data for 30s"


async def test_error_reply_names_the_stream(fake: FakeBinance) -> None:
    plan = plan_for(fake, ["btcusdt"], ["trade"])
    bad = Plan(
        plan.venue, plan.endpoint, plan.symbols, plan.channels, ("btcusdt@bogus",), plan.kinds
    )
    runner = Runner(Pipeline(), sinks=[ListSink()])
    with trio.fail_after(10), pytest.raises(VenueError) as info:
        await runner.watch([bad], FAST)
    assert "binance refused btcusdt@bogus" in str(info.value)


async def test_unreachable_endpoint_is_reported_at_start() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    plan = BINANCE.plan(["btcusdt"], ["trade"], f"ws://127.0.0.1:{port}")
    with trio.fail_after(10), pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
        await Runner(Pipeline()).watch([plan], FAST)


async def test_many_streams_open_more_connections_within_the_rate_limit(
    fake: FakeBinance, autojump_clock: trio.testing.MockClock
) -> None:
    autojump_clock.autojump_threshold = 0.02
    symbols = [f"sym{i:04d}usdt" for i in range(520)]
    plan = plan_for(fake, symbols, ["trade", "bookTicker"])  # 1040 streams
    runner = Runner(Pipeline())
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan)
            await fake.wait_connections(2)
            await fake.wait_subscribed("sym0519usdt@bookTicker")
            await fake.wait_subscribed("sym0000usdt@trade")
            subscribed = fake.subscriptions()
            runner.stop()
            await done.wait()
    assert len(subscribed) == 1040
    assert [f.streams for f in runner.status.feeds] == [1024, 16]
    assert fake.rate_limit_closes == 0
    assert all(len(r["params"]) <= 200 for r in fake.requests)


async def test_backpressure_blocks_without_losing_events(fake: FakeBinance) -> None:
    with trio.fail_after(10):
        sink = ListSink(hold=True)
        runner = Runner(Pipeline(), sinks=[sink], buffer=1)
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan_for(fake, ["btcusdt"], ["trade"]))
            await fake.wait_subscribed("btcusdt@trade")
            for n in range(200):
                await fake.publish("btcusdt@trade", a_trade(n))
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert runner.status.channel_depth() == 1  # the feed channel is full
            assert runner.status.feeds[0].dropped == 0
            sink.release()
            await sink.wait_for(200)
            runner.stop()
            await done.wait()
        assert [e.trade_id for e in sink.events] == list(range(200))  # type: ignore[attr-defined]


async def test_drop_overflow_counts_what_it_drops(fake: FakeBinance) -> None:
    with trio.fail_after(10):
        sink = ListSink(hold=True)
        runner = Runner(Pipeline(), sinks=[sink], buffer=1)
        options = FeedOptions(overflow=Overflow.DROP)
        async with trio.open_nursery() as nursery:
            done = await start_watch(
                nursery, runner, plan_for(fake, ["btcusdt"], ["trade"]), options
            )
            await fake.wait_subscribed("btcusdt@trade")
            for n in range(200):
                await fake.publish("btcusdt@trade", a_trade(n))
                await trio.lowlevel.checkpoint()
            await trio.testing.wait_all_tasks_blocked(0.05)
            sink.release()
            runner.stop()
            await done.wait()
        dropped = runner.status.feeds[0].dropped
        assert dropped > 0
        assert len(sink.events) + dropped == 200


async def test_stop_drains_and_stops_every_task(fake: FakeBinance) -> None:
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = await start_watch(
                nursery, runner, plan_for(fake, ["btcusdt", "ethusdt"], ["trade", "bookTicker"])
            )
            await fake.wait_subscribed("ethusdt@bookTicker")
            await fake.publish_many(
                [("btcusdt@trade", a_trade(n)) for n in range(50)]
                + [
                    (
                        "ethusdt@bookTicker",
                        book_ticker(
                            "ETHUSDT",
                            bid="3300.1",
                            bid_qty="1",
                            ask="3300.2",
                            ask_qty="2",
                            update_id=7,
                        ),
                    )
                ]
            )
            await sink.wait_for(51)
            runner.stop()
            await done.wait()
            await fake.wait_connections(0)
        assert runner.status.feeds[0].state is ConnectionState.STOPPED
        quotes = [e for e in sink.events if isinstance(e, Quote)]
        assert quotes[0].ask_price == Decimal("3300.2")


async def test_record_then_replay_emits_the_same_events(fake: FakeBinance, tmp_path: Path) -> None:
    recording = tmp_path / "rec.jsonl"
    live = ListSink()
    filters = ["symbol == 'BTCUSDT'"]
    plan = plan_for(fake, ["btcusdt"], ["trade", "bookTicker"])
    with trio.fail_after(10):
        runner = Runner(Pipeline.from_filters(filters, plan.kinds), sinks=[live], record=recording)
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan)
            await fake.wait_subscribed("btcusdt@bookTicker")
            await fake.publish_many(
                [("btcusdt@trade", a_trade(n, f"{44990 + n}.5")) for n in range(20)]
            )
            await fake.send_raw('{"stream":"btcusdt@trade","data":{"e":"trade"}}')  # malformed
            await fake.drop_all()
            await fake.wait_subscribed("btcusdt@bookTicker")
            await fake.publish(
                "btcusdt@bookTicker",
                book_ticker("BTCUSDT", bid="1", bid_qty="1", ask="2", ask_qty="1", update_id=1),
            )
            await live.wait_for(22)
            runner.stop()
            await done.wait()
        replayed = ListSink()
        again = Runner(Pipeline.from_filters(filters, plan.kinds), sinks=[replayed])
        summary = await again.replay(recording)
    assert len(live.events) == 22  # 20 trades, a gap, a quote
    assert replayed.events == live.events
    assert summary.problem_count == runner.status.problems == 1


def test_events_are_equal_by_value() -> None:
    # Replay equality above relies on value equality of frozen events.
    a: Event = Trade("binance", "X", 1, 2, Decimal("1.0"), Decimal("2"), "buy", 3)
    assert a == Trade("binance", "X", 1, 2, Decimal("1"), Decimal("2.00"), "buy", 3)


async def test_live_subscribe_unsubscribe_and_list(fake: FakeBinance) -> None:
    with trio.fail_after(10):
        sink = ListSink()
        control = BinanceControl()
        runner = Runner(Pipeline(), sinks=[sink])
        plan = plan_for(fake, ["btcusdt"], ["trade"])
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def go() -> None:
                await runner.watch([plan], FAST, controls={"binance": control})
                done.set()

            nursery.start_soon(go)
            await fake.wait_subscribed("btcusdt@trade")
            await control.subscribe(["ethusdt@trade"])
            assert fake.subscribers("ethusdt@trade") == 1
            await fake.publish("ethusdt@trade", a_trade(1, symbol="ETHUSDT"))
            await sink.wait_for(1)
            await control.unsubscribe(["btcusdt@trade"])
            assert fake.subscribers("btcusdt@trade") == 0
            assert await control.list_subscriptions() == ["ethusdt@trade"]
            with pytest.raises(VenueError, match="binance refused btcusdt@nonsense"):
                await control.subscribe(["btcusdt@nonsense"])
            # the change survives a reconnect
            await fake.drop_all()
            await fake.wait_subscribed("ethusdt@trade")
            assert fake.requests[-1]["params"] == ["ethusdt@trade"]
            runner.stop()
            await done.wait()
        methods = [r["method"] for r in fake.requests]
        assert methods == [
            "SUBSCRIBE",
            "SUBSCRIBE",
            "UNSUBSCRIBE",
            "LIST_SUBSCRIPTIONS",
            "SUBSCRIBE",
            "SUBSCRIBE",
        ]
        assert len({r["id"] for r in fake.requests[:5]}) == 5  # ids are never reused
        assert fake.rate_limit_closes == 0


def test_control_frames_are_picked_out_of_a_read() -> None:
    """Replies, errors, notices and odd frames reach on_control; data frames do not."""
    from irisflow._feed import FeedStats
    from irisflow.venues.binance import _Connection

    send, _ = trio.open_memory_channel[object](1)
    connection = _Connection(
        "ws://127.0.0.1:1", ["btcusdt@trade"], send, FAST, FeedStats("binance")
    )
    data = [
        b'{"stream":"btcusdt@trade","data":{"e":"trade"}}',
        b'{"stream":"btcusdt@bookTicker","data":{"u":1}}',
    ]
    control = [
        b'{"result":null,"id":1}',
        b'{"id":2,"result":["btcusdt@trade"]}',
        b'{"code":2,"msg":"Invalid request","id":3}',
        b'{"error":{"code":2,"msg":"bad"},"id":4}',
        b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}',
        b'{"e":"serverShutdown","E":1}',
        b"[]",
        b"",
        b'{"s":1}',
    ]
    frames = [data[0], *control[:4], data[1], *control[4:]]
    assert connection.control_frames(frames) == control
    assert [f for f in frames if connection.is_control(f)] == control
    # A read of data frames only takes the quick path; one control frame anywhere in it,
    # however short, is still found.
    assert connection.control_frames(data * 50) == []
    assert connection.control_frames([]) == []
    for frame in control:
        for at in (0, 1, 100):
            read = data * 50
            read.insert(at, frame)
            assert connection.control_frames(read) == [frame], (frame, at)
    # Live frames are bytearrays; a frame that sorts above every reply but is not data goes
    # to the decoder (which reports it), not to on_control.
    odd = [bytearray(b'{"type":"x","id":5}'), bytearray(data[0])]
    assert connection.control_frames(odd) == []
    assert connection.control_frames([*odd, bytearray(control[0])]) == [control[0]]
