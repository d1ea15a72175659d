"""Write ``examples/binance-sample.jsonl``: five minutes of simulated Binance Spot frames.

The market is simulated, not recorded: BTCUSDT near 94 000 and ETHUSDT near 3 300 on a
random walk with a few sharp moves, an order book per symbol that takers trade against, and
every frame built with the payload builders of ``irisflow.testing``. One combined-stream
connection is subscribed to, per symbol, ``@trade``, ``@aggTrade``, ``@kline_1m``,
``@miniTicker``, ``@ticker``, ``@bookTicker``, ``@depth5`` and ``@depth@100ms``, plus
``btcusdt@depth10@100ms``. Halfway through the connection drops for 3 seconds (one gap
line); across it the diff-depth ids jump, as they would live.

Output is the irisflow recording format, one JSON object per line::

    {"venue":"binance","recv_ts":<ns>,"frame":"<frame text>"}
    {"venue":"binance","recv_ts":<ns>,"gap":{"streams":[..],"start":<ns>,"end":<ns>,"cause":".."}}

The script is deterministic (``random.Random(2026)``, integer arithmetic, no clock), so the
committed file can be checked::

    python examples/make_recording.py            # (re)write the file
    python examples/make_recording.py --check    # exit 1 if the file is not what this writes
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import orjson

from irisflow.testing import (
    agg_trade,
    book_ticker,
    depth_update,
    frame_text,
    kline,
    mini_ticker,
    partial_depth,
    ticker,
    trade,
)

OUTPUT = Path(__file__).with_name("binance-sample.jsonl")
SEED = 2026
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DURATION_MS = 300_000
STEP_MS = 100
GAP_AT_MS = START_MS + 150_437  # when the connection drops
GAP_NS = 3_000_000_000
GAP_CAUSE = "connection closed (1006)"
CHANNELS = (
    "trade",
    "aggTrade",
    "kline_1m",
    "miniTicker",
    "ticker",
    "bookTicker",
    "depth5",
    "depth@100ms",
)
BOOK_MIN, BOOK_MAX = 30, 45  # levels kept per side


@attrs.frozen(kw_only=True)
class Spec:
    """The constants of one simulated market. Prices are in ticks of 0.01."""

    symbol: str
    price: int
    qty_places: int
    """Quantities are integers in units of 10**-qty_places."""
    move_prob: float
    """Chance per 100 ms step that the fair price moves."""
    move_max: int
    """A move is uniform in +-move_max/3 ticks."""
    level_gap: int
    """Most ticks between neighbouring book levels."""
    top_qty: tuple[int, int]
    deep_qty: tuple[int, int]
    taker_prob: float
    """Chance per step of a taker order (four chances during a sharp move)."""
    taker_max: int
    action_prob: float
    """Chance per step of a random add, resize or cancel near the top of the book."""
    moves: list[tuple[int, int, int]]
    """Sharp moves: (ms after the start, over how many ms, ticks)."""
    trade_id: int
    agg_id: int
    update_id: int
    day: tuple[int, int, int, int]
    """24-hour open, high, low (ticks) and volume (units) at the start."""
    first_trade_id: int
    depth10: bool
    """Whether the connection also has <symbol>@depth10@100ms."""


BTC = Spec(
    symbol="BTCUSDT",
    price=9_400_000,
    qty_places=5,
    move_prob=0.10,
    move_max=2_400,
    level_gap=250,
    top_qty=(5_000, 250_000),
    deep_qty=(100, 200_000),
    taker_prob=0.08,
    taker_max=60_000,
    action_prob=0.05,
    moves=[(70_000, 4_000, -62_000), (222_000, 3_000, 41_000)],
    trade_id=5_123_456_700,
    agg_id=3_650_112_000,
    update_id=71_234_560_000,
    day=(9_312_055, 9_501_000, 9_240_010, 1_823_456_789),
    first_trade_id=5_121_990_001,
    depth10=True,
)
ETH = Spec(
    symbol="ETHUSDT",
    price=330_000,
    qty_places=4,
    move_prob=0.10,
    move_max=120,
    level_gap=12,
    top_qty=(2_000, 400_000),
    deep_qty=(100, 300_000),
    taker_prob=0.06,
    taker_max=80_000,
    action_prob=0.05,
    moves=[(118_000, 2_500, 4_600)],
    trade_id=2_911_000_000,
    agg_id=2_050_400_000,
    update_id=48_211_000_000,
    day=(325_120, 334_200, 321_960, 4_123_456_789),
    first_trade_id=2_909_870_001,
    depth10=False,
)


def price(ticks: int) -> Decimal:
    return Decimal(ticks).scaleb(-2)


class Market:
    """One symbol: its order book, trades and rolling statistics, emitting frames."""

    def __init__(self, spec: Spec, rng: random.Random, out: list[tuple[int, str, Any]]) -> None:
        self.spec = spec
        self.rng = rng
        self.out = out
        self.stream = spec.symbol.lower()
        self.fair = spec.price
        self.spread = 1
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.update_id = spec.update_id
        self.trade_id = spec.trade_id
        self.agg_id = spec.agg_id
        self.window: dict[tuple[str, int], int] = {}
        self.window_first: int | None = None
        self.pushed_top10: tuple[list[Any], list[Any]] = ([], [])
        self.day_open, self.day_high, self.day_low, self.day_volume = spec.day
        self.day_quote = self.day_volume * spec.price  # ticks * units
        self.last_price, self.last_qty = spec.price, 1
        self.bar: dict[str, int] = {}
        self.new_bar(START_MS)
        self.requote(START_MS)
        self.window, self.window_first = {}, None
        self.top = self.top_of_book()

    # Frames.

    def emit(self, time_ms: int, channel: str, payload: Any) -> None:
        self.out.append((time_ms, f"{self.stream}@{channel}", payload))

    def qty(self, units: int) -> Decimal:
        return Decimal(units).scaleb(-self.spec.qty_places)

    def quote(self, ticks_units: int) -> Decimal:
        return Decimal(ticks_units).scaleb(-2 - self.spec.qty_places)

    # The book.

    def set_level(self, side: str, at: int, units: int) -> None:
        book = self.bids if side == "b" else self.asks
        if units:
            book[at] = units
        else:
            del book[at]
        self.update_id += 1
        if self.window_first is None:
            self.window_first = self.update_id
        self.window[(side, at)] = units

    def top_of_book(self) -> tuple[int, int, int, int]:
        bid, ask = max(self.bids), min(self.asks)
        return bid, self.bids[bid], ask, self.asks[ask]

    def levels(self, side: str, n: int) -> list[tuple[Decimal, Decimal]]:
        book = self.bids if side == "b" else self.asks
        prices = sorted(book, reverse=side == "b")[:n]
        return [(price(p), self.qty(book[p])) for p in prices]

    def units(self, bounds: tuple[int, int]) -> int:
        return self.rng.randrange(bounds[0], bounds[1] + 1)

    def requote(self, t: int) -> None:
        """Move the best bid and ask to the fair price; keep each side BOOK_MIN..MAX deep."""
        best_bid, best_ask = self.fair, self.fair + self.spread
        for p in sorted(p for p in self.bids if p > best_bid):
            self.set_level("b", p, 0)
        if best_bid not in self.bids:
            self.set_level("b", best_bid, self.units(self.spec.top_qty))
        for p in sorted(p for p in self.asks if p < best_ask):
            self.set_level("a", p, 0)
        if best_ask not in self.asks:
            self.set_level("a", best_ask, self.units(self.spec.top_qty))
        self.fill()

    def fill(self) -> None:
        gap = self.spec.level_gap
        while len(self.bids) < BOOK_MIN:
            self.set_level("b", min(self.bids) - self.rng.randrange(1, gap + 1), self.deep())
        while len(self.asks) < BOOK_MIN:
            self.set_level("a", max(self.asks) + self.rng.randrange(1, gap + 1), self.deep())
        while len(self.bids) > BOOK_MAX:
            self.set_level("b", min(self.bids), 0)
        while len(self.asks) > BOOK_MAX:
            self.set_level("a", max(self.asks), 0)

    def deep(self) -> int:
        return self.units(self.spec.deep_qty)

    def random_change(self) -> None:
        """Someone adds, resizes or cancels an order in the top ten levels."""
        side = "b" if self.rng.random() < 0.5 else "a"
        book = self.bids if side == "b" else self.asks
        top = sorted(book, reverse=side == "b")[:10]
        what = self.rng.random()
        if what < 0.4:
            at = top[self.rng.randrange(len(top))]
            self.set_level(side, at, self.deep())
        elif what < 0.75:
            at = top[self.rng.randrange(1, len(top))]
            self.set_level(side, at, 0)
        else:
            step = self.rng.randrange(1, self.spec.level_gap + 1)
            at = top[0] - step if side == "b" else top[0] + step
            if at not in book:
                self.set_level(side, at, self.deep())
        self.fill()

    # Trading.

    def take(self, t: int, buy: bool) -> None:
        """A taker order of random size sweeps up to three levels of the other side."""
        r = self.rng.random()
        remaining = 1 + int(r * r * r * self.spec.taker_max)
        side = "a" if buy else "b"
        book = self.asks if buy else self.bids
        for _ in range(3):
            if remaining == 0 or len(book) < 2:
                break
            at = min(book) if buy else max(book)
            filled = min(remaining, book[at])
            first = self.trade_id + 1
            for part in self.split(filled):
                self.trade_id += 1
                self.emit(
                    t + 1,
                    "trade",
                    trade(
                        self.stream,
                        price=price(at),
                        qty=self.qty(part),
                        trade_id=self.trade_id,
                        time_ms=t,
                        buyer_maker=not buy,
                        event_time_ms=t + 1,
                    ),
                )
                self.record_trade(at, part, buy)
            self.agg_id += 1
            self.emit(
                t + 1,
                "aggTrade",
                agg_trade(
                    self.stream,
                    price=price(at),
                    qty=self.qty(filled),
                    agg_id=self.agg_id,
                    first_id=first,
                    last_id=self.trade_id,
                    time_ms=t,
                    buyer_maker=not buy,
                    event_time_ms=t + 1,
                ),
            )
            self.set_level(side, at, book[at] - filled)
            remaining -= filled
        self.fill()

    def split(self, units: int) -> list[int]:
        """Split a fill among one to three resting orders."""
        n = min(units, 1 + self.rng.randrange(3))
        cuts = sorted(self.rng.sample(range(1, units), n - 1)) if n > 1 else []
        edges = [0, *cuts, units]
        return [b - a for a, b in itertools.pairwise(edges)]

    def record_trade(self, at: int, units: int, buy: bool) -> None:
        self.last_price, self.last_qty = at, units
        self.day_volume += units
        self.day_quote += at * units
        self.day_high, self.day_low = max(self.day_high, at), min(self.day_low, at)
        bar = self.bar
        if bar["n"] == 0:
            bar["o"] = bar["h"] = bar["l"] = at
            bar["f"] = self.trade_id
        bar["h"], bar["l"], bar["c"] = max(bar["h"], at), min(bar["l"], at), at
        bar["L"] = self.trade_id
        bar["n"] += 1
        bar["v"] += units
        bar["q"] += at * units
        if buy:
            bar["V"] += units
            bar["Q"] += at * units

    # Periodic streams.

    def new_bar(self, start: int) -> None:
        last = self.last_price
        self.bar = {"t": start, "o": last, "h": last, "l": last, "c": last, "n": 0}
        self.bar |= {"f": -1, "L": -1, "v": 0, "q": 0, "V": 0, "Q": 0}

    def push_kline(self, e: int, closed: bool) -> None:
        bar = self.bar
        event = kline(
            self.stream,
            "1m",
            start_ms=bar["t"],
            open=price(bar["o"]),
            high=price(bar["h"]),
            low=price(bar["l"]),
            close=price(bar["c"]),
            volume=self.qty(bar["v"]),
            closed=closed,
            event_time_ms=e,
            first_id=bar["f"],
            last_id=bar["L"],
            trades=bar["n"],
            quote_volume=self.quote(bar["q"]),
            taker_buy_volume=self.qty(bar["V"]),
            taker_buy_quote_volume=self.quote(bar["Q"]),
        )
        self.emit(e, "kline_1m", event)

    def push_tickers(self, t: int) -> None:
        e = t + self.rng.randrange(0, 6)
        bid, bid_qty, ask, ask_qty = self.top_of_book()
        day: dict[str, Any] = {
            "open": price(self.day_open),
            "high": price(self.day_high),
            "low": price(self.day_low),
            "volume": self.qty(self.day_volume),
            "quote_volume": self.quote(self.day_quote),
        }
        self.emit(
            e,
            "miniTicker",
            mini_ticker(self.stream, event_time_ms=e, close=price(self.last_price), **day),
        )
        e += self.rng.randrange(0, 3)
        full = ticker(
            self.stream,
            event_time_ms=e,
            last=price(self.last_price),
            last_qty=self.qty(self.last_qty),
            bid=price(bid),
            bid_qty=self.qty(bid_qty),
            ask=price(ask),
            ask_qty=self.qty(ask_qty),
            first_id=self.spec.first_trade_id,
            last_id=self.trade_id,
            **day,
        )
        self.emit(e, "ticker", full)
        self.emit(
            e, "depth5", partial_depth(self.levels("b", 5), self.levels("a", 5), self.update_id)
        )

    def close_window(self, t_end: int) -> None:
        """End a 100 ms window: the diff-depth event, and the top-10 snapshot if it changed."""
        if self.window_first is not None:
            bids = sorted(((p, u) for (s, p), u in self.window.items() if s == "b"), reverse=True)
            asks = sorted((p, u) for (s, p), u in self.window.items() if s == "a")
            self.emit(
                t_end,
                "depth@100ms",
                depth_update(
                    self.stream,
                    self.window_first,
                    self.update_id,
                    [(price(p), self.qty(u)) for p, u in bids],
                    [(price(p), self.qty(u)) for p, u in asks],
                    t_end,
                ),
            )
            self.window, self.window_first = {}, None
        top10 = (self.levels("b", 10), self.levels("a", 10))
        if self.spec.depth10 and top10 != self.pushed_top10:
            self.emit(t_end, "depth10@100ms", partial_depth(*top10, self.update_id))
            self.pushed_top10 = top10

    def check_top(self, t: int) -> None:
        top = self.top_of_book()
        if top != self.top:
            self.top = top
            bid, bid_qty, ask, ask_qty = top
            event = book_ticker(
                self.stream,
                update_id=self.update_id,
                bid=price(bid),
                bid_qty=self.qty(bid_qty),
                ask=price(ask),
                ask_qty=self.qty(ask_qty),
            )
            self.emit(t, "bookTicker", event)

    # One 100 ms step.

    def step(self, t: int) -> None:
        rng, spec = self.rng, self.spec
        since = t - START_MS
        if since and since % 2_000 == 0:
            if since % 60_000 == 0:
                self.push_kline(t + rng.randrange(1, 4), closed=True)
                self.new_bar(t)
            else:
                self.push_kline(t + rng.randrange(0, 3), closed=False)
        if since and since % 1_000 == 0:
            self.push_tickers(t)

        drift, busy = 0, 1
        for at, over, ticks in spec.moves:
            if at <= since < at + over:
                drift, busy = ticks * STEP_MS // over, 4
        actions: list[tuple[int, int, str]] = []
        if drift or rng.random() < spec.move_prob:
            actions.append((rng.randrange(STEP_MS), 0, "move"))
        if rng.random() < spec.action_prob:
            actions.append((rng.randrange(STEP_MS), 1, "change"))
        actions.extend(
            (rng.randrange(STEP_MS), 2 + i, "take")
            for i in range(busy)  # several chances per step during a sharp move
            if rng.random() < spec.taker_prob
        )
        for offset, _, what in sorted(actions):
            now = t + offset
            if what == "move":
                jump = rng.randrange(-spec.move_max, spec.move_max + 1) // 3
                self.fair += drift + jump
                self.spread = 1 if rng.random() < 0.85 else rng.randrange(2, 6)
                self.requote(now)
            elif what == "change":
                self.random_change()
            else:
                toward = 0.5 if not drift else (0.8 if drift > 0 else 0.2)
                self.take(now, buy=rng.random() < toward)
            self.check_top(now)
        self.close_window(t + STEP_MS)


def simulate(rng: random.Random) -> list[tuple[int, str, Any]]:
    """Every frame of the session as (time ms, stream, payload), in sending order."""
    out: list[tuple[int, str, Any]] = []
    markets = [Market(BTC, rng, out), Market(ETH, rng, out)]
    # Up to and including the step at the end, which closes the last kline and ticks.
    for t in range(START_MS, START_MS + DURATION_MS + STEP_MS, STEP_MS):
        for market in markets:
            market.step(t)
    order = sorted(range(len(out)), key=lambda i: (out[i][0], i))
    return [out[i] for i in order]


def streams() -> list[str]:
    names = [f"{s.symbol.lower()}@{channel}" for s in (BTC, ETH) for channel in CHANNELS]
    names.insert(CHANNELS.index("depth5") + 1, "btcusdt@depth10@100ms")
    return names


def receive(
    frames: list[tuple[int, str, Any]], rng: random.Random, not_before: int
) -> list[tuple[int, str]]:
    """Give frames receive times: a few ms after sending; frames already waiting share a read."""
    lines: list[tuple[int, str]] = []
    last = not_before
    i = 0
    while i < len(frames):
        sent_ns = frames[i][0] * 1_000_000
        recv = max(sent_ns + rng.randrange(2_000_000, 9_000_000), last + rng.randrange(1, 200_000))
        j = i
        while j < len(frames) and frames[j][0] * 1_000_000 + 1_000_000 <= recv:
            lines.append((recv, frame_text(frames[j][2], frames[j][1])))
            j += 1
        last, i = recv, j
    return lines


def generate() -> bytes:
    rng = random.Random(SEED)
    frames = simulate(rng)
    before = receive([f for f in frames if f[0] < GAP_AT_MS], rng, START_MS * 1_000_000)
    out: list[dict[str, Any]] = [
        {"venue": "binance", "recv_ts": recv, "frame": text} for recv, text in before
    ]
    start = max(GAP_AT_MS * 1_000_000, before[-1][0] + 1)
    end = start + GAP_NS
    gap = {"streams": streams(), "start": start, "end": end, "cause": GAP_CAUSE}
    out.append({"venue": "binance", "recv_ts": end, "gap": gap})
    after = [f for f in frames if f[0] * 1_000_000 >= end]
    out += [
        {"venue": "binance", "recv_ts": recv, "frame": text}
        for recv, text in receive(after, rng, end)
    ]
    return b"".join(orjson.dumps(line) + b"\n" for line in out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file differs")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="file to write or check")
    args = parser.parse_args(argv)
    data = generate()
    if args.check:
        current = args.output.read_bytes() if args.output.exists() else b""
        if current != data:
            print(
                f"{args.output} is out of date: run `python examples/make_recording.py`",
                file=sys.stderr,
            )
            return 1
        print(f"{args.output} is up to date ({len(data)} bytes)")
        return 0
    args.output.write_bytes(data)
    lines = data.count(b"\n")
    print(f"wrote {args.output} ({lines} lines, {len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
