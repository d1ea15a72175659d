"""Replaying several recordings as one: merged by receive time, paced, problems named by file."""

from __future__ import annotations

import datetime as dt
import shlex
from pathlib import Path

import attrs
import orjson
import pytest
import trio
import trio.testing
from typer.testing import CliRunner

from irisflow import CorruptLine, Event, Frames, Gap, Pipeline, RecordingError, Runner, Trade
from irisflow._cli import app
from irisflow._pipe import build_pipeline
from irisflow._record import FileFrames, read_recording, read_recordings
from irisflow.testing import ListSink, frame_text, market_trade, trade

T0 = 1_767_225_600_000_000_000
"""2026-01-01 00:00:00 UTC, ns."""
S = 1_000_000_000


def binance_line(recv: int, trade_id: int, price: str = "94000", symbol: str = "btcusdt") -> bytes:
    payload = trade(
        symbol,
        price=price,
        qty="0.5",
        trade_id=trade_id,
        time_ms=recv // 1_000_000 - 3,
        buyer_maker=False,
    )
    frame = frame_text(payload, f"{symbol}@trade")
    return orjson.dumps({"venue": "binance", "recv_ts": recv, "frame": frame})


def coinbase_line(recv: int, trade_id: int, price: str, seq: int) -> bytes:
    at = dt.datetime.fromtimestamp((recv - 2_000_000) / S, dt.UTC)
    iso = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    message = {
        "channel": "market_trades",
        "client_id": "",
        "timestamp": iso,
        "sequence_num": seq,
        "events": [
            {
                "type": "update",
                "trades": [market_trade("BTC-USD", trade_id, price, "0.01", "BUY", time=iso)],
            }
        ],
    }
    frame = orjson.dumps(message).decode()
    return orjson.dumps({"venue": "coinbase", "recv_ts": recv, "frame": frame})


def gap_line(venue: str, recv: int) -> bytes:
    gap = {"streams": ["btcusdt@trade"], "start": recv - S, "end": recv, "cause": "test"}
    return orjson.dumps({"venue": venue, "recv_ts": recv, "gap": gap})


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def hand_merged(path: Path, *files: list[bytes]) -> Path:
    """One file holding the lines of ``files``, stably sorted by receive time."""
    lines = [line for lines in files for line in lines]
    return write(path, sorted(lines, key=lambda line: orjson.loads(line)["recv_ts"]))


def where(item: object) -> tuple[str, int]:
    """(file name, first line) of a merged item."""
    assert isinstance(item, FileFrames | CorruptLine), item
    line = item.line if isinstance(item, CorruptLine) else item.first_line
    return Path(item.file).name, line


def test_merge_orders_by_receive_time_then_file_then_line(tmp_path: Path) -> None:
    a = write(
        tmp_path / "a.jsonl",
        [
            binance_line(T0 + 1 * S, 1),
            binance_line(T0 + 3 * S, 2),
            binance_line(T0 + 3 * S, 3),  # the same read as line 2: one batch
            binance_line(T0 + 5 * S, 4),
        ],
    )
    b = write(
        tmp_path / "b.jsonl",
        [binance_line(T0, 5), binance_line(T0 + 3 * S, 6), binance_line(T0 + 4 * S, 7)],
    )
    c = write(tmp_path / "c.jsonl", [binance_line(T0 + 3 * S, 8)])
    items = list(read_recordings([a, b, c]))
    assert [where(item) for item in items] == [
        ("b.jsonl", 1),  # 0 s
        ("a.jsonl", 1),  # 1 s
        ("a.jsonl", 2),  # 3 s: a, b and c tie; a's batch of lines 2-3 first, in file order
        ("b.jsonl", 2),
        ("c.jsonl", 1),
        ("b.jsonl", 3),  # 4 s
        ("a.jsonl", 4),  # 5 s
    ]
    assert [len(item.frames) for item in items if isinstance(item, FileFrames)] == [
        1,
        1,
        2,
        1,
        1,
        1,
        1,
    ]
    # The other order on the command line breaks the 3 s tie the other way.
    assert [where(item) for item in read_recordings([c, b, a])][2:5] == [
        ("c.jsonl", 1),
        ("b.jsonl", 2),
        ("a.jsonl", 2),
    ]


def test_each_file_keeps_its_own_order(tmp_path: Path) -> None:
    # A receive time that goes back within a file (the wall clock stepped back) does not
    # reorder that file's lines: files are merged, never sorted.
    a = write(tmp_path / "a.jsonl", [binance_line(T0 + 5 * S, 1), binance_line(T0 + 2 * S, 2)])
    b = write(tmp_path / "b.jsonl", [binance_line(T0 + 3 * S, 3)])
    assert [where(item) for item in read_recordings([a, b])] == [
        ("b.jsonl", 1),
        ("a.jsonl", 1),
        ("a.jsonl", 2),
    ]


def test_a_corrupt_line_keeps_its_place_and_names_its_file(tmp_path: Path) -> None:
    a = write(
        tmp_path / "a.jsonl",
        [binance_line(T0 + 1 * S, 1), b"{not json", binance_line(T0 + 3 * S, 2)],
    )
    b = write(
        tmp_path / "b.jsonl",
        [binance_line(T0 + S // 2, 3), b"[1]", binance_line(T0 + 2 * S, 4)],
    )
    items = list(read_recordings([a, b]))
    assert [where(item) for item in items] == [
        ("b.jsonl", 1),  # 0.5 s
        ("b.jsonl", 2),  # corrupt: right after the line before it
        ("a.jsonl", 1),  # 1 s
        ("a.jsonl", 2),  # corrupt
        ("b.jsonl", 3),  # 2 s
        ("a.jsonl", 3),  # 3 s
    ]
    corrupt = [item for item in items if isinstance(item, CorruptLine)]
    assert corrupt == [
        CorruptLine(2, "not a recording line (venue, recv_ts and frame or gap)", str(b)),
        CorruptLine(2, corrupt[1].reason, str(a)),
    ]
    assert corrupt[1].reason.startswith("invalid JSON")


def test_one_file_reads_as_read_recording_does(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [binance_line(T0, 1), b"{not json"])
    items = list(read_recordings([a]))
    assert items == list(read_recording(a))
    assert [item.__class__ for item in items] == [Frames, CorruptLine]  # no file names


def test_line_numbers_count_leading_blank_lines(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [b"", b"", binance_line(T0, 1), b"{not json"])
    frames, corrupt = read_recording(a)
    assert isinstance(frames, Frames)
    assert frames.first_line == 3
    assert isinstance(corrupt, CorruptLine)
    assert corrupt.line == 4


JOIN = (
    "by symbol | join (venue == 'coinbase') within 1s map 'BTC-USD' = 'BTCUSDT'"
    " | select premium = left_price - right_price"
)


@pytest.mark.parametrize("pipe", ["", JOIN, "by symbol | window 3s | agg count, vwap"])
async def test_several_recordings_replay_as_the_hand_merged_one(tmp_path: Path, pipe: str) -> None:
    # The user story: Binance and Coinbase recorded separately, joined on replay. Ties across
    # the files (the same receive time) and a gap line are included.
    binance = [binance_line(T0 + i * S + 5_000_000, i, price=str(94000 + i)) for i in range(1, 12)]
    binance.insert(6, gap_line("binance", T0 + 6 * S + 5_000_000))
    coinbase = [
        coinbase_line(
            T0 + i * 700_000_000 + (5_000_000 if i % 5 == 0 else 0), 100 + i, str(93990 + i), i
        )
        for i in range(16)
    ]
    b = write(tmp_path / "b.jsonl", binance)
    c = write(tmp_path / "c.jsonl", coinbase)
    both = hand_merged(tmp_path / "both.jsonl", binance, coinbase)
    assert {orjson.loads(line)["recv_ts"] for line in binance} & {
        orjson.loads(line)["recv_ts"] for line in coinbase
    }, "the files share receive times"

    async def run(source: Path | list[Path]) -> tuple[list[Event], tuple[int, int, int]]:
        sink = ListSink()
        pipeline = build_pipeline([], [pipe] if pipe else [], {Trade})
        runner = Runner(pipeline, sinks=[sink])
        summary = await runner.replay(source)
        assert summary.problem_count == 0, summary.problems
        return sink.events, (summary.frames, summary.events, summary.emitted)

    merged, merged_counts = await run([b, c])
    by_hand, by_hand_counts = await run(both)
    assert merged == by_hand
    assert merged_counts == by_hand_counts
    assert merged_counts[0] == 11 + 16
    assert any(isinstance(e, Gap) for e in merged)
    if not pipe:  # every event, in arrival order: ties across the files went b first
        assert merged != (await run([c, b]))[0]
    elif pipe == JOIN:
        assert sum(getattr(e, "premium", None) is not None for e in merged) >= 8
    else:
        assert sum(e.kind == "window" for e in merged) >= 4


async def test_status_names_the_files(tmp_path: Path) -> None:
    b = write(tmp_path / "b.jsonl", [binance_line(T0, 1)])
    c = write(tmp_path / "c.jsonl", [binance_line(T0, 2)])
    runner = Runner(Pipeline())
    await runner.replay([b, c])
    assert runner.status.source == f"{b}, {c}"
    one = Runner(Pipeline())
    await one.replay(b)
    assert one.status.source == str(b)


@attrs.define
class ClockSink:
    """Notes the (virtual) time each trade came out."""

    seen: list[tuple[int, float]] = attrs.field(factory=list)

    async def run(
        self,
        batches: trio.MemoryReceiveChannel[list[Event]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        async with batches:
            async for batch in batches:
                now = trio.current_time()
                self.seen += [(e.trade_id, now) for e in batch if isinstance(e, Trade)]


@pytest.mark.parametrize("speed", [1.0, 4.0])
async def test_speed_paces_by_the_merged_receive_times(
    tmp_path: Path, speed: float, autojump_clock: trio.testing.MockClock
) -> None:
    a = write(
        tmp_path / "a.jsonl",
        [binance_line(T0 + 10 * S, 1), binance_line(T0 + 12 * S, 2), binance_line(T0 + 16 * S, 3)],
    )
    b = write(
        tmp_path / "b.jsonl",
        [binance_line(T0 + 11 * S, 4), binance_line(T0 + 12 * S, 5), binance_line(T0 + 20 * S, 6)],
    )
    sink = ClockSink()
    start = trio.current_time()
    await Runner(Pipeline(), sinks=[sink]).replay([a, b], speed=speed)
    recorded = {1: 10, 4: 11, 2: 12, 5: 12, 3: 16, 6: 20}
    assert [trade_id for trade_id, _ in sink.seen] == list(recorded)
    assert [at - start for _, at in sink.seen] == pytest.approx(
        [(recorded[trade_id] - 10) / speed for trade_id, _ in sink.seen]
    )


async def test_problems_name_the_file_and_line(tmp_path: Path) -> None:
    undecodable = orjson.dumps(
        {
            "venue": "binance",
            "recv_ts": T0 + 2 * S,
            "frame": '{"stream":"btcusdt@trade","data":{"e":"trade"}}',
        }
    )
    a = write(tmp_path / "a.jsonl", [binance_line(T0, 1), undecodable])
    b = write(
        tmp_path / "b.jsonl",
        [binance_line(T0 + S, 2), b"{not json", b'{"venue":"nope","recv_ts":1,"frame":"x"}'],
    )
    summary = await Runner(Pipeline()).replay([a, b])
    problems = sorted((p.where, p.message) for p in summary.problems)
    assert [where for where, _ in problems] == [f"{a} line 2", f"{b} line 2", f"{b} line 3"]
    assert problems[0][1].startswith("binance: missing field @ $.data.s")
    assert problems[1][1].startswith("invalid JSON")
    assert problems[2][1].startswith("unknown venue 'nope'")
    # One file keeps the plain wording.
    single = await Runner(Pipeline()).replay([b])
    assert [p.where for p in single.problems] == ["line 2", "line 3"]


async def test_strict_names_the_file(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [binance_line(T0, 1)])
    b = write(tmp_path / "b.jsonl", [binance_line(T0 + S, 2), b"{not json"])
    with pytest.raises(RecordingError, match=rf"^{b} line 2: invalid JSON"):
        await Runner(Pipeline(), strict=True).replay([a, b])


@attrs.define
class StartSink:
    started: bool = False

    async def run(
        self,
        batches: trio.MemoryReceiveChannel[list[Event]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.started = True
        task_status.started()
        async with batches:
            async for _ in batches:
                pass


async def test_a_missing_second_file_fails_before_anything_runs(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [binance_line(T0, 1)])
    sink = StartSink()
    with pytest.raises(RecordingError, match=r"cannot read '.*missing\.jsonl': No such file"):
        await Runner(Pipeline(), sinks=[sink]).replay([a, tmp_path / "missing.jsonl"])
    with pytest.raises(RecordingError, match=r"cannot read '.*': Is a directory"):
        await Runner(Pipeline(), sinks=[sink]).replay([a, tmp_path])
    assert not sink.started


def bare_file(path: Path, trade_ids: list[int], *, corrupt_at: int = 0) -> Path:
    frames = [
        frame_text(
            trade("btcusdt", price="1", qty="1", trade_id=n, time_ms=1, buyer_maker=True),
            "btcusdt@trade",
        ).encode()
        for n in trade_ids
    ]
    if corrupt_at:
        frames.insert(corrupt_at - 1, b"{broken")
    return write(path, frames)


async def test_bare_files_play_one_after_another(tmp_path: Path) -> None:
    one = bare_file(tmp_path / "one.txt", [1, 2, 3])
    two = bare_file(tmp_path / "two.txt", [4, 5], corrupt_at=2)
    sink = ListSink()
    summary = await Runner(Pipeline(), sinks=[sink]).replay([two, one], venue="binance")
    assert [e.trade_id for e in sink.events if isinstance(e, Trade)] == [4, 5, 1, 2, 3]
    assert [(p.where, p.message.split(":")[0]) for p in summary.problems] == [
        (f"{two} line 2", "binance")
    ]


async def test_bare_files_and_recordings_do_not_mix(tmp_path: Path) -> None:
    bare = bare_file(tmp_path / "frames.txt", [1])
    recorded = write(tmp_path / "r.jsonl", [binance_line(T0, 1)])
    with pytest.raises(RecordingError) as caught:
        await Runner(Pipeline()).replay([recorded, bare], venue="binance")
    assert str(caught.value) == (
        f"cannot replay bare frames ({str(bare)!r}) together with recordings ({str(recorded)!r}):"
        " bare frames carry no receive time to merge by; replay them on their own"
    )
    with pytest.raises(RecordingError, match="pass --venue"):
        await Runner(Pipeline()).replay([recorded, bare])


async def test_empty_files_are_skipped(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.jsonl", [])
    a = write(tmp_path / "a.jsonl", [binance_line(T0, 1)])
    summary = await Runner(Pipeline()).replay([empty, a, empty])
    assert summary.frames == 1


def test_the_docs_example_joins_two_recordings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    (command,) = [line for line in text.splitlines() if line.startswith("irisflow replay b.jsonl")]
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "b.jsonl", [binance_line(T0 + i * S, i, str(94000 + i)) for i in range(5)])
    write(
        tmp_path / "c.jsonl",
        [coinbase_line(T0 + i * S - S // 2, 100 + i, str(93990 + i), i) for i in range(5)],
    )
    result = CliRunner().invoke(app, [*shlex.split(command)[1:], "--output", "jsonl"])
    assert result.exit_code == 0, result.stderr
    joined = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [(e["left_trade_id"], e["right_trade_id"], e["premium"]) for e in joined] == [
        (i, 100 + i, "10.00000000") for i in range(5)
    ]
