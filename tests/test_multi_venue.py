"""Several venues in one run: one nursery, one pipeline, filters on ``venue``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import trio

from irisflow.testing import FakeBinance, FakeCoinbase, market_trade, trade

IRISFLOW = [sys.executable, "-m", "irisflow"]


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeBinance, FakeCoinbase]]:
    binance, coinbase = FakeBinance(), FakeCoinbase()
    async with trio.open_nursery() as nursery:
        await nursery.start(binance.serve)
        await nursery.start(coinbase.serve)
        yield binance, coinbase
        nursery.cancel_scope.cancel()


async def test_two_venues_one_pipeline_from_the_cli(
    fakes: tuple[FakeBinance, FakeCoinbase], tmp_path: Path
) -> None:
    binance, coinbase = fakes
    config = tmp_path / "irisflow.toml"
    config.write_text(
        f'[venues.binance]\nendpoint = "{binance.url}"\n\n'
        f'[venues.coinbase]\nendpoint = "{coinbase.url}"\n'
    )
    args = [
        *IRISFLOW,
        "watch",
        "--venue",
        "binance",
        "--venue",
        "coinbase",
        "--symbols",
        "BTC-USD",
        "--channels",
        "trades",
        "--filter",
        "venue == 'coinbase' or qty > 1",
        "--config",
        str(config),
        "--max-events",
        "3",
        "--output",
        "jsonl",
    ]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            result: list[subprocess.CompletedProcess[bytes]] = []

            async def run() -> None:
                result.append(
                    await trio.run_process(
                        args, capture_stdout=True, capture_stderr=True, check=False
                    )
                )

            nursery.start_soon(run)
            await binance.wait_subscribed("btcusdt@trade")
            await coinbase.wait_subscribed("market_trades", "BTC-USD")
            for n, qty in enumerate(["0.5", "2", "3"]):
                payload = trade(
                    "BTCUSDT",
                    price="94000",
                    qty=qty,
                    trade_id=n,
                    time_ms=1767225600000 + n,
                    buyer_maker=True,
                )
                await binance.publish("btcusdt@trade", payload)
            await coinbase.publish_trades([market_trade("BTC-USD", 77, "94001.5", "0.01", "BUY")])
    (done,) = result
    assert done.returncode == 0, done.stderr
    events = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert sorted((e["venue"], e["symbol"]) for e in events) == [
        ("binance", "BTCUSDT"),
        ("binance", "BTCUSDT"),
        ("coinbase", "BTC-USD"),
    ]
    coinbase_trade = next(e for e in events if e["venue"] == "coinbase")
    assert coinbase_trade["side"] == "sell"  # the maker bought, so the taker sold
