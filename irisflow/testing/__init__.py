"""Test helpers users can reuse: fake venues that are real servers on 127.0.0.1.

:class:`FakeBinance`, :class:`FakePolygon`, :class:`FakeCoinbase`, :class:`FakeKraken` and
:class:`FakeAlchemy` speak those venues' protocols, with scripted faults; :class:`MoralisSender`
posts signed Moralis Streams webhooks; :class:`FakeTelegram` is a Bot API server. The payload
builders make messages shaped exactly like each venue's, and the ``EXAMPLE_*`` constants hold
the constructed examples of the venue notes verbatim. :class:`ListSink` collects what a run
emits.
"""

from ._alchemy import FakeAlchemy as FakeAlchemy
from ._alchemy import SubscriptionInfo as SubscriptionInfo
from ._alchemy_frames import EXAMPLE_LOGS_SUBSCRIBE_REQUEST as EXAMPLE_LOGS_SUBSCRIBE_REQUEST
from ._alchemy_frames import EXAMPLE_LOGS_SUBSCRIBE_RESPONSE as EXAMPLE_LOGS_SUBSCRIBE_RESPONSE
from ._alchemy_frames import EXAMPLE_MINED_TX_NOTIFICATION as EXAMPLE_MINED_TX_NOTIFICATION
from ._alchemy_frames import (
    EXAMPLE_USDC_TRANSFER_NOTIFICATION as EXAMPLE_USDC_TRANSFER_NOTIFICATION,
)
from ._alchemy_frames import EXAMPLE_V2_SWAP_DATA as EXAMPLE_V2_SWAP_DATA
from ._alchemy_frames import EXAMPLE_V3_SWAP_LOG as EXAMPLE_V3_SWAP_LOG
from ._alchemy_frames import address_topic as address_topic
from ._alchemy_frames import approval_log as approval_log
from ._alchemy_frames import encode_int as encode_int
from ._alchemy_frames import encode_uint as encode_uint
from ._alchemy_frames import erc721_transfer_log as erc721_transfer_log
from ._alchemy_frames import log_entry as log_entry
from ._alchemy_frames import new_head as new_head
from ._alchemy_frames import notification as notification
from ._alchemy_frames import transaction as transaction
from ._alchemy_frames import transfer_log as transfer_log
from ._alchemy_frames import v2_swap_log as v2_swap_log
from ._alchemy_frames import v3_swap_log as v3_swap_log
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
from ._moralis import EXAMPLE_SECRET as EXAMPLE_SECRET
from ._moralis import EXAMPLE_TEST_SIGNATURE as EXAMPLE_TEST_SIGNATURE
from ._moralis import EXAMPLE_TEST_WEBHOOK as EXAMPLE_TEST_WEBHOOK
from ._moralis import EXAMPLE_UNCONFIRMED_ERC20 as EXAMPLE_UNCONFIRMED_ERC20
from ._moralis import MoralisSender as MoralisSender
from ._moralis import encode_body as encode_body
from ._moralis import keccak_signature as keccak_signature
from ._moralis import moralis_erc20_approval as moralis_erc20_approval
from ._moralis import moralis_erc20_transfer as moralis_erc20_transfer
from ._moralis import moralis_internal_tx as moralis_internal_tx
from ._moralis import moralis_log as moralis_log
from ._moralis import moralis_nft_transfer as moralis_nft_transfer
from ._moralis import moralis_tx as moralis_tx
from ._moralis import nist_signature as nist_signature
from ._moralis import webhook_body as webhook_body
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
    "EXAMPLE_LOGS_SUBSCRIBE_REQUEST",
    "EXAMPLE_LOGS_SUBSCRIBE_RESPONSE",
    "EXAMPLE_MARKET_TRADES",
    "EXAMPLE_MINED_TX_NOTIFICATION",
    "EXAMPLE_OPEN_KLINE",
    "EXAMPLE_RAW_DEPTH_UPDATE",
    "EXAMPLE_SECRET",
    "EXAMPLE_STOCKS_FRAME",
    "EXAMPLE_SUBSCRIBE_REQUEST",
    "EXAMPLE_SUBSCRIBE_RESPONSE",
    "EXAMPLE_TEST_SIGNATURE",
    "EXAMPLE_TEST_WEBHOOK",
    "EXAMPLE_TRADE_UPDATE",
    "EXAMPLE_UNCONFIRMED_ERC20",
    "EXAMPLE_USDC_TRANSFER_NOTIFICATION",
    "EXAMPLE_V2_SWAP_DATA",
    "EXAMPLE_V3_SWAP_LOG",
    "KLINE_INTERVALS",
    "FakeAlchemy",
    "FakeBinance",
    "FakeCoinbase",
    "FakeKraken",
    "FakePolygon",
    "FakeTelegram",
    "ListSink",
    "MarkupError",
    "MoralisSender",
    "Num",
    "ReceivedMessage",
    "ReceivedRequest",
    "SubscriptionInfo",
    "address_topic",
    "agg_trade",
    "approval_log",
    "book_ticker",
    "combined",
    "crypto_trade",
    "depth_update",
    "encode_body",
    "encode_int",
    "encode_uint",
    "erc721_transfer_log",
    "frame_text",
    "keccak_signature",
    "kline",
    "kraken_trade",
    "log_entry",
    "market_trade",
    "mini_ticker",
    "moralis_erc20_approval",
    "moralis_erc20_transfer",
    "moralis_internal_tx",
    "moralis_log",
    "moralis_nft_transfer",
    "moralis_tx",
    "new_head",
    "nist_signature",
    "notification",
    "parse_html",
    "parse_markdown_v2",
    "partial_depth",
    "polygon_status",
    "server_shutdown",
    "ticker",
    "trade",
    "transaction",
    "transfer_log",
    "v2_swap_log",
    "v3_swap_log",
    "webhook_body",
]
