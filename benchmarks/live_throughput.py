"""Live throughput: messages per second through a websocket client, from a fast fake Binance.

Each measurement gets a fresh blaster (benchmarks/_blaster.py) that writes FRAMES trade
messages as fast as loopback takes them; the client sends SUBSCRIBE, then counts and
``orjson.loads`` every message until the close frame. Measured:

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

from _blaster import serve_blaster

from irisflow._cli import tune_gc
from irisflow._errors import ConnectionClosed
from irisflow._pipeline import Pipeline
from irisflow._run import Runner
from irisflow._transport import open_websocket
from irisflow.venues.binance import BINANCE

FRAMES = 200_000
READ_SIZE = 2**16  # the same read size as irisflow's transport
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
        stats = ws.statistics()
    print(f"    transport: {stats.messages_in / stats.reads:.0f} messages per read", flush=True)
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


async def fresh_blaster_run(frames: int, measure: Callable[[int], Awaitable[float]]) -> float:
    not_wired: NotImplementedError | None = None
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_blaster, frames)
        try:
            rate = await measure(port)
        except NotImplementedError as exc:
            not_wired = exc  # re-raised below, outside the nursery's exception group
        nursery.cancel_scope.cancel()
    if not_wired is not None:
        raise not_wired
    return rate


async def main(frames: int, rounds: int) -> None:
    tune_gc()  # as the CLI does before its run
    print(f"{frames} Binance trade frames per run, {rounds} rounds, best and median of each")
    candidates: dict[str, Callable[[int], Awaitable[float]]] = {
        "minimal sans-IO client": measure_minimal,
        "irisflow transport": measure_transport,
        "irisflow watch": functools.partial(measure_irisflow_watch, frames=frames),
    }
    results: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, measure in list(candidates.items()):
            try:
                rate = await fresh_blaster_run(frames, measure)
            except NotImplementedError as exc:
                print(f"  {name}: skipped ({exc})")
                del candidates[name], results[name]
                continue
            results[name].append(rate)
            print(f"  {name}: {rate:,.0f} msg/s", flush=True)
    print()
    best = {name: max(rates) for name, rates in results.items()}
    for name, rates in results.items():
        print(
            f"{name:>24}: best {best[name]:>9,.0f} msg/s, median {statistics.median(rates):>9,.0f}"
        )
    ceiling = best["minimal sans-IO client"]
    for name in best:
        if name != "minimal sans-IO client":
            print(f"{name:>24}: {best[name] / ceiling:.2f} x the minimal client")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trio.run(main, args.frames, args.rounds)
