"""How long one filter call takes, in nanoseconds (not a test: run it by hand).

    .venv/bin/python benchmarks/filter_speed.py

Each figure is the best of several timeit runs of ``f(event)`` on a trade. For scale, the
first two lines time a hand-written lambda and the bare per-kind predicate
(``Filter.predicate_for``), which skips the ``type(event)`` dict lookup.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from decimal import Decimal

from irisflow._events import Quote, Trade
from irisflow._filter import compile_expression, compile_filter

NUMBER = 1_000_000
REPEAT = 7

FILTERS = [
    "price > 45000",
    "symbol == 'BTCUSDT'",
    "symbol in ['BTCUSDT', 'ETHUSDT']",
    "price between 90000 and 95000",
    "trade_id > 100",
    "side = 'sell' or qty > 2",
    "not (side == 'buy')",
    "symbol == 'BTCUSDT' and qty * price >= 100000",
    "kind == 'trade' and price > 45000",
]


def report(label: str, f: Callable[[object], object], event: object) -> None:
    """Print the best ns per ``f(event)``; the statement is timed directly, with no wrapper."""
    best = min(timeit.repeat("f(ev)", globals={"f": f, "ev": event}, number=NUMBER, repeat=REPEAT))
    print(f"{label:50} {best / NUMBER * 1e9:6.0f} ns")


def main() -> None:
    trade = Trade(
        venue="binance",
        symbol="BTCUSDT",
        ts=1_700_000_000_000_000_000,
        recv_ts=1_700_000_000_001_000_000,
        price=Decimal("45000.10"),
        qty=Decimal("3"),
        side="buy",
        trade_id=7,
    )
    quote = Quote(
        venue="binance",
        symbol="BTCUSDT",
        ts=1,
        recv_ts=1,
        bid_price=Decimal(1),
        bid_qty=Decimal(1),
        ask_price=Decimal(2),
        ask_qty=Decimal(1),
    )
    limit = Decimal(45000)
    report("hand-written: lambda ev: ev.price > limit", lambda ev: ev.price > limit, trade)
    bare = compile_filter("price > 45000").predicate_for(Trade)
    assert bare is not None
    report("predicate_for(Trade) of: price > 45000", bare, trade)
    for text in FILTERS:
        report(text, compile_filter(text), trade)
    report("price > 45000, on a quote (no predicate)", compile_filter("price > 45000"), quote)
    report("expression: price * qty", compile_expression("price * qty"), trade)


if __name__ == "__main__":
    main()
