"""irisflow: live market-data streams through a composable pipeline.

Everything public is importable from here; the ``_x`` modules are private. Fake venues
and list-backed sinks for tests live in :mod:`irisflow.testing`, outputs in
:mod:`irisflow.sinks`, venue adapters in :mod:`irisflow.venues`.
"""

from __future__ import annotations

from ._aggregates import DIVISION as DIVISION
from ._aggregates import Agg as Agg
from ._aggregates import Aggregate as Aggregate
from ._aggregates import parse_aggregates as parse_aggregates
from ._alert import SEVERITIES as SEVERITIES
from ._alert import Alert as Alert
from ._alert import Severity as Severity
from ._alert import alert_key as alert_key
from ._alerting import ALERT_LIST_COLUMNS as ALERT_LIST_COLUMNS
from ._alerting import AlertSink as AlertSink
from ._alerting import TelegramSettings as TelegramSettings
from ._alerting import alerts_test as alerts_test
from ._alerting import default_outbox_path as default_outbox_path
from ._alerting import telegram_settings as telegram_settings
from ._assemble import Assembly as Assembly
from ._assemble import RunSpec as RunSpec
from ._assemble import assemble as assemble
from ._bars import BarStep as BarStep
from ._chain import Block as Block
from ._chain import Confirmation as Confirmation
from ._chain import InternalTransaction as InternalTransaction
from ._chain import Log as Log
from ._chain import NftTransfer as NftTransfer
from ._chain import Retraction as Retraction
from ._chain import Swap as Swap
from ._chain import TokenApproval as TokenApproval
from ._chain import TokenInfo as TokenInfo
from ._chain import TokenTransfer as TokenTransfer
from ._chain import Transaction as Transaction
from ._chain import keccak256 as keccak256
from ._config import AlertConfig as AlertConfig
from ._config import Config as Config
from ._config import PipelineConfig as PipelineConfig
from ._config import load_config as load_config
from ._database import redact_dsn as redact_dsn
from ._database import resolve_dsn as resolve_dsn
from ._errors import ConnectError as ConnectError
from ._errors import ConnectionClosed as ConnectionClosed
from ._errors import DatabaseError as DatabaseError
from ._errors import DecodeError as DecodeError
from ._errors import FilterError as FilterError
from ._errors import IrisflowError as IrisflowError
from ._errors import PipelineError as PipelineError
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
from ._events import described as described
from ._events import event_kind as event_kind
from ._events import field_doc as field_doc
from ._events import to_datetime as to_datetime
from ._feed import ConnectionState as ConnectionState
from ._feed import FeedStatistics as FeedStatistics
from ._feed import Frames as Frames
from ._feed import Overflow as Overflow
from ._feed import RawFrame as RawFrame
from ._filter import Expression as Expression
from ._filter import Filter as Filter
from ._filter import compile_expression as compile_expression
from ._filter import compile_filter as compile_filter
from ._filter import fields_for as fields_for
from ._join import AsofJoinStep as AsofJoinStep
from ._join import Joined as Joined
from ._join import JoinStatistics as JoinStatistics
from ._jsonl import dumps_event as dumps_event
from ._jsonl import encode_events as encode_events
from ._jsonl import iso_time as iso_time
from ._migrate import MigrateReport as MigrateReport
from ._migrate import MigrationState as MigrationState
from ._migrate import migrate as migrate
from ._migrate import migration_status as migration_status
from ._outbox import FileOutbox as FileOutbox
from ._outbox import Outbox as Outbox
from ._outbox import OutboxItem as OutboxItem
from ._pg_outbox import PostgresOutbox as PostgresOutbox
from ._pg_outbox import PostgresOutboxStatistics as PostgresOutboxStatistics
from ._pg_outbox import open_postgres_outbox as open_postgres_outbox
from ._pipe import STEP_NAMES as STEP_NAMES
from ._pipe import build_pipeline as build_pipeline
from ._pipe import parse_pipe as parse_pipe
from ._pipeline import FilterStep as FilterStep
from ._pipeline import Pipeline as Pipeline
from ._pipeline import Step as Step
from ._record import CorruptLine as CorruptLine
from ._record import Recorder as Recorder
from ._record import read_recording as read_recording
from ._record import read_recordings as read_recordings
from ._rule_step import AlertStep as AlertStep
from ._rule_step import AlertStepStatistics as AlertStepStatistics
from ._rule_text import Template as Template
from ._rules import RULE_KINDS as RULE_KINDS
from ._rules import Rule as Rule
from ._rules import build_rules as build_rules
from ._run import Problem as Problem
from ._run import Runner as Runner
from ._run import RunStatistics as RunStatistics
from ._run import RunStatus as RunStatus
from ._run import RunSummary as RunSummary
from ._run import Sink as Sink
from ._run import parse_speed as parse_speed
from ._saved import SavedFilterStep as SavedFilterStep
from ._saved import load_saved_step as load_saved_step
from ._saved import store_for as store_for
from ._saved_db import DatabaseFilterStore as DatabaseFilterStore
from ._saved_file import FileFilterStore as FileFilterStore
from ._saved_filter import SavedFilter as SavedFilter
from ._saved_watch import watch_saved as watch_saved
from ._steps import DedupeStep as DedupeStep
from ._steps import Key as Key
from ._steps import SampleStep as SampleStep
from ._steps import SelectStep as SelectStep
from ._steps import ThrottleStep as ThrottleStep
from ._telegram import BotUser as BotUser
from ._telegram import Pacer as Pacer
from ._telegram import SentMessage as SentMessage
from ._telegram import Telegram as Telegram
from ._telegram import TelegramAuthError as TelegramAuthError
from ._telegram import TelegramMessageError as TelegramMessageError
from ._telegram import TelegramStatistics as TelegramStatistics
from ._telegram import TelegramTargetError as TelegramTargetError
from ._telegram import open_telegram as open_telegram
from ._telegram_text import ParseMode as ParseMode
from ._telegram_text import escape_html as escape_html
from ._telegram_text import escape_markdown_v2 as escape_markdown_v2
from ._telegram_text import split_message as split_message
from ._trackers import Rsi as Rsi
from ._trackers import RsiStep as RsiStep
from ._trackers import Spike as Spike
from ._trackers import SpikeStep as SpikeStep
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
from ._windows import Late as Late
from ._windows import Window as Window
from ._windows import WindowStatistics as WindowStatistics
from ._windows import WindowStep as WindowStep

__all__ = [
    "ALERT_LIST_COLUMNS",
    "DIVISION",
    "KINDS",
    "RULE_KINDS",
    "SEVERITIES",
    "STEP_NAMES",
    "Agg",
    "Aggregate",
    "Alert",
    "AlertConfig",
    "AlertSink",
    "AlertStep",
    "AlertStepStatistics",
    "AsofJoinStep",
    "Assembly",
    "BarStep",
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
    "DatabaseFilterStore",
    "DecodeError",
    "Decoder",
    "DedupeStep",
    "Event",
    "Expression",
    "FeedOptions",
    "FeedStatistics",
    "FileFilterStore",
    "FileOutbox",
    "Filter",
    "FilterError",
    "FilterStep",
    "Frames",
    "Gap",
    "InternalTransaction",
    "IrisflowError",
    "JoinStatistics",
    "Joined",
    "Key",
    "Late",
    "Level",
    "Log",
    "MigrateReport",
    "MigrationState",
    "NftTransfer",
    "Outbox",
    "OutboxItem",
    "Overflow",
    "Pacer",
    "ParseMode",
    "Pipeline",
    "PipelineConfig",
    "PipelineError",
    "Plan",
    "PostgresOutbox",
    "PostgresOutboxStatistics",
    "Problem",
    "Quote",
    "RawFrame",
    "Recorder",
    "RecordingError",
    "Retraction",
    "Rsi",
    "RsiStep",
    "Rule",
    "RunSpec",
    "RunStatistics",
    "RunStatus",
    "RunSummary",
    "Runner",
    "SampleStep",
    "SavedFilter",
    "SavedFilterStep",
    "SelectStep",
    "SentMessage",
    "Severity",
    "Sink",
    "Spike",
    "SpikeStep",
    "Step",
    "Swap",
    "Telegram",
    "TelegramAuthError",
    "TelegramMessageError",
    "TelegramSettings",
    "TelegramStatistics",
    "TelegramTargetError",
    "Template",
    "ThrottleStep",
    "Ticker",
    "TokenApproval",
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
    "Window",
    "WindowStatistics",
    "WindowStep",
    "WorldError",
    "alert_key",
    "alerts_test",
    "assemble",
    "build_pipeline",
    "build_rules",
    "compile_expression",
    "compile_filter",
    "default_outbox_path",
    "described",
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
    "load_saved_step",
    "migrate",
    "migration_status",
    "open_postgres_outbox",
    "open_telegram",
    "open_websocket",
    "parse_aggregates",
    "parse_pipe",
    "parse_speed",
    "read_recording",
    "read_recordings",
    "redact_dsn",
    "register_venue",
    "resolve_dsn",
    "split_message",
    "store_for",
    "telegram_settings",
    "to_datetime",
    "venue_names",
    "watch_saved",
]
