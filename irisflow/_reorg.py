"""Reorg bookkeeping shared by the steps that keep state: windows, bars, join and trackers.

On-chain venues take events back when a block is orphaned: a ``retraction`` names the event by
its natural key (``_chain.py``). A step that has counted such an event takes it back too: an
open window refolds without it, an emitted window comes out again as a *revision*, an emitted
pair or spike is withdrawn by a retraction of its own. For that a step keeps a
:class:`Ledger`: which of its *holders* (an open or emitted window, an emitted pair, ...)
counted each on-chain event, by natural key.

Only steps that on-chain kinds flow into keep one (:func:`carries_chain` of their input
kinds): a market-data pipeline builds no ledger and does no bookkeeping on its hot path.

**Bounded memory.** What is emitted is kept for :data:`REORG_HORIZON` of event time past its
end (the step's watermark, or its newest event time, must pass ``end + REORG_HORIZON``), and
at most :data:`REORG_MEMORY` results per step, the oldest forgotten first. The keys of the
events a forgotten result counted are remembered (at most :data:`REORG_MEMORY` of them), so a
retraction that comes too late is counted as *expired* (``statistics()``), not mistaken for
one of an event the step never saw. The retraction itself passes on either way.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from . import _chain
from ._chain import Confirmation, NaturalKey, Retraction, natural_key
from ._events import KINDS, Event

__all__ = [
    "MARKS",
    "MARK_CLASSES",
    "REORG_HORIZON",
    "REORG_MEMORY",
    "Ledger",
    "Passed",
    "carries_chain",
    "pass_marks",
    "reorg_key",
    "withdrawal",
]

REORG_HORIZON = 15 * 60 * 1_000_000_000
"""How long (ns of event time past a result's end) a step can still correct it: 15 minutes.

Ethereum reorgs are one or two blocks deep (12 s each) and finality comes after about 13
minutes; a deeper reorg than this is counted as expired."""

REORG_MEMORY = 100_000
"""Most emitted results one step keeps for corrections (and most forgotten keys it knows)."""

MARKS = frozenset({"retraction", "confirmation"})
"""Kinds that change earlier events: they pass through every step."""

MARK_CLASSES: frozenset[type[Event]] = frozenset({Retraction, Confirmation})
"""Their classes: a step that passes them (or sends retractions) adds them to its output kinds."""


def _chain_classes() -> tuple[type[Event], ...]:
    return tuple(cls for cls in KINDS.values() if cls.__module__ == _chain.__name__)


def carries_chain(kinds: Iterable[type[Event]]) -> bool:
    """Whether on-chain events (or their retractions and confirmations) may be among ``kinds``.

    Subclasses count (``select`` enriches events into subclasses of their kind).
    """
    bases = _chain_classes()
    return any(isinstance(cls, type) and issubclass(cls, bases) for cls in kinds)


def reorg_key(event: Event) -> NaturalKey | None:
    """:func:`~irisflow._chain.natural_key`, also for enriched events, joins, spikes, windows.

    An event with ``tx_hash`` is named ``(kind, tx_hash, log_index or internal_index)``; a
    ``join`` by its left event's (``left_tx_hash``, ...), so an emitted pair can be withdrawn;
    a ``spike`` by the on-chain event that triggered it; a ``window`` result by its spec, key
    and span (what a revision of it has too). Market data has no key (None).
    """
    key = natural_key(event)
    if key is not None:
        return key
    e: Any = event
    kind = event.kind
    if kind == "window":  # what a revision replaces: the result of the same window
        return ("window", f"{e.spec}|{e.key}|{e.start}|{e.end}", None)
    if kind in MARKS:
        if e.target == "block":
            return ("block", e.block_hash or str(e.block_number), None)
        return (e.target, e.tx_hash, e.log_index)
    prefix = "left_" if kind == "join" else ""
    tx_hash = getattr(e, prefix + "tx_hash", None)
    if tx_hash is not None:
        index = getattr(e, prefix + "log_index", None)
        if index is None:
            index = getattr(e, prefix + "internal_index", None)
        return (kind, tx_hash, index)
    if kind == "block":
        return ("block", e.hash or str(e.number), None)
    return None


def withdrawal(result: Event, key: NaturalKey, cause: Event) -> Retraction:
    """The retraction that takes back an emitted ``result`` (a join or a spike) named ``key``.

    ``venue`` and ``symbol`` are the result's; times and block are those of ``cause``, the
    retraction that voided what the result was made of.
    """
    c: Any = cause
    return Retraction(
        result.venue,
        result.symbol,
        cause.ts,
        cause.recv_ts,
        key[0],
        key[1],
        key[2],
        getattr(c, "block_number", None),
        getattr(c, "block_hash", None),
    )


H = TypeVar("H")


class Ledger(Generic[H]):
    """Which holders counted each on-chain event; emitted holders kept for a while.

    Args:
        keys_of: The natural keys a holder counts now (read when it is forgotten).
        horizon: Event time past a kept holder's end before it is forgotten, ns.
        memory: Most holders kept, and most forgotten keys remembered.
    """

    __slots__ = ("_forgotten", "_holders", "_kept", "_keys_of", "expired", "horizon", "memory")

    def __init__(
        self,
        keys_of: Callable[[H], Iterable[NaturalKey]],
        *,
        horizon: int = REORG_HORIZON,
        memory: int = REORG_MEMORY,
    ) -> None:
        self._keys_of = keys_of
        self.horizon, self.memory = horizon, memory
        self._holders: dict[NaturalKey, list[H]] = {}
        self._kept: collections.deque[tuple[int, H]] = collections.deque()
        self._forgotten: collections.OrderedDict[NaturalKey, None] = collections.OrderedDict()
        self.expired = 0
        """Retractions that named an event counted by a result forgotten already."""

    def __len__(self) -> int:
        """How many natural keys are indexed."""
        return len(self._holders)

    @property
    def kept(self) -> int:
        """How many emitted holders are kept."""
        return len(self._kept)

    def add(self, key: NaturalKey, holder: H) -> None:
        """``holder`` counted the event named ``key``."""
        holders = self._holders.get(key)
        if holders is None:
            self._holders[key] = [holder]
        else:
            holders.append(holder)

    def take(self, key: NaturalKey) -> list[H]:
        """The holders that counted ``key`` (each once), which no longer do: it was retracted.

        A key some forgotten result counted is counted in :attr:`expired`.
        """
        if key in self._forgotten:
            self.expired += 1
            del self._forgotten[key]
        found = self._holders.pop(key, None)
        if not found:
            return []
        unique: dict[int, H] = {}
        for holder in found:
            unique.setdefault(id(holder), holder)
        return list(unique.values())

    def unlink(self, key: NaturalKey, holder: H) -> None:
        """``holder`` no longer counts ``key`` (it was moved elsewhere, or dropped)."""
        holders = self._holders.get(key)
        if holders is None:
            return
        rest = [h for h in holders if h is not holder]
        if rest:
            self._holders[key] = rest
        else:
            del self._holders[key]

    def drop(self, holder: H) -> None:
        """Forget ``holder`` now, without counting its keys as forgotten (nothing to correct)."""
        for key in self._keys_of(holder):
            self.unlink(key, holder)

    def keep(self, end: int, holder: H) -> None:
        """``holder`` was emitted; keep it until event time passes ``end + horizon``."""
        self._kept.append((end, holder))

    def expire(self, now: int) -> None:
        """Forget kept holders whose end is more than the horizon before ``now`` (event time),
        and the oldest while more than ``memory`` are kept."""
        kept, limit = self._kept, now - self.horizon
        while kept and (kept[0][0] <= limit or len(kept) > self.memory):
            _, holder = kept.popleft()
            for key in self._keys_of(holder):
                self.unlink(key, holder)
                self._forgotten[key] = None
            while len(self._forgotten) > self.memory:
                self._forgotten.popitem(last=False)


def pass_marks(process: Callable[[list[Event]], list[Event]], events: list[Event]) -> list[Event]:
    """``process`` over ``events``, but retractions and confirmations pass it, in place.

    For steps that drop or sample events by key (throttle, dedupe, sample): a mark is not an
    event of its key, and a later step or sink needs it.
    """
    out: list[Event] = []
    run: list[Event] = []
    for event in events:
        if event.kind in MARKS:
            if run:
                out.extend(process(run))
                run = []
            out.append(event)
        else:
            run.append(event)
    if run:
        out.extend(process(run))
    return out


class Passed:
    """The natural keys of the on-chain events a filter passed (the latest ``memory``)."""

    __slots__ = ("_keys", "memory")

    def __init__(self, memory: int = REORG_MEMORY) -> None:
        self._keys: collections.OrderedDict[NaturalKey, None] = collections.OrderedDict()
        self.memory = memory

    def __len__(self) -> int:
        return len(self._keys)

    def follow(self, events: list[Event], kept: list[Event]) -> list[Event]:
        """``kept`` (what a filter kept of ``events``, in order), plus the retractions and
        confirmations it dropped that name an event it passed."""
        out: list[Event] = []
        keys, at = self._keys, 0
        for event in events:
            if at < len(kept) and kept[at] is event:
                at += 1
                out.append(event)
                if event.kind in MARKS:
                    continue
                key = reorg_key(event)
                if key is not None:
                    keys[key] = None
                    keys.move_to_end(key)
            elif event.kind in MARKS:
                key = reorg_key(event)
                if key is not None and key in keys:
                    out.append(event)
        while len(keys) > self.memory:
            keys.popitem(last=False)
        return out
