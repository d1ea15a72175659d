"""Everything irisflow shows a person. Rich lives here and nowhere else.

Data goes to stdout, diagnostics to stderr. ``NO_COLOR`` is honoured (Rich reads it).
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import attrs
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from ._events import (
    Book,
    BookUpdate,
    Candle,
    Event,
    Gap,
    Quote,
    Ticker,
    Trade,
    field_doc,
    is_time_field,
)
from ._feed import ConnectionState
from ._jsonl import iso_time

__all__ = [
    "LiveView",
    "TableState",
    "error",
    "live_display",
    "show_summary",
    "show_venues",
    "stderr_console",
    "warn",
]

_stderr: Console | None = None


def stderr_console() -> Console:
    """The console for diagnostics (stderr)."""
    global _stderr
    if _stderr is None:
        _stderr = Console(stderr=True, highlight=False, soft_wrap=True)
    return _stderr


def error(message: str) -> None:
    """Show an error: ``irisflow: error: <message>`` on stderr."""
    stderr_console().print(f"[bold red]irisflow: error:[/] {escape(message)}")


def warn(message: str) -> None:
    """Show a warning on stderr."""
    stderr_console().print(f"[yellow]irisflow:[/] {escape(message)}")


# -- the live table ------------------------------------------------------------------------


@attrs.define
class TableState:
    """What the live table shows, updated by the table sink as events come out."""

    latest: collections.deque[Event] = attrs.field(factory=lambda: collections.deque(maxlen=20))
    symbols: dict[tuple[str, str], list[Any]] = attrs.field(factory=dict)
    """(venue, symbol) -> [last price, events seen]."""
    alerts: collections.deque[Event] = attrs.field(factory=lambda: collections.deque(maxlen=8))
    """The latest alerts, for the alert panel."""

    def add(self, events: Sequence[Event]) -> None:
        """Fold a batch of output events into the view."""
        self.latest.extend(events)
        symbols = self.symbols
        for event in events:
            if event.__class__ is Gap:
                continue
            if event.kind == "alert":
                self.alerts.append(event)
                continue
            key = (event.venue, event.symbol)
            row = symbols.get(key)
            if row is None:
                row = symbols[key] = [None, 0]
            price = _price_of(event)
            if price is not None:
                row[0] = price
            row[1] += 1


def _price_of(event: Event) -> Decimal | None:
    if isinstance(event, Trade):
        return event.price
    if isinstance(event, Candle):
        return event.close
    if isinstance(event, Ticker):
        return event.last
    if isinstance(event, Quote):
        return (event.bid_price + event.ask_price) / 2
    return None


def _details(event: Event) -> str:
    if isinstance(event, Trade):
        return f"{event.side:4} {event.qty} @ {event.price}"
    if isinstance(event, Quote):
        return f"bid {event.bid_qty} @ {event.bid_price}  ask {event.ask_qty} @ {event.ask_price}"
    if isinstance(event, Candle):
        state = "closed" if event.closed else "open"
        return (
            f"{event.interval} o {event.open} h {event.high} l {event.low} c {event.close} "
            f"v {event.volume} ({state})"
        )
    if isinstance(event, Ticker):
        return f"last {event.last} h {event.high} l {event.low} v {event.volume}"
    if isinstance(event, Book | BookUpdate):
        bid = event.bids[0] if event.bids else None
        ask = event.asks[0] if event.asks else None
        top = f"bid {bid[1]} @ {bid[0]}" if bid else "no bids"
        top += f"  ask {ask[1]} @ {ask[0]}" if ask else "  no asks"
        return f"{len(event.bids)}x{len(event.asks)} levels, {top}"
    if isinstance(event, Gap):
        seconds = (event.end - event.start) / 1e9
        return f"GAP {seconds:.1f}s in {len(event.streams)} streams: {event.cause}"
    cls = type(event)
    shown = []
    for field in attrs.fields(cls)[4:]:  # after venue, symbol, ts, recv_ts
        value = getattr(event, field.name)
        if value is None:
            continue
        if is_time_field(cls, field.name) and isinstance(value, int):
            value = iso_time(value)[11:23]
        shown.append(f"{field.name} {value}")
    return "  ".join(shown)


@attrs.define
class LiveView:
    """Renders the run status, the latest events and per-symbol figures as one Rich group."""

    state: TableState
    status: Any  # irisflow._run.RunStatus (not imported: _run does not depend on _render)
    _last: tuple[float, int, int] = (0.0, 0, 0)
    _rates: tuple[float, float] = (0.0, 0.0)

    def render(self) -> Group:
        """The whole screen: status, alerts (once there are any), events, symbols."""
        parts: list[Any] = [self._header()]
        if self.state.alerts:
            parts.append(self._alerts())
        parts += [self._events(), self._symbols()]
        return Group(*parts)

    def _alerts(self) -> Table:
        table = Table(title="alerts", title_justify="left", title_style="bold")
        for name in ("time (UTC)", "rule", "severity", "symbol", "message"):
            table.add_column(name, no_wrap=name != "message")
        colours = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
        for alert in reversed(self.state.alerts):
            severity = str(getattr(alert, "severity", ""))
            count = getattr(alert, "count", 1)
            text = str(getattr(alert, "text", ""))
            table.add_row(
                iso_time(alert.ts)[11:23],
                escape(str(getattr(alert, "rule", ""))),
                f"[{colours.get(severity, 'white')}]{severity}[/]",
                escape(alert.symbol),
                escape(text if count == 1 else f"({count}x) {text}"),
            )
        return table

    def _header(self) -> Table:
        status = self.status
        now = time.monotonic()
        then, frames, emitted = self._last
        if now - then >= 1.0:
            if then:
                dt = now - then
                self._rates = ((status.frames - frames) / dt, (status.emitted - emitted) / dt)
            self._last = (now, status.frames, status.emitted)
        rate_in, rate_out = self._rates
        feeds = status.feeds
        states = collections.Counter(f.state for f in feeds)
        if not feeds:
            state = "replay"
        elif states.get(ConnectionState.LIVE) == len(feeds):
            state = "[green]live[/]"
        else:
            state = ", ".join(f"{n} {s.value}" for s, n in states.items())
        header = Table.grid(padding=(0, 2))
        header.add_row(
            f"[bold]irisflow[/] {escape(status.source)}",
            f"state {state}",
            f"in {rate_in:,.0f} msg/s",
            f"out {rate_out:,.0f} ev/s",
            f"queue {status.channel_depth()}",
            f"drops {sum(f.dropped for f in feeds)}",
            f"reconnects {sum(f.reconnects for f in feeds)}",
            f"gaps {status.gaps}",
            f"skipped {status.problems}",
            *(escape(note()) for note in status.notes),
        )
        return header

    def _events(self) -> Table:
        table = Table(title="latest events", title_justify="left")
        for name in ("time (UTC)", "venue", "symbol", "kind", "details"):
            table.add_column(name, no_wrap=name != "details")
        for event in reversed(self.state.latest):
            style = "red" if isinstance(event, Gap) else None
            table.add_row(
                iso_time(event.ts)[11:23],
                event.venue,
                event.symbol,
                event.kind,
                escape(_details(event)),
                style=style,
            )
        return table

    def _symbols(self) -> Table:
        table = Table(title="by symbol", title_justify="left")
        for name in ("venue", "symbol", "last price", "events"):
            table.add_column(name, justify="right" if name in ("last price", "events") else "left")
        for (venue, symbol), (price, count) in sorted(self.state.symbols.items()):
            table.add_row(venue, symbol, "" if price is None else str(price), f"{count:,}")
        return table


@contextmanager
def live_display(view: LiveView) -> Iterator[Live]:
    """A Rich Live display of ``view`` on stdout, refreshed by the caller (at most 10 Hz)."""
    console = Console(highlight=False)
    with Live(view.render(), console=console, auto_refresh=False, transient=False) as live:
        yield live


# -- one-shot outputs ------------------------------------------------------------------------


def show_venues(venues: Sequence[Any], detail: bool) -> None:
    """``irisflow venues [NAME]``: venues, channels, kinds and (with a name) their fields."""
    from ._events import KINDS

    console = Console(highlight=False)
    for venue in venues:
        table = Table(title=f"{venue.name}: {venue.title}", title_justify="left")
        table.add_column("channel")
        table.add_column("kinds")
        table.add_column("what it carries")
        for info in venue.channel_info():
            # Channel syntax has brackets (logs[:<topic0>[/<topic1>...]]): not Rich markup.
            table.add_row(escape(info.name), ", ".join(info.kinds), escape(info.doc))
        console.print(table)
        creds = ", ".join(venue.credentials) if venue.credentials else "none"
        console.print(f"endpoint {venue.default_endpoint}; credentials: {creds}\n")
        if not detail:
            continue
        kinds = sorted({k for info in venue.channel_info() for k in info.kinds} | {"gap"})
        for kind in kinds:
            cls = KINDS[kind]
            fields = Table(title=f"{kind} events", title_justify="left")
            fields.add_column("field")
            fields.add_column("type")
            fields.add_column("meaning")
            for field in attrs.fields(cls):
                fields.add_row(field.name, _type_name(field.type), field_doc(cls, field.name))
            console.print(fields)


def _type_name(tp: Any) -> str:
    text = tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))
    return str(text).replace("Decimal", "decimal").replace("tuple[Level, ...]", "list of levels")


def show_summary(summary: Any, *, replay: bool) -> None:
    """The closing report on stderr: counts, and what was skipped with where."""
    console = stderr_console()
    for note in summary.notes:
        console.print(f"[yellow]irisflow:[/] {escape(note)}")
    if summary.problem_count:
        noun = "lines" if replay else "frames"
        console.print(f"[yellow]irisflow:[/] skipped {summary.problem_count} corrupt {noun}:")
        for problem in summary.problems[:20]:
            console.print(f"  {escape(problem.where)}: {escape(problem.message)}")
        if summary.problem_count > 20:
            console.print(f"  ... and {summary.problem_count - 20} more")


def show_lines(lines: Sequence[str]) -> None:
    """Plain result lines on stdout (``migrate``, ``filters add``, ``alerts test``)."""
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()


def show_rows(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Rows as a table on a terminal, as JSON lines otherwise (data goes to stdout)."""
    if not stdout_is_terminal():
        import orjson

        for row in rows:
            sys.stdout.write(orjson.dumps(row, default=str).decode() + "\n")
        sys.stdout.flush()
        return
    table = Table()
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(escape(_cell(row.get(column))) for column in columns))
    console = Console(highlight=False)
    console.print(table if rows else "nothing to show")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def stdout_is_terminal() -> bool:
    """Whether stdout is an interactive terminal (then the table is the default output)."""
    return sys.stdout.isatty()
