"""The filter and expression language: examples, errors, exactness and properties."""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irisflow._errors import FilterError, UsageError
from irisflow._events import KINDS, Book, Candle, Event, Gap, Quote, Ticker, Trade
from irisflow._expr import kind_fields
from irisflow._filter import (
    ARITH,
    Expression,
    Filter,
    compile_expression,
    compile_filter,
    fields_for,
)

D = Decimal


def trade(**changes: Any) -> Trade:
    values: dict[str, Any] = {
        "venue": "binance",
        "symbol": "BTCUSDT",
        "ts": 1_700_000_000_000_000_000,
        "recv_ts": 1_700_000_000_001_000_000,
        "price": D("45000.10"),
        "qty": D("3"),
        "side": "buy",
        "trade_id": 7,
    }
    return Trade(**{**values, **changes})


def quote(**changes: Any) -> Quote:
    values: dict[str, Any] = {
        "venue": "binance",
        "symbol": "SOLUSDT",
        "ts": 1,
        "recv_ts": 2,
        "bid_price": D("150.10"),
        "bid_qty": D("10"),
        "ask_price": D("150.20"),
        "ask_qty": D("4"),
        "update_id": 99,
    }
    return Quote(**{**values, **changes})


def ticker(**changes: Any) -> Ticker:
    values: dict[str, Any] = {
        "venue": "binance",
        "symbol": "ETHUSDT",
        "ts": 1,
        "recv_ts": 2,
        "window": "24h",
        "last": D("2510"),
        "open": D("2500"),
        "high": D("2600"),
        "low": D("2400"),
        "volume": D("1000"),
        "quote_volume": D("2500000"),
    }
    return Ticker(**{**values, **changes})


def gap() -> Gap:
    return Gap(
        venue="binance",
        symbol="*",
        ts=5,
        recv_ts=5,
        streams=("btcusdt@trade",),
        start=1,
        end=5,
        cause="connection closed (1006)",
    )


EVENTS: dict[str, Event] = {
    "t1": trade(),  # BTCUSDT 45000.10 x 3 buy
    "t2": trade(symbol="ETHUSDT", price=D("2500"), qty=D("0.5"), side="sell"),
    "t3": trade(price=D("92000"), qty=D("1.5"), side="sell"),
    "t4": trade(symbol="SOLUSDT", price=D("45000"), qty=D("2"), side="buy"),
    "q": quote(),  # SOLUSDT
    "k": ticker(),  # ETHUSDT, full-ticker fields unset
}


# ----------------------------------------------------------------------- examples, by hand

EXAMPLES = [
    ("price > 45000", {"t1": True, "t2": False, "t3": True, "t4": False, "q": False, "k": False}),
    (
        "symbol == 'BTCUSDT' and qty * price >= 100000",
        {"t1": True, "t2": False, "t3": True, "t4": False, "q": False, "k": False},
    ),
    (
        "side = 'sell' or qty > 2",
        {"t1": True, "t2": True, "t3": True, "t4": False, "q": False, "k": False},
    ),
    (
        "symbol in ['BTCUSDT','ETHUSDT']",
        {"t1": True, "t2": True, "t3": True, "t4": False, "q": False, "k": True},
    ),
    (
        "price between 90000 and 95000",
        {"t1": False, "t2": False, "t3": True, "t4": False, "q": False, "k": False},
    ),
    (
        "not (side == 'buy')",
        {"t1": False, "t2": True, "t3": True, "t4": False, "q": False, "k": False},
    ),
    (
        "symbol not in ['BTCUSDT']",
        {"t1": False, "t2": True, "t3": False, "t4": True, "q": True, "k": True},
    ),
    (
        "price not between 2500 and 45000",
        {"t1": True, "t2": False, "t3": True, "t4": False, "q": False, "k": False},
    ),
    (
        "kind == 'quote' OR kind == 'ticker'",
        {"t1": False, "t2": False, "t3": False, "t4": False, "q": True, "k": True},
    ),
    (
        "price between 2500 and 45000 and qty > 1",
        {"t1": False, "t2": False, "t3": False, "t4": True, "q": False, "k": False},
    ),
    (
        "price > 1 and side == 'buy' or price < 3000",
        {"t1": True, "t2": True, "t3": False, "t4": True, "q": False, "k": False},
    ),
    (
        "price > 1 and (side == 'buy' or price < 3000)",
        {"t1": True, "t2": True, "t3": False, "t4": True, "q": False, "k": False},
    ),
    (
        "NOT side == 'buy' AND qty < 1",
        {"t1": False, "t2": True, "t3": False, "t4": False, "q": False, "k": False},
    ),
    (
        "price - 2 * qty > 44990",
        {"t1": True, "t2": False, "t3": True, "t4": True, "q": False, "k": False},
    ),
    (
        "(price - 2) * qty > 134990",
        {"t1": True, "t2": False, "t3": True, "t4": False, "q": False, "k": False},
    ),
    (
        "-price < -45000",
        {"t1": True, "t2": False, "t3": True, "t4": False, "q": False, "k": False},
    ),
    (
        "45000 < price",
        {"t1": True, "t2": False, "t3": True, "t4": False, "q": False, "k": False},
    ),
    (
        "ask_price - bid_price <= 0.1",
        {"t1": False, "t2": False, "t3": False, "t4": False, "q": True, "k": False},
    ),
    ("true", {"t1": True, "t2": True, "t3": True, "t4": True, "q": True, "k": True}),
]


@pytest.mark.parametrize(("text", "expected"), EXAMPLES)
def test_examples(text: str, expected: dict[str, bool]) -> None:
    f = compile_filter(text)
    assert {name: f(event) for name, event in EVENTS.items()} == expected


def _every_field_distinct(cls: type[Event]) -> tuple[Event, dict[str, object]]:
    """An instance of ``cls`` with a value of its own in every number and string field."""
    event = object.__new__(cls)
    values: dict[str, object] = {}
    for number, field in enumerate(attrs.fields(cls)):
        kind = kind_fields(cls)[field.name]
        value: object = None
        if kind.type == "number":
            value = number if kind.is_int else D(number) + D("0.5")
        elif kind.type == "string":
            value = f"{field.name}-value"
        object.__setattr__(event, field.name, value)
        if value is not None:
            values[field.name] = value
    return event, values


@pytest.mark.parametrize("cls", sorted(KINDS.values(), key=lambda c: c.kind), ids=str)
def test_field_comparisons_read_their_own_field(cls: type[Event]) -> None:
    """``field OP constant`` reads the field inline (its name swapped into shared code):
    every field of every kind, with every operator, reads that field and no other."""
    event, values = _every_field_distinct(cls)
    for name, value in values.items():
        if kind_fields(cls)[name].nullable:
            continue
        literal = f"'{value}'" if isinstance(value, str) else str(value)
        for op, expected in [("==", True), ("!=", False), (">=", True), ("<=", True)]:
            if isinstance(value, str) and op in (">=", "<="):
                continue
            f = compile_filter(f"{name} {op} {literal}", [cls])
            assert f(event) is expected, (cls.kind, name, op)
        if not isinstance(value, str):
            assert compile_filter(f"{name} > {value}", [cls])(event) is False
            assert compile_filter(f"{name} < {value} + 1", [cls])(event) is True


def test_call_returns_real_bools() -> None:
    for text, _ in EXAMPLES:
        f = compile_filter(text)
        assert all(type(f(event)) is bool for event in EVENTS.values())


def test_filter_attributes() -> None:
    f = compile_filter("symbol == 'BTCUSDT' AND qty*price >= 1e5")
    assert f.text == "symbol == 'BTCUSDT' AND qty*price >= 1e5"
    assert str(f) == "symbol == 'BTCUSDT' and qty * price >= 1E+5"
    assert f.fields == frozenset({"symbol", "qty", "price"})
    assert f.kinds == frozenset({Trade})
    assert repr(f) == "Filter(text=\"symbol == 'BTCUSDT' AND qty*price >= 1e5\")"
    assert f.predicate_for(Quote) is None
    predicate = f.predicate_for(Trade)
    assert predicate is not None
    assert predicate(trade()) is True


def test_kinds_are_the_classes_that_can_pass() -> None:
    assert compile_filter("bid_price > 0").kinds == frozenset({Quote, Ticker})
    assert compile_filter("bid_price > 0", [Trade, Quote]).kinds == frozenset({Quote})
    assert compile_filter("symbol == 'X'", [Trade, Gap]).kinds == frozenset({Trade, Gap})
    assert compile_filter("kind != 'trade'", [Trade, Quote]).kinds == frozenset({Quote})
    assert compile_filter("closed").kinds == frozenset({Candle})
    assert compile_filter("kind == 'trade'").fields == frozenset({"kind"})


def test_a_kind_without_a_field_does_not_pass() -> None:
    f = compile_filter("price > 0 or symbol == 'SOLUSDT'")
    assert f(trade()) is True
    assert f(quote()) is False  # a quote is SOLUSDT, but has no price
    assert f(gap()) is False
    assert compile_filter("symbol == '*'")(gap()) is True


def test_unknown_class_does_not_pass() -> None:
    f = compile_filter("price > 0", [Trade])
    assert f(quote()) is False
    assert f(Book(venue="x", symbol="Y", ts=1, recv_ts=1, update_id=1, bids=(), asks=())) is False


def test_bool_fields() -> None:
    candle = Candle(
        venue="binance",
        symbol="BTCUSDT",
        ts=1,
        recv_ts=1,
        interval="1m",
        start=0,
        end=60,
        open=D(1),
        high=D(2),
        low=D(1),
        close=D(2),
        volume=D(5),
        closed=False,
    )
    assert compile_filter("closed")(candle) is False
    assert compile_filter("not closed")(candle) is True
    assert compile_filter("closed == false")(candle) is True
    assert compile_filter("closed != true and close > open")(candle) is True
    assert compile_filter("closed in [false]")(candle) is True
    assert compile_filter("(close > open) == true")(candle) is True


def test_filters_are_equal_by_canonical_text_and_kinds() -> None:
    a = compile_filter("price>1 AND side='buy'")
    b = compile_filter("(price > 1) and (side == 'buy')")
    assert a == b
    assert hash(a) == hash(b)
    assert a != compile_filter("price > 1 and side == 'sell'")
    assert a == compile_filter("price > 1 and side == 'buy'", [Trade, Quote])  # quotes never pass
    assert compile_filter("symbol == 'X'", [Trade]) != compile_filter("symbol == 'X'")


# ----------------------------------------------------------------------- exactness


@pytest.mark.parametrize(
    ("text", "price", "qty", "expected"),
    [
        ("price > 45000.1", "45000.10", "1", False),
        ("price >= 45000.1", "45000.10", "1", True),
        ("price == 45000.1", "45000.10", "1", True),
        ("price > 45000.09999999999999999999999999", "45000.1", "1", True),
        ("price < 45000.10000000000000000000000001", "45000.1", "1", True),
        ("price + qty == 0.3", "0.1", "0.2", True),  # as floats: 0.30000000000000004
        ("price * 3 == 0.3", "0.1", "1", True),
        ("price == 1e-5", "0.00001", "1", True),
        ("price > 0.000009", "0.00001", "1", True),
        ("price > 1E+5", "100000.0000001", "1", True),
        ("price == 100000", "1E+5", "1", True),
        ("price - 0.1 == 0", "0.1", "1", True),
        (
            "price * qty == 599999999999999999999.99999998",
            "299999999999999999999.99999999",
            "2",
            True,
        ),
        ("price / qty == 0.5", "0.1", "0.2", True),
        ("price / 4 == 0.025", "0.1", "1", True),
    ],
)
def test_decimal_exactness(text: str, price: str, qty: str, expected: bool) -> None:
    assert compile_filter(text)(trade(price=D(price), qty=D(qty))) is expected


def test_arithmetic_ignores_the_callers_decimal_context() -> None:
    f = compile_filter("price * qty == 599999999999999999999.99999998")
    e = compile_expression("price * qty")
    event = trade(price=D("299999999999999999999.99999999"), qty=D("2"))
    with decimal.localcontext() as context:
        context.prec = 3
        context.traps[decimal.Inexact] = True
        assert f(event) is True
        assert e(event) == D("599999999999999999999.99999998")


def test_int_fields_compare_with_decimal_constants() -> None:
    event = trade(trade_id=7, ts=1_700_000_000_000_000_001)
    assert compile_filter("trade_id > 6.5")(event) is True
    assert compile_filter("trade_id < 7.5")(event) is True
    assert compile_filter("trade_id == 7.0")(event) is True
    assert compile_filter("trade_id == 7.1")(event) is False
    assert compile_filter("trade_id in [7.0, 8]")(event) is True
    assert compile_filter("trade_id between 6.99 and 7")(event) is True
    assert compile_filter("ts > 1700000000000000000")(event) is True
    assert compile_filter("ts > 1.7e18")(event) is True
    assert compile_filter("recv_ts - ts == 999999")(event) is True
    assert compile_expression("trade_id")(event) == 7
    assert type(compile_expression("trade_id")(event)) is int


def test_literals_never_go_through_float() -> None:
    # 0.1 + 0.2 as floats is 0.30000000000000004; as Decimals it is 0.3 exactly.
    assert compile_expression("0.1 + 0.2")(trade()) == D("0.3")
    assert compile_expression("0.00001")(trade()) == D("0.00001")
    assert str(compile_expression("1e5")(trade())) == "1E+5"


# ----------------------------------------------------------------------- None, division by zero


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("change > 0", False),
        ("change < 0", False),
        ("change == 0", False),
        ("change != 0", False),
        ("change in [0, 1]", False),
        ("change not in [0, 1]", False),
        ("change between -1 and 1", False),
        ("change not between -1 and 1", False),
        ("change + 1 > 0", False),
        ("-change < 0", False),
        ("0 < change", False),
        ("not (change > 0)", True),
        ("change > 0 or last > 0", True),
        ("vwap == change", False),
    ],
)
def test_missing_values_make_comparisons_false(text: str, expected: bool) -> None:
    assert compile_filter(text)(ticker()) is expected


def test_set_optional_values_compare_normally() -> None:
    event = ticker(change=D("10"), vwap=D("10"))
    assert compile_filter("change > 0")(event) is True
    assert compile_filter("change != 0")(event) is True
    assert compile_filter("change not in [0, 1]")(event) is True
    assert compile_filter("vwap == change")(event) is True
    assert compile_filter("update_id != 3")(quote(update_id=None)) is False
    assert compile_filter("update_id != 3")(quote(update_id=4)) is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("price / qty > 1", False),
        ("price / qty <= 1", False),
        ("price / qty == price / qty", False),
        ("price / (qty - qty) > 0", False),
        ("not (price / qty > 1)", True),
        ("price / qty > 1 or price > 1", True),
        ("price / qty in [1, 2]", False),
        ("price / qty not in [1, 2]", False),
        ("1 / qty between 0 and 1", False),
    ],
)
def test_division_by_zero_makes_comparisons_false(text: str, expected: bool) -> None:
    assert compile_filter(text)(trade(qty=D("0"))) is expected


def test_division_by_zero_in_expressions_is_none() -> None:
    assert compile_expression("price / qty")(trade(qty=D(0))) is None
    assert compile_expression("price / qty + 1")(trade(qty=D(0))) is None
    assert compile_expression("price / qty")(trade(qty=D(2))) == D("22500.05")


def test_a_nan_value_never_raises() -> None:
    event = trade(price=D("NaN"))
    assert compile_filter("price > 1")(event) is False
    assert compile_filter("price between 1 and 2")(event) is False
    assert compile_filter("price * 2 > 1")(event) is False
    assert compile_filter("price == 1")(event) is False


# ----------------------------------------------------------------------- expressions


def test_expressions() -> None:
    e = compile_expression("price * qty")
    assert isinstance(e, Expression)
    assert e.type == "number"
    assert e(trade()) == D("135000.30")
    assert e(quote()) is None
    assert e.kinds == frozenset({Trade})
    assert e.fields == frozenset({"price", "qty"})
    assert str(e) == "price * qty"
    assert compile_expression("symbol").type == "string"
    assert compile_expression("symbol")(quote()) == "SOLUSDT"
    assert compile_expression("kind")(quote()) == "quote"
    assert compile_expression("price > 1").type == "bool"
    assert compile_expression("price > 1")(trade()) is True
    assert compile_expression("change")(ticker()) is None
    assert compile_expression("-(price - 1)")(trade()) == D("-44999.10")
    assert compile_expression("(ask_price + bid_price) / 2")(quote()) == D("150.15")
    assert compile_expression("price * qty") == compile_expression("(price*qty)")


def test_expression_errors_say_expression() -> None:
    with pytest.raises(FilterError) as info:
        compile_expression("symbol + 1")
    assert str(info.value).splitlines()[0] == (
        "cannot use '+' on symbol (a string) in expression 'symbol + 1'"
        " (arithmetic works on numbers only)"
    )
    with pytest.raises(FilterError, match=r"^empty expression '' \(write an expression"):
        compile_expression("")


# ----------------------------------------------------------------------- fields_for


def test_fields_for() -> None:
    assert fields_for([Trade]) == {
        "kind": "string",
        "venue": "string",
        "symbol": "string",
        "ts": "number",
        "recv_ts": "number",
        "price": "number",
        "qty": "number",
        "side": "string",
        "trade_id": "number?",
        "aggregate": "bool",
    }
    both = fields_for([Quote, Ticker])
    assert both["bid_price"] == "number?"  # required in quotes, optional in tickers
    assert both["update_id"] == "number?"
    assert both["window"] == "string"
    assert fields_for([Book])["bids"] == "list"
    everything = fields_for()
    assert everything["closed"] == "bool"
    assert everything["streams"] == "list"
    assert set(everything) == {"kind"}.union(*(fields_for([cls]) for cls in KINDS.values()))


def test_kinds_must_be_classes() -> None:
    with pytest.raises(TypeError, match="kinds must be attrs event classes"):
        compile_filter("price > 1", [object])  # type: ignore[list-item]


# ----------------------------------------------------------------------- errors

ERRORS = [
    # (text, kinds, first line, caret column, caret width)
    (
        "prise > 45000",
        None,
        "unknown field 'prise' in filter 'prise > 45000' (did you mean 'price'?)",
        0,
        5,
    ),
    (
        "Price > 1",
        None,
        "unknown field 'Price' in filter 'Price > 1' (did you mean 'price'?)",
        0,
        5,
    ),
    (
        "foo > 1",
        [Trade],
        "unknown field 'foo' in filter 'foo > 1' (known fields: kind, venue, symbol, ts,"
        " recv_ts, price, qty, side, trade_id, aggregate)",
        0,
        3,
    ),
    (
        "bid_price > 1",
        [Trade],
        "field 'bid_price' in filter 'bid_price > 1' belongs to quote and ticker events,"
        " which this stream does not produce (it produces trade events)",
        0,
        9,
    ),
    (
        "side == sell",
        [Trade],
        "unknown field 'sell' in filter 'side == sell'"
        " (to compare with the text 'sell', put it in quotes)",
        8,
        4,
    ),
    ("", None, "empty filter '' (write a condition such as 'price > 45000')", 0, 1),
    ("  ", None, "empty filter '  ' (write a condition such as 'price > 45000')", 0, 1),
    (
        "price >",
        None,
        "missing operand after '>' in filter 'price >' (put a value after it)",
        6,
        1,
    ),
    (
        "price > and qty > 1",
        None,
        "missing operand after '>' in filter 'price > and qty > 1' (put a value after it)",
        6,
        1,
    ),
    ("> 5", None, "missing operand before '>' in filter '> 5' (put a value before it)", 0, 1),
    (
        "price between 1 and",
        None,
        "missing operand after 'and' in filter 'price between 1 and' (put a value after it)",
        16,
        3,
    ),
    (
        "price > 5 6",
        None,
        "unexpected '6' in filter 'price > 5 6'"
        " (expected an operator such as 'and', 'or', '>' or '+')",
        10,
        1,
    ),
    (
        "price > not 5",
        None,
        "unexpected 'not' in filter 'price > not 5'"
        " (expected a value: a field name, a number or a quoted string)",
        8,
        3,
    ),
    (
        "(price > 5",
        None,
        "unclosed '(' in filter '(price > 5' (add a ')' to close it)",
        0,
        1,
    ),
    (
        "price > 5)",
        None,
        "unmatched ')' in filter 'price > 5)' (remove it, or add a '(' before it)",
        9,
        1,
    ),
    ("()", None, "empty parentheses in filter '()' (put a condition or a value inside)", 0, 2),
    (
        "symbol == 'abc",
        None,
        'unterminated string in filter "symbol == \'abc" (close it with a matching "\'")',
        10,
        4,
    ),
    (
        "symbol == 'a\\q'",
        None,
        "unknown escape '\\q' in a string in filter \"symbol == 'a\\\\q'\""
        " (write '\\\\' for a backslash)",
        12,
        2,
    ),
    (
        "price > 1_000",
        None,
        "malformed number '1_000' in filter 'price > 1_000'"
        " (write numbers like 45000, 0.5 or 1e5, without '_')",
        8,
        5,
    ),
    (
        "price > .5",
        None,
        "malformed number '.5' in filter 'price > .5'"
        " (write numbers like 45000, 0.5 or 1e5, without '_')",
        8,
        2,
    ),
    (
        "price $ 5",
        None,
        "unexpected character '$' in filter 'price $ 5'"
        " (remove it; text values go in quotes, e.g. 'BTCUSDT')",
        6,
        1,
    ),
    (
        "price > 5 && qty > 1",
        None,
        "unexpected character '&' in filter 'price > 5 && qty > 1' (write 'and')",
        10,
        1,
    ),
    (
        "price < 1 < 2",
        None,
        "comparisons cannot be chained in filter 'price < 1 < 2'"
        " (write 'a < b and b < c', or use 'between')",
        10,
        1,
    ),
    (
        "price not > 5",
        None,
        "expected 'in' or 'between' after 'not' in filter 'price not > 5'"
        " (to negate a condition, put 'not' in front of it)",
        6,
        3,
    ),
    (
        "price between 1",
        None,
        "expected 'and' after the lower bound of 'between' in filter 'price between 1'"
        " (write e.g. 'price between 90000 and 95000')",
        15,
        1,
    ),
    (
        "price in 1",
        None,
        "expected a list after 'in' in filter 'price in 1'"
        " (write it in brackets, e.g. symbol in ['BTCUSDT', 'ETHUSDT'])",
        9,
        1,
    ),
    (
        "price in [1, 2",
        None,
        "unclosed '[' in filter 'price in [1, 2' (add a ']' to close it)",
        9,
        1,
    ),
    (
        "symbol == 45000",
        None,
        "cannot compare symbol (a string) with 45000 (a number) in filter 'symbol == 45000'"
        " (put the value in quotes: '45000')",
        0,
        15,
    ),
    (
        "price > '45000'",
        None,
        "cannot compare price (a number) with '45000' (a string) in filter \"price > '45000'\""
        " (write the number without quotes: 45000)",
        0,
        15,
    ),
    (
        "symbol in ['BTCUSDT', 5]",
        None,
        "cannot compare symbol (a string) with 5 (a number)"
        " in filter \"symbol in ['BTCUSDT', 5]\" (put the value in quotes: '5')",
        22,
        1,
    ),
    (
        "closed == 1",
        None,
        "cannot compare closed (a bool) with 1 (a number) in filter 'closed == 1'"
        " (compare bools with true or false)",
        0,
        11,
    ),
    (
        "symbol + 1 > 2",
        None,
        "cannot use '+' on symbol (a string) in filter 'symbol + 1 > 2'"
        " (arithmetic works on numbers only)",
        0,
        6,
    ),
    (
        "price * side > 2",
        None,
        "cannot use '*' on side (a string) in filter 'price * side > 2'"
        " (arithmetic works on numbers only)",
        8,
        4,
    ),
    (
        "-symbol == 'x'",
        None,
        "cannot negate symbol (a string) in filter \"-symbol == 'x'\""
        " (only numbers can be negated)",
        1,
        6,
    ),
    (
        "closed > false",
        None,
        "cannot use '>' on bools in filter 'closed > false' (bools support only == and !=)",
        0,
        14,
    ),
    (
        "closed between false and true",
        None,
        "cannot use 'between' on bools in filter 'closed between false and true'"
        " (bools support only == and !=)",
        0,
        29,
    ),
    (
        "bids > 1",
        None,
        "cannot use field 'bids' in filter 'bids > 1': it is a list"
        " (use number, string and bool fields)",
        0,
        4,
    ),
    (
        "price > 1 and bid_price > 1",
        None,
        "no event kind has all the fields used in filter 'price > 1 and bid_price > 1':"
        " price is in trade events, bid_price in quote and ticker events"
        " (use the fields of one kind)",
        14,
        9,
    ),
    (
        "price + 1",
        None,
        "filter 'price + 1' is a number, not a condition"
        " (compare it with something, e.g. price + 1 > 0)",
        0,
        9,
    ),
    (
        "price and qty > 1",
        None,
        "'and' needs conditions, but price is a number in filter 'price and qty > 1'"
        " (compare it with something, e.g. price > 0)",
        0,
        5,
    ),
    (
        "not symbol",
        None,
        "'not' needs conditions, but symbol is a string in filter 'not symbol'"
        " (compare it with something, e.g. symbol == 'value')",
        4,
        6,
    ),
    (
        "kind == 'trades'",
        None,
        "unknown kind 'trades' in filter \"kind == 'trades'\" (did you mean 'trade'?)",
        8,
        8,
    ),
    (
        "kind == 'quote'",
        [Trade],
        "filter \"kind == 'quote'\" can never pass: it is false for every kind this stream"
        " produces (trade events)",
        0,
        15,
    ),
    (
        "price / 0 > 1",
        [Trade],
        "filter 'price / 0 > 1' can never pass: it is false for every kind this stream"
        " produces (trade events)",
        0,
        13,
    ),
    (
        "price in []",
        [Trade],
        "filter 'price in []' can never pass: it is false for every kind this stream"
        " produces (trade events)",
        0,
        11,
    ),
    (
        "price > 1e99999999999999999999999",
        None,
        "number '1e99999999999999999999999' is out of range in filter"
        " 'price > 1e99999999999999999999999' (use a smaller exponent)",
        8,
        25,
    ),
]


@pytest.mark.parametrize(("text", "kinds", "first", "column", "width"), ERRORS)
def test_errors(
    text: str, kinds: list[type[Event]] | None, first: str, column: int, width: int
) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(text, kinds)
    assert str(info.value).splitlines() == [first, f"  {text}", "  " + " " * column + "^" * width]


def test_filter_error_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        compile_filter("prise > 1")


def test_error_caret_on_a_later_line() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter("price > 1 and\n  prise < 2")
    assert str(info.value).splitlines()[1:] == ["    prise < 2", "    ^^^^^"]


def test_error_on_a_long_line_shows_a_window() -> None:
    text = " and ".join(["price > 1"] * 20) + " and prise > 2"
    with pytest.raises(FilterError) as info:
        compile_filter(text)
    first, line, caret = str(info.value).splitlines()
    assert first.startswith("unknown field 'prise' in filter 'price > 1 and price > 1")
    assert first.endswith("…' (did you mean 'price'?)")
    assert len(line) < 90
    assert line[caret.index("^") : caret.index("^") + 5] == "prise"


@pytest.mark.parametrize(
    "text", ["(" * 60 + "price > 1" + ")" * 60, "+".join(["1"] * 150) + " > 1"]
)
def test_too_deep(text: str) -> None:
    with pytest.raises(FilterError, match=r"^too many nested levels"):
        compile_filter(text)


# ----------------------------------------------------------------------- canonical text


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("price>45000 AND side='buy'", "price > 45000 and side == 'buy'"),
        ("(price > 1)", "price > 1"),
        ("(side == 'buy' or qty > 1) and price > 1", "(side == 'buy' or qty > 1) and price > 1"),
        ("side == 'buy' or (qty > 1 and price > 1)", "side == 'buy' or qty > 1 and price > 1"),
        ("(qty > 1 or qty > 2) or side == 'buy'", "qty > 1 or qty > 2 or side == 'buy'"),
        ("price - (qty - 1) > 0", "price - (qty - 1) > 0"),
        ("(price - qty) - 1 > 0", "price - qty - 1 > 0"),
        ("price * (qty + 1) > 0", "price * (qty + 1) > 0"),
        ("price / (qty * 2) > 0", "price / (qty * 2) > 0"),
        ("-(price + 1) < 0", "-(price + 1) < 0"),
        ("- -price > 0", "--price > 0"),
        ("price > -(5)", "price > -5"),
        ("price > - 5", "price > -5"),
        ("price - -5 > 0", "price - -5 > 0"),
        ("not (side == 'buy')", "not (side == 'buy')"),
        ("not not closed", "not (not closed)"),
        ('symbol == "BTC"', "symbol == 'BTC'"),
        ('symbol == "it\'s"', "symbol == 'it\\'s'"),
        ("symbol == 'tab\\there'", "symbol == 'tab\\there'"),
        ("symbol == '\\u00e9'", "symbol == 'é'"),
        ("symbol == '\\u0001'", "symbol == '\\u0001'"),
        ("price == 1e5", "price == 1E+5"),
        ("price == 0.00001", "price == 0.00001"),
        ("price == 45000.10", "price == 45000.10"),
        ("symbol NOT IN ['A','B']", "symbol not in ['A', 'B']"),
        ("price Not Between 1 And 2", "price not between 1 and 2"),
        ("(price > 1) == TRUE", "(price > 1) == true"),
        ("price in [1 + 1, -2]", "price in [1 + 1, -2]"),
    ],
)
def test_canonical_text(text: str, canonical: str) -> None:
    f = compile_filter(text)
    assert str(f) == canonical
    again = compile_filter(str(f))
    assert again == f
    assert str(again) == canonical


# ----------------------------------------------------------------------- properties

FIELD_NAMES = sorted({name for cls in KINDS.values() for name in fields_for([cls])})
TOKENS = [
    *FIELD_NAMES,
    *["and", "OR", "not", "In", "between", "true", "FALSE", "kind"],
    *[">", ">=", "<", "<=", "==", "!=", "=", "+", "-", "*", "/", "(", ")", "[", "]", ","],
    *[
        "0",
        "45000",
        "45000.1",
        "1e5",
        "0.00001",
        "1_0",
        "1.",
        ".5",
        "1e",
        "9e999999999999999999999",
    ],
    *["'BTCUSDT'", '"sell"', "'trade'", "'", '"', "'\\q'", "'\\u12'", "$", "&&", "!", " "],
]


def compiles_or_filter_error(text: str, kinds: list[type[Event]] | None = None) -> None:
    """Compiling ``text`` raises FilterError with a caret, or works and round-trips."""
    for compile_ in (compile_filter, compile_expression):
        try:
            compiled = compile_(text, kinds)
        except FilterError as error:
            lines = str(error).splitlines()
        else:
            lines = []
            again = compile_(str(compiled), kinds)
            assert again == compiled
            assert str(again) == str(compiled)
            for event in EVENTS.values():
                assert again(event) == compiled(event)
        if lines:
            assert lines[0]
            assert set(lines[-1].strip()) == {"^"}


@settings(deadline=None, max_examples=300)
@given(st.text())
def test_any_text_compiles_or_raises_filter_error(text: str) -> None:
    compiles_or_filter_error(text)


@settings(deadline=None, max_examples=500)
@given(st.lists(st.sampled_from(TOKENS), max_size=12), st.sampled_from([None, [Trade], [Quote]]))
def test_any_token_soup_compiles_or_raises_filter_error(
    tokens: list[str], kinds: list[type[Event]] | None
) -> None:
    compiles_or_filter_error(" ".join(tokens), kinds)
    compiles_or_filter_error("".join(tokens), kinds)


# Generated filters over trades come with a reference evaluator written independently of the
# compiler: fully bracketed text, plain Python semantics, None for missing/division by zero.

Ref = Callable[[Trade], Any]
Gen = tuple[str, Ref]

small_decimals = st.decimals(
    min_value=-1000, max_value=1000, allow_nan=False, allow_infinity=False, places=3
)


def _literal(value: Decimal) -> Gen:
    return str(value), lambda ev: value


def _field(name: str) -> Gen:
    return name, lambda ev: getattr(ev, name)


def _arith(parts: tuple[Gen, str, Gen]) -> Gen:
    (lt, lf), op, (rt, rf) = parts

    def ref(ev: Trade) -> Any:
        a, b = lf(ev), rf(ev)
        if a is None or b is None or (op == "/" and b == 0):
            return None
        method = {"+": ARITH.add, "-": ARITH.subtract, "*": ARITH.multiply, "/": ARITH.divide}
        return method[op](a, b)

    return f"({lt} {op} {rt})", ref


def _neg(part: Gen) -> Gen:
    text, f = part
    return f"-({text})", lambda ev: None if f(ev) is None else ARITH.minus(f(ev))


numbers = st.recursive(
    st.one_of(
        st.sampled_from(["price", "qty", "trade_id"]).map(_field), small_decimals.map(_literal)
    ),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from("+-*/"), inner).map(_arith), inner.map(_neg)
    ),
    max_leaves=5,
)
strings = st.one_of(
    st.sampled_from(["symbol", "side", "venue"]).map(_field),
    st.sampled_from(["BTCUSDT", "ETHUSDT", "buy", "sell", "it's", 'q"d', "", "é\n"]).map(
        lambda s: ("'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'", lambda ev: s)
    ),
)
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def _compare(parts: tuple[Gen, str, Gen]) -> Gen:
    (lt, lf), op, (rt, rf) = parts

    def ref(ev: Trade) -> bool:
        a, b = lf(ev), rf(ev)
        return a is not None and b is not None and OPS[op](a, b)

    return f"({lt} {op} {rt})", ref


def _member(parts: tuple[Gen, bool, list[Gen]]) -> Gen:
    (text, f), negated, items = parts

    def ref(ev: Trade) -> bool:
        v = f(ev)
        if v is None:
            return False
        found = any(g(ev) is not None and g(ev) == v for _, g in items)
        return found != negated

    word = "not in" if negated else "in"
    return f"({text} {word} [{', '.join(t for t, _ in items)}])", ref


def _between(parts: tuple[Gen, bool, Gen, Gen]) -> Gen:
    (text, f), negated, (lt, lf), (ht, hf) = parts

    def ref(ev: Trade) -> bool:
        v, lo, hi = f(ev), lf(ev), hf(ev)
        if v is None or lo is None or hi is None:
            return False
        return (lo <= v <= hi) != negated

    word = "not between" if negated else "between"
    return f"({text} {word} {lt} and {ht})", ref


def _logic(parts: tuple[Gen, str, Gen]) -> Gen:
    (lt, lf), op, (rt, rf) = parts
    if op.lower() == "and":
        return f"({lt} {op} {rt})", lambda ev: lf(ev) and rf(ev)
    return f"({lt} {op} {rt})", lambda ev: lf(ev) or rf(ev)


def _not(part: Gen) -> Gen:
    text, f = part
    return f"(NOT {text})", lambda ev: not f(ev)


conditions = st.recursive(
    st.one_of(
        st.tuples(numbers, st.sampled_from(sorted(OPS)), numbers).map(_compare),
        st.tuples(strings, st.sampled_from(sorted(OPS)), strings).map(_compare),
        st.tuples(numbers, st.booleans(), st.lists(numbers, max_size=3)).map(_member),
        st.tuples(strings, st.booleans(), st.lists(strings, max_size=3)).map(_member),
        st.tuples(numbers, st.booleans(), numbers, numbers).map(_between),
        st.sampled_from(["trade", "quote"]).map(
            lambda k: (f"(kind == '{k}')", lambda ev: k == "trade")
        ),
    ),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or", "AND", "Or"]), inner).map(_logic),
        inner.map(_not),
    ),
    max_leaves=6,
)
trades = st.builds(
    trade,
    symbol=st.sampled_from(["BTCUSDT", "ETHUSDT", "it's"]),
    side=st.sampled_from(["buy", "sell"]),
    price=small_decimals,
    qty=st.one_of(st.just(D(0)), small_decimals),
    trade_id=st.integers(-5, 5),
)


@settings(deadline=None, max_examples=400)
@given(conditions, st.lists(trades, min_size=1, max_size=5))
def test_generated_filters_round_trip_and_match_the_reference(
    generated: Gen, events: list[Trade]
) -> None:
    text, reference = generated
    try:
        f = compile_filter(text, [Trade])
    except FilterError as error:
        message = str(error)
    else:
        message = ""
    if message:  # only a filter that is false for every trade may be refused
        assert "can never pass" in message
        assert not any(reference(ev) for ev in events)
        return
    again = compile_filter(str(f), [Trade])
    assert again == f
    assert str(again) == str(f)
    for ev in events:
        assert f(ev) is bool(reference(ev)), (text, ev)
        assert again(ev) is f(ev)


@settings(deadline=None, max_examples=300)
@given(numbers, st.lists(trades, min_size=1, max_size=5))
def test_generated_expressions_match_the_reference(generated: Gen, events: list[Trade]) -> None:
    text, reference = generated
    e = compile_expression(text, [Trade])
    assert compile_expression(str(e), [Trade]) == e
    for ev in events:
        assert e(ev) == reference(ev)


decimals = st.decimals(allow_nan=False, allow_infinity=False)


@settings(deadline=None, max_examples=500)
@given(decimals, decimals, st.sampled_from(sorted(OPS)))
def test_price_comparison_agrees_with_decimal(price: Decimal, d: Decimal, op: str) -> None:
    f = compile_filter(f"price {op} {d}", [Trade])
    assert f(trade(price=price)) is OPS[op](price, d)
    assert compile_filter(f"{d} {op} price", [Trade])(trade(price=price)) is OPS[op](d, price)


@settings(deadline=None)
@given(st.integers(), decimals)
def test_int_field_comparison_agrees_with_decimal(trade_id: int, d: Decimal) -> None:
    event = trade(trade_id=trade_id)
    assert compile_filter(f"trade_id > {d}", [Trade])(event) is (trade_id > d)
    assert compile_filter(f"trade_id == {d}", [Trade])(event) is (trade_id == d)
    assert compile_filter(f"trade_id in [{d}]", [Trade])(event) is (trade_id == d)


def test_filter_type() -> None:
    assert isinstance(compile_filter("price > 1"), Filter)


# ----------------------------------------------------------------------- docs/filters.md

DOCS = Path(__file__).parent.parent / "docs" / "filters.md"


def _doc_blocks() -> list[tuple[str, list[str]]]:
    """The fenced blocks of docs/filters.md, each with the heading it sits under."""
    blocks: list[tuple[str, list[str]]] = []
    heading, block = "", None
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        if block is None and line.startswith("#"):
            heading = line.lstrip("# ")
        elif line.startswith("```"):
            if block is None:
                block = []
            else:
                blocks.append((heading, block))
                block = None
        elif block is not None:
            block.append(line)
    return blocks


def _doc_examples() -> list[str]:
    texts = []
    for heading, block in _doc_blocks():
        if heading in ("At a glance", "More examples"):
            for line in block:
                text = line.split("  #")[0].strip()
                if text and not text.startswith("#"):
                    texts.append(text)
    return texts


def _doc_errors() -> list[list[str]]:
    return [
        block
        for heading, block in _doc_blocks()
        if heading == "Errors" and len(block) == 3 and set(block[2].strip()) == {"^"}
    ]


@pytest.mark.parametrize("text", _doc_examples())
def test_docs_examples_compile(text: str) -> None:
    compile_filter(text)


@pytest.mark.parametrize("lines", _doc_errors())
def test_docs_errors_are_the_real_messages(lines: list[str]) -> None:
    text = lines[1][2:]
    kinds = [Trade] if "this stream" in lines[0] else None
    with pytest.raises(FilterError) as info:
        compile_filter(text, kinds)
    assert str(info.value).splitlines() == lines


def test_docs_have_examples_and_errors() -> None:
    assert len(_doc_examples()) > 20
    assert len(_doc_errors()) > 10


# ----------------------------------------------------------------------- user-defined kinds


@attrs.frozen
class Custom(Event):
    """An event kind defined outside irisflow (not registered in KINDS)."""

    kind: ClassVar[str] = "custom"

    ratio: float = 0.0
    when: datetime.datetime | None = None
    count: int | None = None


@attrs.frozen
class SubTrade(Trade):
    """A subclass is a class of its own: filters know only exact classes."""


def test_user_defined_kinds() -> None:
    assert fields_for([Custom])["ratio"] == "other"
    assert fields_for([Custom])["when"] == "other?"
    assert fields_for([Custom])["count"] == "number?"
    f = compile_filter("count > 1 and kind == 'custom'", [Custom, Trade])
    assert f.kinds == frozenset({Custom})
    assert f(Custom(venue="v", symbol="S", ts=1, recv_ts=1, count=2)) is True
    assert f(Custom(venue="v", symbol="S", ts=1, recv_ts=1)) is False
    assert f(trade()) is False
    with pytest.raises(FilterError) as info:
        compile_filter("ratio > 1", [Custom])
    assert str(info.value).splitlines()[0] == (
        "cannot use field 'ratio' in filter 'ratio > 1': it is not a number, string or bool"
        " (use number, string and bool fields)"
    )


def test_unregistered_classes_never_pass() -> None:
    sub = SubTrade(**attrs.asdict(trade()))
    assert compile_filter("price > 1")(sub) is False
    assert compile_expression("price")(sub) is None
    assert compile_filter("price > 1")(trade()) is True
