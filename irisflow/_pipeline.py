"""The pipeline: plain synchronous steps over batches of events (sans-IO).

Nothing here awaits, reads a socket or looks at a clock of its own: sources hand the pipeline
batches, the pipeline hands back what comes out. That is what makes a replay of a recording
produce exactly what the live run produced, and what lets every step be tested without Trio.

A step is anything with ``process(events) -> events``. Steps may also keep time-driven state
(windows, throttles); they get ``advance(now_ns)`` calls with the receive clock, and return
what the passing of time releases. A step may have ``flush() -> events`` for the end of the
stream, and ``output_kinds``: the event classes it emits, so later steps can be type-checked.

:class:`Pipeline` is also the builder of the Python API; every method returns a new pipeline
with one more step, type-checked against the kinds that reach it::

    Pipeline(kinds={Trade}).filter("price > 45000").key_by("symbol")
        .window(tumbling="1m").agg(Agg.vwap(), Agg.ohlc(), Agg.count())

The same vocabulary as text, for ``--pipe`` and ``irisflow.toml``, is in ``_pipe.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import ClassVar, Literal, Protocol

import attrs

from ._aggregates import Aggregate, parse_aggregates
from ._bars import BarStep
from ._events import KINDS, Event, Gap
from ._filter import Filter, compile_filter
from ._join import AsofJoinStep
from ._reorg import MARK_CLASSES, Passed, carries_chain
from ._steps import (
    DedupeStep,
    Key,
    PipelineError,
    SampleStep,
    SelectStep,
    ThrottleStep,
    condition,
    error,
    parse_duration,
    split_top,
    sub,
)
from ._trackers import RsiStep, SpikeStep
from ._windows import WindowStep

__all__ = ["FilterStep", "Pipeline", "Step"]


class Step(Protocol):
    """One stage of a pipeline."""

    def process(self, events: list[Event]) -> list[Event]:
        """Take a batch, return what passes on (may be the same list, may be empty)."""
        ...

    def advance(self, now: int) -> list[Event]:
        """The receive clock moved to ``now`` (ns): return anything that is now due."""
        ...


def _always(event: Event) -> bool:
    return True


def _never(event: Event) -> bool:
    return False


@attrs.define
class FilterStep:
    """Keep the events every filter accepts. Gap events always pass: holes stay visible.

    When the filters can pass on-chain kinds, a retraction or confirmation also passes if it
    names an event the step passed (the latest :data:`~irisflow._reorg.REORG_MEMORY`), so
    ``filter kind == 'swap'`` lets the retractions of its swaps through to later steps.
    """

    timed: ClassVar[bool] = False
    """Filters keep no time-driven state: the runner need not wake them when idle."""

    filters: tuple[Filter, ...]
    output_kinds: frozenset[type[Event]] | None = attrs.field(init=False, default=None)
    _tables: list[dict[type[Event], Callable[[Event], bool]]] = attrs.field(init=False)
    _passed: Passed | None = attrs.field(init=False, default=None)
    """With on-chain kinds: the keys of the events passed, for their retractions."""

    def __attrs_post_init__(self) -> None:
        # One class -> predicate table per filter, built once: the per-event cost is a dict
        # subscript and the bare predicate, with no method call around it.
        self._tables = []
        for predicate in self.filters:
            classes = [*KINDS.values(), *predicate.kinds]
            table = {cls: predicate.predicate_for(cls) or _never for cls in classes}
            table[Gap] = _always
            self._tables.append(table)
        if self.filters:
            passing = frozenset.intersection(*(f.kinds for f in self.filters))
            self.output_kinds = passing | {Gap}
            if carries_chain(passing):
                self._passed = Passed()
                self.output_kinds |= MARK_CLASSES

    def process(self, events: list[Event]) -> list[Event]:
        """The events all filters accept, plus every gap (and the marks of what passed)."""
        if self._passed is not None:
            return self._passed.follow(events, self._filter(events))
        return self._filter(events)

    def _filter(self, events: list[Event]) -> list[Event]:
        for table, predicate in zip(self._tables, self.filters, strict=True):
            try:
                events = [e for e in events if table[e.__class__](e)]
            except KeyError:  # a class the table has not met (registered or built later)
                for event in events:
                    cls = event.__class__
                    if cls not in table:
                        table[cls] = predicate.predicate_for(cls) or _never
                events = [e for e in events if table[e.__class__](e)]
        return events

    def advance(self, now: int) -> list[Event]:
        """Filters keep no time-driven state."""
        return []


_Duration = str | int


def _as_kinds(kinds: Iterable[type[Event]] | None) -> frozenset[type[Event]] | None:
    return None if kinds is None else frozenset(kinds)


DEFAULT_LATENESS = "1s"
"""How far behind the newest event time (of any key) an event may be and still count in a
window when ``lateness`` is not given: several symbols' events in one socket read, or a little
network jitter, must not be dropped as late. ``lateness 0`` turns it off."""


def _optional_duration(value: _Duration, what: str) -> int:
    """A duration that may be zero (``0``, ``'0'``, ``'0s'``): ns."""
    if not value or str(value).strip().rstrip("smunµ") in ("0", ""):
        return 0
    return parse_duration(value, what)


@attrs.define
class Pipeline:
    """A chain of steps; what one step returns is the next one's input.

    Args:
        steps: The steps, in order.
        kinds: The event classes that enter the pipeline (default: every registered kind);
            builder methods type-check against them.
    """

    steps: list[Step] = attrs.field(factory=list)
    kinds: frozenset[type[Event]] | None = attrs.field(
        default=None, kw_only=True, converter=_as_kinds
    )
    _key: Key | None = attrs.field(default=None, init=False)

    @classmethod
    def from_filters(cls, texts: Iterable[str], kinds: Iterable[type[Event]]) -> Pipeline:
        """A pipeline of one filter step (all filters must hold), checked against ``kinds``.

        Raises:
            FilterError: a filter does not parse or cannot match any of ``kinds``.
        """
        kinds = tuple(kinds)
        filters = tuple(compile_filter(text, kinds) for text in texts)
        return cls([FilterStep(filters)] if filters else [], kinds=frozenset(kinds))

    # -- running

    def process(self, events: list[Event]) -> list[Event]:
        """Run a batch through every step."""
        for step in self.steps:
            if not events:
                break
            events = step.process(events)
        return events

    @property
    def timed(self) -> bool:
        """Whether any step keeps time-driven state (steps say ``timed = False`` if not)."""
        return any(getattr(step, "timed", True) for step in self.steps)

    def advance(self, now: int) -> list[Event]:
        """Let time-driven steps release what is due; the output runs through later steps."""
        out: list[Event] = []
        for step in self.steps:
            if out:
                out = step.process(out)
            out.extend(step.advance(now))
        return out

    def flush(self) -> list[Event]:
        """The stream ended: steps release what they hold (open windows come out incomplete).

        Call it once, after the last batch; the output runs through later steps.
        """
        out: list[Event] = []
        for step in self.steps:
            if out:
                out = step.process(out)
            flush = getattr(step, "flush", None)
            if flush is not None:
                out.extend(flush())
        return out

    # -- building

    def output_kinds(self) -> frozenset[type[Event]]:
        """The event classes that come out of the pipeline as built so far.

        That is the ``output_kinds`` of the last step that has them; a step without them
        (your own, say) is taken to pass on what it gets. With no such step: the input kinds,
        or every registered kind. Gaps are always among them.
        """
        for step in reversed(self.steps):
            kinds = getattr(step, "output_kinds", None)
            if kinds is not None:
                return frozenset(kinds) | {Gap}
        base = self.kinds if self.kinds is not None else KINDS.values()
        return frozenset(base) | {Gap}

    def _then(
        self, step: Step, *, key: Key | Literal["keep"] | None = "keep", replace: bool = False
    ) -> Pipeline:
        steps = [*self.steps[:-1]] if replace else [*self.steps]
        new = Pipeline([*steps, step], kinds=self.kinds)
        new._key = self._key if key == "keep" else key
        return new

    def _key_after(self, kinds: Iterable[type[Event]]) -> Key | None:
        """After a step whose results carry ``key``, later keyed steps key on it."""
        return Key.compile(["key"], kinds) if self._key is not None else None

    def _key_fn(self) -> Callable[[Event], str] | None:
        return None if self._key is None else self._key.of

    def then(self, step: Step) -> Pipeline:
        """Append any step object (your own, for instance)."""
        return self._then(step)

    def pipe(self, text: str) -> Pipeline:
        """Append the steps of a text in ``--pipe`` syntax, e.g. ``"by symbol | window 1m"``.

        Raises:
            PipelineError, FilterError: as ``parse_pipe``.
        """
        from ._pipe import apply_pipe  # the text form builds on this class

        return apply_pipe(self, text)

    def filter(self, *texts: str) -> Pipeline:
        """Keep events that pass every filter (gaps always pass).

        Raises:
            FilterError: a filter does not parse or type-check against the kinds here.
        """
        kinds = self.output_kinds()
        return self._then(FilterStep(tuple(condition(text, kinds) for text in texts)))

    def select(self, *assignments: str, **named: str) -> Pipeline:
        """Add computed fields: ``.select(notional="price * qty")`` or ``"notional = price * qty"``.

        Raises:
            PipelineError: a bad or taken name. FilterError: a bad expression.
        """
        pairs: list[tuple[str, str]] = []
        for text in assignments:
            for part in split_top(text):
                name, eq, expr = _assignment(part)
                if not eq:
                    raise error(
                        part,
                        f"select needs NAME = EXPRESSION (got {str(part)!r}),"
                        " e.g. notional = price * qty",
                    )
                pairs.append((name, expr))
        pairs.extend(named.items())
        return self._then(SelectStep(pairs, self.output_kinds()))

    def key_by(self, *exprs: str) -> Pipeline:
        """Key later steps (windows, throttle, sample, join, trackers) by these values."""
        new = Pipeline(list(self.steps), kinds=self.kinds)
        new._key = Key.compile(exprs, self.output_kinds())  # nothing runs per event for this
        return new

    def throttle(self, interval: _Duration) -> Pipeline:
        """At most one event per key per ``interval`` of event time."""
        step = ThrottleStep(parse_duration(interval, "throttle interval"), self._key_fn() or _no)
        step.output_kinds = self.output_kinds()
        return self._then(step)

    def dedupe(self, interval: _Duration, *, on: Sequence[str] = ()) -> Pipeline:
        """Drop repeats within ``interval``: events equal in ``on`` (default: every field)."""
        ns = parse_duration(interval, "dedupe interval")
        step = DedupeStep(ns, Key.compile(on, self.output_kinds()).of) if on else DedupeStep(ns)
        step.output_kinds = self.output_kinds()
        return self._then(step)

    def sample(self, every: int | str) -> Pipeline:
        """Keep every N-th event per key (an int), or the latest per key per interval (``'1s'``)."""
        kinds = self.output_kinds()
        if isinstance(every, int) and not isinstance(every, bool):
            step = SampleStep(every, self._key_fn() or _no)
            step.output_kinds = kinds
            return self._then(step)
        size = parse_duration(every, "sample interval")
        sampler = WindowStep(self._key_fn() or _no, (), kinds, size=size, sample=True)
        return self._then(sampler)

    def window(
        self,
        tumbling: _Duration | None = None,
        *,
        sliding: _Duration | None = None,
        slide: _Duration | None = None,
        session: _Duration | None = None,
        lateness: _Duration = DEFAULT_LATENESS,
        late: Literal["drop", "emit"] = "drop",
        idle: _Duration = 0,
    ) -> Pipeline:
        """Windows by event time; follow with :meth:`agg` (see ``_windows``).

        Give exactly one of ``tumbling``, ``sliding`` (with ``slide``) or ``session`` (the
        gap). ``lateness``: how far behind the newest event an event may be and still count;
        ``late="emit"`` sends late events on as ``late`` events; ``idle``: receive-clock
        silence before the clock closes windows.
        """
        choices = (("tumbling", tumbling), ("sliding", sliding), ("session", session))
        given = [name for name, value in choices if value is not None]
        if len(given) != 1:
            raise PipelineError(
                "window needs exactly one of tumbling, sliding (with slide) or session"
                f" (got {', '.join(given) or 'none'})"
            )
        if (sliding is None) != (slide is None):
            raise PipelineError("a sliding window needs both sliding= and slide=")
        size = parse_duration(tumbling or sliding or session or 0, "window size")
        step = WindowStep(
            self._key_fn() or _no,
            (),
            self.output_kinds(),
            late == "emit",
            size=size,
            slide=None if slide is None else parse_duration(slide, "window slide"),
            session=session is not None,
            lateness=_optional_duration(lateness, "lateness"),
            idle=_optional_duration(idle, "idle"),
        )
        return self._then(step, key=self._key_after(step.output_kinds))

    def bars(
        self,
        *,
        count: int | None = None,
        volume: Decimal | str | int | None = None,
        notional: Decimal | str | int | None = None,
        on: str | None = None,
    ) -> Pipeline:
        """Bars that close every ``count`` events, or at Σqty ``volume``, or Σ(price·qty)
        ``notional`` (``on`` changes what is summed); follow with :meth:`agg`.
        """
        choices = (("count", count), ("volume", volume), ("notional", notional))
        given = [(name, value) for name, value in choices if value is not None]
        if len(given) != 1:
            raise PipelineError("bars needs exactly one of count=, volume= or notional=")
        measure, threshold = given[0]
        step = BarStep(
            self._key_fn() or _no,
            (),
            self.output_kinds(),
            measure=measure,
            threshold=_number(threshold, f"bars {measure}"),
            on=on,
        )
        return self._then(step, key=self._key_after(step.output_kinds))

    def agg(self, *aggregates: Aggregate | str) -> Pipeline:
        """What the preceding window or bars compute (``Agg.vwap()`` or ``"vwap"``).

        Raises:
            PipelineError: no window or bars right before, or a bad aggregate.
            FilterError: an aggregate's argument does not type-check.
        """
        last = self.steps[-1] if self.steps else None
        parsed: list[Aggregate] = []
        for item in aggregates:
            parsed.extend(parse_aggregates(item) if isinstance(item, str) else [item])
        where = next((a for a in aggregates if isinstance(a, str)), None)
        if not isinstance(last, WindowStep | BarStep) or getattr(last, "sample", False):
            raise error(
                where, "agg must come right after a window or bars step (window 1m | agg ...)"
            )
        if last.aggregates:
            raise error(where, "the window already has an agg step: list every aggregate in one")
        step = attrs.evolve(last, aggregates=tuple(parsed))
        return self._then(step, key=self._key, replace=True)

    def join(
        self,
        right: str,
        *,
        within: _Duration,
        key_map: Mapping[str, str] | None = None,
        lateness: _Duration = 0,
        outer: bool = False,
        idle: _Duration = 0,
    ) -> Pipeline:
        """As-of join: events matching ``right`` against the others, per key (see ``_join``)."""
        step = AsofJoinStep(
            right,
            parse_duration(within, "join tolerance"),
            self.output_kinds(),
            self._key_fn() or _no,
            dict(key_map or {}),
            parse_duration(lateness, "lateness") if lateness else 0,
            outer,
            parse_duration(idle, "idle") if idle else 0,
        )
        return self._then(step, key=self._key_after(step.output_kinds))

    def spike(
        self, threshold: Decimal | str | int, window: _Duration, *, on: str = "price"
    ) -> Pipeline:
        """Report moves of ``threshold`` percent within ``window`` per key (see ``_trackers``)."""
        step = SpikeStep(
            _number(threshold, "spike threshold"),
            parse_duration(window, "spike window"),
            self.output_kinds(),
            on,
            self._key_fn(),
        )
        return self._then(step, key=self._key_after(step.output_kinds))

    def rsi(self, period: int = 14, *, on: str = "close") -> Pipeline:
        """Wilder's RSI per key over closed bars (see ``_trackers``)."""
        step = RsiStep(self.output_kinds(), period, on, self._key_fn())
        return self._then(step, key=self._key_after(step.output_kinds))


def _no(event: Event) -> str:
    return ""


def _assignment(text: str) -> tuple[str, bool, str]:
    """``'a = b'`` -> ``('a', True, 'b')`` (located pieces when ``text`` is located)."""
    index = 0
    while index < len(text) and (text[index].isalnum() or text[index] == "_"):
        index += 1
    rest = index
    while rest < len(text) and text[rest].isspace():
        rest += 1
    if index == 0 or rest >= len(text) or text[rest] != "=" or text[rest + 1 : rest + 2] == "=":
        return text, False, ""
    return sub(text, 0, index), True, sub(text, rest + 1, len(text))


def _number(value: Decimal | str | int, what: str) -> Decimal:
    at = value if isinstance(value, str) else str(value)
    try:
        number = Decimal(str(value).strip().removesuffix("%"))
    except ArithmeticError:
        raise error(at, f"bad {what} {str(value)!r} (write a number, e.g. 2.5)") from None
    if not number.is_finite() or number <= 0:
        raise error(at, f"{what} must be a positive number (got {str(value)!r})")
    return number
