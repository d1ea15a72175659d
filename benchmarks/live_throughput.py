"""Live throughput: messages per second through a websocket client, from a fast fake Binance.

A blaster (benchmarks/_blaster.py) in a process of its own writes FRAMES trade messages to
every connection as fast as loopback takes them; the client sends SUBSCRIBE, then counts and
``orjson.loads`` every message until the close frame. Each round measures every candidate
once, each in a fresh ``trio.run``, one after the other, so a round's ratios compare runs made
within seconds of each other: on a shared machine the speed drifts by a third from one minute
to the next, and the median of the rounds' ratios is the figure that repeats. Measured:

(a) a minimal Trio client driving websockets' sans-IO ``ClientProtocol`` (the ceiling);
(b) irisflow's transport, ``irisflow._transport.open_websocket`` + ``receive_batch``;
(c) irisflow's full ``watch`` pipeline: decode, typed events, filter, channels.

Run: ``.venv/bin/python benchmarks/live_throughput.py [--frames N] [--rounds R]``
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import trio
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _blaster import blaster_process

from irisflow._cli import tune_gc
from irisflow._errors import ConnectionClosed
from irisflow._pipeline import Pipeline
from irisflow._run import Runner
from irisflow._transport import open_websocket
from irisflow.venues.binance import BINANCE

FRAMES = 200_000
READ_SIZE = 2**17  # the same read size as irisflow's transport
SUBSCRIBE = '{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}'


async def measure_minimal(port: int) -> float:
    """(a) The ceiling: tcp stream + ClientProtocol, every frame of a read handled inline."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/stream"), max_size=2**24)
    protocol.send_request(protocol.connect())
    await stream.send_all(b"".join(protocol.data_to_send()))
    while protocol.state is State.CONNECTING:
        protocol.receive_data(await stream.receive_some(READ_SIZE))
    protocol.events_received()
    count = -1  # the SUBSCRIBE ack is not a trade
    start = time.perf_counter()
    protocol.send_text(SUBSCRIBE.encode())
    await stream.send_all(b"".join(protocol.data_to_send()))
    while protocol.state is State.OPEN:
        data = await stream.receive_some(READ_SIZE)
        if not data:
            break
        protocol.receive_data(data)
        for event in protocol.events_received():
            if event.opcode is Opcode.TEXT:  # type: ignore[union-attr]
                orjson.loads(event.data)  # type: ignore[union-attr]
                count += 1
        if outgoing := protocol.data_to_send():
            await stream.send_all(b"".join(outgoing))
    elapsed = time.perf_counter() - start
    await stream.aclose()
    return count / elapsed


async def measure_transport(port: int) -> float:
    """(b) irisflow's transport: ``open_websocket`` and a ``receive_batch`` loop."""
    count = -1
    async with open_websocket(f"ws://127.0.0.1:{port}/stream") as ws:
        start = time.perf_counter()
        await ws.send(SUBSCRIBE)
        try:
            while True:
                for payload in await ws.receive_batch():
                    orjson.loads(payload)
                    count += 1
        except ConnectionClosed:
            elapsed = time.perf_counter() - start
    return count / elapsed


# ---------------------------------------------------------------------------------------
# irisflow's full `watch` path against the blaster.
# ---------------------------------------------------------------------------------------
async def measure_irisflow_watch(port: int, frames: int = FRAMES) -> float:
    """(c) Messages per second through ``irisflow watch --filter 'price > 45000' --output none``:
    the Binance venue adapter, decoding into typed events, the filter, the runner's channels.

    Every blaster trade is above 45000, so the run stops (``--max-events``) once all arrived.
    """
    plan = BINANCE.plan(["btcusdt"], ["trade"], f"ws://127.0.0.1:{port}")
    runner = Runner(Pipeline.from_filters(["price > 45000"], plan.kinds), max_events=frames)
    started = time.perf_counter()
    summary = await runner.watch([plan])
    elapsed = time.perf_counter() - started
    assert summary.emitted == frames, summary
    return frames / elapsed


def main(frames: int, rounds: int) -> None:
    tune_gc()  # as the CLI does before its run
    print(f"{frames} Binance trade frames per run, {rounds} rounds")
    candidates: dict[str, Callable[[int], Awaitable[float]]] = {
        "minimal sans-IO client": measure_minimal,
        "irisflow transport": measure_transport,
        "irisflow watch": functools.partial(measure_irisflow_watch, frames=frames),
    }
    results: dict[str, list[float]] = {name: [] for name in candidates}
    with blaster_process(frames) as port:
        for number in range(1, rounds + 1):
            line = []
            for name, measure in candidates.items():
                rate = trio.run(measure, port)
                results[name].append(rate)
                line.append(f"{name.split()[1]} {rate:,.0f}")
            print(f"  round {number}: " + ", ".join(line) + " msg/s", flush=True)
    print()
    floor = results["minimal sans-IO client"]
    for name, rates in results.items():
        print(
            f"{name:>24}: median {statistics.median(rates):>9,.0f} msg/s, best {max(rates):>9,.0f}"
        )
    for name, rates in results.items():
        if rates is not floor:
            ratios = [rate / ceiling for rate, ceiling in zip(rates, floor, strict=True)]
            print(
                f"{name:>24}: {statistics.median(ratios):.2f} x the minimal client"
                f" (median of the rounds; {min(ratios):.2f} to {max(ratios):.2f})"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    main(args.frames, args.rounds)
