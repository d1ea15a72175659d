"""The pipeline: plain synchronous steps over batches of events (sans-IO).

Nothing here awaits, reads a socket or looks at a clock of its own: sources hand the pipeline
batches, the pipeline hands back what comes out. That is what makes a replay of a recording
produce exactly what the live run produced, and what lets every step be tested without Trio.

A step is anything with ``process(events) -> events``. Steps may also keep time-driven state
(windows, throttles); they get ``advance(now_ns)`` calls, driven by event time, and return what
the passing of time releases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar, Protocol

import attrs

from ._events import KINDS, Event, Gap
from ._filter import Filter, compile_filter

__all__ = ["FilterStep", "Pipeline", "Step"]


class Step(Protocol):
    """One stage of a pipeline."""

    def process(self, events: list[Event]) -> list[Event]:
        """Take a batch, return what passes on (may be the same list, may be empty)."""
        ...

    def advance(self, now: int) -> list[Event]:
        """Event time moved to ``now`` (ns): return anything that is now due."""
        ...


def _always(event: Event) -> bool:
    return True


def _never(event: Event) -> bool:
    return False


@attrs.define
class FilterStep:
    """Keep the events every filter accepts. Gap events always pass: holes stay visible."""

    timed: ClassVar[bool] = False
    """Filters keep no time-driven state: the runner need not wake them when idle."""

    filters: tuple[Filter, ...]
    _tables: list[dict[type[Event], Callable[[Event], bool]]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # One class -> predicate table per filter, built once: the per-event cost is a dict
        # subscript and the bare predicate, with no method call around it.
        self._tables = []
        for predicate in self.filters:
            table = {cls: predicate.predicate_for(cls) or _never for cls in KINDS.values()}
            table[Gap] = _always
            self._tables.append(table)

    def process(self, events: list[Event]) -> list[Event]:
        """The events all filters accept, plus every gap."""
        for table in self._tables:
            try:
                events = [e for e in events if table[e.__class__](e)]
            except KeyError:  # a class registered after this step was built
                events = [e for e in events if table.get(e.__class__, _never)(e)]
        return events

    def advance(self, now: int) -> list[Event]:
        """Filters keep no time-driven state."""
        return []


@attrs.define
class Pipeline:
    """A chain of steps; what one step returns is the next one's input."""

    steps: list[Step] = attrs.field(factory=list)

    @classmethod
    def from_filters(cls, texts: Iterable[str], kinds: Iterable[type[Event]]) -> Pipeline:
        """A pipeline of one filter step (all filters must hold), checked against ``kinds``.

        Raises:
            FilterError: a filter does not parse or cannot match any of ``kinds``.
        """
        kinds = tuple(kinds)
        filters = tuple(compile_filter(text, kinds) for text in texts)
        return cls([FilterStep(filters)] if filters else [])

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
