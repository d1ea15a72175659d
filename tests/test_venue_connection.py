"""The reconnect loop every websocket venue shares, against a peer that goes silent."""

from __future__ import annotations

import functools
from typing import ClassVar

import trio
import trio.testing
from websockets.http11 import Request
from websockets.server import ServerProtocol

from irisflow import Gap, Pipeline, Runner
from irisflow._feed import FeedItem, FeedStats
from irisflow._transport import WebSocket
from irisflow._venue import FeedOptions
from irisflow.testing import ListSink
from irisflow.venues._common import VenueConnection


async def silent_peer(stream: trio.SocketStream) -> None:
    """Completes the websocket handshake, then reads nothing and answers nothing."""
    protocol = ServerProtocol()
    request: Request | None = None
    while request is None:
        data = await stream.receive_some()
        if not data:
            return
        protocol.receive_data(data)
        request = next((e for e in protocol.events_received() if isinstance(e, Request)), None)
    protocol.send_response(protocol.accept(request))
    await stream.send_all(b"".join(protocol.data_to_send()))
    await trio.sleep_forever()  # pings go unanswered


class Quiet(VenueConnection):
    venue: ClassVar[str] = "binance"  # any registered venue: its decoder is never used
    ping_when_quiet: ClassVar[bool] = True

    async def handshake(self, ws: WebSocket) -> None:
        return None


async def test_a_peer_that_does_not_answer_a_ping_is_replaced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    autojump_clock.autojump_threshold = 0.02
    connections: list[int] = []

    async def handler(stream: trio.SocketStream) -> None:
        connections.append(1)
        await silent_peer(stream)

    sink = ListSink()
    runner = Runner(Pipeline(), sinks=[sink], signals=False)
    options = FeedOptions(stale_timeout=30, backoff_initial=0.01, backoff_cap=0.02)
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]

            async def sources(send: trio.MemorySendChannel[FeedItem]) -> None:
                stats = FeedStats("binance")
                runner.status.feeds.append(stats)
                conn = Quiet(f"ws://127.0.0.1:{port}/", ["a@trade"], send, options, stats)
                async with trio.open_nursery() as inner:
                    await inner.start(conn.run)
                    while len(connections) < 2:  # noqa: ASYNC110  (virtual time)
                        await trio.sleep(1)
                    await sink.wait_for(1)
                    inner.cancel_scope.cancel()

            await runner._run(sources)
            nursery.cancel_scope.cancel()
    (gap,) = sink.events
    assert isinstance(gap, Gap)
    assert gap.cause == "stale: no data for 30s"
