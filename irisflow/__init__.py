"""irisflow: live market-data streams through a composable pipeline.

Everything public is importable from here; the ``_x`` modules are private. Fake venues
and list-backed sinks for tests live in :mod:`irisflow.testing`, outputs in
:mod:`irisflow.sinks`, venue adapters in :mod:`irisflow.venues`.
"""

from __future__ import annotations

from ._alert import SEVERITIES as SEVERITIES
from ._alert import Alert as Alert
from ._alert import Severity as Severity
from ._alert import alert_key as alert_key
from ._chain import Block as Block
from ._chain import Confirmation as Confirmation
from ._chain import Log as Log
from ._chain import Retraction as Retraction
from ._chain import Swap as Swap
from ._chain import TokenInfo as TokenInfo
from ._chain import TokenTransfer as TokenTransfer
from ._chain import Transaction as Transaction
from ._chain import keccak256 as keccak256
from ._config import AlertConfig as AlertConfig
from ._config import Config as Config
from ._config import PipelineConfig as PipelineConfig
from ._config import load_config as load_config
from ._errors import ConnectError as ConnectError
from ._errors import ConnectionClosed as ConnectionClosed
from ._errors import DatabaseError as DatabaseError
from ._errors import DecodeError as DecodeError
from ._errors import FilterError as FilterError
from ._errors import IrisflowError as IrisflowError
from ._errors import RecordingError as RecordingError
from ._errors import UsageError as UsageError
from ._errors import VenueError as VenueError
from ._errors import WorldError as WorldError
from ._events import KINDS as KINDS
from ._events import Book as Book
from ._events import BookUpdate as BookUpdate
from ._events import Candle as Candle
from ._events import Event as Event
from ._events import Gap as Gap
from ._events import Level as Level
from ._events import Quote as Quote
from ._events import Ticker as Ticker
from ._events import Trade as Trade
from ._events import event_kind as event_kind
from ._events import field_doc as field_doc
from ._events import to_datetime as to_datetime
from ._feed import ConnectionState as ConnectionState
from ._feed import FeedStatistics as FeedStatistics
from ._feed import Frames as Frames
from ._feed import Overflow as Overflow
from ._filter import Expression as Expression
from ._filter import Filter as Filter
from ._filter import compile_expression as compile_expression
from ._filter import compile_filter as compile_filter
from ._filter import fields_for as fields_for
from ._jsonl import dumps_event as dumps_event
from ._jsonl import encode_events as encode_events
from ._jsonl import iso_time as iso_time
from ._outbox import FileOutbox as FileOutbox
from ._outbox import Outbox as Outbox
from ._outbox import OutboxItem as OutboxItem
from ._pipeline import FilterStep as FilterStep
from ._pipeline import Pipeline as Pipeline
from ._pipeline import Step as Step
from ._record import CorruptLine as CorruptLine
from ._record import Recorder as Recorder
from ._record import read_recording as read_recording
from ._run import Problem as Problem
from ._run import Runner as Runner
from ._run import RunStatistics as RunStatistics
from ._run import RunStatus as RunStatus
from ._run import RunSummary as RunSummary
from ._run import Sink as Sink
from ._run import parse_speed as parse_speed
from ._telegram import BotUser as BotUser
from ._telegram import Pacer as Pacer
from ._telegram import ParseMode as ParseMode
from ._telegram import SentMessage as SentMessage
from ._telegram import Telegram as Telegram
from ._telegram import TelegramAuthError as TelegramAuthError
from ._telegram import TelegramMessageError as TelegramMessageError
from ._telegram import TelegramStatistics as TelegramStatistics
from ._telegram import TelegramTargetError as TelegramTargetError
from ._telegram import escape_html as escape_html
from ._telegram import escape_markdown_v2 as escape_markdown_v2
from ._telegram import open_telegram as open_telegram
from ._telegram import split_message as split_message
from ._transport import WebSocket as WebSocket
from ._transport import WebSocketStatistics as WebSocketStatistics
from ._transport import open_websocket as open_websocket
from ._venue import ChannelInfo as ChannelInfo
from ._venue import Decoder as Decoder
from ._venue import FeedOptions as FeedOptions
from ._venue import Plan as Plan
from ._venue import Venue as Venue
from ._venue import VenueParams as VenueParams
from ._venue import get_venue as get_venue
from ._venue import register_venue as register_venue
from ._venue import venue_names as venue_names
from ._whale import WhaleStep as WhaleStep

__all__ = [
    "KINDS",
    "SEVERITIES",
    "Alert",
    "AlertConfig",
    "Block",
    "Book",
    "BookUpdate",
    "BotUser",
    "Candle",
    "ChannelInfo",
    "Config",
    "Confirmation",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionState",
    "CorruptLine",
    "DatabaseError",
    "DecodeError",
    "Decoder",
    "Event",
    "Expression",
    "FeedOptions",
    "FeedStatistics",
    "FileOutbox",
    "Filter",
    "FilterError",
    "FilterStep",
    "Frames",
    "Gap",
    "IrisflowError",
    "Level",
    "Log",
    "Outbox",
    "OutboxItem",
    "Overflow",
    "Pacer",
    "ParseMode",
    "Pipeline",
    "PipelineConfig",
    "Plan",
    "Problem",
    "Quote",
    "Recorder",
    "RecordingError",
    "Retraction",
    "RunStatistics",
    "RunStatus",
    "RunSummary",
    "Runner",
    "SentMessage",
    "Severity",
    "Sink",
    "Step",
    "Swap",
    "Telegram",
    "TelegramAuthError",
    "TelegramMessageError",
    "TelegramStatistics",
    "TelegramTargetError",
    "Ticker",
    "TokenInfo",
    "TokenTransfer",
    "Trade",
    "Transaction",
    "UsageError",
    "Venue",
    "VenueError",
    "VenueParams",
    "WebSocket",
    "WebSocketStatistics",
    "WhaleStep",
    "WorldError",
    "alert_key",
    "compile_expression",
    "compile_filter",
    "dumps_event",
    "encode_events",
    "escape_html",
    "escape_markdown_v2",
    "event_kind",
    "field_doc",
    "fields_for",
    "get_venue",
    "iso_time",
    "keccak256",
    "load_config",
    "open_telegram",
    "open_websocket",
    "parse_speed",
    "read_recording",
    "register_venue",
    "split_message",
    "to_datetime",
    "venue_names",
]
