"""The ``irisflow`` command line: thin Typer commands over the library.

Each command builds its configuration, calls ``trio.run`` once, and turns an
:class:`~irisflow.IrisflowError` into one line on stderr and an exit code (2 for usage
errors, 1 for world errors, 130 after a second Ctrl-C): never a traceback for a user mistake.
"""

from __future__ import annotations

import enum
import functools
import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import trio
import typer

from . import _render
from ._config import Config, load_config
from ._errors import IrisflowError, UsageError
from ._feed import Overflow
from ._pipeline import Pipeline
from ._run import Runner, RunSummary, Sink, parse_speed
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
    "polygon": ("api_key", "POLYGON_API_KEY"),
    "alchemy": ("api_key", "ALCHEMY_API_KEY"),
    "moralis": ("secret", "MORALIS_STREAMS_SECRET"),
}
"""Which environment variable a venue's secret from the config file stands in for."""


def _apply_config_secrets(config: Config) -> None:
    """Venue secrets from the config file, where the environment does not set them.

    The environment wins, so a shared config file need hold no secrets; venues read only the
    environment, so their secrets never travel in plans or reprs.
    """
    for name, venue_config in config.venues.items():
        field, variable = SECRET_VARIABLES.get(name, ("", ""))
        value = getattr(venue_config, field, None) if field else None
        if value and not os.environ.get(variable):
            os.environ[variable] = value


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
    for name in venues:
        venue = get_venue(name)
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


def _check_positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"{name} must be positive (got {value:g})")


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
) -> None:
    """Watch live venue streams through filters, as a table or JSON lines."""
    _check_positive("--duration", duration)
    _check_positive("--stale-timeout", stale_timeout)
    settings = load_config(config)
    params = VenueParams(market=market, network=network, listen=listen, delayed=delayed)
    plans = _plans(venue, symbols, channels, endpoint, params, settings)
    kinds = frozenset().union(*(p.kinds for p in plans))
    pipeline = Pipeline.from_filters(filter, kinds)  # checked before anything connects
    runner = Runner(
        pipeline,
        buffer=buffer,
        max_events=max_events,
        duration=duration,
        record=record,
        warn=_render.warn,
    )
    runner.sinks = _sinks(runner, output)
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
    file: Annotated[Path, typer.Argument(help="A recording, or a file of bare venue frames.")],
    venue: Annotated[
        str | None,
        typer.Option("--venue", "-v", help="The venue of a file of bare frames (one per line)."),
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
) -> None:
    """Replay a recording through the same decoders, filters and outputs as a live run."""
    pace = parse_speed(speed)
    if venue is not None:
        get_venue(venue)  # a typo is reported before the file is read
    kinds = _replay_kinds(venue)
    pipeline = Pipeline.from_filters(filter, kinds)
    runner = Runner(
        pipeline, buffer=buffer, max_events=max_events, strict=strict, warn=_render.warn
    )
    runner.sinks = _sinks(runner, output)
    tune_gc()
    summary = trio.run(functools.partial(runner.replay, file, venue=venue, speed=pace))
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


def main() -> None:
    """Entry point of the ``irisflow`` console script."""
    app()
