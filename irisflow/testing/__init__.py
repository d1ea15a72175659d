"""Test helpers users can reuse: fake venues that are real servers on 127.0.0.1.

:class:`ListSink` collects what a run emits; :class:`FakeTelegram` is a Bot API server.

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
from ._sinks import ListSink as ListSink
from ._telegram import FakeTelegram as FakeTelegram
from ._telegram import MarkupError as MarkupError
from ._telegram import ReceivedMessage as ReceivedMessage
from ._telegram import ReceivedRequest as ReceivedRequest
from ._telegram import parse_html as parse_html
from ._telegram import parse_markdown_v2 as parse_markdown_v2

__all__ = [
    "EXAMPLE_COMBINED_TRADE",
    "EXAMPLE_OPEN_KLINE",
    "EXAMPLE_RAW_DEPTH_UPDATE",
    "EXAMPLE_SUBSCRIBE_REQUEST",
    "EXAMPLE_SUBSCRIBE_RESPONSE",
    "KLINE_INTERVALS",
    "FakeBinance",
    "FakeTelegram",
    "ListSink",
    "MarkupError",
    "ReceivedMessage",
    "ReceivedRequest",
    "agg_trade",
    "book_ticker",
    "combined",
    "depth_update",
    "frame_text",
    "kline",
    "mini_ticker",
    "parse_html",
    "parse_markdown_v2",
    "partial_depth",
    "server_shutdown",
    "ticker",
    "trade",
]
