"""Tests of the websocket client transport against real servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, NoReturn

import pytest
import trio
import trio.testing
import trio_websocket
import trustme
import websockets.exceptions
from trio_websocket import WebSocketConnection, WebSocketRequest, serve_websocket
from websockets.server import ServerProtocol

from irisflow._errors import ConnectError, ConnectionClosed, UsageError
from irisflow._feed import RawFrame
from irisflow._transport import WebSocket, WebSocketStatistics, open_websocket

Handler = Callable[[WebSocketRequest], Awaitable[None]]
RawHandler = Callable[[trio.SocketStream], Awaitable[None]]


# Servers.


@asynccontextmanager
async def ws_server(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Run a trio-websocket server on 127.0.0.1 and yield its URL."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, ssl_context)
        scheme = "wss" if ssl_context is not None else "ws"
        yield f"{scheme}://127.0.0.1:{server.port}/stream"
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def raw_server(handler: RawHandler) -> AsyncIterator[int]:
    """Run a raw TCP server on 127.0.0.1 and yield its port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def accept_handshake(stream: trio.SocketStream) -> ServerProtocol:
    """Read a websocket handshake request and queue the 101 answer (not sent yet)."""
    protocol = ServerProtocol()
    while not (events := protocol.events_received()):
        protocol.receive_data(await stream.receive_some())
    protocol.send_response(protocol.accept(events[0]))  # type: ignore[arg-type]
    return protocol


async def flush(stream: trio.SocketStream, protocol: ServerProtocol) -> None:
    await stream.send_all(b"".join(protocol.data_to_send()))


async def answer_close(stream: trio.SocketStream, protocol: ServerProtocol) -> None:
    """Serve until the client's close handshake (answering it), then close the stream."""
    with contextlib.suppress(trio.BrokenResourceError):
        while data := await stream.receive_some():
            protocol.receive_data(data)
            outgoing = protocol.data_to_send()
            await stream.send_all(b"".join(outgoing))
            if b"" in outgoing:  # websockets' end-of-stream marker: the handshake is done
                break
    await stream.aclose()


async def read_request(stream: trio.SocketStream) -> bytes:
    request = b""
    while b"\r\n\r\n" not in request:
        request += await stream.receive_some()
    return request


def free_port() -> int:
    """A port nothing listens on: bound, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def receive_forever(ws: WebSocket) -> NoReturn:
    while True:
        await ws.receive_batch()


async def receive_n(ws: WebSocket, n: int) -> list[RawFrame]:
    messages: list[RawFrame] = []
    while len(messages) < n:
        messages += await ws.receive_batch()
    return messages


# Sending and receiving.


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    with contextlib.suppress(trio_websocket.ConnectionClosed):
        while True:
            await ws.send_message(await ws.get_message())


async def test_send_and_receive_text() -> None:
    with trio.fail_after(10):
        async with ws_server(echo) as url, open_websocket(url) as ws:
            await ws.send("hello")
            await ws.send("wörld")
            assert await receive_n(ws, 2) == [b"hello", "wörld".encode()]
            assert ws.url == url
            assert ws.display_url == url
            stats = ws.statistics()
            assert isinstance(stats, WebSocketStatistics)
            assert stats.messages_in == 2
            assert stats.reads >= 1
            assert stats.bytes_in >= len(b"hello") + len("wörld".encode())


async def test_burst_arrives_in_order_and_in_batches() -> None:
    sent_all = trio.Event()

    async def burst(request: WebSocketRequest) -> None:
        ws = await request.accept()
        for i in range(2000):
            await ws.send_message(f'{{"i":{i}}}')
        sent_all.set()
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with ws_server(burst) as url, open_websocket(url) as ws:
            await sent_all.wait()
            sizes: list[int] = []
            messages: list[RawFrame] = []
            while len(messages) < 2000:
                batch = await ws.receive_batch()
                sizes.append(len(batch))
                messages += batch
            assert messages == [f'{{"i":{i}}}'.encode() for i in range(2000)]
            assert max(sizes) > 1
            assert ws.statistics().messages_in == 2000


@pytest.mark.parametrize("size", [125, 126, 65535, 65536, 3 * 2**20])
async def test_large_messages(size: int) -> None:
    payload = ("x" * (size - 1)) + "!"

    async def send_large(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message(payload)
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with ws_server(send_large) as url, open_websocket(url) as ws:
            assert await receive_n(ws, 1) == [payload.encode()]


async def test_binary_message() -> None:
    payload = bytes(range(256)) * 4

    async def send_binary(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message(payload)
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with ws_server(send_binary) as url, open_websocket(url) as ws:
            assert await receive_n(ws, 1) == [payload]


async def test_fragmented_message_between_others() -> None:
    async def fragments(stream: trio.SocketStream) -> None:
        protocol = await accept_handshake(stream)
        protocol.send_text(b"before")
        protocol.send_text(b'{"a":', fin=False)
        await flush(stream, protocol)
        protocol.send_ping(b"mid-message ping")
        protocol.send_continuation(b'"b",', fin=False)
        await flush(stream, protocol)
        protocol.send_continuation(b'"c":1}', fin=True)
        protocol.send_binary(b"\x00after")
        await flush(stream, protocol)
        await answer_close(stream, protocol)

    with trio.fail_after(10):
        async with raw_server(fragments) as port, open_websocket(f"ws://127.0.0.1:{port}/") as ws:
            messages = await receive_n(ws, 3)
            assert messages == [b"before", b'{"a":"b","c":1}', b"\x00after"]
            assert ws.statistics().pings_answered == 1


async def test_text_messages_come_back_as_the_parsers_bytes_with_pings_among_them() -> None:
    """A read of text frames is handed on as websockets parsed it (no copy per message); a
    ping among them takes the long way and loses nothing."""

    async def texts(stream: trio.SocketStream) -> None:
        protocol = await accept_handshake(stream)
        await trio.sleep(0.05)  # the client is reading by now: the handshake read is over
        for text in (b"one", b"two", b"three"):
            protocol.send_text(text)
        await flush(stream, protocol)
        await trio.sleep(0.05)
        protocol.send_text(b"four")
        protocol.send_ping(b"between")
        protocol.send_text(b"five")
        await flush(stream, protocol)
        await answer_close(stream, protocol)

    with trio.fail_after(10):
        async with raw_server(texts) as port, open_websocket(f"ws://127.0.0.1:{port}/") as ws:
            first = await receive_n(ws, 3)
            assert first == [b"one", b"two", b"three"]
            assert all(type(m) is bytearray for m in first)
            assert await receive_n(ws, 2) == [b"four", b"five"]
            assert ws.statistics().pings_answered == 1


async def test_frames_in_the_same_read_as_the_handshake_answer() -> None:
    async def eager(stream: trio.SocketStream) -> None:
        protocol = await accept_handshake(stream)
        protocol.send_text(b"first")
        protocol.send_text(b"second")
        await flush(stream, protocol)  # one write: 101 answer and both frames
        await answer_close(stream, protocol)

    with trio.fail_after(10):
        async with raw_server(eager) as port, open_websocket(f"ws://127.0.0.1:{port}/") as ws:
            assert await receive_n(ws, 2) == [b"first", b"second"]


async def test_server_ping_is_answered() -> None:
    async def pinger(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.ping(b"are you there")  # returns once the pong came back
        await ws.send_message("pong seen")
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with ws_server(pinger) as url, open_websocket(url) as ws:
            assert await receive_n(ws, 1) == [b"pong seen"]
            assert ws.statistics().pings_answered == 1


# Closing.


async def test_server_close_code_and_reason() -> None:
    server_closed = trio.Event()

    async def closer(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.aclose(4000, "bye")  # waits for the client's close echo
        server_closed.set()

    with trio.fail_after(10):
        async with ws_server(closer) as url, open_websocket(url) as ws:
            with pytest.raises(ConnectionClosed) as caught:
                await receive_forever(ws)
            assert caught.value.code == 4000
            assert caught.value.reason == "bye"
            assert str(caught.value) == f"connection to {url} closed: 4000 bye"
            await server_closed.wait()
            # Later calls keep raising irisflow's error, never websockets' own.
            for call in (ws.receive_batch(), ws.send("late")):
                with pytest.raises(ConnectionClosed) as again:
                    await call
                assert again.value.code == 4000
                assert not isinstance(again.value, websockets.exceptions.WebSocketException)


async def test_messages_before_a_close_frame_come_first() -> None:
    async def close_after_three(stream: trio.SocketStream) -> None:
        protocol = await accept_handshake(stream)
        await flush(stream, protocol)
        for text in (b"1", b"2", b"3"):
            protocol.send_text(text)
        protocol.send_close(1001)
        await flush(stream, protocol)
        await answer_close(stream, protocol)

    with trio.fail_after(10):
        async with raw_server(close_after_three) as port:
            url = f"ws://127.0.0.1:{port}/stream"
            async with open_websocket(url) as ws:
                assert await receive_n(ws, 3) == [b"1", b"2", b"3"]
                with pytest.raises(ConnectionClosed) as caught:
                    await ws.receive_batch()
    assert caught.value.code == 1001
    assert str(caught.value) == f"connection to {url} closed: 1001 going away"


async def test_client_close_reaches_the_server() -> None:
    seen: list[tuple[int, str | None]] = []
    done = trio.Event()

    async def recorder(request: WebSocketRequest) -> None:
        ws: WebSocketConnection = await request.accept()
        try:
            await ws.get_message()
        except Exception:
            assert ws.closed is not None
            seen.append((ws.closed.code, ws.closed.reason))
            done.set()

    with trio.fail_after(10):
        async with ws_server(recorder) as url, open_websocket(url) as ws:
            await ws.aclose(4001, "done here")
            await ws.aclose()  # idempotent
            await done.wait()
            with pytest.raises(ConnectionClosed) as caught:
                await ws.send("after close")
    assert seen == [(4001, "done here")]
    assert caught.value.code == 4001


async def test_aclose_from_another_task_ends_a_blocked_receive() -> None:
    async def quiet(request: WebSocketRequest) -> None:
        await request.accept()
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with ws_server(quiet) as url, open_websocket(url) as ws:
            caught: list[ConnectionClosed] = []

            async def reader(task_status: trio.TaskStatus[None]) -> None:
                task_status.started()
                try:
                    await ws.receive_batch()
                except ConnectionClosed as exc:
                    caught.append(exc)

            async with trio.open_nursery() as nursery:
                await nursery.start(reader)
                await trio.testing.wait_all_tasks_blocked()
                await ws.aclose()
            assert len(caught) == 1
            assert caught[0].code == 1000


async def test_bad_close_code_is_a_usage_error() -> None:
    with trio.fail_after(10):
        async with ws_server(echo) as url, open_websocket(url) as ws:
            with pytest.raises(UsageError, match="cannot close with code 1005"):
                await ws.aclose(1005)


async def test_message_too_big() -> None:
    async def big(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("y" * 2048)
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with ws_server(big) as url, open_websocket(url, max_message_size=1024) as ws:
            with pytest.raises(ConnectionClosed) as caught:
                await ws.receive_batch()
    assert caught.value.code == 1009
    assert "failed" in str(caught.value)
    assert isinstance(caught.value.__cause__, websockets.exceptions.PayloadTooBig)


@pytest.mark.parametrize(
    ("linger", "expected"),
    [(False, "lost: end of stream"), (True, "lost: connection reset")],
    ids=["eof", "reset"],
)
async def test_abrupt_tcp_loss(linger: bool, expected: str) -> None:
    async def drop(stream: trio.SocketStream) -> None:
        protocol = await accept_handshake(stream)
        await flush(stream, protocol)
        if linger:  # SO_LINGER 0: close() sends a RST instead of a FIN
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()

    with trio.fail_after(10):
        async with raw_server(drop) as port:
            url = f"ws://127.0.0.1:{port}/stream"
            async with open_websocket(url) as ws:
                with pytest.raises(ConnectionClosed) as caught:
                    await receive_forever(ws)
                with pytest.raises(ConnectionClosed):
                    await ws.receive_batch()
    assert caught.value.code is None
    assert str(caught.value).startswith(f"connection to {url} {expected}")
    assert not isinstance(caught.value.__cause__, websockets.exceptions.WebSocketException)
    if linger:
        assert isinstance(caught.value.__cause__, trio.BrokenResourceError)


# Connecting.


async def forbid(stream: trio.SocketStream) -> None:
    await read_request(stream)
    await stream.send_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nForbidden")
    await stream.aclose()


async def test_handshake_refused_with_403() -> None:
    with trio.fail_after(10):
        async with raw_server(forbid) as port:
            url = f"ws://127.0.0.1:{port}/stream"
            with pytest.raises(ConnectError) as caught:
                async with open_websocket(url):
                    pytest.fail("connected")
    assert str(caught.value).startswith(
        f"{url} answered HTTP 403 Forbidden instead of a websocket handshake"
    )
    assert isinstance(caught.value.__cause__, websockets.exceptions.InvalidStatus)


async def test_server_closes_during_handshake() -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await read_request(stream)
        await stream.aclose()

    with trio.fail_after(10):
        async with raw_server(hang_up) as port:
            with pytest.raises(ConnectError, match="closed the connection before answering"):
                async with open_websocket(f"ws://127.0.0.1:{port}/"):
                    pytest.fail("connected")


async def test_nothing_listening() -> None:
    url = f"ws://127.0.0.1:{free_port()}/stream"
    with trio.fail_after(10), pytest.raises(ConnectError) as caught:
        async with open_websocket(url):
            pytest.fail("connected")
    assert str(caught.value).startswith(f"cannot connect to {url}: connection refused")
    assert isinstance(caught.value.__cause__, OSError)


class FailingResolver(trio.abc.HostnameResolver):
    """Answers every lookup with "Name or service not known", without asking any DNS."""

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def getnameinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


async def test_dns_failure() -> None:
    trio.socket.set_custom_hostname_resolver(FailingResolver())
    with trio.fail_after(10), pytest.raises(ConnectError) as caught:
        async with open_websocket("wss://stream.example.invalid/ws"):
            pytest.fail("connected")
    assert str(caught.value).startswith(
        "cannot resolve host 'stream.example.invalid' of wss://stream.example.invalid/ws:"
        " name or service not known"
    )


@pytest.fixture
def idle_clock() -> trio.testing.MockClock:
    # Jumps only after 50 ms of real idleness, so loopback I/O in flight is never outrun.
    return trio.testing.MockClock(autojump_threshold=0.05)


async def test_connect_timeout(idle_clock: trio.testing.MockClock) -> None:
    async def mute(stream: trio.SocketStream) -> None:
        await read_request(stream)
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with raw_server(mute) as port:
            url = f"ws://127.0.0.1:{port}/stream"
            with pytest.raises(ConnectError) as caught:
                async with open_websocket(url, connect_timeout=5):
                    pytest.fail("connected")
            assert trio.current_time() == pytest.approx(5, abs=0.5)
    assert str(caught.value).startswith(
        f"no answer from {url} within 5 s (stuck in the websocket handshake)"
    )


async def test_status_line_without_end_within_timeout(idle_clock: trio.testing.MockClock) -> None:
    async def slow_403(stream: trio.SocketStream) -> None:
        await read_request(stream)
        await stream.send_all(b"HTTP/1.1 403 Forbidden\r\n\r\n")  # no length: body until EOF
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with raw_server(slow_403) as port:
            with pytest.raises(ConnectError, match=re.escape("answered 'HTTP/1.1 403 Forbidden'")):
                async with open_websocket(f"ws://127.0.0.1:{port}/", connect_timeout=3):
                    pytest.fail("connected")


async def test_invalid_url_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=re.escape("not a websocket URL: https://example.com/")):
        async with open_websocket("https://example.com/"):
            pytest.fail("connected")


# TLS.


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_tls_roundtrip(ca: trustme.CA, server_ssl: ssl.SSLContext) -> None:
    client_ssl = ssl.create_default_context()
    ca.configure_trust(client_ssl)
    with trio.fail_after(10):
        async with (
            ws_server(echo, server_ssl) as url,
            open_websocket(url, ssl_context=client_ssl) as ws,
        ):
            assert url.startswith("wss://")
            await ws.send("over tls")
            assert await receive_n(ws, 1) == [b"over tls"]


async def test_tls_untrusted_certificate() -> None:
    # A raw TLS server: trio-websocket would report the failed server-side handshake.
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    async def tls_server(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, context, server_side=True)
        with pytest.raises(trio.BrokenResourceError):
            await tls.do_handshake()

    with trio.fail_after(10):
        async with raw_server(tls_server) as port:
            url = f"wss://127.0.0.1:{port}/stream"
            with pytest.raises(ConnectError) as caught:
                async with open_websocket(url):
                    pytest.fail("connected")
    assert str(caught.value).startswith(
        f"TLS handshake with {url} failed: certificate verify failed"
    )


async def test_tls_to_a_plain_port() -> None:
    async def plain(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    with trio.fail_after(10):
        async with raw_server(plain) as port:
            url = f"wss://127.0.0.1:{port}/"
            with pytest.raises(ConnectError, match=re.escape(f"TLS handshake with {url} failed")):
                async with open_websocket(url):
                    pytest.fail("connected")


# Redaction.

SECRET = "sk-live-0123456789abcdef"


def error_texts(exc: BaseException) -> Iterator[str]:
    """The text of an error and of everything chained to it."""
    seen: BaseException | None = exc
    while seen is not None:
        yield str(seen)
        yield repr(seen)
        seen = seen.__cause__ or seen.__context__


async def closer_4003(request: WebSocketRequest) -> None:
    ws = await request.accept()
    await ws.aclose(4003, "key expired")


async def connect_and_read(url: str, display: str) -> None:
    async with open_websocket(url, display_url=display, connect_timeout=2) as ws:
        assert ws.display_url == display
        await receive_forever(ws)


@pytest.mark.parametrize("scenario", ["403", "refused", "closed", "timeout", "bad-url"])
async def test_secret_never_appears_in_errors(
    scenario: str, idle_clock: trio.testing.MockClock
) -> None:
    async def mute(stream: trio.SocketStream) -> None:
        await read_request(stream)
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with (
            raw_server(forbid) as forbid_port,
            raw_server(mute) as mute_port,
            ws_server(closer_4003) as ws_url,
        ):
            port = {
                "403": forbid_port,
                "refused": free_port(),
                "timeout": mute_port,
            }.get(scenario, int(ws_url.rsplit(":", 1)[1].split("/")[0]))
            scheme = "http" if scenario == "bad-url" else "ws"
            url = f"{scheme}://user:{SECRET}@127.0.0.1:{port}/ws/{SECRET}?key={SECRET}"
            display = f"{scheme}://127.0.0.1:{port}/ws/<redacted>"
            with pytest.raises((ConnectError, ConnectionClosed, UsageError)) as caught:
                await connect_and_read(url, display)
    assert display in str(caught.value)
    for text in error_texts(caught.value):
        assert SECRET not in text


async def test_userinfo_is_dropped_from_the_default_display_url() -> None:
    url = f"ws://user:{SECRET}@127.0.0.1:{free_port()}/ws"
    with trio.fail_after(10), pytest.raises(ConnectError) as caught:
        async with open_websocket(url):
            pytest.fail("connected")
    assert SECRET not in str(caught.value)
    assert "ws://127.0.0.1:" in str(caught.value)
