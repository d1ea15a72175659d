"""An inbound HTTP/1.1 webhook receiver (Trio + h11), for venues that push instead of stream.

A venue like Moralis POSTs one JSON body per event to a URL; :class:`WebhookReceiver` listens,
checks each request's signature with a venue-supplied function, and sends each accepted body
down the feed as one :class:`~irisflow._feed.Frames` item (so recordings hold exactly what was
accepted). It answers 401 (bad signature), 413 (too large), 405 (not a POST), 400 (malformed),
408 (too slow) and 503 (pipeline full or shutting down: the sender retries), and counts each in
:class:`WebhookStats`. Keep-alive connections are served request after request.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import h11
import trio

from .._errors import UsageError
from .._feed import ConnectionState, FeedItem, FeedStats, Frames, Overflow, now_ns

__all__ = ["WebhookReceiver", "WebhookStats", "parse_listen"]

DEFAULT_MAX_BODY = 8 * 2**20
"""Largest body accepted, in bytes (larger ones get 413)."""
REQUEST_TIMEOUT = 30.0
"""Seconds one request may take to arrive and be handed on (then 408 or 503)."""
MAX_CONNECTIONS = 64
"""Connections served at once; more get 503 and are closed."""
_MAX_HEADER_BYTES = 16 * 1024
_READ_SIZE = 65536


@attrs.define
class WebhookStats(FeedStats):
    """Counters of the webhook receiver (``frames_in`` counts accepted bodies)."""

    address: str = ""
    """Where the receiver listens, ``HOST:PORT`` (empty until it does)."""
    requests: int = 0
    """HTTP requests received."""
    bad_signatures: int = 0
    """Requests refused with 401 (missing or wrong signature)."""
    too_large: int = 0
    """Requests refused with 413."""
    bad_requests: int = 0
    """Malformed requests or wrong methods (400, 405, 408)."""
    busy: int = 0
    """Requests refused with 503 (pipeline full with ``--overflow drop``, or shutting down)."""


_TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 20\r\nconnection: close\r\n\r\ntoo many connections"
)


class _Close(Exception):
    """End this connection quietly (the client went away or timed out idle)."""


@attrs.define(eq=False)
class WebhookReceiver:
    """An HTTP/1.1 server that checks webhook signatures and sends accepted bodies on.

    Args:
        venue: The venue name the ``Frames`` items carry.
        verify: ``verify(body, headers)``: whether the request is authentic (headers by
            lower-case name). Holds the secret; never shown.
        send: Where accepted bodies go, one ``Frames`` item each.
        stats: Counters; ``address`` is set once listening.
        overflow: ``BLOCK`` waits for room (the POST waits: senders retry slow ones);
            ``DROP`` answers 503 at once and counts it, and the sender retries later.
        max_body: Largest body accepted, in bytes.
        request_timeout: Seconds a request may take.
        max_connections: Connections served at once.
        refusal: What a 401 answer says.
    """

    venue: str
    verify: Callable[[bytes, Mapping[bytes, bytes]], bool] = attrs.field(repr=False)
    send: trio.MemorySendChannel[FeedItem]
    stats: WebhookStats
    overflow: Overflow = Overflow.BLOCK
    max_body: int = DEFAULT_MAX_BODY
    request_timeout: float = REQUEST_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    refusal: str = "bad or missing signature"
    _active: int = 0

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on ``host``:``port`` and serve until cancelled; ``started()`` once listening.

        Raises:
            UsageError: the address cannot be listened on (in use, not local, no permission).
        """
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise UsageError(_listen_error(host, port, exc)) from exc
        bound_host, bound_port = listeners[0].socket.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.stats.address = f"{shown}:{bound_port}"
        self.stats.state = ConnectionState.LIVE
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._handle, listeners)
                task_status.started()
        finally:
            self.stats.state = ConnectionState.STOPPED

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADER_BYTES)
        self._active += 1
        try:
            if self._active > self.max_connections:
                self.stats.busy += 1
                with trio.move_on_after(5):
                    await stream.send_all(_TOO_MANY)
                return
            while await self._one_request(stream, conn):
                conn.start_next_cycle()
        except (_Close, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away: nothing to answer
        finally:
            self._active -= 1
            with trio.move_on_after(1, shield=True):
                await stream.aclose()

    async def _one_request(self, stream: trio.SocketStream, conn: h11.Connection) -> bool:
        """Serve one request; whether the connection may carry another."""
        status, text = 500, "internal error"
        handing_on: list[bool] = []  # set once the body is checked and waits for the pipeline
        with trio.move_on_after(self.request_timeout) as timer:
            try:
                status, text = await self._serve_request(stream, conn, handing_on)
            except h11.RemoteProtocolError as exc:
                self.stats.bad_requests += 1
                status, text = exc.error_status_hint, f"bad request: {exc}"
        if timer.cancelled_caught:
            if conn.their_state is h11.IDLE:
                raise _Close  # an idle keep-alive connection: just close it
            if handing_on:  # the pipeline did not take the body in time: the sender retries
                self.stats.busy += 1
                status, text = 503, "pipeline busy, retry later"
            else:
                self.stats.bad_requests += 1
                status, text = 408, "request timeout"
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return False
        close = status != 200 or conn.their_state is not h11.DONE
        await self._respond(stream, conn, status, text, close=close)
        states = conn.states  # both sides done: the connection may carry another request
        return states[h11.SERVER] is h11.DONE and states[h11.CLIENT] is h11.DONE

    async def _serve_request(
        self, stream: trio.SocketStream, conn: h11.Connection, handing_on: list[bool]
    ) -> tuple[int, str]:
        request = await _next_event(stream, conn)
        if not isinstance(request, h11.Request):
            raise _Close
        self.stats.requests += 1
        headers = {name.lower(): value for name, value in request.headers}
        if request.method != b"POST":
            self.stats.bad_requests += 1
            return 405, "only POST: this is a webhook receiver"
        length = headers.get(b"content-length")
        if length is not None and int(length) > self.max_body:
            self.stats.too_large += 1
            return 413, f"body over {self.max_body} bytes"
        if conn.they_are_waiting_for_100_continue:
            await stream.send_all(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        body = bytearray()
        while True:
            event = await _next_event(stream, conn)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body:
                    self.stats.too_large += 1
                    return 413, f"body over {self.max_body} bytes"
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise _Close
        data = bytes(body)
        if not self.verify(data, headers):
            self.stats.bad_signatures += 1
            self.stats.last_error = f"refused a webhook from {_peer(stream)}: {self.refusal}"
            return 401, self.refusal
        item = Frames(self.venue, now_ns(), [data])
        handing_on.append(True)
        try:
            if self.overflow is Overflow.DROP:
                try:
                    self.send.send_nowait(item)
                except trio.WouldBlock:
                    self.stats.dropped += 1
                    self.stats.busy += 1
                    return 503, "pipeline busy, retry later"
            else:
                await self.send.send(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.stats.busy += 1
            return 503, "shutting down, retry later"
        self.stats.frames_in += 1
        self.stats.reads += 1
        return 200, "ok"

    async def _respond(
        self,
        stream: trio.SocketStream,
        conn: h11.Connection,
        status: int,
        text: str,
        *,
        close: bool = False,
    ) -> None:
        body = text.encode()
        headers = [
            ("content-type", "text/plain; charset=utf-8"),
            ("content-length", str(len(body))),
        ]
        if status == 405:
            headers.append(("allow", "POST"))
        if close:
            headers.append(("connection", "close"))
        data = conn.send(h11.Response(status_code=status, headers=headers))
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        with trio.move_on_after(5):
            await stream.send_all(data)


async def _next_event(stream: trio.SocketStream, conn: h11.Connection) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(_READ_SIZE)
            conn.receive_data(data)  # b"" tells h11 the client closed
            continue
        return event


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


def _listen_error(host: str, port: int, exc: OSError) -> str:
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {where}: cannot resolve {host!r} (use an IP such as 127.0.0.1)"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the port is already in use (another program, or another"
            " irisflow, holds it); pick another --listen port"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot listen on {where}: permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: {host} is not an address of this machine"
    return f"cannot listen on {where}: {exc.strerror or exc}"


_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?")


def parse_listen(text: str | None, *, venue: str = "a webhook venue") -> tuple[str, int]:
    """``'127.0.0.1:8080'`` -> ``('127.0.0.1', 8080)``; ``'[::1]:8080'`` for IPv6.

    Raises:
        UsageError: missing or not ``HOST:PORT`` with a port in 0-65535.
    """
    example = "e.g. --listen 127.0.0.1:8080 or --listen [::1]:8080"
    if text is None or not text.strip():
        raise UsageError(f"{venue} receives webhooks over HTTP: pass --listen HOST:PORT, {example}")
    raw = text.strip()
    if raw.startswith("["):
        host, sep, port_text = raw[1:].partition("]:")
        ok = bool(sep)
        if ok:
            try:
                ok = ipaddress.ip_address(host).version == 6
            except ValueError:
                ok = False
    else:
        host, sep, port_text = raw.rpartition(":")
        ok = bool(sep) and ":" not in host and bool(_HOSTNAME.fullmatch(host))
    if not ok or not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise UsageError(f"bad --listen {text!r}: use HOST:PORT with a port 0-65535, {example}")
    return host, int(port_text)
