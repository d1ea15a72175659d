"""Tests of the fake Binance Spot server (irisflow.testing.FakeBinance) and its builders.

The server is driven by trio-websocket's client, plus a hand-rolled TCP client where a
well-behaved client would get in the way (one that never answers pings).
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    open_websocket_url,
    wrap_client_stream,
)

import irisflow.testing
from irisflow._errors import UsageError
from irisflow.testing import (
    EXAMPLE_COMBINED_TRADE,
    EXAMPLE_OPEN_KLINE,
    EXAMPLE_RAW_DEPTH_UPDATE,
    EXAMPLE_SUBSCRIBE_REQUEST,
    EXAMPLE_SUBSCRIBE_RESPONSE,
    FakeBinance,
    agg_trade,
    book_ticker,
    depth_update,
    frame_text,
    kline,
    mini_ticker,
    partial_depth,
    ticker,
    trade,
)
from irisflow.testing._binance_protocol import (
    FrameScanner,
    RateLimiter,
    is_valid_stream,
    parse_target,
)

UNKNOWN_METHOD = (
    "Invalid request: unknown variant `{}`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`,"
    " `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"
)
BAD_ID = (
    "Invalid request: request ID must be a 64-bit signed integer, an alphanumeric string of"
    " at most 36 characters, or null"
)


def example_trade() -> dict[str, Any]:
    return trade(
        "btcusdt",
        price="94250.01",
        qty="0.0053",
        trade_id=5123456789,
        time_ms=1767225600122,
        buyer_maker=False,
        event_time_ms=1767225600123,
    )


@asynccontextmanager
async def serving(fake: FakeBinance) -> AsyncIterator[str]:
    """Run ``fake`` on 127.0.0.1 for the duration of the block; yield its base URL."""
    async with trio.open_nursery() as nursery:
        url = await nursery.start(fake.serve)
        yield url
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def connect(url: str, path: str) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket client over a TCP stream this helper owns and always closes.

    For tests where the server closes first: ``open_websocket_url`` (trio-websocket 0.12)
    never closes its socket then, and the leak surfaces as a ResourceWarning in a later test.
    """
    port = int(url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, f"127.0.0.1:{port}", path)
            try:
                yield ws
            finally:
                with trio.move_on_after(1):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await stream.aclose()


async def ask(ws: WebSocketConnection, request: dict[str, Any] | str) -> Any:
    """Send a control message and return the next message, parsed."""
    text = request if isinstance(request, str) else orjson.dumps(request).decode()
    await ws.send_message(text)
    return orjson.loads(await ws.get_message())


async def raw_handshake(url: str, path: str) -> tuple[trio.SocketStream, bytes, bytes]:
    """Open a websocket by hand; return the stream, the HTTP response head and what follows.

    Used where trio-websocket's client gets in the way: it leaks its socket when a handshake
    is rejected, and it always answers pings.
    """
    port = int(url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16))
    await stream.send_all(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = await stream.receive_some()
        assert chunk, f"connection closed before the HTTP response ended: {received!r}"
        received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    return stream, head, rest


async def read_to_eof(stream: trio.SocketStream, already: bytes = b"") -> bytes:
    """Read until the peer closes; return everything read."""
    data = already
    with contextlib.suppress(trio.BrokenResourceError):
        while chunk := await stream.receive_some():
            data += chunk
    await stream.aclose()
    return data


async def rejection(url: str, path: str) -> tuple[int, bytes]:
    """Try a handshake that should be refused; return the HTTP status and body."""
    stream, head, rest = await raw_handshake(url, path)
    body = await read_to_eof(stream, rest)
    status = int(head.split(b" ", 2)[1])
    return status, body


async def closed_reason(ws: WebSocketConnection) -> tuple[int, str | None]:
    """Read until the connection closes; return the close code and reason."""
    while True:
        try:
            await ws.get_message()
        except ConnectionClosed as exc:
            reason = exc.reason
            break
    assert reason is not None
    return reason.code, reason.reason


# Serving.


def test_url_before_serving_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"nursery\.start\(fake\.serve\)"):
        _ = FakeBinance().url


async def test_serve_reports_the_base_url() -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with serving(fake) as url:
            assert url == fake.url
            assert url.startswith("ws://127.0.0.1:")
            with pytest.raises(UsageError, match="already serving"):
                await fake.serve()


async def test_defaults_follow_binance() -> None:
    fake = FakeBinance()
    assert (fake.ping_interval, fake.pong_timeout) == (20.0, 60.0)
    assert (fake.max_messages_per_second, fake.max_streams) == (5, 1024)


# URL forms.


@pytest.mark.parametrize(
    ("path", "combined", "streams"),
    [
        ("/ws", False, []),
        ("/ws/btcusdt@trade", False, ["btcusdt@trade"]),
        ("/ws/btcusdt@kline_1m@+08:00", False, ["btcusdt@kline_1m@+08:00"]),
        ("/stream", True, []),
        (
            "/stream?streams=btcusdt@trade/ethusdt@kline_1m",
            True,
            ["btcusdt@trade", "ethusdt@kline_1m"],
        ),
        ("/stream?streams=btcusdt@depth@100ms&timeUnit=MICROSECOND", True, ["btcusdt@depth@100ms"]),
    ],
)
async def test_url_forms(path: str, combined: bool, streams: list[str]) -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with serving(fake) as url, open_websocket_url(url + path) as ws:
            assert await ask(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 1}) == {
                "result": combined,
                "id": 1,
            }
            assert await ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2}) == {
                "result": streams,
                "id": 2,
            }
            assert fake.handshakes == [path]
            assert fake.subscriptions() == set(streams)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/nope", 404),
        ("/ws/BTCUSDT@trade", 400),
        ("/stream?streams=btcusdt@trade/btcusdt@nope", 400),
        ("/stream?streams=btcusdt@trade&timeUnit=SECOND", 400),
    ],
)
async def test_bad_urls_are_refused(path: str, status: int) -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with serving(fake) as url:
            got, _ = await rejection(url, path)
            assert got == status
            assert fake.connections_total == 0
            assert fake.handshakes == [path]


async def test_too_many_streams_in_the_url_are_refused() -> None:
    with trio.fail_after(10):
        fake = FakeBinance(max_streams=2)
        async with serving(fake) as url:
            status, body = await rejection(url, "/stream?streams=a@trade/b@trade/c@trade")
            assert status == 400
            assert b"too many streams" in body


# Control messages.


async def test_acks_echo_the_id() -> None:
    ids: list[Any] = [7, 2**63 - 1, -(2**63), "abc123", "A" * 36, None]
    with trio.fail_after(10):
        fake = FakeBinance(max_messages_per_second=100)
        async with serving(fake) as url, open_websocket_url(url + "/ws") as ws:
            for i, request_id in enumerate(ids):
                request = {"method": "SUBSCRIBE", "params": [f"s{i}usdt@trade"], "id": request_id}
                await ws.send_message(orjson.dumps(request).decode())
            replies = [orjson.loads(await ws.get_message()) for _ in ids]
            assert replies == [{"result": None, "id": request_id} for request_id in ids]
            assert [r["id"] for r in fake.requests] == ids


async def test_constructed_subscribe_example_then_a_raw_depth_event() -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with serving(fake) as url, open_websocket_url(url + "/ws") as ws:
            await ws.send_message(EXAMPLE_SUBSCRIBE_REQUEST)
            assert await ws.get_message() == EXAMPLE_SUBSCRIBE_RESPONSE
            assert fake.requests == [orjson.loads(EXAMPLE_SUBSCRIBE_REQUEST)]
            event = depth_update(
                "btcusdt",
                71234567890,
                71234567902,
                [("94249.99", "1.2045"), ("94249.50", 0)],
                [("94250.01", "0.331")],
                1767225600450,
            )
            assert await fake.publish("btcusdt@depth@100ms", event) == 1
            assert await ws.get_message() == EXAMPLE_RAW_DEPTH_UPDATE


async def test_list_subscriptions_keeps_subscription_order() -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with (
            serving(fake) as url,
            open_websocket_url(url + "/stream?streams=btcusdt@trade") as ws,
        ):
            sub = {"method": "SUBSCRIBE", "params": ["ethusdt@ticker", "btcusdt@trade"], "id": 1}
            assert await ask(ws, sub) == {"result": None, "id": 1}
            unsub = {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade", "xrpusdt@ticker"]}
            assert await ask(ws, {**unsub, "id": 2}) == {"result": None, "id": 2}
            sub = {"method": "SUBSCRIBE", "params": ["btcusdt@depth5@100ms"], "id": 3}
            assert await ask(ws, sub) == {"result": None, "id": 3}
            assert await ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 4}) == {
                "result": ["ethusdt@ticker", "btcusdt@depth5@100ms"],
                "id": 4,
            }


def _req(method: str, params: Any = None, request_id: Any = 9) -> str:
    request: dict[str, Any] = {"method": method}
    if params is not None:
        request["params"] = params
    request["id"] = request_id
    return orjson.dumps(request).decode()


@pytest.mark.parametrize(
    ("message", "reply"),
    [
        pytest.param("{bad", {"code": 3}, id="invalid-json"),
        pytest.param("", {"code": 3}, id="empty"),
        pytest.param("[1, 2]", {"code": 2, "msg": "Invalid request: expected a JSON object"}),
        pytest.param('{"method":"LIST_SUBSCRIPTIONS"}', {"code": 2, "msg": BAD_ID}, id="no-id"),
        pytest.param(_req("LIST_SUBSCRIPTIONS", request_id=1.5), {"code": 2, "msg": BAD_ID}),
        pytest.param(_req("LIST_SUBSCRIPTIONS", request_id=True), {"code": 2, "msg": BAD_ID}),
        pytest.param(_req("LIST_SUBSCRIPTIONS", request_id="a-b"), {"code": 2, "msg": BAD_ID}),
        pytest.param(_req("LIST_SUBSCRIPTIONS", request_id="a" * 37), {"code": 2, "msg": BAD_ID}),
        pytest.param(_req("LIST_SUBSCRIPTIONS", request_id=2**63), {"code": 2, "msg": BAD_ID}),
        pytest.param(
            '{"params":[],"id":9}',
            {"code": 2, "msg": "Invalid request: missing field `method`", "id": 9},
            id="no-method",
        ),
        pytest.param(
            _req("subscribe", ["btcusdt@trade"]),
            {"code": 2, "msg": UNKNOWN_METHOD.format("subscribe"), "id": 9},
            id="unknown-method",
        ),
        pytest.param(
            _req("SUBSCRIBE"),
            {"code": 2, "msg": "Invalid request: missing field `params`", "id": 9},
            id="subscribe-without-params",
        ),
        pytest.param(
            _req("SUBSCRIBE", "btcusdt@trade"),
            {"code": 2, "msg": "Invalid request: `params` must be an array", "id": 9},
            id="params-not-array",
        ),
        pytest.param(
            _req("LIST_SUBSCRIPTIONS", ["x"]),
            {"code": 2, "msg": "Invalid request: too many parameters", "id": 9},
            id="list-with-params",
        ),
        pytest.param(
            _req("GET_PROPERTY", ["color"]),
            {"code": 0, "msg": "Unknown property", "id": 9},
            id="get-unknown-property",
        ),
        pytest.param(
            _req("SET_PROPERTY", ["color", True]),
            {"code": 0, "msg": "Unknown property", "id": 9},
            id="set-unknown-property",
        ),
        pytest.param(
            _req("GET_PROPERTY", []),
            {"code": 2, "msg": "Invalid request: property name must be a string", "id": 9},
            id="get-no-property",
        ),
        pytest.param(
            _req("SET_PROPERTY", [1, True]),
            {"code": 2, "msg": "Invalid request: property name must be a string", "id": 9},
            id="set-property-not-string",
        ),
        pytest.param(
            _req("GET_PROPERTY", ["combined", "extra"]),
            {"code": 2, "msg": "Invalid request: too many parameters", "id": 9},
            id="get-too-many",
        ),
        pytest.param(
            _req("SET_PROPERTY", ["combined", True, 1]),
            {"code": 2, "msg": "Invalid request: too many parameters", "id": 9},
            id="set-too-many",
        ),
        pytest.param(
            _req("SET_PROPERTY", ["combined", "yes"]),
            {"code": 1, "msg": "Invalid value type: expected Boolean", "id": 9},
            id="set-not-boolean",
        ),
        pytest.param(
            _req("SET_PROPERTY", ["combined"]),
            {"code": 1, "msg": "Invalid value type: expected Boolean", "id": 9},
            id="set-no-value",
        ),
        pytest.param(
            _req("SUBSCRIBE", [5]),
            {"code": 2, "msg": "Invalid request: stream name must be a string (got 5)", "id": 9},
            id="stream-not-string",
        ),
    ],
)
async def test_error_replies(message: str, reply: dict[str, Any]) -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with serving(fake) as url, open_websocket_url(url + "/ws") as ws:
            got = await ask(ws, message)
            if reply["code"] == 3:
                assert set(got) == {"code", "msg"}
                assert got["code"] == 3
                assert got["msg"].startswith("Invalid JSON: ")
                assert " at line 1 column " in got["msg"]
                assert fake.requests == []
            else:
                assert got == reply
            # The connection survives an error and still answers.
            assert await ask(ws, _req("LIST_SUBSCRIPTIONS", request_id=10)) == {
                "result": [],
                "id": 10,
            }


@pytest.mark.parametrize(
    "stream",
    [
        "BTCUSDT@trade",
        "btcusdt@Trade",
        "btcusdt@trades",
        "btcusdt@kline_2m",
        "btcusdt@kline",
        "btcusdt@depth15",
        "btcusdt@depth@500ms",
        "btcusdt@bookticker",
        "!ticker@arr",
        "btcusdt",
        "@trade",
        "btc-usdt@trade",
    ],
)
async def test_invalid_stream_names_get_code_2_naming_the_stream(stream: str) -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with serving(fake) as url, open_websocket_url(url + "/ws") as ws:
            got = await ask(ws, _req("SUBSCRIBE", ["btcusdt@trade", stream], request_id="s1"))
            assert got == {
                "code": 2,
                "msg": f"Invalid request: invalid stream name `{stream}`",
                "id": "s1",
            }
            # All or nothing: the valid stream in the same request was not subscribed either.
            assert fake.subscriptions() == set()


VALID_STREAMS = [
    "btcusdt@trade",
    "btcusdt@aggTrade",
    *[f"btcusdt@kline_{i}" for i in irisflow.testing.KLINE_INTERVALS],
    "btcusdt@kline_1m@+08:00",
    "btcusdt@miniTicker",
    "btcusdt@ticker",
    "btcusdt@ticker_1h",
    "btcusdt@bookTicker",
    "btcusdt@avgPrice",
    "btcusdt@depth5",
    "btcusdt@depth10@100ms",
    "btcusdt@depth20",
    "btcusdt@depth",
    "btcusdt@depth@100ms",
    "1000satsusdt@trade",
    "!miniTicker@arr",
    "!ticker_4h@arr",
]


async def test_valid_stream_names_are_accepted() -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with serving(fake) as url, open_websocket_url(url + "/ws") as ws:
            assert await ask(ws, _req("SUBSCRIBE", VALID_STREAMS)) == {"result": None, "id": 9}
            assert fake.subscriptions() == set(VALID_STREAMS)


async def test_stream_limit_per_connection() -> None:
    streams = [f"s{i}usdt@trade" for i in range(1024)]
    with trio.fail_after(10):
        fake = FakeBinance()
        async with serving(fake) as url, open_websocket_url(url + "/ws") as ws:
            assert await ask(ws, _req("SUBSCRIBE", streams, 1)) == {"result": None, "id": 1}
            # Subscribing again to streams it already has is fine.
            assert await ask(ws, _req("SUBSCRIBE", streams[:3], 2)) == {"result": None, "id": 2}
            got = await ask(ws, _req("SUBSCRIBE", ["one@trade", "more@trade"], 3))
            assert got["code"] == 2
            assert got["id"] == 3
            assert "at most 1024" in got["msg"]
            assert "1026" in got["msg"]
            assert len(fake.subscriptions()) == 1024


async def test_set_property_switches_framing() -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with (
            serving(fake) as url,
            open_websocket_url(url + "/stream?streams=btcusdt@trade") as ws,
        ):
            await fake.publish("btcusdt@trade", example_trade())
            assert await ws.get_message() == EXAMPLE_COMBINED_TRADE
            set_raw = _req("SET_PROPERTY", ["combined", False], 1)
            assert await ask(ws, set_raw) == {"result": None, "id": 1}
            assert await ask(ws, _req("GET_PROPERTY", ["combined"], 2)) == {
                "result": False,
                "id": 2,
            }
            await fake.publish("btcusdt@trade", example_trade())
            assert await ws.get_message() == frame_text(example_trade())


# Publishing.


async def test_publish_routes_to_subscribers_in_their_framing() -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with (
            serving(fake) as url,
            open_websocket_url(url + "/stream?streams=btcusdt@trade") as combined_ws,
            open_websocket_url(url + "/ws/btcusdt@trade") as raw_ws,
            open_websocket_url(url + "/ws/ethusdt@trade") as other_ws,
        ):
            await fake.wait_subscribed("btcusdt@trade", connections=2)
            assert fake.connection_count == 3
            assert fake.subscriptions() == {"btcusdt@trade", "ethusdt@trade"}

            assert await fake.publish("btcusdt@trade", example_trade()) == 2
            assert await combined_ws.get_message() == EXAMPLE_COMBINED_TRADE
            assert await raw_ws.get_message() == frame_text(example_trade())

            # Text and bytes payloads go out exactly as given (wrapped when combined).
            assert await fake.publish("btcusdt@trade", '{"odd": 1 }') == 2
            assert (
                await combined_ws.get_message() == '{"stream":"btcusdt@trade","data":{"odd": 1 }}'
            )
            assert await raw_ws.get_message() == '{"odd": 1 }'
            assert await fake.publish("btcusdt@trade", b"[1,2]") == 2
            assert await combined_ws.get_message() == '{"stream":"btcusdt@trade","data":[1,2]}'
            assert await raw_ws.get_message() == "[1,2]"

            assert await fake.publish("xrpusdt@trade", example_trade()) == 0
            # The unsubscribed connection got nothing; it still answers its own requests.
            assert await ask(other_ws, _req("LIST_SUBSCRIPTIONS", request_id=1)) == {
                "result": ["ethusdt@trade"],
                "id": 1,
            }


async def test_publish_many_keeps_order_per_connection() -> None:
    events = [
        ("btcusdt@trade", {"n": 1}),
        ("ethusdt@trade", {"n": 2}),
        ("btcusdt@trade", {"n": 3}),
    ]
    with trio.fail_after(10):
        fake = FakeBinance()
        async with (
            serving(fake) as url,
            open_websocket_url(url + "/stream?streams=btcusdt@trade/ethusdt@trade") as both,
            open_websocket_url(url + "/ws/btcusdt@trade") as btc,
        ):
            await fake.wait_connections(2)
            assert await fake.publish_many(events) == 5
            got = [orjson.loads(await both.get_message()) for _ in range(3)]
            assert got == [{"stream": stream, "data": data} for stream, data in events]
            assert [orjson.loads(await btc.get_message()) for _ in range(2)] == [{"n": 1}, {"n": 3}]


async def test_send_raw_goes_to_everyone_unwrapped() -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with (
            serving(fake) as url,
            open_websocket_url(url + "/stream") as a,
            open_websocket_url(url + "/ws") as b,
        ):
            await fake.wait_connections(2)
            assert await fake.send_raw('{"truncated":') == 2
            assert await a.get_message() == '{"truncated":'
            assert await b.get_message() == '{"truncated":'
            assert await fake.send_raw(b"\x00\x01") == 2
            assert await a.get_message() == b"\x00\x01"
            assert await b.get_message() == b"\x00\x01"


async def test_wait_subscribed_wakes_on_subscribe() -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with serving(fake) as url, trio.open_nursery() as nursery:

            async def client() -> None:
                async with open_websocket_url(url + "/ws") as ws:
                    await ask(ws, _req("SUBSCRIBE", ["btcusdt@aggTrade"]))
                    assert orjson.loads(await ws.get_message()) == {"hello": True}

            nursery.start_soon(client)
            await fake.wait_connections(1)
            await fake.wait_subscribed("btcusdt@aggTrade")
            assert await fake.publish("btcusdt@aggTrade", {"hello": True}) == 1
        await fake.wait_idle()


# Limits.


async def test_over_five_messages_a_second_closes_with_1008(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with serving(fake) as url, connect(url, "/ws") as ws:
            for i in range(6):
                await ws.send_message(_req("LIST_SUBSCRIPTIONS", request_id=i))
            assert await closed_reason(ws) == (1008, "too many messages")
            await fake.wait_idle()
            assert fake.rate_limit_closes == 1
            assert fake.connection_count == 0


async def test_five_messages_a_second_is_fine(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with serving(fake) as url, open_websocket_url(url + "/ws") as ws:
            for second in range(3):
                for i in range(5):
                    got = await ask(ws, _req("LIST_SUBSCRIPTIONS", request_id=second * 10 + i))
                    assert got == {"result": [], "id": second * 10 + i}
                await trio.sleep(1.0)
            assert fake.rate_limit_closes == 0
            assert fake.connection_count == 1


async def test_client_pings_count_toward_the_limit(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with serving(fake) as url, connect(url, "/ws") as ws:
            for i in range(5):
                await ws.ping(b"p%d" % i)  # answered: the fifth message is still allowed
            await ws.send_message(_req("LIST_SUBSCRIPTIONS"))
            assert await closed_reason(ws) == (1008, "too many messages")
            assert fake.rate_limit_closes == 1
            assert fake.requests == []  # the sixth message was not handled


async def test_unsolicited_pongs_count_and_are_recorded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with serving(fake) as url, connect(url, "/ws") as ws:
            for i in range(6):
                await ws.pong(b"u%d" % i)
            assert await closed_reason(ws) == (1008, "too many messages")
            assert fake.pongs == [b"u%d" % i for i in range(6)]


# Keepalive.


async def test_pings_are_answered_and_recorded(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        fake = FakeBinance(ping_interval=1, pong_timeout=3)
        async with serving(fake) as url, open_websocket_url(url + "/ws"):
            await trio.sleep(5.5)
            assert fake.pongs == [b"1", b"2", b"3", b"4", b"5"]
            assert fake.connection_count == 1
            assert fake.pong_timeouts == 0


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split unmasked server-to-client websocket bytes into (opcode, payload)."""
    frames = []
    while data:
        opcode, length, pos = data[0] & 0x0F, data[1] & 0x7F, 2
        assert length < 126
        frames.append((opcode, data[pos : pos + length]))
        data = data[pos + length :]
    return frames


async def test_client_that_never_pongs_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        fake = FakeBinance(ping_interval=1, pong_timeout=2.5)
        async with serving(fake) as url:
            stream, head, rest = await raw_handshake(url, "/ws/btcusdt@trade")
            assert head.startswith(b"HTTP/1.1 101")
            rest = await read_to_eof(stream, rest)
            # Pings at 1, 2 and 3 s; no pong for the first by 3.5 s: cut, with no close frame.
            assert _frames(rest) == [(9, b"1"), (9, b"2"), (9, b"3")]
            await fake.wait_idle()
            assert fake.pong_timeouts == 1
            assert trio.current_time() == pytest.approx(3.5, abs=0.01)


# Faults.


async def test_reject_connections() -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        fake.reject_connections(2, status=503)
        async with serving(fake) as url:
            for _ in range(2):
                status, body = await rejection(url, "/ws")
                assert status == 503
                assert b"reject_connections" in body
            async with open_websocket_url(url + "/ws") as ws:
                assert await ask(ws, _req("LIST_SUBSCRIPTIONS")) == {"result": [], "id": 9}
            assert fake.handshakes == ["/ws", "/ws", "/ws"]
            assert fake.connections_total == 1


@pytest.mark.parametrize(("n", "status"), [(-1, 503), (1, 101), (1, 200)])
def test_reject_connections_checks_its_arguments(n: int, status: int) -> None:
    with pytest.raises(UsageError, match="reject_connections"):
        FakeBinance().reject_connections(n, status=status)


async def test_drop_all_cuts_without_a_close_frame() -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with serving(fake) as url:
            async with connect(url, "/ws/btcusdt@trade") as ws:
                await fake.wait_connections(1)
                assert await fake.drop_all() == 1
                assert fake.connection_count == 0
                assert fake.subscriptions() == set()
                code, _ = await closed_reason(ws)
                assert code == 1006
            # Clients may come back.
            async with connect(url, "/ws/btcusdt@trade"):
                await fake.wait_subscribed("btcusdt@trade")
                assert fake.connections_total == 2


async def test_close_all_sends_code_and_reason() -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with (
            serving(fake) as url,
            connect(url, "/stream") as a,
            connect(url, "/ws") as b,
        ):
            await fake.wait_connections(2)
            assert await fake.close_all(4000, "maintenance") == 2
            assert fake.connection_count == 0
            assert await closed_reason(a) == (4000, "maintenance")
            assert await closed_reason(b) == (4000, "maintenance")


@pytest.mark.parametrize(("code", "reason"), [(1006, ""), (1005, ""), (999, ""), (4000, "x" * 124)])
async def test_close_all_refuses_unsendable_codes(code: int, reason: str) -> None:
    with pytest.raises(UsageError, match="close"):
        await FakeBinance().close_all(code, reason)


async def test_clients_vanishing_mid_handshake_do_not_stop_the_server() -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        fake.reject_connections(1)
        async with serving(fake) as url:
            port = int(url.rsplit(":", 1)[1])
            for path in ("/ws", "/ws"):  # one to be rejected, one to be accepted
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.send_all(
                    b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )
                await stream.aclose()
            half = await trio.open_tcp_stream("127.0.0.1", port)
            await half.send_all(b"GET /ws HTTP/1.1\r\n")
            await half.aclose()
            async with open_websocket_url(url + "/ws") as ws:
                assert await ask(ws, _req("LIST_SUBSCRIPTIONS")) == {"result": [], "id": 9}


async def test_stall_drops_everything_until_unstalled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10):
        fake = FakeBinance(ping_interval=1, pong_timeout=30)
        async with serving(fake) as url, open_websocket_url(url + "/ws/btcusdt@trade") as ws:
            await fake.wait_connections(1)
            fake.stall()
            assert fake.stalled
            assert await fake.publish("btcusdt@trade", {"n": 1}) == 0
            assert await fake.publish_many([("btcusdt@trade", {"n": 2})]) == 0
            assert await fake.send_raw("x") == 0
            await ws.send_message(_req("LIST_SUBSCRIPTIONS"))  # read and applied, not answered
            with trio.move_on_after(4.5) as scope:  # off the 1 s ping ticks
                await ws.get_message()
            assert scope.cancelled_caught
            assert fake.pongs == []  # no pings went out while stalled
            assert fake.dropped_frames == 4
            assert len(fake.requests) == 1

            fake.unstall()
            assert await fake.publish("btcusdt@trade", {"n": 3}) == 1
            assert orjson.loads(await ws.get_message()) == {"n": 3}
            await trio.sleep(1.0)
            assert fake.pongs == [b"1"]


async def test_server_shutdown_in_both_framings() -> None:
    with trio.fail_after(10):
        fake = FakeBinance()
        async with (
            serving(fake) as url,
            connect(url, "/stream") as combined_ws,
            connect(url, "/ws") as raw_ws,
        ):
            await fake.wait_connections(2)
            assert await fake.send_server_shutdown(time_ms=1767225600000) == 2
            assert await combined_ws.get_message() == (
                '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1767225600000}}'
            )
            assert await raw_ws.get_message() == '{"e":"serverShutdown","E":1767225600000}'
            assert await closed_reason(combined_ws) == (1001, "server shutdown")
            assert await closed_reason(raw_ws) == (1001, "server shutdown")
            assert fake.connection_count == 0


# Payload builders (no I/O).


def test_builders_reproduce_the_constructed_examples() -> None:
    assert frame_text(example_trade(), "btcusdt@trade") == EXAMPLE_COMBINED_TRADE
    event = kline(
        "ethusdt",
        "1m",
        start_ms=1767225600000,
        open="3301.15",
        high=Decimal("3302.90"),
        low=3300.8,
        close="3302.40",
        volume="41.7721",
        closed=False,
        event_time_ms=1767225602000,
        first_id=2911000001,
        last_id=2911000188,
        trades=188,
        quote_volume="137910.5531",
        taker_buy_volume="25.1",
        taker_buy_quote_volume="82866.103",
    )
    assert frame_text(event) == EXAMPLE_OPEN_KLINE


def test_kline_defaults() -> None:
    bar = kline(
        "btcusdt",
        "1M",
        start_ms=1767225600000,
        open=1,
        high=2,
        low=1,
        close=2,
        volume=0,
        closed=True,
    )
    assert bar["k"]["T"] == 1769903999999  # 2026-02-01T00:00:00Z minus 1 ms
    assert bar["E"] == bar["k"]["T"]
    assert (
        kline("x", "15m", start_ms=0, open=1, high=1, low=1, close=1, volume=0, closed=False)["k"][
            "T"
        ]
        == 899_999
    )
    with pytest.raises(UsageError, match="unknown kline interval '2m'"):
        kline("x", "2m", start_ms=0, open=1, high=1, low=1, close=1, volume=0, closed=False)


def test_builder_shapes() -> None:
    agg = agg_trade(
        "ethusdt",
        price=3300,
        qty="1.5",
        agg_id=1,
        first_id=10,
        last_id=12,
        time_ms=5,
        buyer_maker=True,
    )
    assert agg == {
        "e": "aggTrade",
        "E": 5,
        "s": "ETHUSDT",
        "a": 1,
        "p": "3300.00000000",
        "q": "1.50000000",
        "f": 10,
        "l": 12,
        "T": 5,
        "m": True,
        "M": True,
    }
    book = book_ticker(
        "btcusdt", update_id=400, bid="94000.1", bid_qty=1, ask="94000.2", ask_qty="0.5"
    )
    assert list(book) == ["u", "s", "b", "B", "a", "A"]  # no e, no E on spot
    assert partial_depth([(1, 2)], [(3, "4.5")], 160) == {
        "lastUpdateId": 160,
        "bids": [["1.00000000", "2.00000000"]],
        "asks": [["3.00000000", "4.50000000"]],
    }
    mini = mini_ticker(
        "btcusdt", event_time_ms=1, close=2, open=1, high=3, low=0.5, volume=10, quote_volume=20
    )
    assert mini == {
        "e": "24hrMiniTicker",
        "E": 1,
        "s": "BTCUSDT",
        "c": "2.00000000",
        "o": "1.00000000",
        "h": "3.00000000",
        "l": "0.50000000",
        "v": "10.00000000",
        "q": "20.00000000",
    }
    full = ticker(
        "btcusdt",
        event_time_ms=86_400_500,
        last="95000",
        last_qty="0.01",
        open="94000",
        high="95500",
        low="93000",
        volume="10",
        quote_volume="945000",
        bid="94999.99",
        bid_qty="1",
        ask="95000.01",
        ask_qty="2",
        first_id=100,
        last_id=199,
    )
    assert list(full) == list("eEspPwxcQbBaAohlvqOCFLn")
    assert full["p"] == "1000.00000000"
    assert full["P"] == "1.064"
    assert full["w"] == "94500.00000000"
    assert full["x"] == "94000.00000000"
    assert (full["O"], full["C"], full["n"]) == (500, 86_400_500, 100)
    # Negative zero never reaches the wire.
    assert (
        trade("x", price="-0", qty=0, trade_id=1, time_ms=1, buyer_maker=True)["p"] == "0.00000000"
    )
    with pytest.raises(UsageError, match="not a number: 'abc'"):
        trade("x", price="abc", qty=0, trade_id=1, time_ms=1, buyer_maker=True)


def test_exports_are_complete() -> None:
    public = {name for name in vars(irisflow.testing) if not name.startswith("_")}
    assert public == set(irisflow.testing.__all__)


# Sans-IO pieces.


@pytest.mark.parametrize("stream", VALID_STREAMS)
def test_is_valid_stream(stream: str) -> None:
    assert is_valid_stream(stream)
    assert not is_valid_stream(stream.upper())


def test_parse_target_unquotes_and_keeps_plus() -> None:
    target = parse_target("/stream?streams=btcusdt%40trade/btcusdt@kline_1m@+08:00")
    assert not isinstance(target, type(None))
    assert target == parse_target("/stream?streams=btcusdt@trade/btcusdt@kline_1m@%2B08:00")
    assert getattr(target, "streams", None) == ("btcusdt@trade", "btcusdt@kline_1m@+08:00")


def test_rate_limiter_sliding_window() -> None:
    limiter = RateLimiter(5)
    assert not any(limiter.hit(t) for t in (0.0, 0.2, 0.4, 0.6, 0.8))
    assert limiter.hit(0.9)  # six inside one second
    limiter = RateLimiter(5)
    assert not any(limiter.hit(t) for t in (0.0, 0.25, 0.5, 0.75, 0.875, 1.0, 1.25))


def _client_frame(opcode: int, payload: bytes, mask: bytes = b"abcd") -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_frame_scanner_byte_by_byte() -> None:
    data = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"
        + _client_frame(1, b'{"method":"LIST_SUBSCRIPTIONS","id":1}')
        + _client_frame(9, b"ping!")
        + _client_frame(2, b"x" * 70_000)
        + _client_frame(10, b"")
        + _client_frame(1, b"y" * 300)
        + _client_frame(8, b"\x03\xe8")
    )
    whole = FrameScanner().feed(data)
    scanner = FrameScanner()
    pieces = [frame for i in range(len(data)) for frame in scanner.feed(data[i : i + 1])]
    expected = [(1, b""), (9, b"ping!"), (2, b""), (10, b""), (1, b""), (8, b"\x03\xe8")]
    assert whole == pieces == expected
