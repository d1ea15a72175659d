"""Exception groups from Trio nurseries: their leaves, and the one real error among them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NoReturn

import trio

__all__ = ["leaves", "raise_lone"]


def leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    """Every exception in ``group`` that is not a group itself, depth first."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from leaves(exc)
        else:
            yield exc


def raise_lone(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise the one real error from a nursery's group; else the group (e.g. all Cancelled)."""
    errors = [e for e in leaves(group) if not isinstance(e, trio.Cancelled)]
    if len(errors) == 1:
        raise errors[0] from errors[0].__cause__
    raise group
