"""Test helpers users can reuse: fake venues that are real servers on 127.0.0.1.

:class:`FakePolygon`, :class:`FakeCoinbase` and :class:`FakeKraken` speak those venues'
protocols. :class:`ListSink` collects what a run emits; :class:`FakeTelegram` is a Bot API
server.

:class:`FakeBinance` is a Binance Spot market-stream server; the payload builders
(:func:`trade`, :func:`kline`, ...) make events shaped exactly like Binance's, and the
``EXAMPLE_*`` constants hold the constructed example frames of the venue notes verbatim.
"""

from ._binance import FakeBinance as FakeBinance
from ._binance_frames import EXAMPLE_COMBINED_TRADE as EXAMPLE_COMBINED_TRADE
from ._binance_frames import EXAMPLE_OPEN_KLINE as EXAMPLE_OPEN_KLINE
from ._binance_frames import EXAMPLE_RAW_DEPTH_UPDATE as EXAMPLE_RAW_DEPTH_UPDATE
from ._binance_frames import EXAMPLE_SUBSCRIBE_REQUEST as EXAMPLE_SUBSCRIBE_REQUEST
from ._binance_frames import EXAMPLE_SUBSCRIBE_RESPONSE as EXAMPLE_SUBSCRIBE_RESPONSE
from ._binance_frames import agg_trade as agg_trade
from ._binance_frames import book_ticker as book_ticker
from ._binance_frames import combined as combined
from ._binance_frames import depth_update as depth_update
from ._binance_frames import frame_text as frame_text
from ._binance_frames import kline as kline
from ._binance_frames import mini_ticker as mini_ticker
from ._binance_frames import partial_depth as partial_depth
from ._binance_frames import server_shutdown as server_shutdown
from ._binance_frames import ticker as ticker
from ._binance_frames import trade as trade
from ._binance_protocol import KLINE_INTERVALS as KLINE_INTERVALS
from ._coinbase import EXAMPLE_MARKET_TRADES as EXAMPLE_MARKET_TRADES
from ._coinbase import FakeCoinbase as FakeCoinbase
from ._coinbase import market_trade as market_trade
from ._kraken import EXAMPLE_TRADE_UPDATE as EXAMPLE_TRADE_UPDATE
from ._kraken import FakeKraken as FakeKraken
from ._kraken import Num as Num
from ._kraken import kraken_trade as kraken_trade
from ._polygon import EXAMPLE_CRYPTO_FRAME as EXAMPLE_CRYPTO_FRAME
from ._polygon import EXAMPLE_FOREX_FRAME as EXAMPLE_FOREX_FRAME
from ._polygon import EXAMPLE_STOCKS_FRAME as EXAMPLE_STOCKS_FRAME
from ._polygon import FakePolygon as FakePolygon
from ._polygon import crypto_trade as crypto_trade
from ._polygon import polygon_status as polygon_status
from ._sinks import ListSink as ListSink
from ._telegram import FakeTelegram as FakeTelegram
from ._telegram import MarkupError as MarkupError
from ._telegram import ReceivedMessage as ReceivedMessage
from ._telegram import ReceivedRequest as ReceivedRequest
from ._telegram import parse_html as parse_html
from ._telegram import parse_markdown_v2 as parse_markdown_v2

__all__ = [
    "EXAMPLE_COMBINED_TRADE",
    "EXAMPLE_CRYPTO_FRAME",
    "EXAMPLE_FOREX_FRAME",
    "EXAMPLE_MARKET_TRADES",
    "EXAMPLE_OPEN_KLINE",
    "EXAMPLE_RAW_DEPTH_UPDATE",
    "EXAMPLE_STOCKS_FRAME",
    "EXAMPLE_SUBSCRIBE_REQUEST",
    "EXAMPLE_SUBSCRIBE_RESPONSE",
    "EXAMPLE_TRADE_UPDATE",
    "KLINE_INTERVALS",
    "FakeBinance",
    "FakeCoinbase",
    "FakeKraken",
    "FakePolygon",
    "FakeTelegram",
    "ListSink",
    "MarkupError",
    "Num",
    "ReceivedMessage",
    "ReceivedRequest",
    "agg_trade",
    "book_ticker",
    "combined",
    "crypto_trade",
    "depth_update",
    "frame_text",
    "kline",
    "kraken_trade",
    "market_trade",
    "mini_ticker",
    "parse_html",
    "parse_markdown_v2",
    "partial_depth",
    "polygon_status",
    "server_shutdown",
    "ticker",
    "trade",
]
