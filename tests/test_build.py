"""The fast builders make exactly the instances the frozen classes make."""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs
import pytest

from irisflow._build import (
    build_book,
    build_book_update,
    build_candle,
    build_quote,
    build_ticker,
    build_trade,
    filler,
)
from irisflow._events import Book, BookUpdate, Candle, Event, Quote, Ticker, Trade

BUILDERS: list[tuple[type[Event], Callable[..., Event]]] = [
    (Trade, build_trade),
    (Quote, build_quote),
    (Candle, build_candle),
    (Ticker, build_ticker),
    (Book, build_book),
    (BookUpdate, build_book_update),
]


@pytest.mark.parametrize(("cls", "build"), BUILDERS, ids=lambda x: getattr(x, "__name__", ""))
def test_every_field_is_built_as_the_class_builds_it(
    cls: type[Event], build: Callable[..., Event]
) -> None:
    fields = attrs.fields(cls)
    # The builder's signature is the class's: names, order and defaults.
    params = list(inspect.signature(build).parameters.values())
    assert [p.name for p in params] == [f.name for f in fields]
    for param, field in zip(params, fields, strict=True):
        default = inspect.Parameter.empty if field.default is attrs.NOTHING else field.default
        assert param.default == default, field.name
    # A distinct value in every field, by position and by name.
    values = [f"{field.name}-value" for field in fields]
    for fast in (build(*values), build(**{f.name: v for f, v in zip(fields, values, strict=True)})):
        slow = cls(*values)
        assert type(fast) is cls
        assert fast == slow
        assert hash(fast) == hash(slow)
        assert attrs.asdict(fast) == attrs.asdict(slow)
        assert not hasattr(fast, "__dict__")
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            fast.venue = "elsewhere"  # type: ignore[misc]


def test_defaults_apply_and_missing_fields_fail() -> None:
    one = Decimal("1.5")
    fast = build_trade("binance", "BTCUSDT", 1, 2, one, one, side="buy", trade_id=7)
    assert fast == Trade("binance", "BTCUSDT", 1, 2, one, one, "buy", 7)
    assert fast.aggregate is False
    with pytest.raises(TypeError):
        build_trade("binance", "BTCUSDT", 1, 2, one)  # type: ignore[call-arg]


def test_built_events_pickle_and_evolve() -> None:
    fast = build_trade("binance", "BTCUSDT", 1, 2, Decimal("3"), Decimal("4"), "sell", None, True)
    assert pickle.loads(pickle.dumps(fast)) == fast
    assert attrs.evolve(fast, price=Decimal("5")).price == Decimal("5")
    assert fast.__class__ is Trade


def _checked(value: object) -> str:
    return str(value)


@attrs.frozen
class _Converted(Event):
    amount: str = attrs.field(converter=_checked)


@attrs.frozen
class _Validated(Event):
    amount: int = attrs.field(validator=attrs.validators.instance_of(int))


@attrs.frozen
class _Hooked(Event):
    def __attrs_post_init__(self) -> None:
        pass


@attrs.frozen
class _Factory(Event):
    levels: list[int] = attrs.field(factory=list)


@attrs.frozen
class _KeywordOnly(Event):
    amount: int = attrs.field(kw_only=True)


@pytest.mark.parametrize("cls", [_Converted, _Validated, _Hooked, _Factory, _KeywordOnly])
def test_classes_that_need_their_init_get_no_filler(cls: type[Event]) -> None:
    with pytest.raises(TypeError, match=cls.__name__):
        filler(cls)


def test_non_attrs_class_is_refused() -> None:
    class Plain:
        pass

    with pytest.raises(TypeError, match="not an attrs class"):
        filler(Plain)


def test_a_filler_adds_nothing_to_the_layout() -> None:
    fill: Any = filler(Trade)
    assert fill.__slots__ == ()
    assert fill.__basicsize__ == Trade.__basicsize__
