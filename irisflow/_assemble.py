"""Everything a ``watch`` or ``replay`` needs besides its source, built and checked up front.

The CLI gathers the options into a :class:`RunSpec`; :func:`assemble` turns it into a pipeline
and the runner's sinks, taps and services, in this order: ``--filter``s, ``--saved`` filters,
the ``--pipeline NAME`` and ``--pipe`` steps, then the alert rules; the database sink (or tap,
with ``--store all``) and the alert sink. Every mistake (a filter typo, an unknown saved
filter, a rule naming a field the stream lacks, no database) is found here, before anything
connects.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import attrs

from ._alerting import AlertSink, telegram_settings
from ._config import Config
from ._errors import UsageError
from ._events import Event
from ._pipe import build_pipeline
from ._pipeline import Pipeline
from ._rule_step import AlertStep
from ._rules import build_rules
from ._run import Sink
from ._storage_cli import configured_dsn, require_dsn, saved_filters_for_run, store_sinks
from .sinks.postgres import PostgresSink

__all__ = ["Assembly", "RunSpec", "assemble"]


@attrs.frozen
class RunSpec:
    """What the user asked a run to do, as typed."""

    kinds: frozenset[type[Event]]
    """The event kinds the source can produce."""
    config: Config = attrs.field(factory=Config)
    """The loaded config file."""
    filters: tuple[str, ...] = ()
    """``--filter`` expressions (all must hold)."""
    pipes: tuple[str, ...] = ()
    """``--pipe`` texts, in order."""
    pipeline: str | None = None
    """``--pipeline NAME`` from the config file."""
    saved: tuple[str, ...] = ()
    """``--saved NAME`` filters."""
    alerts: tuple[str, ...] = ()
    """``--alert`` rules."""
    telegram_chat: str | None = None
    """``--telegram-chat``."""
    telegram_api_url: str | None = None
    """``--telegram-api-url``."""
    db: str | None = None
    """``--db``: None (nothing stored), '' (the configured database) or a DSN."""
    store: str = "output"
    """``--store``: ``output`` (the pipeline's output) or ``all`` (every decoded event)."""


@attrs.define
class Assembly:
    """The checked pieces of a run."""

    pipeline: Pipeline
    sinks: list[Sink] = attrs.field(factory=list)
    taps: list[Sink] = attrs.field(factory=list)
    services: list[Callable[[], Awaitable[None]]] = attrs.field(factory=list)
    notes: list[Callable[[], str]] = attrs.field(factory=list)
    """Status texts for the live table (the database's state)."""


def _db_note(sink: PostgresSink) -> str:
    stats = sink.statistics()
    text = f"db {stats.state} {stats.rows_written:,} rows"
    if stats.rows_buffered:
        text += f", {stats.rows_buffered:,} waiting"
    if stats.backpressure:
        text += " (holding the feed back)"
    return text


def assemble(spec: RunSpec, *, warn: Callable[[str], None]) -> Assembly:
    """Build and check the pipeline, sinks, taps and services of a run.

    Raises:
        UsageError: anything the user named does not exist or cannot work on this stream.
        FilterError: a filter or condition does not parse or type-check.
        PipelineError: a ``--pipe`` text or named pipeline cannot work.
        DatabaseError: a database is needed (saved filters in it) and cannot be reached.
    """
    if spec.store.strip().lower() not in ("output", "all"):
        raise UsageError(f"bad --store {spec.store!r}: use output (the pipeline's output) or all")
    pipeline = build_pipeline(spec.filters, (), spec.kinds)
    assembly = Assembly(pipeline)
    stored = spec.db is not None
    dsn = require_dsn(spec.db or None, spec.config) if stored else None
    if spec.saved:
        # Saved filters live in the database when one is configured, else in a local file.
        store_dsn = dsn if stored else configured_dsn(None, spec.config)
        step, service = saved_filters_for_run(
            store_dsn, spec.saved, kinds=pipeline.output_kinds(), warn=warn
        )
        pipeline.steps.append(step)
        assembly.services.append(service)
    if spec.pipes or spec.pipeline:
        steps = build_pipeline(
            (), spec.pipes, pipeline.output_kinds(), config=spec.config, pipeline=spec.pipeline
        )
        pipeline.steps.extend(steps.steps)
    if dsn is not None:
        sinks, taps = store_sinks(dsn, spec.store)
        assembly.sinks.extend(sinks)
        assembly.taps.extend(taps)
        for sink in [*sinks, *taps]:
            if isinstance(sink, PostgresSink):
                assembly.notes.append(functools.partial(_db_note, sink))
    rules = build_rules(spec.alerts, spec.config, pipeline.output_kinds(), warn=warn)
    if rules:
        pipeline.steps.append(AlertStep(rules, kinds=pipeline.output_kinds()))
        settings = telegram_settings(
            spec.config, chat=spec.telegram_chat, api_url=spec.telegram_api_url, rules=rules
        )
        # The outbox lives in the database when one is configured (not only with --db).
        outbox_dsn = dsn if dsn is not None else configured_dsn(None, spec.config)
        if settings is not None or outbox_dsn is not None:
            assembly.sinks.append(AlertSink(settings, dsn=outbox_dsn, warn=warn))
    return assembly
