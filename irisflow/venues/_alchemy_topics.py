"""Alchemy ``logs`` channels: topic selectors, their ``eth_subscribe`` filters, and merging.

A logs channel names up to four topic positions, ``logs:<topic0>/<topic1>/<topic2>/<topic3>``
(trailing positions may be left out). Each position is ``*`` or empty (any value), one or more
alternatives joined by ``|``: a 32-byte ``0x`` word, for topic0 also a named event
(``transfer``, ``approval``, ``swap``), for topics 1-3 also a 20-byte ``0x`` address, which
stands for the address as an indexed argument (left-padded with zeros to 32 bytes). So
``logs:transfer/*/0xabc...`` is every ``Transfer`` *to* 0xabc... (topic1 is ``from``, topic2
``to``), and ``logs:transfer/0xabc...|0xdef...`` every transfer from either.

A filter maps onto the JSON-RPC ``topics`` array as the spec has it: ``null`` for any value, a
string for one, an array for alternatives (OR), trailing ``null`` positions left out. That
matters: a node skips a log with fewer topics than the filter has positions, wildcards
included, so ``[Transfer, null, null, null]`` would miss every ERC-20 transfer.

Channels that differ in only one position share a subscription (that position's alternatives
OR-ed); a channel that another one covers adds none.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from .._chain import (
    APPROVAL_TOPIC,
    TRANSFER_TOPIC,
    UNISWAP_V2_SWAP_TOPIC,
    UNISWAP_V3_SWAP_TOPIC,
    NftTransfer,
    Swap,
    TokenApproval,
    TokenTransfer,
)
from .._errors import UsageError
from .._events import Event

__all__ = [
    "LOG_SELECTORS",
    "LOG_SYNTAX",
    "LogFilter",
    "log_filter",
    "log_kinds",
    "merge_filters",
    "normalise_logs_channel",
    "topics_param",
]

LOG_SELECTORS: dict[str, tuple[str, ...]] = {
    "transfer": (TRANSFER_TOPIC,),
    "approval": (APPROVAL_TOPIC,),
    "swap": (UNISWAP_V2_SWAP_TOPIC, UNISWAP_V3_SWAP_TOPIC),
}
"""Named topic0 selectors and the event signatures they stand for."""

LOG_SYNTAX = (
    "logs:<topic0>/<topic1>/<topic2>/<topic3> (trailing positions optional), each position"
    " * or empty for any value, or alternatives joined by '|': a 0x 32-byte word (64 hex"
    " digits), for topic0 also transfer, approval or swap, for topics 1-3 also a 0x address"
    " (40 hex digits); e.g. logs:transfer/*/0x<address> = transfers to that address"
)

LogFilter = tuple[tuple[str, ...] | None, ...]
"""Four topic positions: None for any value, else the alternatives (32-byte ``0x`` words)."""

_WORD = re.compile(r"0x[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-f]{40}")
_ANY = "*"


def _bad(what: str, raw: str) -> UsageError:
    return UsageError(f"{what} in alchemy channel {raw!r}: use {LOG_SYNTAX}")


def _normalise_position(text: str, position: int, raw: str) -> str:
    """One position, spelled canonically (lower case, ``*`` for any, alternatives deduped)."""
    if text in ("", _ANY):
        return _ANY
    found: list[str] = []
    for alternative in text.split("|"):
        value = alternative.strip()
        if position == 0 and value.rstrip("s") in LOG_SELECTORS:
            value = value.rstrip("s")
        elif value == _ANY or not value:
            raise _bad(f"'*' or an empty alternative in {text!r} (topic{position})", raw)
        elif not _WORD.fullmatch(value) and not (position and _ADDRESS.fullmatch(value)):
            if position == 0 and not value.startswith("0x"):
                close = difflib.get_close_matches(value, list(LOG_SELECTORS), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise _bad(f"unknown log selector {value!r}{hint}", raw)
            wanted = "a 32-byte word" if position == 0 else "a 32-byte word or an address"
            raise _bad(f"topic{position} {value!r} is not {wanted}", raw)
        if value not in found:
            found.append(value)
    return "|".join(found)


def normalise_logs_channel(raw: str, selector: str) -> str:
    """``logs:<selector>`` as irisflow spells it; plain ``logs`` when every position is any.

    Raises:
        UsageError: more than four positions, or a position that is none of the forms above.
    """
    parts = selector.strip().lower().split("/")
    if len(parts) > 4:
        raise _bad(f"too many topic positions ({len(parts)}; a log has at most 4)", raw)
    spelled = [_normalise_position(p.strip(), i, raw) for i, p in enumerate(parts)]
    while spelled and spelled[-1] == _ANY:
        spelled.pop()
    return "logs:" + "/".join(spelled) if spelled else "logs"


def log_filter(channel: str) -> LogFilter:
    """The topic filter of a normalised logs channel (plain ``logs``: no topic constraint)."""
    parts = channel.partition(":")[2].split("/") if ":" in channel else []
    positions: list[tuple[str, ...] | None] = [None] * 4
    for i, part in enumerate(parts):
        if part == _ANY:
            continue
        words: list[str] = []
        for value in part.split("|"):
            for word in LOG_SELECTORS.get(value, (value,)):
                padded = "0x" + word[2:].rjust(64, "0")  # an address as an indexed argument
                if padded not in words:
                    words.append(padded)
        positions[i] = tuple(words)
    return tuple(positions)


def _covers(wide: LogFilter, narrow: LogFilter) -> bool:
    """Whether every log ``narrow`` selects is selected by ``wide``."""
    return all(
        w is None or (n is not None and set(n) <= set(w)) for w, n in zip(wide, narrow, strict=True)
    )


def _merged(a: LogFilter, b: LogFilter) -> LogFilter | None:
    """``a`` OR ``b`` as one filter, when they differ in one position only (else None)."""
    differ = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if _key(x) != _key(y)]
    if len(differ) != 1:
        return None
    i = differ[0]
    x, y = a[i], b[i]
    if x is None or y is None:
        return None  # one covers the other
    return (*a[:i], x + tuple(t for t in y if t not in x), *a[i + 1 :])


def _key(position: tuple[str, ...] | None) -> frozenset[str] | None:
    return None if position is None else frozenset(position)


def merge_filters(filters: Sequence[LogFilter]) -> list[LogFilter]:
    """The fewest filters selecting exactly the logs ``filters`` select together (in order).

    A filter covered by another goes; two that differ in one position become one.
    """
    out = list(dict.fromkeys(filters))
    changed = True
    while changed:
        changed = False
        for i, f in enumerate(out):
            for j, g in enumerate(out):
                if i == j:
                    continue
                if _covers(g, f) and (j < i or not _covers(f, g)):
                    del out[i]
                    changed = True
                    break
                both = _merged(g, f) if j < i else None
                if both is not None:
                    out[j] = both
                    del out[i]
                    changed = True
                    break
            if changed:
                break
    return out


def topics_param(flt: LogFilter) -> list[str | list[str] | None]:
    """The ``topics`` array of ``eth_subscribe``: null, a word, or alternatives per position,
    trailing nulls left out (empty: no topic constraint)."""
    topics: list[str | list[str] | None] = [
        None if p is None else p[0] if len(p) == 1 else list(p) for p in flt
    ]
    while topics and topics[-1] is None:
        topics.pop()
    return topics


def log_kinds(flt: LogFilter) -> set[type[Event]]:
    """The decoded kinds (besides ``log`` and ``retraction``) a filter's logs can give."""
    topic0 = flt[0]
    kinds: set[type[Event]] = set()
    if topic0 is None or TRANSFER_TOPIC in topic0:
        kinds.update((TokenTransfer, NftTransfer))
    if topic0 is None or APPROVAL_TOPIC in topic0:
        kinds.add(TokenApproval)
    if topic0 is None or UNISWAP_V2_SWAP_TOPIC in topic0 or UNISWAP_V3_SWAP_TOPIC in topic0:
        kinds.add(Swap)
    return kinds
