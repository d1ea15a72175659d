"""The one real error of a nursery's exception group."""

from __future__ import annotations

import pytest
import trio

from irisflow._groups import leaves, raise_lone


def cancelled() -> trio.Cancelled:
    return trio.Cancelled._create()  # type: ignore[attr-defined,no-any-return]


def test_leaves_are_found_at_any_depth() -> None:
    a, b, c = ValueError("a"), KeyError("b"), OSError("c")
    group = BaseExceptionGroup(
        "outer", [a, BaseExceptionGroup("inner", [b, ExceptionGroup("x", [c])])]
    )
    assert list(leaves(group)) == [a, b, c]


def test_the_lone_real_error_is_raised_past_cancellations() -> None:
    error = ValueError("the one")
    with pytest.raises(ValueError, match="the one"):
        raise_lone(BaseExceptionGroup("g", [cancelled(), BaseExceptionGroup("h", [error])]))


def test_several_errors_or_only_cancellations_raise_the_group() -> None:
    several = ExceptionGroup("g", [ValueError("a"), KeyError("b")])
    with pytest.raises(ExceptionGroup) as caught:
        raise_lone(several)
    assert caught.value is several
    only = BaseExceptionGroup("g", [cancelled()])
    with pytest.raises(BaseExceptionGroup) as caught_only:
        raise_lone(only)
    assert caught_only.value is only
