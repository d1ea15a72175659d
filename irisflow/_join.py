"""As-of join of two keyed streams (sans-IO): each left event with the right event just before it.

``by symbol | join (venue == 'coinbase') within 2s map 'BTC-USD' = 'BTCUSDT'`` splits the
stream in two: events the condition accepts are the *right* stream, all others the *left*.
Right events are remembered per key (after ``map`` renames their key). Each left event comes
out as one :class:`Joined` event, paired with the right event of its key that has the latest
``ts`` at or before the left event's ``ts``, if that is at most ``within`` earlier. Without a
match, the left event is dropped (counted), or with ``outer`` comes out with no right side.

Event time, not arrival order, decides the pairing. A left event waits until the right stream
has reached its time (a right event with a ``ts`` at least as late has come) or the watermark
has passed it: the largest ``ts`` seen minus ``lateness``, moved on by the receive clock in
:meth:`AsofJoinStep.advance` as windows do (after ``idle``). With the default ``lateness 0``
a left event is paired with what has come so far.

A :class:`Joined` event has ``key``, ``lag`` (left ``ts`` - right ``ts``, ns) and every field
of both sides with a ``left_`` or ``right_`` prefix (``left_price``, ``right_bid_price``,
``right_ts``, ...), typed, so ``select spread = left_price - right_ask_price`` works. Its
``venue``, ``symbol``, ``ts`` and ``recv_ts`` are the left event's. Gaps pass.

**Reorgs** (when on-chain kinds flow in; ``_reorg.py``). Retractions and confirmations pass
on. A retracted right event leaves the history, so later left events pair with the right event
before it. A retracted left event still waiting is dropped. An emitted pair whose left or right
event is retracted is withdrawn: a ``retraction`` with target ``join`` naming the left event's
``tx_hash`` and ``log_index`` (:func:`~irisflow._reorg.reorg_key` of the pair). If it was the
right event, the left one is paired again with the history as it now stands, and comes out
again if it matches (or with ``outer``). A pair whose left event is market data has no natural
key and cannot be withdrawn: it stays, counted in ``statistics().unnamed``. Pairs are kept
for :data:`~irisflow._reorg.REORG_HORIZON` past the left event's time (and right events as
long, to pair again with); a retraction after that is counted as ``expired``.
"""

from __future__ import annotations

import bisect
import collections
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import attrs

from ._chain import NaturalKey
from ._events import Event, Gap, described, event_kind
from ._filter import Filter
from ._reorg import (
    MARK_CLASSES,
    MARKS,
    REORG_HORIZON,
    Ledger,
    carries_chain,
    reorg_key,
    withdrawal,
)
from ._steps import PipelineError, condition, kind_set, no_key

__all__ = ["AsofJoinStep", "JoinStatistics", "Joined", "joined_class"]

_NEVER = -(2**63)


_doc = described


@event_kind
@attrs.frozen
class Joined(Event):
    """A left event paired with the latest right event of its key (``join``).

    A join step adds the fields of both sides as ``left_*`` and ``right_*``.
    """

    kind: ClassVar[str] = "join"

    key: str = _doc("the key both events share (after map)")
    lag: int | None = _doc("left ts minus right ts, ns (None: no right event)", default=None)


_JOINED: dict[tuple[frozenset[type[Event]], frozenset[type[Event]]], type[Joined]] = {}


def _side_fields(classes: Iterable[type[Event]]) -> dict[str, tuple[Any, dict[str, Any]]]:
    """``{name: (type, metadata)}`` over ``classes``; a name typed differently gets ``Any``."""
    out: dict[str, tuple[Any, dict[str, Any]]] = {}
    for cls in sorted(classes, key=lambda c: (c.kind, c.__name__)):
        hints = typing.get_type_hints(cls)
        for field in attrs.fields(cls):
            hint = hints.get(field.name, Any)
            meta = dict(field.metadata)
            if field.name in out and out[field.name][0] != hint:
                out[field.name] = (Any, out[field.name][1])
            else:
                out.setdefault(field.name, (hint, meta))
    return out


def joined_class(left: Iterable[type[Event]], right: Iterable[type[Event]]) -> type[Joined]:
    """The :class:`Joined` subclass with ``left_*`` and ``right_*`` fields (cached)."""
    signature = (frozenset(left), frozenset(right))
    cached = _JOINED.get(signature)
    if cached is not None:
        return cached
    body: dict[str, Any] = {}
    for prefix, classes in (("left", signature[0]), ("right", signature[1])):
        for name, (hint, meta) in _side_fields(classes).items():
            doc = f"{prefix} event: {meta.get('doc', name)}"
            optional: Any = typing.Optional[hint]  # noqa: UP045 (hint is a runtime value)
            body[f"{prefix}_{name}"] = attrs.field(
                default=None, type=optional, metadata={**meta, "doc": doc}
            )
    cls: type[Joined] = attrs.make_class(
        "JoinedSides", body, bases=(Joined,), frozen=True, slots=True
    )
    cls.__module__ = __name__
    _JOINED[signature] = cls
    return cls


@attrs.frozen
class JoinStatistics:
    """What a join step has done so far."""

    joined: int
    """Left events paired with a right event."""
    unmatched: int
    """Left events with no right event within the tolerance."""
    waiting: int
    """Left events waiting for the right stream to reach their time."""
    withdrawn: int = 0
    """Emitted pairs withdrawn because a reorg retracted their left or right event."""
    repaired: int = 0
    """Of those, pairs of a retracted right event that came out again with another one."""
    unnamed: int = 0
    """Pairs of a retracted right event that could not be withdrawn: a market-data left."""
    expired: int = 0
    """Retractions that came after the pair they concern was forgotten."""


class _Pair:
    """An emitted pair, kept for retractions of its events."""

    __slots__ = ("joined", "left", "left_key", "right_key")

    def __init__(self, joined: Joined, left: Event, right: Event | None) -> None:
        self.joined, self.left = joined, left
        self.left_key = reorg_key(left)
        self.right_key = None if right is None else reorg_key(right)


def _pair_keys(pair: _Pair) -> list[NaturalKey]:
    return [key for key in (pair.left_key, pair.right_key) if key is not None]


@attrs.define(on_setattr=attrs.setters.NO_OP)  # plain attribute writes: hot path
class AsofJoinStep:
    """The as-of join (see the module docs).

    Args:
        right: The condition that picks the right stream, e.g. ``"venue == 'coinbase'"``.
        within: The largest ``ts`` distance of a pair, ns.
        kinds: The event classes flowing in.
        key: The key of an event (``by``); none: one key for all.
        key_map: Renames right keys to left ones, e.g. ``{'BTC-USD': 'BTCUSDT'}``.
        lateness: How long a left event may wait for the right stream, ns of event time.
        outer: Emit unmatched left events too (right fields ``None``).
        idle: Receive-clock silence before the clock moves the watermark on, ns.
    """

    right: str
    within: int
    kinds: frozenset[type[Event]] = attrs.field(converter=kind_set)
    key: Callable[[Event], str] = no_key
    key_map: Mapping[str, str] = attrs.field(factory=dict)
    lateness: int = 0
    outer: bool = False
    idle: int = 0
    output_kinds: frozenset[type[Event]] = attrs.field(init=False)
    _is_right: Filter = attrs.field(init=False)
    _cls: type[Joined] = attrs.field(init=False)
    _names: dict[type[Event], tuple[str, ...]] = attrs.field(init=False, factory=dict)
    _times: dict[str, list[int]] = attrs.field(init=False, factory=dict)
    _rights: dict[str, list[Event]] = attrs.field(init=False, factory=dict)
    _waiting: collections.deque[Event] = attrs.field(init=False, factory=collections.deque)
    _right_ts: int = attrs.field(init=False, default=_NEVER)
    _max_ts: int = attrs.field(init=False, default=_NEVER)
    _last_recv: int = attrs.field(init=False, default=_NEVER)
    _watermark: int = attrs.field(init=False, default=_NEVER)
    _joined: int = attrs.field(init=False, default=0)
    _unmatched: int = attrs.field(init=False, default=0)
    _chain: bool = attrs.field(init=False, default=False)
    _pairs: Ledger[_Pair] | None = attrs.field(init=False, default=None)
    """With on-chain kinds: emitted pairs by the natural keys of their events."""
    _right_at: dict[NaturalKey, str] = attrs.field(init=False, factory=dict)
    """With on-chain kinds: the join key each remembered right event is filed under."""
    _counts: list[int] = attrs.field(init=False, factory=lambda: [0, 0, 0])
    """Withdrawn, repaired, unnamed."""

    def __attrs_post_init__(self) -> None:
        if self.within <= 0 or self.lateness < 0:
            raise PipelineError("join needs a positive 'within' and a lateness of 0 or more")
        classes = [cls for cls in dict.fromkeys(self.kinds) if cls is not Gap]
        self._is_right = condition(self.right, classes)
        self._cls = joined_class(classes, self._is_right.kinds)
        self.output_kinds = frozenset({self._cls, Gap})
        if carries_chain(classes):
            self._chain, self._pairs = True, Ledger(_pair_keys)
            self.output_kinds |= MARK_CLASSES

    def statistics(self) -> JoinStatistics:
        """Counters so far."""
        expired = 0 if self._pairs is None else self._pairs.expired
        withdrawn, repaired, unnamed = self._counts
        return JoinStatistics(
            self._joined, self._unmatched, len(self._waiting), withdrawn, repaired, unnamed, expired
        )

    def process(self, events: list[Event]) -> list[Event]:
        """Remember right events, pair left ones whose time has come; gaps pass."""
        out: list[Event] = []
        chain = self._chain
        for event in events:
            if event.__class__ is Gap:
                out.append(event)
                continue
            if chain and event.kind in MARKS:
                out.append(event)
                if event.kind == "retraction":
                    self._retract(event, out)
                continue
            ts = event.ts
            self._last_recv = max(self._last_recv, event.recv_ts)
            if ts > self._max_ts:
                self._max_ts = ts
                self._watermark = max(self._watermark, ts - self.lateness)
            if self._is_right(event):
                self._remember(event)
            else:
                self._waiting.append(event)
            self._release(out)
        return out

    def advance(self, now: int) -> list[Event]:
        """Receive time is ``now``: left events the clock says have waited enough come out."""
        out: list[Event] = []
        if self._max_ts == _NEVER or now <= self._last_recv + self.idle:
            return out
        estimate = self._max_ts - self.lateness + (now - self._last_recv - self.idle)
        if estimate > self._watermark:
            self._watermark = estimate
            self._release(out)
        return out

    def flush(self) -> list[Event]:
        """The stream ended: every waiting left event comes out (paired if it can be)."""
        out: list[Event] = []
        self._watermark = 2**63
        self._release(out)
        return out

    def _remember(self, event: Event) -> None:
        key = self.key(event)
        key = self.key_map.get(key, key)
        times = self._times.setdefault(key, [])
        rights = self._rights.setdefault(key, [])
        at = bisect.bisect_right(times, event.ts)
        times.insert(at, event.ts)
        rights.insert(at, event)
        self._right_ts = max(self._right_ts, event.ts)
        # Forget right events no waiting or future left event can pair with (keep one base);
        # with on-chain kinds, none a pair still kept for reorgs could pair with again.
        oldest = self._waiting[0].ts if self._waiting else self._watermark
        horizon = min(oldest, self._watermark) - self.within
        if self._chain:
            right_key = reorg_key(event)
            if right_key is not None:
                self._right_at[right_key] = key
            horizon -= REORG_HORIZON
        drop = bisect.bisect_right(times, horizon) - 1
        if drop > 0:
            if self._chain:
                for gone in rights[:drop]:
                    gone_key = reorg_key(gone)
                    if gone_key is not None and self._right_at.get(gone_key) == key:
                        del self._right_at[gone_key]
            del times[:drop], rights[:drop]

    def _release(self, out: list[Event]) -> None:
        waiting = self._waiting
        while waiting:
            left = waiting[0]
            if left.ts > self._right_ts and left.ts > self._watermark:
                break
            waiting.popleft()
            self._pair(left, out)
        if self._pairs is not None:
            self._pairs.expire(self._watermark)

    def _retract(self, retraction: Event, out: list[Event]) -> None:
        """Take back the event ``retraction`` names: as a left or right event, and the pairs
        made of it."""
        key = reorg_key(retraction)
        if key is None:
            return
        if any(reorg_key(e) == key for e in self._waiting):
            self._waiting = collections.deque(e for e in self._waiting if reorg_key(e) != key)
        where = self._right_at.pop(key, None)
        if where is not None:
            times, rights = self._times[where], self._rights[where]
            keep = [i for i, e in enumerate(rights) if reorg_key(e) != key]
            self._times[where] = [times[i] for i in keep]
            self._rights[where] = [rights[i] for i in keep]
        assert self._pairs is not None
        for pair in self._pairs.take(key):
            self._pairs.drop(pair)
            name = reorg_key(pair.joined)
            if name is None:
                self._counts[2] += 1
                continue
            out.append(withdrawal(pair.joined, name, retraction))
            self._counts[0] += 1
            if pair.joined.lag is None:
                self._unmatched -= 1
            else:
                self._joined -= 1
            if pair.left_key != key:  # its right event is void: the left one pairs again
                before = len(out)
                self._pair(pair.left, out)
                self._counts[1] += len(out) > before
            pair.left_key = pair.right_key = None  # nothing left to forget when it expires

    def _pair(self, left: Event, out: list[Event]) -> None:
        key = self.key(left)
        times = self._times.get(key, [])
        at = bisect.bisect_right(times, left.ts) - 1
        right = None
        if at >= 0 and left.ts - times[at] <= self.within:
            right = self._rights[key][at]
        if right is None:
            self._unmatched += 1
            if not self.outer:
                return
        else:
            self._joined += 1
        values: dict[str, Any] = {}
        for prefix, event in (("left_", left), ("right_", right)):
            if event is None:
                continue
            names = self._names.get(event.__class__)
            if names is None:
                names = self._names[event.__class__] = tuple(
                    f.name for f in attrs.fields(event.__class__)
                )
            for name in names:
                values[prefix + name] = getattr(event, name)
        lag = None if right is None else left.ts - right.ts
        joined = self._cls(left.venue, left.symbol, left.ts, left.recv_ts, key, lag, **values)
        out.append(joined)
        if self._pairs is not None:
            pair = _Pair(joined, left, right)
            keys = _pair_keys(pair)
            for natural in keys:
                self._pairs.add(natural, pair)
            if keys:  # a pair of market data has nothing a reorg could take back
                self._pairs.keep(left.ts, pair)
