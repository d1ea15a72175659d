"""The alert record: what an alert rule produces and the Telegram sink delivers.

An :class:`Alert` is an event like any other (kind ``'alert'``), so it can also go to the JSON
lines writer or a table. ``venue``, ``symbol`` and ``ts`` are those of the triggering event;
``recv_ts`` is when the rule fired. ``key`` identifies the alert across retries and restarts, so
a delivery that is retried (or replayed from the outbox) is recognised instead of sent twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import ClassVar, Literal

import attrs

from ._events import Event, described, event_kind

__all__ = ["SEVERITIES", "Alert", "Severity", "alert_key"]

Severity = Literal["info", "warning", "critical"]
"""How urgent an alert is."""

SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
"""The severities, least urgent first."""

# Fields that identify one event among others of the same venue, symbol and time.
_ID_FIELDS = (
    "trade_id",
    "update_id",
    "first_update_id",
    "last_update_id",
    "interval",
    "tx_hash",  # chain events: several transfers may share a block time
    "log_index",
    "hash",
)


_IS_SEVERITY = attrs.validators.in_(SEVERITIES)
_AT_LEAST_ONE = attrs.validators.ge(1)


def _as_targets(value: str | int | Iterable[str | int]) -> tuple[str, ...]:
    """Chat ids as a tuple of strings; one id on its own is one target, not its characters."""
    if isinstance(value, str | int):
        return (str(value),)
    return tuple(str(chat) for chat in value)


_doc = described


def alert_key(rule: str, event: Event) -> str:
    """A stable idempotency key for ``rule`` firing on ``event``.

    The key depends on the rule name, the event kind, venue, symbol, exchange time ``ts`` and
    the venue's id fields (trade id, update id), never on local receive time, so the same rule
    firing on the same event (also when replayed from a recording) gives the same key.

    Returns:
        ``"<rule>:<24 hex digits>"``; the rule name stays readable in the outbox.
    """
    parts = [rule, event.kind, event.venue, event.symbol, str(event.ts)]
    for name in _ID_FIELDS:
        value = getattr(event, name, None)
        if value is not None:
            parts.append(f"{name}={value}")
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]
    return f"{rule}:{digest}"


@event_kind
@attrs.frozen
class Alert(Event):
    """A fired alert rule, ready to be delivered (to Telegram, a log, a table)."""

    kind: ClassVar[str] = "alert"

    rule: str = _doc("name of the rule that fired")
    severity: Severity = _doc(  # noqa: RUF009 (an attrs field, not a default)
        "'info', 'warning' or 'critical'", validator=_IS_SEVERITY
    )
    text: str = _doc("the rendered message, in the parse mode of the sink it is meant for")
    key: str = _doc("idempotency key: rule + triggering event identity + ts (see alert_key)")
    count: int = _doc(
        "how many firings this record stands for: 1, or N for a digest",
        default=1,
        validator=_AT_LEAST_ONE,
    )
    targets: tuple[str, ...] = _doc(
        "chat ids to deliver to, as strings; empty means the sink's default chat",
        default=(),
        converter=_as_targets,
    )
