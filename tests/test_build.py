"""Fast constructors build exactly the instances the frozen classes build."""

from __future__ import annotations

import pickle
from decimal import Decimal

import attrs
import pytest

import irisflow  # registers every kind
from irisflow._build import fast_constructor
from irisflow._events import KINDS, Event, Trade

assert irisflow.KINDS is KINDS


def _needs_init(cls: type[Event]) -> bool:
    hooks = any(hasattr(cls, name) for name in ("__attrs_post_init__", "__attrs_pre_init__"))
    return hooks or any(
        f.validator or f.converter or f.kw_only or isinstance(f.default, attrs.Factory)  # type: ignore[arg-type]
        for f in attrs.fields(cls)
    )


DECODED = ("trade", "quote", "candle", "ticker", "book", "book_update", "token_transfer", "swap")


def test_decoded_kinds_qualify() -> None:
    for kind in DECODED:
        assert not _needs_init(KINDS[kind]), kind


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_builds_the_same_instance_or_is_refused(kind: str) -> None:
    cls = KINDS[kind]
    if _needs_init(cls):
        with pytest.raises(TypeError, match=cls.__name__):
            fast_constructor(cls)
        return
    build = fast_constructor(cls)
    values = [f"{field.name}-value" for field in attrs.fields(cls)]
    fast, slow = build(*values), cls(*values)
    assert type(fast) is cls
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert attrs.asdict(fast) == attrs.asdict(slow)
    assert not hasattr(fast, "__dict__")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.venue = "elsewhere"  # type: ignore[misc]


def test_keywords_and_defaults() -> None:
    build = fast_constructor(Trade)
    one = Decimal("1.5")
    fast = build("binance", "BTCUSDT", 1, 2, one, one, side="buy", trade_id=7)
    assert fast == Trade("binance", "BTCUSDT", 1, 2, one, one, "buy", 7)
    assert fast.aggregate is False
    with pytest.raises(TypeError):
        build("binance", "BTCUSDT", 1, 2, one)  # missing fields fail as the class's would


def test_built_events_pickle_and_evolve() -> None:
    build = fast_constructor(Trade)
    fast = build("binance", "BTCUSDT", 1, 2, Decimal("3"), Decimal("4"), "sell", None, True)
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
def test_classes_that_need_their_init_are_refused(cls: type[Event]) -> None:
    with pytest.raises(TypeError, match=cls.__name__):
        fast_constructor(cls)


def test_non_attrs_class_is_refused() -> None:
    with pytest.raises(TypeError, match="not an attrs class"):
        fast_constructor(Decimal)
