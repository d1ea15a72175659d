"""Bars by count, volume or notional: windows closed by what they hold, not by time (sans-IO).

``bars count 100``, ``bars volume 10``, ``bars notional 1000000``: per key, a bar closes with the
event that makes its count, Σqty or Σ(price·qty) (or Σ of ``on EXPR``) reach the threshold.
Events are never split, so a bar may overshoot. Bars follow arrival order, not a clock: they
do not close on time, and have no late events. A bar's ``start`` and ``end`` are the times
of its first and last event. Results are :class:`~irisflow._windows.Window` events with the
aggregates as fields; a gap of the bar's venue marks an open bar incomplete, and
:meth:`BarStep.flush` emits the bars still open, incomplete.

**Reorgs** (on-chain kinds only, see ``_results.py``): a retraction takes its event out of the
bar that counted it. An open bar is refolded, its measure, start and end recomputed from the
events left (it closes later, when the measure reaches the threshold again). An emitted bar
comes out again with ``revision`` one higher, its aggregates and count refolded but its
``start`` and ``end`` as first emitted: that span names it, and the bars after it keep their
boundaries, so a revised bar may hold less than its threshold. Emitted bars are kept until the
newest event time is :data:`~irisflow._reorg.REORG_HORIZON` past their end.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, ClassVar

import attrs

from ._errors import UsageError
from ._events import Event, Gap
from ._filter import ARITH
from ._reorg import MARKS
from ._results import OpenWindow, WindowResults, WindowStatistics
from ._steps import PipelineError, error, expression

__all__ = ["BarStep"]

_NEVER = -(2**63)


@attrs.define(on_setattr=attrs.setters.NO_OP)  # plain attribute writes: hot path
class BarStep(WindowResults):
    """Bars by count, volume or notional (see the module docs).

    Args:
        measure: ``'count'``, ``'volume'`` or ``'notional'``.
        threshold: The bar closes when its measure reaches this.
        on: The value summed for ``volume`` (default ``qty``) or ``notional`` (default
            ``price * qty``).
    """

    timed: ClassVar[bool] = False

    measure: str = attrs.field(kw_only=True)
    threshold: Decimal = attrs.field(kw_only=True)
    on: str | None = attrs.field(default=None, kw_only=True)
    _value: Callable[[Event], Any] | None = attrs.field(init=False, default=None)
    _bars: dict[str, tuple[OpenWindow, list[Any]]] = attrs.field(init=False, factory=dict)
    _last_recv: int = attrs.field(init=False, default=_NEVER)
    _max_ts: int = attrs.field(init=False, default=_NEVER)
    """The newest event time (kept with on-chain kinds only: emitted bars expire by it)."""

    def __attrs_post_init__(self) -> None:
        defaults = {"volume": "qty", "notional": "price * qty"}
        if self.measure not in ("count", *defaults):
            raise PipelineError(f"bars by {self.measure!r}: use count, volume or notional")
        if self.threshold <= 0:
            raise PipelineError(f"bars need a positive threshold (got {self.threshold})")
        self.spec = f"{self.measure} {self.threshold}"
        if self.measure != "count":
            text = self.on or defaults[self.measure]
            classes = [cls for cls in self.kinds if cls is not Gap]
            try:
                self._value = expression(text, classes, types=("number",))
            except UsageError as exc:
                if self.on is not None:
                    raise
                raise error(
                    self.measure,
                    f"bars by {self.measure} sum {text}, which the events reaching them do not"
                    f" have (say what to sum: bars {self.measure} N on EXPR)",
                ) from exc
        self._bind()

    def statistics(self) -> WindowStatistics:
        """Counters so far."""
        return self._stats(len(self._bars), 0)

    def process(self, events: list[Event]) -> list[Event]:
        """Fold events into their key's bar; a bar that reaches the threshold comes out."""
        out: list[Event] = []
        value, threshold, chain = self._value, self.threshold, self._chain
        for event in events:
            if event.__class__ is Gap:
                assert isinstance(event, Gap)
                for acc, _ in self._bars.values():
                    if event.venue in (acc.venue, "*") or acc.venue == "*":
                        acc.complete = False
                out.append(event)
                continue
            if chain:
                if event.kind in MARKS:
                    out.append(event)
                    if event.kind == "retraction":
                        self._retract(event, out)
                    continue
                if getattr(event, "revision", 0) and self._replace(event, out):
                    continue
            self._last_recv = max(self._last_recv, event.recv_ts)
            key = self.key(event)
            bar = self._bars.get(key)
            if bar is None:
                acc = OpenWindow(key, event.ts, event.ts, event, self._new_states())
                bar = self._bars[key] = (acc, [Decimal(0)])
            acc, measure = bar
            acc.start, acc.end = min(acc.start, event.ts), max(acc.end, event.ts)
            self._fold(acc, event)
            if chain:
                self._remember(acc, event)
                self._max_ts = max(self._max_ts, event.ts)
            if value is None:
                measure[0] += 1
            else:
                v = value(event)
                if v is not None:
                    measure[0] = ARITH.add(measure[0], v)
            if measure[0] >= threshold:
                del self._bars[key]
                out.append(self._result(acc, event.recv_ts, self.spec))
                if self._ledger is not None:
                    self._ledger.expire(self._max_ts)
        return out

    def _changed(self, acc: OpenWindow, cause: Event, out: list[Event]) -> None:
        if acc.revision >= 0:  # emitted: revised, with the span it came out with
            super()._changed(acc, cause, out)
            return
        _, measure = self._bars[acc.key]
        self._refold(acc)
        if not acc.events:
            del self._bars[acc.key]
            return
        times = [event.ts for _, event in acc.events]
        acc.start, acc.end = min(times), max(times)
        measure[0] = Decimal(0)
        for _, event in acc.events:
            v = 1 if self._value is None else self._value(event)
            if v is not None:
                measure[0] = ARITH.add(measure[0], v)

    def advance(self, now: int) -> list[Event]:
        """Bars do not close on time."""
        return []

    def flush(self) -> list[Event]:
        """The stream ended: every open bar comes out, marked incomplete."""
        bars = sorted(self._bars.values(), key=lambda bar: (bar[0].end, bar[0].key))
        self._bars.clear()
        return [self._result(acc, self._last_recv, self.spec, ended=True) for acc, _ in bars]
