"""The alert step: rules at work over a stream of events (sans-IO).

Each rule kind has a detector that reads one event and says what it means for the rule: it
fires (with a *label*, so that a crossing rule can tell "still above" from "now below"), it
re-arms the rule, or nothing. :class:`AlertStep` runs the detectors, keeps which (venue,
symbol) keys are disarmed, and folds firings that come within a cooldown into one digest.
"""

from __future__ import annotations

import collections
import decimal
import hashlib
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeAlias

import attrs

from ._alert import Alert, alert_key
from ._errors import UsageError
from ._events import Candle, Event, is_time_field, to_datetime
from ._filter import Filter
from ._rule_text import Time, show_duration

if TYPE_CHECKING:
    from ._rules import Rule

__all__ = ["AlertStep", "AlertStepStatistics", "Getter", "chain_kinds"]

Getter: TypeAlias = Callable[[Event], Any]
"""Reads a value from an event."""

_MATH = decimal.Context(prec=40)
_HUNDRED = Decimal(100)
_CENT = Decimal("0.01")
_SIX_DIGITS = decimal.Context(prec=6)


def chain_kinds() -> tuple[type[Event], ...]:
    """The on-chain kinds whale rules read (token transfers, transactions, internal ones)."""
    try:
        from ._chain import InternalTransaction, TokenTransfer, Transaction
    except ImportError:  # pragma: no cover - the on-chain module is part of irisflow
        return ()
    return (TokenTransfer, Transaction, InternalTransaction)


# --------------------------------------------------------------------------------------------
# Detectors: per rule kind, what one event means for the rule


class _Signal:
    """A reading that does not fire: the key re-arms (``_REARM``) or stays as it is."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_REARM = _Signal("_REARM")
_QUIET = _Signal("_QUIET")


@attrs.frozen
class _Fire:
    """The rule's condition holds on ``event``; ``label`` tells one firing state from another
    (a crossing rule fires when the label changes from none or from another label)."""

    label: str
    event: Event
    extras: dict[str, Any]


Reading: TypeAlias = _Fire | _Signal | None
_Key: TypeAlias = Hashable


class _Detector(Protocol):
    crossing: ClassVar[bool]

    def read(self, event: Event) -> Reading: ...

    def key(self, event: Event) -> _Key: ...


def _lru(table: collections.OrderedDict[_Key, Any], key: _Key, limit: int) -> None:
    table.move_to_end(key)
    while len(table) > limit:
        table.popitem(last=False)


@attrs.define(eq=False)
class _Threshold:
    crossing: ClassVar[bool] = True
    predicates: dict[type[Event], Callable[[Event], bool]]
    measure: tuple[str, Getter] | None

    def key(self, event: Event) -> _Key:
        return (event.venue, event.symbol)

    def read(self, event: Event) -> Reading:
        predicate = self.predicates.get(event.__class__)
        if predicate is None:
            return None
        if not predicate(event):
            return _REARM
        extras: dict[str, Any] = {}
        if self.measure is not None:
            extras = {"measure": self.measure[0], "value": self.measure[1](event)}
        return _Fire("true", event, extras)


@attrs.define(eq=False)
class _Change:
    crossing: ClassVar[bool] = True
    rule: Rule
    limit: int
    series: collections.OrderedDict[_Key, collections.deque[tuple[int, Decimal]]] = attrs.field(
        factory=collections.OrderedDict
    )
    # Per rule, not per event: the window and the width of its 1/256 slices, in ns.
    window: int = attrs.field(init=False)
    width: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        assert self.rule.window is not None
        assert self.rule.threshold is not None
        self.window = self.rule.window
        self.width = max(1, self.window // 256)

    def key(self, event: Event) -> _Key:
        return (event.venue, event.symbol)

    def read(self, event: Event) -> Reading:
        get = self.rule.values.get(event.__class__)
        value = None if get is None else get(event)
        if value is None:
            return None
        if value.__class__ is not Decimal:  # prices already are: no copy for them
            value = Decimal(value)
        rule, ts = self.rule, event.ts
        window, width = self.window, self.width
        key = (event.venue, event.symbol)
        history = self.series.get(key)
        if history is None:
            history = self.series[key] = collections.deque()
        _lru(self.series, key, self.limit)
        if history and ts < history[-1][0]:
            return None  # late: the history is in event-time order
        # Keep the first and the last value of each 1/256 of the window: bounded memory, and
        # the reference is exact to within that slice.
        if (
            len(history) >= 2
            and history[-1][0] // width == ts // width
            and history[-2][0] // width == ts // width
        ):
            history[-1] = (ts, value)
        else:
            history.append((ts, value))
        cutoff = ts - window
        while len(history) >= 2 and history[1][0] <= cutoff:
            history.popleft()
        # The reference: the value as of one window ago (the latest at or before the cutoff),
        # or the oldest one seen while the history is younger than the window.
        start = history[0][1]
        if history[0][0] == ts or not start:
            return _REARM
        change = _MATH.divide(_MATH.multiply(value - start, _HUNDRED), start)
        threshold = rule.threshold
        assert threshold is not None
        label = ""
        if rule.direction != "down" and change >= threshold:
            label = "up"
        elif rule.direction != "up" and change <= -threshold:
            label = "down"
        if label:
            extras = {
                "change_pct": change.quantize(_CENT, context=_MATH),
                "start_value": start,
                "value": value,
            }
            return _Fire(label, event, extras)
        inner = threshold - rule.band
        back = {"both": abs(change) < inner, "up": change < inner, "down": change > -inner}
        return _REARM if back[rule.direction] else _QUIET


@attrs.define
class _Volume:
    window: int
    volume: Decimal
    history: collections.deque[Decimal]
    mean: Decimal = Decimal(0)
    stddev: Decimal = Decimal(0)


@attrs.define(eq=False)
class _VolumeSpike:
    crossing: ClassVar[bool] = True
    rule: Rule
    limit: int
    series: collections.OrderedDict[_Key, _Volume] = attrs.field(factory=collections.OrderedDict)

    def key(self, event: Event) -> _Key:
        return (event.venue, event.symbol)

    def read(self, event: Event) -> Reading:
        get = self.rule.values.get(event.__class__)
        value = None if get is None else get(event)
        if value is None:
            return None
        rule = self.rule
        assert rule.window is not None
        assert rule.threshold is not None
        window = event.ts // rule.window
        key = (event.venue, event.symbol)
        state = self.series.get(key)
        if state is None:
            state = self.series[key] = _Volume(
                window, Decimal(0), collections.deque(maxlen=rule.period)
            )
        _lru(self.series, key, self.limit)
        if window > state.window:
            state.history.append(state.volume)
            state.history.extend([Decimal(0)] * min(window - state.window - 1, rule.period))
            state.window, state.volume = window, Decimal(0)
            if len(state.history) == rule.period:
                state.mean, state.stddev = _mean_stddev(state.history)
        # A late event (an earlier window) counts in the current one.
        state.volume += value
        if len(state.history) < rule.period:
            return _REARM
        if state.volume > state.mean + rule.threshold * state.stddev:
            zscore = (
                _MATH.divide(state.volume - state.mean, state.stddev).quantize(_CENT, context=_MATH)
                if state.stddev
                else None
            )
            extras = {
                "volume": state.volume,
                "mean": _SIX_DIGITS.plus(state.mean),
                "stddev": _SIX_DIGITS.plus(state.stddev),
                "zscore": zscore,
                "period": rule.period,
            }
            return _Fire(f"spike in window {state.window}", event, extras)
        return _REARM


def _mean_stddev(values: Sequence[Decimal]) -> tuple[Decimal, Decimal]:
    """Mean and sample standard deviation (n - 1), exact to 40 digits."""
    n = len(values)
    mean = _MATH.divide(sum(values, Decimal(0)), n)
    squares = sum((_MATH.multiply(v - mean, v - mean) for v in values), Decimal(0))
    return mean, _MATH.sqrt(_MATH.divide(squares, n - 1))


@attrs.define
class _Wilder:
    last_start: int
    close: Decimal
    changes: int = 0
    gain: Decimal = Decimal(0)
    loss: Decimal = Decimal(0)


@attrs.define(eq=False)
class _Rsi:
    crossing: ClassVar[bool] = True
    rule: Rule
    limit: int
    series: collections.OrderedDict[_Key, _Wilder] = attrs.field(factory=collections.OrderedDict)

    def key(self, event: Event) -> _Key:
        return (event.venue, event.symbol, getattr(event, "interval", None))

    def read(self, event: Event) -> Reading:
        if event.__class__ is not Candle:
            return None
        assert isinstance(event, Candle)
        if not event.closed:
            return None
        key = (event.venue, event.symbol, event.interval)
        state = self.series.get(key)
        if state is None:
            self.series[key] = _Wilder(event.start, event.close)
            _lru(self.series, key, self.limit)
            return None
        _lru(self.series, key, self.limit)
        if event.start <= state.last_start:
            return None  # a repeat of a closed candle, or one out of order
        n = self.rule.period
        change = event.close - state.close
        gain = change if change > 0 else Decimal(0)
        loss = -change if change < 0 else Decimal(0)
        state.last_start, state.close = event.start, event.close
        state.changes += 1
        if state.changes <= n:
            # Seed: the plain mean of the first n gains and losses.
            state.gain += gain
            state.loss += loss
            if state.changes < n:
                return None
            state.gain = _MATH.divide(state.gain, n)
            state.loss = _MATH.divide(state.loss, n)
        else:
            # Wilder's smoothing: avg = (previous avg * (n - 1) + current) / n.
            state.gain = _MATH.divide(state.gain * (n - 1) + gain, n)
            state.loss = _MATH.divide(state.loss * (n - 1) + loss, n)
        rsi = _rsi(state.gain, state.loss)
        rule = self.rule
        if rsi > rule.high or rsi < rule.low:
            extras = {
                "rsi": rsi.quantize(_CENT, context=_MATH),
                "low": rule.low,
                "high": rule.high,
                "period": n,
            }
            return _Fire("above" if rsi > rule.high else "below", event, extras)
        inside = rule.low + rule.band <= rsi <= rule.high - rule.band
        return _REARM if inside else _QUIET


def _rsi(gain: Decimal, loss: Decimal) -> Decimal:
    """RSI = 100 - 100 / (1 + RS), RS = average gain / average loss."""
    if not loss:
        return _HUNDRED if gain else Decimal(50)
    rs = _MATH.divide(gain, loss)
    return _HUNDRED - _MATH.divide(_HUNDRED, 1 + rs)


@attrs.define(eq=False)
class _Whale:
    crossing: ClassVar[bool] = False
    step: Any
    classes: tuple[type[Event], ...]
    limit: int
    seen: collections.OrderedDict[Hashable, None] = attrs.field(factory=collections.OrderedDict)
    # From irisflow._chain, imported once when the rule is set up (not per event).
    native: tuple[type[Any], ...] = attrs.field(init=False)
    natural_key: Callable[[Any], Hashable] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        from ._chain import InternalTransaction, Transaction, natural_key

        self.native = (Transaction, InternalTransaction)
        self.natural_key = natural_key

    def key(self, event: Event) -> _Key:
        return (event.venue, event.symbol)

    def read(self, event: Event) -> Reading:
        if event.__class__ not in self.classes:
            return None
        whales = self.step.process([event])
        if not whales:
            return None
        whale = whales[0]
        identity = self.natural_key(whale)
        if identity in self.seen:
            return None  # the same transfer again (pending, then mined)
        self.seen[identity] = None
        _lru(self.seen, identity, self.limit)
        amount = whale.value_eth if whale.__class__ in self.native else whale.amount
        return _Fire("whale", whale, {"amount": amount})


def _detector(rule: Rule, limit: int) -> _Detector:
    if rule.kind == "threshold":
        predicates = {}
        for cls in rule.kinds:
            predicate = rule.condition.predicate_for(cls)
            if predicate is not None:
                predicates[cls] = predicate
        return _Threshold(predicates, rule.measure)
    if rule.kind == "change":
        return _Change(rule, limit)
    if rule.kind == "volume_spike":
        return _VolumeSpike(rule, limit)
    if rule.kind == "rsi":
        return _Rsi(rule, limit)
    from ._whale import WhaleStep

    step = WhaleStep(min_eth=rule.threshold, min_tokens=rule.threshold, memory=1)
    return _Whale(step, chain_kinds(), limit)


# --------------------------------------------------------------------------------------------
# The step


@attrs.define
class _Cooldown:
    until: int
    count: int = 0
    first_ts: int = 0
    last: _Fire | None = None


def _key_of(rule: str, event: Event) -> str:
    """:func:`alert_key`, also telling apart on-chain events that share a block time."""
    key = alert_key(rule, event)
    extra = [
        f"{name}={value}"
        for name in ("tx_hash", "log_index")
        if (value := getattr(event, name, None)) is not None
    ]
    if not extra:
        return key
    digest = hashlib.sha256("\x1f".join([key, *extra]).encode()).hexdigest()[:24]
    return f"{rule}:{digest}"


class _Active:
    """One rule at work: its detector, which keys are disarmed, the cooldowns."""

    def __init__(self, rule: Rule, max_keys: int) -> None:
        self.rule = rule
        self.detector = _detector(rule, max_keys)
        self.max_keys = max_keys
        self.pre: dict[type[Event], Callable[[Event], bool]] | None = None
        if rule.kind != "threshold" and str(rule.condition) != "true":
            self.pre = {}
            for cls in rule.kinds:
                predicate = rule.condition.predicate_for(cls)
                if predicate is not None:
                    self.pre[cls] = predicate
        self.rearm: Filter | None = rule.rearm
        self.disarmed: collections.OrderedDict[_Key, str] = collections.OrderedDict()
        self.cooldowns: dict[_Key, _Cooldown] = {}
        self.next_due = math.inf
        self.fired = self.folded = self.digests = self.withdrawn = 0
        self._time_fields: dict[type[Event], frozenset[str]] = {}
        # Whale alerts sent, by the natural key of their transfer: a reorg that retracts the
        # transfer withdraws the alert (see _withdraw).
        self.sent: collections.OrderedDict[Hashable, Alert] | None = None
        if rule.kind == "whale":
            from ._chain import Retraction, natural_key

            self.sent = collections.OrderedDict()
            self._retraction: type[Event] = Retraction
            self._natural_key: Callable[[Event], Hashable] = natural_key

    def process(self, events: list[Event], out: list[Event]) -> None:
        rule = self.rule
        venues, symbols, pre, rearm = rule.venues, rule.symbols, self.pre, self.rearm
        read = self.detector.read
        sent = self.sent
        for event in events:
            if sent is not None and event.__class__ is self._retraction:
                self._withdraw(event, sent, out)
                continue
            if venues and event.venue not in venues:
                continue
            if symbols and event.symbol not in symbols:
                continue
            if pre is not None:
                predicate = pre.get(event.__class__)
                if predicate is None or not predicate(event):
                    continue
            reading = read(event)
            if reading is None or reading.__class__ is _Signal:
                if self.disarmed and (
                    (rearm is None and reading is _REARM) or (rearm is not None and rearm(event))
                ):
                    self.disarmed.pop(self.detector.key(event), None)
                continue
            assert isinstance(reading, _Fire)
            self._hit(reading, out)

    def _hit(self, fire: _Fire, out: list[Event]) -> None:
        key = self.detector.key(fire.event)
        if self.detector.crossing:
            if self.disarmed.get(key) == fire.label:
                return  # still true: it fired when it became true
            self.disarmed[key] = fire.label
            _lru(self.disarmed, key, self.max_keys)
        now = fire.event.recv_ts
        cooldown = self.cooldowns.get(key)
        if cooldown is not None and cooldown.until <= now:
            self._expire(key, cooldown, now, out)
            cooldown = self.cooldowns.get(key)
        if cooldown is None:
            alert = self._alert(fire, now)
            out.append(alert)
            self.fired += 1
            if self.sent is not None:
                identity = self._natural_key(fire.event)
                self.sent[identity] = alert
                _lru(self.sent, identity, self.max_keys)
            if self.rule.cooldown:
                until = now + self.rule.cooldown
                self.cooldowns[key] = _Cooldown(until)
                self.next_due = min(self.next_due, until)
            return
        cooldown.count += 1
        if cooldown.count == 1:
            cooldown.first_ts = fire.event.ts
        cooldown.last = fire
        self.folded += 1

    def _withdraw(
        self, retraction: Event, sent: collections.OrderedDict[Hashable, Alert], out: list[Event]
    ) -> None:
        """A reorg undid the transfer of a whale alert sent: say so, once, at once.

        The withdrawal is an alert of its own (the first cannot be unsent): the same rule,
        venue, symbol and targets, ``withdrawn (reorg):`` before the first text, and a key of
        its own. Cooldowns do not hold it back. Should the transfer be mined again, it alerts
        again.
        """
        identity = self._natural_key(retraction)
        alert = sent.pop(identity, None)
        if alert is None:
            return  # a transfer this rule did not alert on
        self.withdrawn += 1
        assert isinstance(self.detector, _Whale)
        self.detector.seen.pop(identity, None)  # mined again later, it is a whale again
        out.append(
            attrs.evolve(
                alert,
                ts=retraction.ts,
                recv_ts=retraction.recv_ts,
                text=f"withdrawn (reorg): {alert.text}",
                key=f"{alert.key}:withdrawn",
                count=1,
            )
        )

    def _expire(self, key: _Key, cooldown: _Cooldown, now: int, out: list[Event]) -> None:
        """End the cooldown of ``key`` if due at ``now``: a digest if firings were folded."""
        while cooldown.until <= now:
            if not cooldown.count:
                del self.cooldowns[key]
                return
            out.append(self._digest(cooldown, cooldown.until))
            cooldown.until += self.rule.cooldown
            cooldown.count, cooldown.last = 0, None

    def advance(self, now: int, out: list[Event]) -> None:
        if now < self.next_due:
            return
        due = math.inf
        for key, cooldown in list(self.cooldowns.items()):
            self._expire(key, cooldown, now, out)
            if key in self.cooldowns:
                due = min(due, cooldown.until)
        self.next_due = due

    def flush(self, out: list[Event]) -> None:
        out.extend(
            self._digest(cooldown, cooldown.last.event.recv_ts)
            for cooldown in self.cooldowns.values()
            if cooldown.count and cooldown.last is not None
        )
        self.cooldowns.clear()
        self.next_due = math.inf

    def _values(self, fire: _Fire) -> dict[str, Any]:
        rule, event = self.rule, fire.event
        cls = event.__class__
        times = self._time_fields.get(cls)
        if times is None:
            names = (f.name for f in attrs.fields(cls))
            times = self._time_fields[cls] = frozenset(n for n in names if is_time_field(cls, n))
        common = {
            "rule": rule.name,
            "severity": rule.severity,
            "kind": event.kind,
            "time": Time(event.ts),
            "condition": rule.config.condition if rule.config is not None else str(rule.condition),
        }
        if rule.config is not None and rule.config.window is not None:
            common["window"] = rule.config.window
        values: dict[str, Any] = {}
        for name in rule.template.fields:
            if name in fire.extras:
                values[name] = fire.extras[name]
            elif name in common:
                values[name] = common[name]
            else:
                value = getattr(event, name, None)
                values[name] = Time(value) if name in times and value is not None else value
        return values

    def _alert(self, fire: _Fire, now: int) -> Alert:
        rule, event = self.rule, fire.event
        return Alert(
            venue=event.venue,
            symbol=event.symbol,
            ts=event.ts,
            recv_ts=now,
            rule=rule.name,
            severity=rule.severity,
            text=rule.template.render(self._values(fire)),
            key=_key_of(rule.name, event),
            targets=rule.targets,
        )

    def _digest(self, cooldown: _Cooldown, now: int) -> Alert:
        last = cooldown.last
        assert last is not None
        self.digests += 1
        alert = self._alert(last, now)
        if cooldown.count == 1:
            return alert
        span = show_duration(last.event.ts - cooldown.first_ts)
        header = (
            f"{self.rule.name} fired {cooldown.count} times in {span}, "
            f"last at {to_datetime(last.event.ts):%H:%M:%S} UTC: "
        )
        return attrs.evolve(alert, text=header + alert.text, count=cooldown.count)


@attrs.frozen
class AlertStepStatistics:
    """Counters of an :class:`AlertStep` (from :meth:`AlertStep.statistics`)."""

    fired: int
    """Alerts emitted at once (the first firing of a cooldown, or every one without)."""
    folded: int
    """Firings folded into digests because they came within a cooldown."""
    digests: int
    """Digest alerts emitted when cooldowns ended."""
    withdrawn: int = 0
    """Whale alerts withdrawn because a reorg undid their transfer."""


class AlertStep:
    """A pipeline step that fires alerts: every event passes, alerts are appended.

    Rules see events in order; each keeps its own small state per venue and symbol (at most
    ``max_keys`` of them, the least recently seen are forgotten). Times are taken from the
    events (``ts`` for windows, ``recv_ts`` for cooldowns) and from :meth:`advance`, so a replay
    fires exactly what the live run fired.

    Args:
        rules: The rules, e.g. from :func:`build_rules`.
        kinds: The event classes that reach the step, for :attr:`output_kinds`.
        max_keys: Most (venue, symbol) states each rule keeps.

    Raises:
        UsageError: ``max_keys`` < 1.
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        kinds: Iterable[type[Event]] | None = None,
        max_keys: int = 100_000,
    ) -> None:
        if max_keys < 1:
            raise UsageError(f"AlertStep max_keys must be at least 1 (got {max_keys})")
        self.rules = tuple(rules)
        """The rules, in order."""
        self.output_kinds = None if kinds is None else frozenset(kinds) | {Alert}
        """The event classes the step emits: what reaches it, and alerts (None: unknown)."""
        self.timed = any(rule.cooldown for rule in self.rules)
        """Whether the runner must advance the step while the feed is idle (cooldowns)."""
        self._active = [_Active(rule, max_keys) for rule in self.rules]

    def __repr__(self) -> str:
        return f"<AlertStep rules={[rule.name for rule in self.rules]!r}>"

    def process(self, events: list[Event]) -> list[Event]:
        """``events`` unchanged, followed by the alerts they fire."""
        alerts: list[Event] = []
        for active in self._active:
            active.process(events, alerts)
        return [*events, *alerts] if alerts else events

    def advance(self, now: int) -> list[Event]:
        """Digests of the cooldowns that ended by ``now`` (ns)."""
        out: list[Event] = []
        for active in self._active:
            active.advance(now, out)
        return out

    def flush(self) -> list[Event]:
        """Digests of every cooldown with folded firings, now (at the end of a stream)."""
        out: list[Event] = []
        for active in self._active:
            active.flush(out)
        return out

    def statistics(self) -> AlertStepStatistics:
        """Counters since the step was made."""
        return AlertStepStatistics(
            fired=sum(a.fired for a in self._active),
            folded=sum(a.folded for a in self._active),
            digests=sum(a.digests for a in self._active),
            withdrawn=sum(a.withdrawn for a in self._active),
        )
