"""The bundled example recording, examples/binance-sample.jsonl, and the script that makes it."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPT = EXAMPLES / "make_recording.py"
RECORDING = EXAMPLES / "binance-sample.jsonl"
CHANNELS = {
    "trade",
    "aggTrade",
    "kline_1m",
    "miniTicker",
    "ticker",
    "bookTicker",
    "depth5",
    "depth10@100ms",
    "depth@100ms",
}


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def lines() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in RECORDING.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def frames(lines: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(recv_ts, parsed frame) for every frame line."""
    return [(line["recv_ts"], orjson.loads(line["frame"])) for line in lines if "frame" in line]


def test_committed_file_is_what_the_script_writes() -> None:
    result = run_script("--check")
    assert result.returncode == 0, result.stderr


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "stale.jsonl"
    stale.write_bytes(RECORDING.read_bytes()[:-10])
    result = run_script("--check", "--output", str(stale))
    assert result.returncode == 1
    assert "out of date" in result.stderr


def test_size_and_shape(lines: list[dict[str, Any]]) -> None:
    assert RECORDING.stat().st_size < 3_000_000
    assert len(lines) > 5_000
    for line in lines:
        assert line["venue"] == "binance"
        assert isinstance(line["recv_ts"], int)
        assert set(line) in ({"venue", "recv_ts", "frame"}, {"venue", "recv_ts", "gap"})


def test_frames_are_compact_combined_stream_json(lines: list[dict[str, Any]]) -> None:
    for line in lines:
        if "frame" in line:
            frame = orjson.loads(line["frame"])
            assert list(frame) == ["stream", "data"]
            # Serialised compactly, the way Binance sends it.
            assert orjson.dumps(frame).decode() == line["frame"]


def test_every_channel_appears(frames: list[tuple[int, dict[str, Any]]]) -> None:
    streams = Counter(frame["stream"] for _, frame in frames)
    assert {stream.split("@", 1)[1] for stream in streams} == CHANNELS
    assert {stream.split("@", 1)[0] for stream in streams} == {"btcusdt", "ethusdt"}
    for symbol in ("btcusdt", "ethusdt"):
        for channel in CHANNELS - {"depth10@100ms"}:
            assert streams[f"{symbol}@{channel}"] >= 100, f"{symbol}@{channel}"


def test_exactly_one_gap_in_the_middle(lines: list[dict[str, Any]]) -> None:
    gaps = [(i, line) for i, line in enumerate(lines) if "gap" in line]
    assert len(gaps) == 1
    index, line = gaps[0]
    gap = line["gap"]
    assert gap["cause"] == "connection closed (1006)"
    assert gap["end"] - gap["start"] == 3_000_000_000
    assert line["recv_ts"] == gap["end"]
    assert len(gap["streams"]) == 17
    assert "btcusdt@depth10@100ms" in gap["streams"]
    assert len(lines) / 3 < index < 2 * len(lines) / 3
    assert lines[index - 1]["recv_ts"] <= gap["start"]
    assert lines[index + 1]["recv_ts"] >= gap["end"]


def test_times_are_consistent(
    lines: list[dict[str, Any]], frames: list[tuple[int, dict[str, Any]]]
) -> None:
    recv = [line["recv_ts"] for line in lines]
    assert recv == sorted(recv)
    assert len(set(recv)) < len(frames)  # some frames arrived in one read
    last_e: dict[str, int] = {}
    for recv_ts, frame in frames:
        data = frame["data"]
        if "E" not in data:  # bookTicker and partial depth carry no event time
            continue
        stream = frame["stream"]
        assert data["E"] >= last_e.get(stream, 0), stream
        last_e[stream] = data["E"]
        assert 0 < recv_ts - data["E"] * 1_000_000 <= 50_000_000
    first = frames[0][1]["data"]
    assert 1_767_225_600_000 <= first.get("E", 1_767_225_600_000) < 1_767_225_601_000


def test_payloads_follow_the_venue_notes(frames: list[tuple[int, dict[str, Any]]]) -> None:
    keys = {
        "trade": list("eEstpqTmM"),
        "aggTrade": list("eEsapqflTmM"),
        "kline_1m": list("eEsk"),
        "miniTicker": list("eEscohlvq"),
        "ticker": list("eEspPwxcQbBaAohlvqOCFLn"),
        "bookTicker": list("usbBaA"),
        "depth5": ["lastUpdateId", "bids", "asks"],
        "depth10@100ms": ["lastUpdateId", "bids", "asks"],
        "depth@100ms": list("eEsUuba"),
    }
    makers: set[bool] = set()
    closed: set[bool] = set()
    for _, frame in frames:
        channel = frame["stream"].split("@", 1)[1]
        data = frame["data"]
        assert list(data) == keys[channel], channel
        if channel == "trade":
            assert isinstance(data["p"], str)
            assert len(data["p"].split(".")[1]) == 8
            assert isinstance(data["t"], int)
            makers.add(data["m"])
        if channel == "kline_1m":
            closed.add(data["k"]["x"])
        if channel in ("depth5", "depth10@100ms"):
            levels = int(channel[5:].split("@")[0])
            assert len(data["bids"]) == len(data["asks"]) == levels
            assert float(data["bids"][0][0]) < float(data["asks"][0][0])
    assert makers == {True, False}
    assert closed == {True, False}


def test_diff_depth_ids_follow_on_except_across_the_gap(lines: list[dict[str, Any]]) -> None:
    last_u: dict[str, int] = {}
    breaks: list[str] = []
    for line in lines:
        if "gap" in line:
            last_u.clear()  # ids may jump across a disconnect
            continue
        frame = orjson.loads(line["frame"])
        if frame["stream"].endswith("@depth@100ms"):
            data = frame["data"]
            assert data["u"] >= data["U"]
            stream = frame["stream"]
            if stream in last_u and data["U"] != last_u[stream] + 1:
                breaks.append(stream)
            last_u[stream] = data["u"]
    assert breaks == []
