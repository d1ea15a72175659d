"""The runner's wiring: taps, services, time-driven steps, max-events, sinks that fail."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import attrs
import orjson
import trio

from irisflow import Event, Gap, Pipeline, Runner, Trade
from irisflow.testing import ListSink, trade


def recording(path: Path, n: int, step_ns: int = 1_000_000_000) -> Path:
    lines = []
    for i in range(n):
        payload = trade(
            "BTCUSDT",
            price=f"{45000 + i}",
            qty="1",
            trade_id=i,
            time_ms=1_000 + i,
            buyer_maker=False,
        )
        frame = orjson.dumps({"stream": "btcusdt@trade", "data": payload}).decode()
        lines.append(
            orjson.dumps({"venue": "binance", "recv_ts": (i + 1) * step_ns, "frame": frame})
        )
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@attrs.define
class Ticks:
    """A step that records advance() calls and emits a gap-free marker every 2 s of time."""

    seen: list[int] = attrs.field(factory=list)
    next_mark: int = 2_000_000_000

    def process(self, events: list[Event]) -> list[Event]:
        return events

    def advance(self, now: int) -> list[Event]:
        self.seen.append(now)
        out: list[Event] = []
        while now >= self.next_mark:
            out.append(
                Gap("test", "*", self.next_mark, now, (), self.next_mark, self.next_mark, "mark")
            )
            self.next_mark += 2_000_000_000
        return out


async def test_replay_advances_time_driven_steps_before_each_batch(tmp_path: Path) -> None:
    ticks = Ticks()
    sink = ListSink()
    runner = Runner(Pipeline([ticks]), sinks=[sink])
    await runner.replay(recording(tmp_path / "r.jsonl", 5))
    assert ticks.seen == [1_000_000_000, 2_000_000_000, 3_000_000_000, 4_000_000_000, 5_000_000_000]
    kinds = [e.kind for e in sink.events]
    # marks come out before the batch whose receive time made them due
    assert kinds == ["trade", "gap", "trade", "trade", "gap", "trade", "trade"]


async def test_taps_see_every_decoded_event_and_sinks_see_the_output(tmp_path: Path) -> None:
    tap, out = ListSink(), ListSink()
    pipeline = Pipeline.from_filters(["price >= 45003"], {Trade})
    runner = Runner(pipeline, sinks=[out], taps=[tap])
    summary = await runner.replay(recording(tmp_path / "r.jsonl", 5))
    assert len(tap.events) == 5
    assert [e.price for e in out.events] == [Decimal(45003), Decimal(45004)]  # type: ignore[attr-defined]
    assert (summary.events, summary.emitted) == (5, 2)
    stats = runner.statistics()
    assert (stats.frames, stats.events, stats.emitted, stats.queue, stats.feeds) == (5, 5, 2, 0, ())


async def test_services_run_beside_the_pipeline_and_end_with_it(tmp_path: Path) -> None:
    started = trio.Event()
    ended: list[bool] = []

    async def service() -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            ended.append(True)

    runner = Runner(Pipeline(), sinks=[ListSink()], services=[service])
    with trio.fail_after(10):
        await runner.replay(recording(tmp_path / "r.jsonl", 3))
    assert started.is_set()
    assert ended == [True]


async def test_max_events_cuts_exactly(tmp_path: Path) -> None:
    sink = ListSink()
    summary = await Runner(Pipeline(), sinks=[sink], max_events=3).replay(
        recording(tmp_path / "r.jsonl", 10)
    )
    assert len(sink.events) == summary.emitted == 3


@attrs.define
class Holder:
    """A step that holds every event back until the stream ends."""

    held: list[Event] = attrs.field(factory=list)

    def process(self, events: list[Event]) -> list[Event]:
        self.held.extend(events)
        return []

    def advance(self, now: int) -> list[Event]:
        return []

    def flush(self) -> list[Event]:
        held, self.held = self.held, []
        return held


async def test_what_steps_hold_comes_out_when_the_feed_ends(tmp_path: Path) -> None:
    sink = ListSink()
    await Runner(Pipeline([Holder()]), sinks=[sink]).replay(recording(tmp_path / "r.jsonl", 4))
    assert [e.trade_id for e in sink.events] == [0, 1, 2, 3]  # type: ignore[attr-defined]


async def test_no_event_is_lost_when_many_items_queue_up(tmp_path: Path) -> None:
    # 1000 one-frame reads: the pipeline task takes many queued items per wake-up.
    sink, tap = ListSink(), ListSink()
    summary = await Runner(Pipeline(), sinks=[sink], taps=[tap]).replay(
        recording(tmp_path / "r.jsonl", 1000, step_ns=1)
    )
    assert [e.trade_id for e in sink.events] == list(range(1000))  # type: ignore[attr-defined]
    assert len(tap.events) == summary.events == summary.emitted == 1000


async def test_late_events_are_reported_at_the_end(tmp_path: Path) -> None:
    # One read: a BTC trade just after the minute, then an ETH trade just before it.
    frames = [
        trade("BTCUSDT", price="1", qty="1", trade_id=1, time_ms=60_010, buyer_maker=False),
        trade("ETHUSDT", price="1", qty="1", trade_id=2, time_ms=59_990, buyer_maker=False),
    ]
    lines = [
        orjson.dumps(
            {
                "venue": "binance",
                "recv_ts": 61_000_000_000,
                "frame": orjson.dumps(
                    {"stream": f"{f['s'].lower()}@trade", "data": f}  # type: ignore[union-attr]
                ).decode(),
            }
        )
        for f in frames
    ]
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    pipeline = Pipeline(kinds={Trade}).pipe("by symbol | window 1m lateness 0 | agg count")
    summary = await Runner(pipeline, sinks=[ListSink()]).replay(path)
    assert any("1 late events were left out" in note for note in summary.notes), summary.notes
