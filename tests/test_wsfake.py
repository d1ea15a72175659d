"""Tests of the base of the fake websocket venues (irisflow.testing._wsfake).

The venue fakes' own tests cover the shared behaviour through each venue; these cover the hooks
a fake may override and the helpers it may call, on a minimal fake.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import orjson
import pytest
import trio
from test_fake_binance import closed_reason, connect, rejection, serving
from trio_websocket import WebSocketConnection

from irisflow._errors import UsageError
from irisflow.testing import FakeCoinbase, FakeKraken, FakePolygon
from irisflow.testing._wsfake import FakeConnection, FakeVenueServer


@attrs.define(eq=False)
class Echo(FakeVenueServer):
    """Accepts ``/ok`` only, greets, echoes JSON and records the order of the hooks."""

    name = "Echo"

    events: list[tuple[str, Any]] = attrs.field(factory=list, init=False)

    def check_path(self, path: str) -> str | tuple[int, str] | None:
        if path == "/teapot":
            return (418, "short and stout")
        return None if path == "/ok" else f"no such path {path!r}"

    def init_connection(self, conn: FakeConnection) -> None:
        self.events.append(("init", conn.path))
        conn.state["frames"] = []

    def on_frame(self, conn: FakeConnection, opcode: int, payload: bytes) -> None:
        conn.state["frames"].append((opcode, payload))  # a KeyError if init came later
        self.events.append(("frame", opcode))
        self.notify()

    async def on_open(self, conn: FakeConnection) -> None:
        self.events.append(("open", None))
        await self.send(conn, "hello")

    async def on_message(self, conn: FakeConnection, message: Any) -> None:
        await self.send(conn, orjson.dumps({"echo": message}))


@attrs.define(eq=False)
class BinaryEcho(Echo):
    bytes_as_text = False


@asynccontextmanager
async def greeted(fake: Echo) -> AsyncIterator[tuple[FakeConnection, WebSocketConnection]]:
    """Serve ``fake`` and connect one client; yield its connection on both sides once greeted."""
    async with serving(fake) as url, connect(url, "/ok") as ws:
        assert await ws.get_message() == "hello"
        (conn,) = fake.connections
        yield conn, ws


class CountingWrites(trio.abc.Stream):
    """Wraps a stream and counts its ``send_all`` calls."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_check_path_refuses_with_404_or_the_status_it_names() -> None:
    with trio.fail_after(10):
        fake = Echo()
        async with serving(fake) as url:
            assert await rejection(url, "/nope") == (404, b"no such path '/nope'")
            assert await rejection(url, "/teapot") == (418, b"short and stout")
            assert fake.handshakes == ["/nope", "/teapot"]
            assert fake.connections_total == 0


async def test_init_connection_runs_before_frames_and_on_open() -> None:
    with trio.fail_after(10):
        fake = Echo()
        async with serving(fake) as url, connect(url, "/ok") as ws:
            await ws.ping(b"early")
            assert await ws.get_message() == "hello"
            assert fake.events[0] == ("init", "/ok")
            assert ("open", None) in fake.events


async def test_on_frame_sees_pings_pongs_and_message_starts() -> None:
    with trio.fail_after(10):
        fake = Echo()
        async with greeted(fake) as (conn, ws):
            await ws.ping(b"p1")  # trio-websocket answers it; the fake still sees it
            await ws.pong(b"p2")  # trio-websocket swallows it; the fake still sees it
            await ws.send_message("[1]")
            assert await ws.get_message() == '{"echo":[1]}'
            await fake.wait_until(lambda: len(conn.state["frames"]) >= 3)
            assert conn.state["frames"][:3] == [(9, b"p1"), (10, b"p2"), (1, b"")]


async def test_default_on_receive_parses_json_and_keeps_the_raw_text() -> None:
    with trio.fail_after(10):
        fake = Echo()
        async with greeted(fake) as (_, ws):
            await ws.send_message("not json")
            await ws.send_message(b'{"a":1}')
            assert await ws.get_message() == '{"echo":{"a":1}}'
            assert fake.raw_requests == ["not json", '{"a":1}']
            assert fake.requests == [{"a": 1}]


@pytest.mark.parametrize(("fake_type", "expected"), [(Echo, "x"), (BinaryEcho, b"x")])
async def test_bytes_go_as_text_or_binary_frames(
    fake_type: type[Echo], expected: str | bytes
) -> None:
    with trio.fail_after(10):
        fake = fake_type()
        async with greeted(fake) as (_, ws):
            assert await fake.send_raw(b"x") == 1
            assert await ws.get_message() == expected


async def test_send_many_sends_in_order_in_one_write() -> None:
    with trio.fail_after(10):
        fake = Echo()
        async with greeted(fake) as (conn, ws):
            counting = CountingWrites(conn.stream.transport)
            conn.stream.transport = counting  # type: ignore[assignment]
            assert await fake.send_many(conn, ["a", "b", "c"]) == 3
            assert [await ws.get_message() for _ in range(3)] == ["a", "b", "c"]
            assert len(counting.writes) == 1


async def test_send_many_while_stalled_drops_every_frame() -> None:
    with trio.fail_after(10):
        fake = Echo()
        async with greeted(fake) as (conn, ws):
            fake.stall()
            assert await fake.send_many(conn, ["a", "b"]) == 0
            assert fake.dropped_frames == 2
            fake.unstall()
            assert await fake.send_many(conn, ["c"]) == 1
            assert await ws.get_message() == "c"


async def test_close_all_sends_a_farewell_even_while_stalled() -> None:
    with trio.fail_after(10):
        fake = Echo()
        async with greeted(fake) as (_, ws):
            fake.stall()
            assert await fake.close_all(4000, "bye", farewell=lambda conn: conn.path) == 1
            assert await ws.get_message() == "/ok"
            assert await closed_reason(ws) == (4000, "bye")
            assert fake.connection_count == 0


@pytest.mark.parametrize("fake_type", [Echo, FakePolygon, FakeCoinbase, FakeKraken])
async def test_every_fake_refuses_what_cannot_go_in_a_close_frame(
    fake_type: type[FakeVenueServer],
) -> None:
    fake = fake_type()
    with pytest.raises(UsageError, match="close code 1006 cannot be sent"):
        await fake.close_all(1006)
    with pytest.raises(UsageError, match="at most 123 fit"):
        await fake.close_all(1000, "x" * 124)


async def test_serving_twice_says_to_create_another_one() -> None:
    with trio.fail_after(10):
        fake = Echo()
        async with serving(fake):
            with pytest.raises(UsageError, match=r"Echo is already serving at .*create another"):
                await fake.serve()
