"""A fast fake Binance: pre-serialised combined-stream trade frames, written in 1 MiB chunks.

The blaster does the websocket server handshake with websockets' sans-IO ``ServerProtocol``
over a raw Trio TCP stream, answers the client's ``SUBSCRIBE`` like Binance does
(``{"result":null,"id":N}``), writes every frame, then closes with 1000. All frames are built
before the server reports its port, so the sender spends its time in ``send_all`` and is
never the bottleneck of a throughput measurement.

Run on its own (one port, serves until interrupted)::

    .venv/bin/python benchmarks/_blaster.py --frames 200000

or from a benchmark, in a process of its own: ``with blaster_process(200_000) as port: ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import struct
import subprocess
import sys
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import orjson
import trio
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

CHUNK_SIZE = 2**20
"""Bytes per ``send_all``: big enough that the sender's per-call cost disappears."""

HANDSHAKE_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0


def trade_payload(i: int) -> bytes:
    """One combined-stream Binance trade message; ``i`` varies trade id, price, qty, time."""
    event_time = 1_767_225_600_123 + i // 4
    price = 94_250.01 + (i * 7919 % 2003) * 0.37 - 370.0
    qty = 0.0053 + (i * 104_729 % 997) * 0.00041
    maker = "true" if i % 3 == 0 else "false"
    return (
        f'{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{event_time},"s":"BTCUSDT",'
        f'"t":{5_123_456_789 + i},"p":"{price:.8f}","q":"{qty:.8f}","T":{event_time - 1},'
        f'"m":{maker},"M":true}}}}'
    ).encode()


def server_frame(payload: bytes, opcode: int = Opcode.TEXT) -> bytes:
    """Serialise one unmasked, final server-to-client frame."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 2**16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + payload


def build_frames(count: int) -> list[bytes]:
    """Return ``count`` serialised text frames of distinct Binance trade messages."""
    return [server_frame(trade_payload(i)) for i in range(count)]


def join_chunks(frames: Sequence[bytes], chunk_size: int = CHUNK_SIZE) -> list[bytes]:
    """Join frames into chunks of about ``chunk_size`` bytes (frames are never split)."""
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for frame in frames:
        current.append(frame)
        size += len(frame)
        if size >= chunk_size:
            chunks.append(b"".join(current))
            current, size = [], 0
    if current:
        chunks.append(b"".join(current))
    return chunks


async def _send(stream: trio.SocketStream, protocol: ServerProtocol) -> None:
    data = b"".join(protocol.data_to_send())
    if data:
        await stream.send_all(data)


async def _blast(stream: trio.SocketStream, chunks: Sequence[bytes]) -> None:
    protocol = ServerProtocol(max_size=2**20)
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            request: Request | None = None
            while request is None:
                data = await stream.receive_some()
                if not data:
                    return
                protocol.receive_data(data)
                for event in protocol.events_received():
                    if isinstance(event, Request):
                        request = event
            protocol.send_response(protocol.accept(request))
            await _send(stream, protocol)

            subscribe_id = None
            while subscribe_id is None:
                data = await stream.receive_some()
                if not data:
                    return
                protocol.receive_data(data)
                for event in protocol.events_received():
                    if getattr(event, "opcode", None) is Opcode.TEXT:
                        message = orjson.loads(event.data)  # type: ignore[union-attr]
                        if message.get("method") == "SUBSCRIBE":
                            subscribe_id = message.get("id")
        # The ack goes out in the same write as the first chunk.
        ack = server_frame(orjson.dumps({"result": None, "id": subscribe_id}))
        for i, chunk in enumerate(chunks):
            await stream.send_all(ack + chunk if i == 0 else chunk)
        if not chunks:
            await stream.send_all(ack)
        protocol.send_close(1000, "done")
        await _send(stream, protocol)
        with trio.move_on_after(CLOSE_TIMEOUT):
            while data := await stream.receive_some():
                protocol.receive_data(data)
                await _send(stream, protocol)
                if protocol.close_rcvd is not None:
                    break
    except (trio.BrokenResourceError, trio.TooSlowError):
        pass  # the client went away or never finished the handshake: nothing to blast
    finally:
        await stream.aclose()


async def serve_blaster(
    frames: int,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the fake Binance until cancelled; every connection gets the same ``frames``.

    Start it with ``port = await nursery.start(serve_blaster, 200_000)``.

    Args:
        frames: How many trade messages each connection receives before the close frame.
        host: The address to listen on.
        port: The port to listen on; 0 picks a free one.
        task_status: Reports the listening port once frames are built and the socket listens.
    """
    chunks = join_chunks(build_frames(frames))
    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])

    async def handler(stream: trio.SocketStream) -> None:
        await _blast(stream, chunks)

    await trio.serve_listeners(handler, listeners)


@contextlib.contextmanager
def blaster_process(frames: int) -> Iterator[int]:
    """A blaster serving ``frames`` trade frames per connection, in its own process: its port.

    In a process of its own the sender neither shares the client's thread nor is counted
    with it (``instructions.py`` runs the client under valgrind).
    """
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--frames", str(frames)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline()  # printed once every frame is built
        if not url.startswith("ws://"):
            sys.exit(f"the blaster did not start (exit code {process.poll()})")
        yield int(url.rsplit(":", 1)[1].split("/", 1)[0])
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_blaster, args.frames, port=args.port))
            print(f"ws://127.0.0.1:{port}/stream", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(run)


if __name__ == "__main__":
    main()
