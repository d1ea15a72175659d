"""Stateless and per-key steps of the pipeline language, and what every step shares.

Shared pieces: :class:`PipelineError`, :func:`parse_duration`, keys (:class:`Key`), and the
compile helpers that keep a caret pointing into the ``--pipe`` text when a step's expression
is wrong. Steps here: ``select`` (computed fields), ``throttle``, ``dedupe`` and ``sample N``.

Computed fields: ``select notional = price * qty`` turns every event into an *enriched* event
of the same kind: a subclass of the event's class (e.g. of :class:`~irisflow.Trade`) with the
extra fields appended, each ``X | None`` (a division by zero gives ``None``). The event keeps
its kind, so sinks show it as before, ``isinstance(e, Trade)`` still holds, and a later
``filter notional > 100000`` is type-checked like any field. The enriched classes are built
once per (class, fields) and cached, so two pipelines built alike share them.
"""

from __future__ import annotations

import collections
import difflib
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, ClassVar

import attrs

from ._duration import duration_hint, duration_ns
from ._errors import FilterError, PipelineError
from ._events import Event, Gap
from ._expr_lex import fail
from ._filter import Expression, Filter, compile_expression, compile_filter
from ._reorg import MARKS, carries_chain, pass_marks

__all__ = [
    "DedupeStep",
    "Key",
    "PipelineError",
    "SampleStep",
    "SelectStep",
    "ThrottleStep",
    "parse_duration",
    "split_top",
]


# ---------------------------------------------------------------------------- locations


class Located(str):
    """A piece of a ``--pipe`` text that remembers where it sits, for carets in messages.

    Builder methods take plain strings; the text parser hands them ``Located`` ones, so an
    error about an argument can point into the whole pipe text.
    """

    full: str
    offset: int

    @classmethod
    def at(cls, full: str, start: int, end: int) -> Located:
        """``full[start:end]``, stripped of surrounding spaces, with its position."""
        while start < end and full[start].isspace():
            start += 1
        while end > start and full[end - 1].isspace():
            end -= 1
        piece = cls(full[start:end])
        piece.full, piece.offset = full, start
        return piece


def sub(text: str, start: int, end: int) -> str:
    """``text[start:end]`` stripped; located in the same pipe text when ``text`` is."""
    if isinstance(text, Located):
        return Located.at(text.full, text.offset + start, text.offset + end)
    return text[start:end].strip()


def error(at: str | None, message: str) -> PipelineError:
    """A :class:`PipelineError`, with a caret under ``at`` when it came from a pipe text."""
    if isinstance(at, Located):
        span = (at.offset, at.offset + max(1, len(at)))
        return PipelineError(str(fail(at.full, span, message)))
    return PipelineError(message)


def nearest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or `` (known: a, b, c)``."""
    options = list(choices)
    close = difflib.get_close_matches(word.lower(), options, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (known: {', '.join(options)})"


def relocate(exc: FilterError, text: str) -> FilterError:
    """``exc`` (raised for ``text`` alone) with its caret moved into the whole pipe text."""
    if not isinstance(text, Located):
        return exc
    message = str(exc)
    head, _, _ = message.rpartition("\n")
    head, _, _ = head.rpartition("\n")
    caret = message.rsplit("\n", 1)[-1]
    width = caret.count("^")
    # The caret block is a pure function of (text, span): find the span that draws it.
    for start in range(len(text) + 1):
        if str(fail(text, (start, start + width), head)) == message:
            span = (text.offset + start, text.offset + start + width)
            return FilterError(str(fail(text.full, span, head)))
    return exc


def condition(text: str, kinds: Iterable[type[Event]]) -> Filter:
    """:func:`compile_filter`, with the caret pointing into the pipe text."""
    try:
        return compile_filter(text, kinds)
    except FilterError as exc:
        raise relocate(exc, text) from None


def expression(text: str, kinds: Iterable[type[Event]], *, types: Sequence[str] = ()) -> Expression:
    """:func:`compile_expression`, with the caret pointing into the pipe text.

    Args:
        types: The value types allowed (``number``, ``string``, ``bool``); empty: any.
    """
    try:
        expr = compile_expression(text, kinds)
    except FilterError as exc:
        raise relocate(exc, text) from None
    if types and expr.type not in types:
        raise error(text, f"{text!r} is a {expr.type}, but a {' or '.join(types)} is needed here")
    return expr


def split_spans(text: str, sep: str = ",") -> list[tuple[int, int]]:
    """Spans of the parts of ``text`` between top-level ``sep`` (outside quotes, brackets)."""
    spans: list[tuple[int, int]] = []
    depth, quote, start = 0, "", 0
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == sep and depth == 0:
            spans.append((start, i))
            start = i + 1
        i += 1
    spans.append((start, len(text)))
    return spans


def split_top(text: str, sep: str = ",") -> list[str]:
    """The parts of ``text`` between top-level ``sep``, located when ``text`` is."""
    return [sub(text, a, b) for a, b in split_spans(text, sep)]


# ---------------------------------------------------------------------------- durations


def parse_duration(text: str | int, what: str = "duration") -> int:
    """``'1m'`` -> 60_000_000_000: a duration in whole nanoseconds (an int passes as ns).

    Units: ``ns``, ``us``, ``ms``, ``s``, ``m`` (minutes), ``h``, ``d``; decimals (``1.5s``)
    and sums (``1h30m``) are allowed (see ``irisflow._duration``). The result must be positive.

    Raises:
        PipelineError: anything else.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise PipelineError(f"{what} must be positive (got {text} ns)")
        return text
    ns = duration_ns(str(text))
    if ns is None:
        raise error(
            text if isinstance(text, str) else str(text),
            f"bad {what} {str(text)!r}{duration_hint(str(text))} (write a positive number and"
            " a unit: 500ms, 10s, 1m, 4h, 1d)",
        )
    return ns


# ---------------------------------------------------------------------------- keys


def _text(value: object) -> str:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)


@attrs.frozen
class Key:
    """What ``by EXPR, ...`` groups on: a function from an event to its key text.

    One expression gives the value as text (``'BTCUSDT'``); several are joined with ``/``
    (``'binance/BTCUSDT'``). A missing value is the empty text.
    """

    texts: tuple[str, ...]
    """The expressions as written."""
    of: Callable[[Event], str] = attrs.field(eq=False, repr=False)
    """The key of an event."""

    @classmethod
    def compile(cls, texts: Sequence[str], kinds: Iterable[type[Event]]) -> Key:
        """Compile key expressions against ``kinds``.

        Raises:
            FilterError: an expression does not parse or uses an unknown field.
            PipelineError: no expression given.
        """
        if not texts:
            raise PipelineError("'by' needs at least one expression, e.g. by symbol")
        kinds = [k for k in kinds if k is not Gap]
        parts = [_key_part(expression(text, kinds), kinds) for text in texts]
        if len(parts) == 1:
            return cls(tuple(texts), parts[0])

        def joined(event: Event) -> str:
            return "/".join([part(event) for part in parts])

        return cls(tuple(texts), joined)


def _key_part(expr: Expression, kinds: Sequence[type[Event]]) -> Callable[[Event], str]:
    name = str(expr)
    if (
        expr.type == "string"
        and expr.fields == {name}
        and all(cls in expr.kinds for cls in kinds)
        and all(attrs.fields_dict(cls)[name].type in (str, "str") for cls in kinds)
    ):
        # A plain string field every kind has (``symbol``): the field itself is the key.
        return operator.attrgetter(name)
    return lambda event: _text(expr(event))


def no_key(event: Event) -> str:
    """The key of every event when the stream is not keyed."""
    return ""


# ---------------------------------------------------------------------------- select


def kind_set(kinds: Iterable[type[Event]]) -> frozenset[type[Event]]:
    """Step attributes hold their kinds as a frozenset (a generator could be read once only)."""
    return frozenset(kinds)


_ENRICHED: dict[tuple[type[Event], tuple[tuple[str, str], ...]], type[Event]] = {}
_PYTHON_TYPES: dict[str, Any] = {
    "number": Decimal | None,
    "integer": int | None,
    "string": str | None,
    "bool": bool | None,
}


def enriched_class(base: type[Event], fields: Sequence[tuple[str, str, str]]) -> type[Event]:
    """A subclass of ``base`` with extra ``(name, type, doc)`` fields, cached.

    Every extra field is optional (default ``None``); ``type`` is a language type
    (``number``, ``string``, ``bool``) or ``integer`` (a whole number, ``int``).
    """
    signature = tuple((name, kind) for name, kind, _ in fields)
    cached = _ENRICHED.get((base, signature))
    if cached is not None:
        return cached
    body = {
        name: attrs.field(default=None, type=_PYTHON_TYPES[kind], metadata={"doc": doc})
        for name, kind, doc in fields
    }
    extra = "_".join(name for name, _ in signature)
    cls: type[Event] = attrs.make_class(
        f"{base.__name__}_{extra}", body, bases=(base,), frozen=True, slots=True
    )
    cls.__module__ = __name__
    _ENRICHED[(base, signature)] = cls
    return cls


@attrs.define(on_setattr=attrs.setters.NO_OP)  # plain attribute writes: hot path
class SelectStep:
    """``select NAME = EXPR, ...``: add computed fields to every event (gaps pass as they are).

    Args:
        assignments: ``(name, expression)`` pairs, computed left to right against the
            input event (not against each other).
        kinds: The event classes flowing into the step.

    Raises:
        PipelineError: a bad or repeated name, or one that the events already have.
        FilterError: an expression does not parse or type-check.
    """

    timed: ClassVar[bool] = False

    assignments: Sequence[tuple[str, str]]
    kinds: frozenset[type[Event]] = attrs.field(converter=kind_set)
    output_kinds: frozenset[type[Event]] = attrs.field(init=False)
    _targets: dict[type[Event], tuple[type[Event], tuple[str, ...], tuple[Expression, ...]]] = (
        attrs.field(init=False, factory=dict)
    )

    def __attrs_post_init__(self) -> None:
        # Gaps, retractions and confirmations pass as they are (a mark must stay a mark).
        classes = [cls for cls in dict.fromkeys(self.kinds) if cls is not Gap]
        marks = frozenset(cls for cls in classes if cls.kind in MARKS)
        classes = [cls for cls in classes if cls not in marks]
        if not self.assignments:
            raise PipelineError("'select' needs NAME = EXPRESSION, e.g. notional = price * qty")
        seen: set[str] = set()
        compiled: list[tuple[str, Expression]] = []
        for name, text in self.assignments:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name == "kind":
                raise error(name, f"bad field name {name!r} in select (use letters, digits, _)")
            if name in seen:
                raise error(name, f"field {name!r} is computed twice in one select")
            taken = [cls for cls in classes if name in attrs.fields_dict(cls)]
            if taken:
                raise error(
                    name,
                    f"{taken[0].kind} events already have a field {name!r}"
                    " (pick another name for the computed value)",
                )
            seen.add(name)
            compiled.append((name, expression(text, classes)))
        for cls in classes:
            fields = [(n, e.type, f"computed: {e}") for n, e in compiled]
            target = enriched_class(cls, fields)
            names = tuple(f.name for f in attrs.fields(cls))
            self._targets[cls] = (target, names, tuple(e for _, e in compiled))
        self.output_kinds = frozenset(t for t, _, _ in self._targets.values()) | {Gap} | marks

    def process(self, events: list[Event]) -> list[Event]:
        """Every event with the computed fields added."""
        out: list[Event] = []
        targets = self._targets
        for event in events:
            target = targets.get(event.__class__)
            if target is None:  # a gap, a mark, or a class the step was not built for
                out.append(event)
                continue
            cls, names, exprs = target
            values = [getattr(event, name) for name in names]
            out.append(cls(*values, *[expr(event) for expr in exprs]))
        return out

    def advance(self, now: int) -> list[Event]:
        """No time-driven state."""
        return []


# ---------------------------------------------------------------------------- per-key steps


def _marks_pass(step: ThrottleStep | DedupeStep | SampleStep) -> bool:
    """Whether on-chain kinds reach ``step`` (its ``output_kinds`` are its input kinds): then
    retractions and confirmations pass it untouched."""
    if step._chain is None:
        step._chain = carries_chain(step.output_kinds or ())
    return step._chain


@attrs.define
class ThrottleStep:
    """``throttle INTERVAL``: at most one event per key per interval of event time.

    The first event of a key passes; later ones pass once their ``ts`` is at least
    ``interval`` after the last one that passed. Gaps always pass.
    """

    timed: ClassVar[bool] = False

    interval: int
    """Nanoseconds."""
    key: Callable[[Event], str] = no_key
    output_kinds: frozenset[type[Event]] | None = None
    dropped: int = 0
    """Events dropped so far."""
    _last: dict[str, int] = attrs.field(factory=dict)
    _chain: bool | None = attrs.field(init=False, default=None)

    def process(self, events: list[Event]) -> list[Event]:
        """The events that pass (retractions and confirmations always do)."""
        if _marks_pass(self):
            return pass_marks(self._process, events)
        return self._process(events)

    def _process(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        last, key, interval = self._last, self.key, self.interval
        for event in events:
            if event.__class__ is Gap:
                out.append(event)
                continue
            k = key(event)
            before = last.get(k)
            if before is None or event.ts >= before + interval:
                last[k] = event.ts
                out.append(event)
            else:
                self.dropped += 1
        return out

    def advance(self, now: int) -> list[Event]:
        """Nothing is held back."""
        return []


def identity(event: Event) -> tuple[Any, ...]:
    """What makes two events the same for ``dedupe``: class and every field but ``recv_ts``."""
    cls = event.__class__
    names = _IDENTITY.get(cls)
    if names is None:
        names = _IDENTITY[cls] = tuple(f.name for f in attrs.fields(cls) if f.name != "recv_ts")
    return (cls, *[getattr(event, name) for name in names])


_IDENTITY: dict[type[Event], tuple[str, ...]] = {}


@attrs.define
class DedupeStep:
    """``dedupe INTERVAL [on EXPR, ...]``: drop repeats of an event within an interval.

    Two events are repeats when their ``on`` values are equal, or, without ``on``, when they
    are equal in every field but ``recv_ts`` (the same trade heard twice). A repeat is dropped
    when its ``ts`` is within ``interval`` of the one seen before. Gaps always pass.
    """

    timed: ClassVar[bool] = False

    interval: int
    """Nanoseconds."""
    key: Callable[[Event], object] = identity
    output_kinds: frozenset[type[Event]] | None = None
    dropped: int = 0
    """Repeats dropped so far."""
    _seen: dict[object, int] = attrs.field(factory=dict)
    _order: collections.deque[tuple[int, object]] = attrs.field(factory=collections.deque)
    _max_ts: int = -(2**63)
    _chain: bool | None = attrs.field(init=False, default=None)

    def process(self, events: list[Event]) -> list[Event]:
        """The events that are not repeats (retractions and confirmations always pass)."""
        if _marks_pass(self):
            return pass_marks(self._process, events)
        return self._process(events)

    def _process(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        seen, order, interval, key = self._seen, self._order, self.interval, self.key
        for event in events:
            if event.__class__ is Gap:
                out.append(event)
                continue
            ts = event.ts
            ident = key(event)
            before = seen.get(ident)
            if before is not None and abs(ts - before) < interval:
                self.dropped += 1
                continue
            seen[ident] = ts
            order.append((ts, ident))
            out.append(event)
            if ts > self._max_ts:
                self._max_ts = ts
        horizon = self._max_ts - interval
        while order and order[0][0] < horizon:  # forget what can no longer repeat
            ts, ident = order.popleft()
            if seen.get(ident) == ts:
                del seen[ident]
        return out

    def advance(self, now: int) -> list[Event]:
        """Nothing is held back."""
        return []


@attrs.define
class SampleStep:
    """``sample N``: keep the first of every ``N`` events of each key. Gaps always pass."""

    timed: ClassVar[bool] = False

    every: int
    key: Callable[[Event], str] = no_key
    output_kinds: frozenset[type[Event]] | None = None
    _counts: dict[str, int] = attrs.field(factory=dict)
    _chain: bool | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if self.every < 1:
            raise PipelineError(f"sample needs a count of at least 1 (got {self.every})")

    def process(self, events: list[Event]) -> list[Event]:
        """Every ``N``-th event of each key, starting with the first (and every retraction and
        confirmation)."""
        if _marks_pass(self):
            return pass_marks(self._process, events)
        return self._process(events)

    def _process(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        counts, key, every = self._counts, self.key, self.every
        for event in events:
            if event.__class__ is Gap:
                out.append(event)
                continue
            k = key(event)
            n = counts.get(k, 0)
            if n == 0:
                out.append(event)
            counts[k] = (n + 1) % every
        return out

    def advance(self, now: int) -> list[Event]:
        """Nothing is held back."""
        return []
