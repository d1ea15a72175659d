"""Replay throughput: frames per second through irisflow's replay vs a bare orjson loop.

Writes 200k Binance combined-stream trade frames (the live benchmark's frames) to a file of
bare frames and to an irisflow recording, then measures, in one run:

(a) bare: ``orjson.loads`` every line and apply the same filter by hand
    (``Decimal(data["p"]) > 45000``): the floor any replay must pay;
(b) ``irisflow replay FRAMES --venue binance --filter 'price > 45000' --output none``:
    read, decode into typed events, filter, through the runner's channels;
(c) the same replay of the recording (one JSON line per frame wrapping its exact text).

Run: ``.venv/bin/python benchmarks/replay_throughput.py [--frames N] [--rounds R]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import orjson
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _blaster import trade_payload

from irisflow._cli import tune_gc
from irisflow._events import Trade
from irisflow._pipeline import Pipeline
from irisflow._run import Runner

FRAMES = 200_000
FILTER = "price > 45000"


def write_files(directory: Path, frames: int) -> tuple[Path, Path]:
    bare = directory / "frames.txt"
    recording = directory / "recording.jsonl"
    payloads = [trade_payload(i) for i in range(frames)]
    bare.write_bytes(b"\n".join(payloads) + b"\n")
    recv = 1_767_225_600_200_000_000
    lines = [
        orjson.dumps({"venue": "binance", "recv_ts": recv + i // 8, "frame": p.decode()})
        for i, p in enumerate(payloads)
    ]
    recording.write_bytes(b"\n".join(lines) + b"\n")
    return bare, recording


def measure_bare(path: Path, frames: int) -> float:
    loads = orjson.loads
    threshold = Decimal(45000)
    started = time.perf_counter()
    passed = 0
    with path.open("rb") as fh:
        for line in fh:
            if Decimal(loads(line)["data"]["p"]) > threshold:
                passed += 1
    elapsed = time.perf_counter() - started
    assert passed == frames
    return frames / elapsed


def measure_replay(path: Path, frames: int, venue: str | None) -> float:
    runner = Runner(Pipeline.from_filters([FILTER], {Trade}))
    started = time.perf_counter()
    summary = trio.run(lambda: runner.replay(path, venue=venue))
    elapsed = time.perf_counter() - started
    assert summary.emitted == frames, summary
    return frames / elapsed


def main(frames: int, rounds: int) -> None:
    tune_gc()  # as the CLI does
    with tempfile.TemporaryDirectory() as tmp:
        bare, recording = write_files(Path(tmp), frames)
        print(f"{frames} Binance trade frames, filter {FILTER!r}, {rounds} rounds")
        results: dict[str, list[float]] = {"bare": [], "replay": [], "recording": []}
        for _ in range(rounds):
            results["bare"].append(measure_bare(bare, frames))
            results["replay"].append(measure_replay(bare, frames, "binance"))
            results["recording"].append(measure_replay(recording, frames, None))
            print("  " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in results.items()), flush=True)
    names = {
        "bare": "bare orjson + filter",
        "replay": "replay (bare frames)",
        "recording": "replay (recording)",
    }
    for key, rates in results.items():
        print(
            f"{names[key]:>22}: best {max(rates):>9,.0f} frames/s, "
            f"median {statistics.median(rates):>9,.0f}"
        )
    floor = max(results["bare"])
    for key in ("replay", "recording"):
        print(f"{names[key]:>22}: {max(results[key]) / floor:.2f} x bare")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    main(args.frames, args.rounds)
