"""Outputs at the end of a pipeline, one module per sink.

Each sink has ``async run(batches, *, task_status)``: it consumes lists of events from its own
bounded channel until the channel closes, then flushes and returns.
"""

from __future__ import annotations

from .jsonl import JsonLinesSink as JsonLinesSink
from .postgres import PostgresSink as PostgresSink
from .postgres import PostgresSinkStatistics as PostgresSinkStatistics
from .table import TableSink as TableSink
from .telegram import TelegramSink as TelegramSink

__all__ = [
    "JsonLinesSink",
    "PostgresSink",
    "PostgresSinkStatistics",
    "TableSink",
    "TelegramSink",
]
