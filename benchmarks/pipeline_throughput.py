"""Pipeline throughput: a windowed replay against a filter-only replay of the same recording.

Writes an irisflow recording of 200k Binance trade frames (BTCUSDT and ETHUSDT alternating,
one every 20 ms of exchange time, so about 67 one-minute windows per symbol, eight frames per
socket read), then replays it with no sinks
through the runner, in one run:

(a) filter only: ``--filter 'price > 1000'``;
(b) the pipeline ``filter price > 1000 | by symbol | window 1m | agg vwap, ohlc``, built with
    ``build_pipeline`` exactly as ``--pipe`` would be; the windows close on the recording's
    receive times, as in any replay.

It prints frames per second of each and their ratio; the target is at least 0.6.

Run: ``.venv/bin/python benchmarks/pipeline_throughput.py [--frames N] [--rounds R]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from irisflow._cli import tune_gc
from irisflow._events import Trade
from irisflow._pipe import build_pipeline
from irisflow._pipeline import Pipeline
from irisflow._run import Runner

FRAMES = 200_000
FILTER = "price > 1000"
PIPE = "by symbol | window 1m | agg vwap, ohlc"
START_MS = 1_767_225_600_000


def payload(i: int) -> str:
    """One combined-stream trade frame; ``i`` varies symbol, price, qty and time."""
    symbol = "BTCUSDT" if i % 2 == 0 else "ETHUSDT"
    base = 94_250.01 if i % 2 == 0 else 3_310.5
    price = base + (i * 7919 % 2003) * 0.37 - 370.0
    qty = 0.0053 + (i * 104_729 % 997) * 0.00041
    event_time = START_MS + i * 20
    maker = "true" if i % 3 == 0 else "false"
    return (
        f'{{"stream":"{symbol.lower()}@trade","data":{{"e":"trade","E":{event_time},'
        f'"s":"{symbol}","t":{5_123_456_789 + i},"p":"{price:.8f}","q":"{qty:.8f}",'
        f'"T":{event_time - 1},"m":{maker},"M":true}}}}'
    )


def recv_ts(i: int) -> int:
    """Eight frames per socket read (as the replay benchmark has), 5 ms after the last."""
    last = i - i % 8 + 7
    return (START_MS + last * 20 + 5) * 1_000_000


def write_recording(path: Path, frames: int) -> Path:
    lines = [
        orjson.dumps({"venue": "binance", "recv_ts": recv_ts(i), "frame": payload(i)})
        for i in range(frames)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def measure(path: Path, frames: int, pipeline: Pipeline) -> tuple[float, int]:
    runner = Runner(pipeline)  # no sinks: what is measured is read, decode and pipeline
    started = time.perf_counter()
    summary = trio.run(runner.replay, path)
    elapsed = time.perf_counter() - started
    assert summary.frames == frames, summary
    return frames / elapsed, summary.emitted


def main(frames: int, rounds: int) -> None:
    tune_gc()  # as the CLI does
    with tempfile.TemporaryDirectory() as tmp:
        recording = write_recording(Path(tmp) / "trades.jsonl", frames)
        print(f"{frames:,} Binance trade frames (2 symbols, 20 ms apart), {rounds} rounds")
        print(f"  (a) filter only: --filter {FILTER!r}")
        print(f"  (b) pipeline:    --filter {FILTER!r} --pipe {PIPE!r}")
        rates: dict[str, list[float]] = {"filter": [], "pipeline": []}
        windows = 0
        for _ in range(rounds):
            rate, passed = measure(recording, frames, Pipeline.from_filters([FILTER], {Trade}))
            assert passed == frames
            rates["filter"].append(rate)
            pipeline = build_pipeline([FILTER], [PIPE], {Trade})
            rate, windows = measure(recording, frames, pipeline)
            rates["pipeline"].append(rate)
            print(
                f"  filter {rates['filter'][-1]:,.0f}/s, pipeline {rates['pipeline'][-1]:,.0f}/s"
                f" ({windows} windows closed)",
                flush=True,
            )
    for name, values in rates.items():
        print(
            f"{name:>9}: best {max(values):>9,.0f} frames/s,"
            f" median {statistics.median(values):>9,.0f}"
        )
    ratio = max(rates["pipeline"]) / max(rates["filter"])
    print(f"pipeline / filter-only: {ratio:.2f} (target >= 0.60)")
    day = 86_400 / 0.020  # this recording's density over 24 hours
    print(
        f"a day at this density ({day:,.0f} trades) replays in {day / max(rates['pipeline']):.1f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    main(args.frames, args.rounds)
