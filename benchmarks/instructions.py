"""Instructions per frame, counted by valgrind: the live and replay ratios without the noise.

Wall-clock rates on a shared machine swing by 30% from one round to the next; valgrind's
callgrind counts the instructions a run executes, which is the same every time. Each candidate
runs twice, on ``SMALL`` and ``LARGE`` frames, and the difference divided by ``LARGE - SMALL``
is its cost per frame, start-up and set-up cancelled out.

The live candidates read from a blaster in a process of its own, which valgrind does not
count. Slowed down by valgrind, the client then always finds the socket full, so every read
holds the same 64 KiB and the counts repeat; with the blaster in the counted process, how the
two tasks interleaved moved the counts by a few percent from run to run.

Instructions are not time (cache misses and branch mispredictions are not counted), so these
ratios are a floor-free companion to the wall-clock scripts, not a replacement.

Run: ``.venv/bin/python benchmarks/instructions.py [live|replay]`` (needs ``valgrind``; each
count takes a minute or two, and the counts of a group run side by side).
"""

from __future__ import annotations

import argparse
import compileall
import functools
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout
sys.path.insert(0, str(HERE))

SMALL, LARGE = 5_000, 25_000
GROUPS = {
    "live": ("minimal", "watch"),
    "replay": ("bare", "replay", "recording"),
}
_COLLECTED = re.compile(rb"Collected : (\d+)")
_NO_ASLR = ["setarch", platform.machine(), "-R"] if shutil.which("setarch") else []
"""Fixed addresses: with address randomisation on, allocator and dict layouts (and so the
counts) move by a few hundred instructions per frame from one run to the next."""


def run_candidate(name: str, frames: int, directory: Path) -> None:
    """Run one candidate on ``frames`` frames (called under valgrind)."""
    from irisflow._cli import tune_gc

    tune_gc()
    if name in GROUPS["live"]:
        import live_throughput as live
        from _blaster import blaster_process

        measures: dict[str, Callable[[int], Awaitable[float]]] = {
            "minimal": live.measure_minimal,
            "watch": functools.partial(live.measure_irisflow_watch, frames=frames),
        }
        with blaster_process(frames) as port:
            trio.run(measures[name], port)
    else:
        import replay_throughput as replay

        bare, recording = directory / "frames.txt", directory / "recording.jsonl"
        if name == "bare":
            replay.measure_bare(bare, frames)
        elif name == "replay":
            replay.measure_replay(bare, frames, "binance")
        else:
            replay.measure_replay(recording, frames, None)


def count(name: str, frames: int, directory: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONHASHSEED"] = "0"  # string hashes, and so dict probing, the same on every run
    return subprocess.Popen(
        [
            *_NO_ASLR, "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            sys.executable, __file__, "--run", name, str(frames), str(directory / str(frames)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )  # fmt: skip


def collected(process: subprocess.Popen[bytes]) -> int:
    _, err = process.communicate()
    found = _COLLECTED.search(err)
    if process.returncode or found is None:
        sys.exit(f"valgrind run failed:\n{err.decode(errors='replace')[-2000:]}")
    return int(found.group(1))


def main(group: str, directory: Path) -> None:
    names = GROUPS[group]
    print(f"{group}: instructions per frame ({SMALL:,} and {LARGE:,} frames per run)")
    # Byte-compile first: a run that finds a module uncompiled spends millions of instructions
    # compiling it, and whether it does depends on which run got there first.
    for folder in (HERE.parent / "irisflow", HERE):
        compileall.compile_dir(folder, quiet=1)
    if group == "replay":  # written here, so the counted runs only read them
        import replay_throughput as replay

        for frames in (SMALL, LARGE):
            (directory / str(frames)).mkdir()
            replay.write_files(directory / str(frames), frames)
    per_frame: dict[str, float] = {}
    for name in names:
        small, large = count(name, SMALL, directory), count(name, LARGE, directory)
        per_frame[name] = (collected(large) - collected(small)) / (LARGE - SMALL)
    for name, cost in per_frame.items():
        print(f"  {name:>10}: {cost:>9,.0f}")
    floor_name = names[0]
    floor = per_frame[floor_name]
    for name, cost in per_frame.items():
        if name != floor_name:
            print(f"  {name:>10}: {floor / cost:.2f} x {floor_name} (in instructions)")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--run":
        run_candidate(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
        sys.exit()
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("group", nargs="?", choices=sorted(GROUPS), default="live")
    with tempfile.TemporaryDirectory() as tmp:
        main(parser.parse_args().group, Path(tmp))
