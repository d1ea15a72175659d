"""The websocket client transport: a Trio stream driving websockets' sans-IO protocol.

Venues push thousands of small frames a second. The cost that matters is per message, so
:meth:`WebSocket.receive_batch` does one socket read, lets websockets' sans-IO
:class:`~websockets.client.ClientProtocol` parse every frame in it, and hands all complete
messages back at once: one checkpoint per read, none per message, and no background task.
Pongs and the close-handshake echo are written from the same call, so a caller that keeps
reading keeps the connection alive.

Every foreign exception (trio, OSError, ssl, websockets) is translated here into
:class:`~irisflow._errors.ConnectError` or :class:`~irisflow._errors.ConnectionClosed`,
with the original kept as ``__cause__``.
"""

from __future__ import annotations

import logging
import socket
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import cast

import attrs
import trio
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidMessage, InvalidStatus, InvalidURI, ProtocolError
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from ._errors import ConnectError, ConnectionClosed, UsageError
from ._feed import RawFrame

__all__ = ["WebSocket", "WebSocketStatistics", "open_websocket"]

_READ_SIZE = 2**17
"""Bytes asked of one socket read (a read never waits for the buffer to fill). A full read
holds about 740 Binance trades; against 64 KiB reads that spreads irisflow's per-read costs
(task switches, channels, batch set-up) over twice the frames: about 700 instructions a
trade fewer (benchmarks/instructions.py), with no wall-clock difference measurable on a
shared machine. 256 KiB was slower on loopback bursts: the parse buffer leaves the cache."""

_CLOSE_TIMEOUT = 3.0
"""Seconds to wait for the peer's side of a close handshake before dropping the socket."""

_TEXT, _BINARY, _CONT, _PING = Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING
_OPEN, _CONNECTING = State.OPEN, State.CONNECTING
_LOGGER = logging.getLogger("irisflow.transport")

_CLOSE_NAMES = {
    1000: "normal closure",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status code",
    1006: "abnormal closure",
    1007: "invalid data",
    1008: "policy violation",
    1009: "message too big",
    1010: "mandatory extension",
    1011: "internal error",
    1012: "service restart",
    1013: "try again later",
    1014: "bad gateway",
}

_HTTP_HINTS = {
    401: " (check the API key)",
    403: " (check the API key and that the venue serves your region)",
    404: " (check the URL path)",
    418: " (the venue banned this IP for too many requests; wait before reconnecting)",
    429: " (rate limited; wait before reconnecting)",
    451: " (the venue refuses connections from this location)",
}


@attrs.frozen
class WebSocketStatistics:
    """Counters of one websocket connection since it opened."""

    messages_in: int
    """Complete data messages (text or binary) received."""
    bytes_in: int
    """Bytes read from the (decrypted) stream, websocket framing included."""
    reads: int
    """Socket reads that returned data; ``messages_in / reads`` is the mean batch size."""
    pings_answered: int
    """Ping frames from the peer that were answered with a pong."""


class WebSocket:
    """An open websocket client connection; get one from :func:`open_websocket`.

    One task reads with :meth:`receive_batch`; any task may :meth:`send`.

    Attributes:
        url: The URL connected to, secrets included.
        display_url: The URL to show in messages and logs (redacted by the caller, or
            ``url`` without its userinfo).
    """

    __slots__ = (
        "_bytes_in",
        "_closed",
        "_error",
        "_fragments",
        "_messages_in",
        "_pending",
        "_pings",
        "_protocol",
        "_reads",
        "_receiving",
        "_send_lock",
        "_stream",
        "display_url",
        "url",
    )

    def __init__(
        self, stream: trio.abc.Stream, protocol: ClientProtocol, url: str, display_url: str
    ) -> None:
        self.url = url
        self.display_url = display_url
        self._stream = stream
        self._protocol = protocol
        self._send_lock = trio.Lock()
        self._fragments: list[bytes] = []
        self._pending: list[RawFrame] = []
        self._error: ConnectionClosed | None = None
        self._closed = False
        self._receiving = False
        self._messages_in = self._bytes_in = self._reads = self._pings = 0

    def statistics(self) -> WebSocketStatistics:
        """Return the connection's counters."""
        return WebSocketStatistics(
            messages_in=self._messages_in,
            bytes_in=self._bytes_in,
            reads=self._reads,
            pings_answered=self._pings,
        )

    async def send(self, text: str) -> None:
        """Send one text message.

        Raises:
            ConnectionClosed: The connection is closed, closing, or broke while sending.
        """
        if self._protocol.state is not _OPEN:
            await trio.lowlevel.checkpoint()
            raise self._closed_error()
        self._protocol.send_text(text.encode())
        try:
            await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise self._lost(exc) from exc

    async def ping(self, data: bytes = b"") -> None:
        """Send a ping; its pong makes a later :meth:`receive_batch` return (maybe ``[]``).

        Raises:
            ConnectionClosed: The connection is closed, closing, or broke while sending.
        """
        if self._protocol.state is not _OPEN:
            await trio.lowlevel.checkpoint()
            raise self._closed_error()
        self._protocol.send_ping(data)
        try:
            await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise self._lost(exc) from exc

    async def receive_batch(self) -> list[RawFrame]:
        """Read the socket once and return every data message that read completed.

        Text messages come back as their UTF-8 bytes, undecoded and uncopied (the
        ``bytearray`` websockets' parser made, for a message in one frame). The list may be
        empty when the read held only control frames or part of a frame; any return means the
        connection is alive. Pings are answered before this returns.

        Raises:
            ConnectionClosed: The peer closed the connection (``code`` set, after the close
                handshake) or the stream broke (``code`` is ``None``).
        """
        if self._pending:
            await trio.lowlevel.checkpoint()
            messages, self._pending = self._pending, []
            self._messages_in += len(messages)
            return messages
        protocol = self._protocol
        if protocol.state is not _OPEN:
            await self._finish_close()
            raise self._closed_error()
        self._receiving = True
        try:
            data = await self._stream.receive_some(_READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise self._lost(exc) from exc
        finally:
            self._receiving = False
        if not data:
            raise self._lost(None)
        self._reads += 1
        self._bytes_in += len(data)
        protocol.receive_data(data)
        messages = self._collect(cast("list[Frame]", protocol.events_received()))
        outgoing = protocol.data_to_send()
        if outgoing:
            try:
                await self._send_chunks(outgoing)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise self._lost(exc) from exc
        if protocol.state is not _OPEN and not messages:
            # A close frame (or a protocol error) ended the connection; the messages that
            # came before it, if any, are returned first and the next call raises.
            await self._finish_close()
            raise self._closed_error()
        self._messages_in += len(messages)
        return messages

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection: close handshake (bounded, shielded), then the stream.

        Idempotent. A task blocked in :meth:`receive_batch` gets :exc:`ConnectionClosed`.

        Args:
            code: The close code to send (1000, 1001 or 3000-4999).
            reason: A short close reason to send.

        Raises:
            UsageError: ``code`` or ``reason`` cannot go in a close frame (the connection is
                closed anyway).
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        protocol = self._protocol
        bad_close: ProtocolError | None = None
        with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
            try:
                if protocol.state is _OPEN:
                    try:
                        protocol.send_close(code, reason)
                    except ProtocolError as exc:
                        bad_close = exc
                        protocol.send_close(1000)
                    await self._flush()
                if not self._receiving:
                    await self._drain_until_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # the peer is gone already: nothing left to say to it
            finally:
                await self._close_stream()
        if bad_close is not None:
            raise UsageError(
                f"cannot close with code {code} and reason {reason!r}: {bad_close}"
                " (use 1000, 1001 or 3000-4999 and a reason under 124 bytes)"
            ) from bad_close

    # Internals.

    def _collect(self, frames: list[Frame]) -> list[RawFrame]:
        """The data messages ``frames`` complete; pings are counted (websockets queued pongs).

        The usual read holds final text frames only: one comprehension takes their payloads.
        Any other frame (binary, a fragment, a ping, a close) sends the read the long way.
        """
        messages = [frame.data for frame in frames if frame.opcode is _TEXT and frame.fin]
        if len(messages) == len(frames):
            # websockets' parser gives a bytearray (bytes from an extension), never a view.
            return cast("list[RawFrame]", messages)
        return self._collect_each(frames)

    def _collect_each(self, frames: list[Frame]) -> list[RawFrame]:
        messages: list[RawFrame] = []
        for frame in frames:
            opcode = frame.opcode
            if opcode is _TEXT or opcode is _BINARY:
                if frame.fin:
                    messages.append(cast("RawFrame", frame.data))
                else:
                    self._fragments = [bytes(frame.data)]
            elif opcode is _CONT:
                self._fragments.append(bytes(frame.data))
                if frame.fin:
                    messages.append(b"".join(self._fragments))
                    self._fragments = []
            elif opcode is _PING:
                self._pings += 1  # websockets queued the pong; the caller flushes it
        return messages

    async def _flush(self) -> None:
        await self._send_chunks(self._protocol.data_to_send())

    async def _send_chunks(self, chunks: list[bytes]) -> None:
        # One send_all for everything pending. websockets' end-of-stream marker is b"",
        # which the join drops: the stream is closed by _close_stream instead.
        payload = b"".join(chunks)
        if payload:
            async with self._send_lock:
                await self._stream.send_all(payload)

    async def _drain_until_eof(self) -> None:
        """Read (and discard) until the peer closes the TCP stream, at most a few seconds."""
        with trio.move_on_after(_CLOSE_TIMEOUT):
            while self._protocol.state is not State.CLOSED:
                data = await self._stream.receive_some(_READ_SIZE)
                if not data:
                    break
                self._protocol.receive_data(data)
        self._protocol.receive_eof()
        self._protocol.data_to_send()

    async def _finish_close(self) -> None:
        """Complete a close handshake the peer (or a protocol error) started."""
        if self._error is None:
            self._error = self._close_frame_error()
        if not self._closed:
            self._closed = True
            try:
                await self._drain_until_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # the peer dropped the socket instead of closing it: same outcome
            finally:
                with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                    await self._close_stream()
        else:
            await trio.lowlevel.checkpoint()

    async def _close_stream(self) -> None:
        self._protocol.receive_eof()
        self._protocol.data_to_send()
        await self._stream.aclose()

    def _close_frame_error(self) -> ConnectionClosed:
        protocol = self._protocol
        rcvd, sent = protocol.close_rcvd, protocol.close_sent
        if protocol.parser_exc is not None and sent is not None:
            error = ConnectionClosed(
                f"connection to {self.display_url} failed: {protocol.parser_exc}"
                f" (closed it with {_describe_close(sent.code, sent.reason)})",
                code=sent.code,
                reason=sent.reason,
            )
            error.__cause__ = protocol.parser_exc
        elif rcvd is not None:
            error = ConnectionClosed(
                f"connection to {self.display_url} closed:"
                f" {_describe_close(rcvd.code, rcvd.reason)}",
                code=rcvd.code,
                reason=rcvd.reason,
            )
        else:
            code, reason = (sent.code, sent.reason) if sent is not None else (1000, "")
            error = ConnectionClosed(
                f"connection to {self.display_url} was closed by this side:"
                f" {_describe_close(code, reason)}",
                code=code,
                reason=reason,
            )
        return error

    def _lost(self, exc: BaseException | None) -> ConnectionClosed:
        """Record that the stream broke (or hit EOF, ``exc`` None) and return the error."""
        protocol = self._protocol
        if self._error is None:
            if protocol.close_rcvd is not None or protocol.close_sent is not None:
                # A close frame already passed; the stream going away ends that handshake.
                self._error = self._close_frame_error()
            elif isinstance(exc, trio.ClosedResourceError):
                self._error = self._close_frame_error()
            else:
                what = _describe_stream_error(exc) if exc is not None else "end of stream"
                self._error = ConnectionClosed(
                    f"connection to {self.display_url} lost: {what} (no close frame)",
                    code=None,
                )
                self._error.__cause__ = exc
        protocol.receive_eof()
        protocol.data_to_send()
        return self._closed_error()

    def _closed_error(self) -> ConnectionClosed:
        """A fresh exception for the recorded ending (each raise gets its own traceback)."""
        if self._error is None:
            self._error = self._close_frame_error()
        error = ConnectionClosed(str(self._error), code=self._error.code, reason=self._error.reason)
        error.__cause__ = self._error.__cause__
        return error


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    connect_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    max_message_size: int | None = 2**24,
    display_url: str | None = None,
) -> AsyncIterator[WebSocket]:
    """Open a websocket client connection and close it on exit.

    Args:
        url: A ``ws://`` or ``wss://`` URL. It may hold secrets; see ``display_url``.
        connect_timeout: Seconds for TCP connect, TLS and websocket handshakes together.
        ssl_context: TLS settings for ``wss://``; ``ssl.create_default_context()`` if None.
        max_message_size: Largest message accepted, in bytes; ``None`` for no limit.
        display_url: The URL to show in error messages, with secrets redacted. Defaults to
            ``url`` without its userinfo.

    Yields:
        The open :class:`WebSocket`.

    Raises:
        ConnectError: DNS failure, refused connection, timeout, TLS failure, or a server
            that did not accept the websocket handshake.
        UsageError: ``url`` is not a websocket URL, or ``connect_timeout`` is not positive.
    """
    name = display_url if display_url is not None else _without_userinfo(url)
    websocket = await _connect(url, name, connect_timeout, ssl_context, max_message_size)
    try:
        yield websocket
    finally:
        await websocket.aclose()


async def _connect(
    url: str,
    name: str,
    connect_timeout: float,
    ssl_context: ssl.SSLContext | None,
    max_message_size: int | None,
) -> WebSocket:
    bad_url: str | None = None
    try:
        ws_uri = parse_uri(url)
    except InvalidURI as exc:
        bad_url = exc.msg
    except ValueError as exc:  # a port out of range or not a number, a broken IPv6 literal
        bad_url = str(exc)
    if bad_url is not None:
        # Raised outside the except block: the error's text may hold the raw URL (and a key).
        raise UsageError(
            f"not a websocket URL: {name} ({bad_url}); use ws://host[:port]/path or wss://..."
        )
    if not connect_timeout > 0:
        raise UsageError(
            f"connect_timeout must be a positive number of seconds (got {connect_timeout!r})"
        )

    stream: trio.abc.Stream | None = None
    stage = "TCP connect"
    head = b""
    done = False
    try:
        with trio.move_on_after(connect_timeout):
            try:
                stream = await trio.open_tcp_stream(ws_uri.host, ws_uri.port)
            except OSError as exc:
                raise ConnectError(_describe_tcp_failure(name, ws_uri.host, exc)) from exc
            if ws_uri.secure:
                stage = "TLS handshake"
                context = ssl_context if ssl_context is not None else ssl.create_default_context()
                stream = trio.SSLStream(
                    stream, context, server_hostname=ws_uri.host, https_compatible=True
                )
                try:
                    await stream.do_handshake()
                except trio.BrokenResourceError as exc:
                    raise ConnectError(_describe_tls_failure(name, exc)) from exc

            stage = "websocket handshake"
            protocol = ClientProtocol(ws_uri, max_size=max_message_size, logger=_LOGGER)
            # No websockets debug logs, even when logging is at DEBUG: they would show the
            # request line (venues put API keys in paths) and cost a call per frame.
            protocol.debug = False
            protocol.send_request(protocol.connect())
            events: list[object] = []
            try:
                await stream.send_all(b"".join(protocol.data_to_send()))
                while protocol.state is _CONNECTING and protocol.handshake_exc is None:
                    data = await stream.receive_some(_READ_SIZE)
                    if len(head) < 200:
                        head += data[:200]
                    if data:
                        protocol.receive_data(data)
                    else:
                        protocol.receive_eof()
                    events += protocol.events_received()
            except (trio.BrokenResourceError, OSError) as exc:
                raise ConnectError(
                    f"{name} dropped the connection during the websocket handshake:"
                    f" {_describe_stream_error(exc)}"
                ) from exc
            if protocol.handshake_exc is not None:
                raise ConnectError(
                    _describe_handshake_failure(name, protocol.handshake_exc)
                ) from protocol.handshake_exc

            websocket = WebSocket(stream, protocol, url, name)
            # Frames that came in the same read as the handshake answer are not lost.
            websocket._pending = websocket._collect([e for e in events if type(e) is Frame])
            outgoing = protocol.data_to_send()
            if outgoing:
                try:
                    await websocket._send_chunks(outgoing)
                except (trio.BrokenResourceError, OSError) as exc:
                    raise ConnectError(
                        f"{name} dropped the connection right after the websocket handshake:"
                        f" {_describe_stream_error(exc)}"
                    ) from exc
            done = True
            return websocket
        message = f"no answer from {name} within {connect_timeout:g} s (stuck in the {stage})"
        if head.startswith(b"HTTP/"):
            status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            message = (
                f"{name} answered {status_line!r} but did not finish the answer"
                f" within {connect_timeout:g} s"
            )
        raise ConnectError(message + "; check the network or raise connect_timeout")
    finally:
        if not done and stream is not None:
            await trio.aclose_forcefully(stream)


def _without_userinfo(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        if "@" not in parts.netloc:
            return url
        return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    except ValueError:
        return url


def _describe_close(code: int, reason: str) -> str:
    if reason:
        return f"{code} {reason}"
    name = _CLOSE_NAMES.get(code)
    return f"{code} {name}" if name else str(code)


def _os_error_text(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, BrokenPipeError):
        return "broken pipe"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc)


def _describe_stream_error(exc: BaseException) -> str:
    """Name the root cause of a broken stream: 'connection reset', 'TLS error: ...'."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return _os_error_text(seen)
        seen = seen.__cause__
    if isinstance(exc, trio.BrokenResourceError):
        return "connection broken"
    return str(exc) or type(exc).__name__


def _describe_tcp_failure(name: str, host: str, exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return (
            f"cannot resolve host {host!r} of {name}: {_os_error_text(exc)}"
            " (check the host name and the network)"
        )
    causes: Sequence[BaseException] = [exc]
    if isinstance(exc.__cause__, ExceptionGroup):
        causes = exc.__cause__.exceptions
    if all(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return (
            f"cannot connect to {name}: connection refused (is the server up and the port right?)"
        )
    texts = dict.fromkeys(
        _os_error_text(cause) if isinstance(cause, OSError) else str(cause) for cause in causes
    )
    return f"cannot connect to {name}: {'; '.join(texts)}"


def _describe_tls_failure(name: str, exc: BaseException) -> str:
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"TLS handshake with {name} failed: certificate verify failed:"
            f" {cause.verify_message} (pass ssl_context= to trust a private CA)"
        )
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake with {name} failed: {cause.reason or cause} (is it a TLS port?)"
    return f"TLS handshake with {name} failed: {_describe_stream_error(exc)}"


def _describe_handshake_failure(name: str, exc: Exception) -> str:
    if isinstance(exc, InvalidStatus):
        response = exc.response
        hint = _HTTP_HINTS.get(response.status_code, "")
        if not hint and response.status_code >= 500:
            hint = " (the venue has trouble; retry later)"
        status = f"{response.status_code} {response.reason_phrase}".strip()
        return f"{name} answered HTTP {status} instead of a websocket handshake{hint}"
    if isinstance(exc, InvalidMessage) and isinstance(exc.__cause__, EOFError):
        return f"{name} closed the connection before answering the websocket handshake"
    detail = f"{exc}: {exc.__cause__}" if exc.__cause__ is not None else str(exc)
    return f"{name} sent an invalid websocket handshake answer: {detail}"
