"""The ``irisflow`` command line: thin Typer commands over the library.

Each command builds its configuration, calls ``trio.run`` once, and turns an
:class:`~irisflow.IrisflowError` into one line on stderr and an exit code (2 for usage
errors, 1 for world errors, 130 after a second Ctrl-C): never a traceback for a user mistake.
"""

from __future__ import annotations

import enum
import functools
import gc
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import trio
import typer

from . import _render
from ._alerting import ALERT_LIST_COLUMNS, alerts_test, telegram_settings
from ._alerting import alerts_list as rules_rows
from ._assemble import RunSpec, assemble
from ._config import Config, load_config
from ._errors import IrisflowError, UsageError
from ._feed import Overflow
from ._pipeline import Pipeline
from ._record import check_readable
from ._rules import build_rules
from ._run import Runner, RunSummary, Sink, parse_speed
from ._storage_cli import (
    configured_dsn,
    filters_add,
    filters_list,
    filters_rm,
    migrate_command,
    require_dsn,
)
from ._venue import FeedOptions, Plan, Venue, VenueParams, get_venue, venue_names
from .sinks.jsonl import JsonLinesSink
from .sinks.table import TableSink

__all__ = ["app", "main", "tune_gc"]

app = typer.Typer(
    name="irisflow",
    help="Live market-data streams: venues in, typed events through a pipeline, results out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Output(enum.StrEnum):
    """Where pipeline output goes."""

    AUTO = "auto"
    TABLE = "table"
    JSONL = "jsonl"
    NONE = "none"


_F = TypeVar("_F", bound=Callable[..., Any])


def _friendly(func: _F) -> _F:
    """Turn irisflow errors into one line on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UsageError as exc:
            _render.error(str(exc))
            raise typer.Exit(2) from None
        except IrisflowError as exc:
            _render.error(str(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a run.

    The per-message path allocates many short-lived objects (parsed dicts, events); CPython's
    default young-generation threshold (700) then scans them every few hundred messages.
    Everything alive at start-up (modules, the plan) is frozen out of future scans.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        sys.stdout.write(f"irisflow {version('irisflow')}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Live market-data streams: venues in, typed events through a pipeline, results out."""


def _split(text: str) -> list[str]:
    return [part for part in (p.strip() for p in text.split(",")) if part]


SECRET_VARIABLES = {
    "polygon": ("api_key", ("POLYGON_API_KEY", "MASSIVE_API_KEY")),
    "alchemy": ("api_key", ("ALCHEMY_API_KEY",)),
    "moralis": ("secret", ("MORALIS_STREAMS_SECRET",)),
}
"""Which environment variables a venue's secret from the config file stands in for."""


def _apply_config_secrets(config: Config) -> None:
    """Venue secrets from the config file, where the environment does not set them.

    The environment wins, so a shared config file need hold no secrets; venues read only the
    environment, so their secrets never travel in plans or reprs.
    """
    for name, venue_config in config.venues.items():
        field, variables = SECRET_VARIABLES.get(name, ("", ()))
        value = getattr(venue_config, field, None) if field else None
        if value and not any(os.environ.get(variable) for variable in variables):
            os.environ[variables[0]] = value


def _defaults(venue: Venue, what: str) -> tuple[str, ...]:
    """A venue's ``default_symbols`` / ``default_channels`` (none, if it names none)."""
    default: tuple[str, ...] = getattr(venue, f"default_{what}", ())
    return default


def _plans(
    venues: list[str],
    symbols: str | None,
    channels: str | None,
    endpoint: str | None,
    params: VenueParams,
    config: Config,
) -> list[Plan]:
    if endpoint is not None and len(venues) > 1:
        raise UsageError("--endpoint applies to one venue; pass a single --venue with it")
    _apply_config_secrets(config)
    plans = []
    seen: set[str] = set()
    for name in venues:
        venue = get_venue(name)
        if venue.name in seen:  # --venue binance --venue BINANCE: once is enough
            continue
        seen.add(venue.name)
        configured = config.venues.get(venue.name)
        where = endpoint or (configured.endpoint if configured else None)
        # Without --symbols/--channels each venue takes its own defaults (Binance: btcusdt
        # and trade, so `irisflow watch --filter 'price>45000'` works as typed).
        syms = _split(symbols) if symbols is not None else list(_defaults(venue, "symbols"))
        chans = _split(channels) if channels is not None else list(_defaults(venue, "channels"))
        plans.append(venue.plan(syms, chans, where, params))
    return plans


def _silence_stdout() -> None:
    """After the reader of stdout went away, send anything still buffered nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _sinks(runner: Runner, output: Output) -> list[Sink]:
    if output is Output.AUTO:
        output = Output.TABLE if _render.stdout_is_terminal() else Output.JSONL
    if output is Output.TABLE:
        return [TableSink(runner.status)]
    if output is Output.JSONL:

        def closed() -> None:
            _silence_stdout()
            runner.stop()

        return [JsonLinesSink(sys.stdout.buffer, on_closed=closed)]
    return []


def _runner(spec: RunSpec, output: Output, *, buffer: int, max_events: int | None) -> Runner:
    """A runner with the checked pipeline, sinks, taps and services of ``spec``."""
    parts = assemble(spec, warn=_render.warn)
    runner = Runner(
        parts.pipeline,
        buffer=buffer,
        max_events=max_events,
        warn=_render.warn,
        taps=parts.taps,
        services=parts.services,
    )
    runner.sinks = [*_sinks(runner, output), *parts.sinks]
    runner.status.notes.extend(parts.notes)
    return runner


def _check_positive(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UsageError(f"{name} must be a positive number of seconds (got {value:g})")


def _finish(summary: RunSummary, *, replay: bool) -> None:
    _render.show_summary(summary, replay=replay)


VenueOpt = Annotated[
    list[str],
    typer.Option("--venue", "-v", help="Venue to connect to (repeatable). See `irisflow venues`."),
]
SymbolsOpt = Annotated[
    str | None,
    typer.Option(
        "--symbols",
        "-s",
        help="Comma-separated symbols, any case, e.g. btcusdt,ethusdt (Binance default: btcusdt).",
    ),
]
ChannelsOpt = Annotated[
    str | None,
    typer.Option(
        "--channels",
        "-c",
        help="Comma-separated channels, e.g. trade,bookTicker (default: trade, or the venue's).",
    ),
]
FilterOpt = Annotated[
    list[str],
    typer.Option("--filter", "-f", help="Keep events matching EXPR (repeatable: all must hold)."),
]
OutputOpt = Annotated[
    Output,
    typer.Option(
        "--output", "-o", help="table on a terminal, JSON lines when piped (auto), or none."
    ),
]
MaxEventsOpt = Annotated[
    int | None, typer.Option("--max-events", help="Stop after N output events.", min=1)
]
DurationOpt = Annotated[
    float | None, typer.Option("--duration", help="Stop after this many seconds.")
]
EndpointOpt = Annotated[
    str | None,
    typer.Option("--endpoint", help="Venue websocket address (a mirror or a local server)."),
]
BufferOpt = Annotated[
    int,
    typer.Option("--buffer", help="Capacity of each channel, in socket reads.", min=1, max=100_000),
]
StaleOpt = Annotated[
    float, typer.Option("--stale-timeout", help="Reconnect after this many silent seconds.")
]
MarketOpt = Annotated[
    str | None,
    typer.Option("--market", help="Polygon/Massive market: crypto, stocks, forex or options."),
]
DelayedOpt = Annotated[
    bool, typer.Option("--delayed", help="Polygon/Massive: the delayed feed, not real time.")
]
NetworkOpt = Annotated[
    str | None, typer.Option("--network", help="Alchemy network, e.g. eth-mainnet.")
]
ListenOpt = Annotated[
    str | None,
    typer.Option("--listen", help="HOST:PORT a webhook venue (Moralis) listens on."),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="The config file (default: irisflow.toml in the user's config directory).",
    ),
]
PipeOpt = Annotated[
    list[str],
    typer.Option(
        "--pipe",
        help="Pipeline steps, e.g. 'by symbol | window 1m | agg vwap, count' (repeatable).",
    ),
]
PipelineOpt = Annotated[
    str | None, typer.Option("--pipeline", help="Run the named pipeline from the config file.")
]
SavedOpt = Annotated[
    list[str],
    typer.Option("--saved", help="Apply a saved filter; changes to it apply live (repeatable)."),
]
AlertOpt = Annotated[
    list[str],
    typer.Option(
        "--alert",
        help="Alert when CONDITION becomes true, e.g. 'price > 45000; cooldown=5m' (repeatable).",
    ),
]
TelegramChatOpt = Annotated[
    str | None,
    typer.Option("--telegram-chat", help="Default Telegram chat id for alerts."),
]
TelegramUrlOpt = Annotated[
    str | None,
    typer.Option("--telegram-api-url", help="Another Bot API server (a local one)."),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Store into PostgreSQL: --db alone uses the configured database, --db DSN another.",
    ),
]
StoreOpt = Annotated[
    str,
    typer.Option("--store", help="With --db: output (the pipeline's output) or all (every event)."),
]
OverflowOpt = Annotated[
    Overflow,
    typer.Option(
        "--overflow", help="When the pipeline falls behind: block (backpressure) or drop (counted)."
    ),
]


@app.command()
@_friendly
def watch(
    venue: VenueOpt = ["binance"],  # noqa: B006  (Typer reads the default)
    symbols: SymbolsOpt = None,
    channels: ChannelsOpt = None,
    filter: FilterOpt = [],  # noqa: B006
    output: OutputOpt = Output.AUTO,
    max_events: MaxEventsOpt = None,
    duration: DurationOpt = None,
    record: Annotated[
        Path | None, typer.Option("--record", help="Also write every frame heard to FILE.")
    ] = None,
    endpoint: EndpointOpt = None,
    buffer: BufferOpt = 16,
    stale_timeout: StaleOpt = 30.0,
    overflow: OverflowOpt = Overflow.BLOCK,
    market: MarketOpt = None,
    delayed: DelayedOpt = False,
    network: NetworkOpt = None,
    listen: ListenOpt = None,
    config: ConfigOpt = None,
    pipe: PipeOpt = [],  # noqa: B006
    pipeline: PipelineOpt = None,
    saved: SavedOpt = [],  # noqa: B006
    alert: AlertOpt = [],  # noqa: B006
    telegram_chat: TelegramChatOpt = None,
    telegram_api_url: TelegramUrlOpt = None,
    db: DbOpt = None,
    store: StoreOpt = "output",
) -> None:
    """Watch live venue streams through filters, as a table or JSON lines."""
    _check_positive("--duration", duration)
    _check_positive("--stale-timeout", stale_timeout)
    settings = load_config(config)
    params = VenueParams(market=market, network=network, listen=listen, delayed=delayed)
    plans = _plans(venue, symbols, channels, endpoint, params, settings)
    spec = RunSpec(
        kinds=frozenset().union(*(p.kinds for p in plans)),
        config=settings,
        filters=tuple(filter),
        pipes=tuple(pipe),
        pipeline=pipeline,
        saved=tuple(saved),
        alerts=tuple(alert),
        telegram_chat=telegram_chat,
        telegram_api_url=telegram_api_url,
        db=db,
        store=store,
    )
    runner = _runner(spec, output, buffer=buffer, max_events=max_events)
    runner.duration = duration
    runner.record = record
    options = FeedOptions(stale_timeout=stale_timeout, overflow=overflow)
    tune_gc()
    summary = trio.run(functools.partial(runner.watch, plans, options))
    _finish(summary, replay=False)


@app.command("record")
@_friendly
def record_(
    file: Annotated[Path, typer.Argument(help="Where to write the recording (JSON lines).")],
    venue: VenueOpt = ["binance"],  # noqa: B006
    symbols: SymbolsOpt = None,
    channels: ChannelsOpt = None,
    duration: DurationOpt = None,
    endpoint: EndpointOpt = None,
    buffer: BufferOpt = 16,
    stale_timeout: StaleOpt = 30.0,
    market: MarketOpt = None,
    delayed: DelayedOpt = False,
    network: NetworkOpt = None,
    listen: ListenOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Record venue streams to FILE without showing them (Ctrl-C to stop)."""
    _check_positive("--duration", duration)
    settings = load_config(config)
    params = VenueParams(market=market, network=network, listen=listen, delayed=delayed)
    plans = _plans(venue, symbols, channels, endpoint, params, settings)
    runner = Runner(Pipeline(), buffer=buffer, duration=duration, record=file, warn=_render.warn)
    options = FeedOptions(stale_timeout=stale_timeout)
    tune_gc()
    summary = trio.run(functools.partial(runner.watch, plans, options))
    _render.stderr_console().print(
        f"irisflow: recorded {summary.frames:,} frames to {file} in {summary.elapsed:.1f}s"
    )


@app.command()
@_friendly
def replay(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Recordings (several are merged by receive time), or files of bare venue frames.",
            metavar="FILE",
        ),
    ],
    venue: Annotated[
        str | None,
        typer.Option("--venue", "-v", help="The venue of files of bare frames (one per line)."),
    ] = None,
    filter: FilterOpt = [],  # noqa: B006
    output: OutputOpt = Output.AUTO,
    speed: Annotated[
        str, typer.Option("--speed", help="max (default), realtime, or a factor such as 10x.")
    ] = "max",
    strict: Annotated[
        bool, typer.Option("--strict", help="Stop at the first corrupt line instead of skipping.")
    ] = False,
    max_events: MaxEventsOpt = None,
    buffer: BufferOpt = 16,
    config: ConfigOpt = None,
    pipe: PipeOpt = [],  # noqa: B006
    pipeline: PipelineOpt = None,
    saved: SavedOpt = [],  # noqa: B006
    alert: AlertOpt = [],  # noqa: B006
    telegram_chat: TelegramChatOpt = None,
    telegram_api_url: TelegramUrlOpt = None,
    db: DbOpt = None,
    store: StoreOpt = "output",
) -> None:
    """Replay recordings through the same decoders, filters and outputs as a live run."""
    pace = parse_speed(speed)
    if venue is not None:
        get_venue(venue)  # a typo is reported before the file is read
    for path in files:  # a missing file is named before anything (a database) is touched
        check_readable(path)
    spec = RunSpec(
        kinds=_replay_kinds(venue),
        config=load_config(config),
        filters=tuple(filter),
        pipes=tuple(pipe),
        pipeline=pipeline,
        saved=tuple(saved),
        alerts=tuple(alert),
        telegram_chat=telegram_chat,
        telegram_api_url=telegram_api_url,
        db=db,
        store=store,
    )
    runner = _runner(spec, output, buffer=buffer, max_events=max_events)
    runner.strict = strict
    tune_gc()
    summary = trio.run(functools.partial(runner.replay, files, venue=venue, speed=pace))
    _finish(summary, replay=True)


def _replay_kinds(venue: str | None) -> frozenset[type[Any]]:
    """Every kind the venue (or, for recordings, any venue) can produce."""
    from ._events import KINDS

    names = [venue] if venue is not None else venue_names()
    kinds: set[type[Any]] = set()
    for name in names:
        for info in get_venue(name).channel_info():
            kinds.update(KINDS[k] for k in info.kinds)
    return frozenset(kinds)


@app.command()
@_friendly
def venues(
    name: Annotated[
        str | None, typer.Argument(help="Show one venue with its event fields.")
    ] = None,
) -> None:
    """List venues with their channels and event kinds (and fields, for one venue)."""
    chosen = [get_venue(name)] if name else [get_venue(n) for n in venue_names()]
    _render.show_venues(chosen, detail=name is not None)


# -- storage ---------------------------------------------------------------------------------


@app.command()
@_friendly
def migrate(
    dsn: Annotated[
        str | None,
        typer.Option(
            "--dsn",
            help="The database (else IRISFLOW_DATABASE_URL, DATABASE_URL, .env, the config).",
        ),
    ] = None,
    to: Annotated[int | None, typer.Option("--to", help="Apply up to migration N only.")] = None,
    status: Annotated[
        bool, typer.Option("--status", help="Show each migration's state; change nothing.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be applied; change nothing.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Create or upgrade irisflow's tables in PostgreSQL (TimescaleDB when available)."""
    target = require_dsn(dsn, load_config(config))
    _render.show_lines(migrate_command(target, to=to, status=status, dry_run=dry_run))


filters_app = typer.Typer(
    name="filters",
    help="Saved filters: named filters that running watches pick up live.",
    no_args_is_help=True,
)
app.add_typer(filters_app)


@filters_app.command("add")
@_friendly
def filters_add_(
    name: Annotated[str, typer.Argument(help="The filter's name.")],
    expr: Annotated[str, typer.Argument(help="The filter expression, e.g. 'price > 45000'.")],
    venue: Annotated[
        list[str], typer.Option("--venue", "-v", help="Only events of this venue (repeatable).")
    ] = [],  # noqa: B006
    symbols: Annotated[
        str | None, typer.Option("--symbols", "-s", help="Only these symbols (comma-separated).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Save (or replace) a filter; it is checked before it is saved."""
    dsn = configured_dsn(None, load_config(config))
    lines = filters_add(dsn, name, expr, venues=venue, symbols=_split(symbols) if symbols else ())
    _render.show_lines(lines)


@filters_app.command("list")
@_friendly
def filters_list_(config: ConfigOpt = None) -> None:
    """List saved filters."""
    rows = filters_list(configured_dsn(None, load_config(config)))
    _render.show_rows(["name", "expr", "venues", "symbols", "updated_at"], rows)


@filters_app.command("rm")
@_friendly
def filters_rm_(
    name: Annotated[str, typer.Argument(help="The filter to remove.")],
    config: ConfigOpt = None,
) -> None:
    """Remove a saved filter (running watches drop it within a second)."""
    _render.show_lines(filters_rm(configured_dsn(None, load_config(config)), name))


# -- alerts ----------------------------------------------------------------------------------

alerts_app = typer.Typer(
    name="alerts", help="Alert rules and their Telegram delivery.", no_args_is_help=True
)
app.add_typer(alerts_app)


@alerts_app.command("test")
@_friendly
def alerts_test_(
    chat: Annotated[
        str | None, typer.Option("--chat", help="The chat to test (default: the default chat).")
    ] = None,
    telegram_api_url: TelegramUrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Send one test message to Telegram, to check the token and the chat."""
    settings = telegram_settings(
        load_config(config), chat=chat, api_url=telegram_api_url, required=True
    )
    _render.show_lines([trio.run(alerts_test, settings, chat)])


@alerts_app.command("list")
@_friendly
def alerts_list_(
    alert: AlertOpt = [],  # noqa: B006
    config: ConfigOpt = None,
) -> None:
    """List the alert rules: the config file's, and any given with --alert."""
    rules = build_rules(alert, load_config(config))
    _render.show_rows(
        list(ALERT_LIST_COLUMNS),
        [dict(zip(ALERT_LIST_COLUMNS, r, strict=True)) for r in rules_rows(rules)],
    )


def _optional_db_value(args: list[str]) -> list[str]:
    """Let ``--db`` stand alone: ``--db`` means the configured database, ``--db DSN`` another.

    Typer options take a value, so a bare ``--db`` becomes ``--db=`` (an empty DSN). What
    follows ``--db`` is its value only when it looks like a connection string (a URL, or
    ``key=value`` pairs), so ``replay --db file.jsonl`` still reads the file.
    """
    out: list[str] = []
    for index, arg in enumerate(args):
        if arg == "--db":
            following = args[index + 1] if index + 1 < len(args) else ""
            if following.startswith("-") or ("://" not in following and "=" not in following):
                out.append("--db=")
                continue
        out.append(arg)
    return out


def main() -> None:
    """Entry point of the ``irisflow`` console script."""
    app(args=_optional_db_value(sys.argv[1:]), prog_name="irisflow")
