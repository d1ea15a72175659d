"""Filters and value expressions over events, compiled once into plain closures.

``compile_filter("symbol == 'BTCUSDT' and qty * price >= 100000")`` parses and type-checks
the text against the fields of the event kinds a stream can produce (``_expr.py``), then builds,
for every kind that has all the fields used, one closure that answers for an event of that
kind. A call is a ``type(event)`` dict lookup plus that closure; kinds without a closure never
pass. Common shapes (``field > 45000``, ``field in [...]``, ``field between a and b``) become a
single closure around the constant; ``field OP constant``, the commonest, reads the field inline
(see :func:`_field_pred`), the others through an ``operator.attrgetter``.

Numbers stay exact: literals are :class:`~decimal.Decimal`, arithmetic runs in :data:`ARITH`
(80 significant digits, no traps), nothing is ever converted to float. A comparison with a
missing value (``None``) or a division by zero is false; evaluation never raises.
See ``docs/filters.md`` for the language.
"""

from __future__ import annotations

import decimal
import operator
import types
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, TypeAlias, cast

import attrs

from ._events import KINDS, Event
from ._expr import Checker, ValueType, check_fields, kind_fields, kind_names
from ._expr_lex import fail, shorten
from ._expr_parse import (
    And,
    Arith,
    Between,
    Bool,
    Compare,
    Field,
    In,
    Neg,
    Node,
    Not,
    Num,
    Or,
    Str,
    parse,
    to_text,
    walk,
)

__all__ = ["ARITH", "Expression", "Filter", "compile_expression", "compile_filter", "fields_for"]

ARITH = decimal.Context(
    prec=80,
    rounding=decimal.ROUND_HALF_EVEN,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[],
)
"""The context for ``+ - * /`` and unary minus: exact for market data, and it never raises.

A sum, difference or product is exact whenever the exact result has at most 80 significant
digits (far beyond any price or quantity); a quotient is rounded to 80 significant digits.
It is used explicitly (``ARITH.add``), so a context set by the calling thread or task has no
effect. Treat it as read-only.
"""

Value: TypeAlias = Decimal | int | str | bool | None
Fn: TypeAlias = Callable[[Any], Any]
Pred: TypeAlias = Callable[[Any], bool]
EventClass: TypeAlias = type[Event]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_FLIP = {"==": "==", "!=": "!=", ">": "<", ">=": "<=", "<": ">", "<=": ">="}
_ARITH_OPS: dict[str, Callable[[Any, Any], Decimal]] = {
    "+": ARITH.add,
    "-": ARITH.subtract,
    "*": ARITH.multiply,
    "/": ARITH.divide,
}


@attrs.frozen
class _Const:
    """A sub-expression that folded to a constant for one event class."""

    value: Value


Code: TypeAlias = _Const | Fn


def _never(event: object) -> bool:
    return False


def _always(event: object) -> bool:
    return True


def _nothing(event: object) -> None:
    return None


# Filters run on every message, so the commonest shape, ``field OP constant``, gets one closure
# per operator with the comparison inlined (no operator.* call). The ``try`` costs nothing until
# it fires: an ordering comparison with a Decimal NaN raises InvalidOperation.


def _gt(get: Fn, c: Any) -> Pred:
    def pred(event: object) -> Any:
        try:
            return get(event) > c
        except ArithmeticError:
            return False

    return pred


def _ge(get: Fn, c: Any) -> Pred:
    def pred(event: object) -> Any:
        try:
            return get(event) >= c
        except ArithmeticError:
            return False

    return pred


def _lt(get: Fn, c: Any) -> Pred:
    def pred(event: object) -> Any:
        try:
            return get(event) < c
        except ArithmeticError:
            return False

    return pred


def _le(get: Fn, c: Any) -> Pred:
    def pred(event: object) -> Any:
        try:
            return get(event) <= c
        except ArithmeticError:
            return False

    return pred


def _eq(get: Fn, c: Any) -> Pred:
    def pred(event: object) -> Any:
        try:
            return get(event) == c
        except ArithmeticError:
            return False

    return pred


def _ne(get: Fn, c: Any) -> Pred:
    def pred(event: object) -> Any:
        try:
            return get(event) != c
        except ArithmeticError:
            return False

    return pred


_CMP_CONST: dict[str, Callable[[Fn, Any], Pred]] = {
    ">": _gt,
    ">=": _ge,
    "<": _lt,
    "<=": _le,
    "==": _eq,
    "!=": _ne,
}


# ``field OP constant`` with a plain field, the shape of nearly every filter, reads the field
# inline: these templates say ``event.the_field``, and :func:`_field_pred` swaps the field's name
# into the compiled code's names. Reading a slot inline costs a few instructions against
# hundreds for an ``attrgetter`` call (measured: about 430 an event). Nothing is compiled
# from text: the code is Python's own, only an attribute name changes, and that name is a
# field of the event class, checked before.


def _gt_field(c: Any) -> Pred:
    def pred(event: Any) -> Any:
        try:
            return event.the_field > c
        except ArithmeticError:
            return False

    return pred


def _ge_field(c: Any) -> Pred:
    def pred(event: Any) -> Any:
        try:
            return event.the_field >= c
        except ArithmeticError:
            return False

    return pred


def _lt_field(c: Any) -> Pred:
    def pred(event: Any) -> Any:
        try:
            return event.the_field < c
        except ArithmeticError:
            return False

    return pred


def _le_field(c: Any) -> Pred:
    def pred(event: Any) -> Any:
        try:
            return event.the_field <= c
        except ArithmeticError:
            return False

    return pred


def _eq_field(c: Any) -> Pred:
    def pred(event: Any) -> Any:
        try:
            return event.the_field == c
        except ArithmeticError:
            return False

    return pred


def _ne_field(c: Any) -> Pred:
    def pred(event: Any) -> Any:
        try:
            return event.the_field != c
        except ArithmeticError:
            return False

    return pred


_FIELD_CMP_CONST: dict[str, Callable[[Any], Pred]] = {
    ">": _gt_field,
    ">=": _ge_field,
    "<": _lt_field,
    "<=": _le_field,
    "==": _eq_field,
    "!=": _ne_field,
}


def _field_pred(op: str, field: str, c: Any) -> Pred:
    """The template for ``op`` around ``c``, reading ``field`` where it says ``the_field``."""
    if not field.isidentifier():
        raise ValueError(f"not a field name: {field!r}")
    pred = _FIELD_CMP_CONST[op](c)
    code = pred.__code__
    names = tuple(field if name == "the_field" else name for name in code.co_names)
    return types.FunctionType(
        code.replace(co_names=names), pred.__globals__, pred.__name__, None, pred.__closure__
    )


def _compare(op: str, a: Value, b: Value) -> bool:
    if a is None or b is None:
        return False
    try:
        return _OPS[op](a, b)
    except ArithmeticError:
        return False


def _between(v: Value, lo: Value, hi: Value, negated: bool) -> bool:
    if v is None or lo is None or hi is None:
        return False
    try:
        return bool(lo <= v <= hi) != negated  # type: ignore[operator]
    except ArithmeticError:
        return False


def _arith(op: str, a: Value, b: Value) -> Value:
    if a is None or b is None or (op == "/" and not b):
        return None
    return _ARITH_OPS[op](a, b)


def _as_int(value: Value) -> Value:
    """An integral Decimal constant as an int: an int field then compares int to int (faster)."""
    if (
        isinstance(value, Decimal)
        and value.is_finite()
        and value.adjusted() < 40
        and value == value.to_integral_value()
    ):
        return int(value)
    return value


def _fn(code: Code) -> Fn:
    if isinstance(code, _Const):
        value = code.value
        return lambda event: value
    return code


class _Builder:
    """Compiles a type-checked tree into closures for one event class."""

    def __init__(self, cls: type[Event]) -> None:
        self.cls = cls
        self.fields = kind_fields(cls)

    def is_int(self, node: Node) -> bool:
        return isinstance(node, Field) and node.name != "kind" and self.fields[node.name].is_int

    def value(self, node: Node) -> tuple[Code, bool]:
        """The code computing ``node`` and whether it can yield ``None``."""
        if isinstance(node, Num | Str | Bool):
            return _Const(node.value), False
        if isinstance(node, Field):
            if node.name == "kind":
                return _Const(self.cls.kind), False
            return operator.attrgetter(node.name), self.fields[node.name].nullable
        if isinstance(node, Neg):
            return self.negate(node)
        if isinstance(node, Arith):
            return self.arith(node)
        return self.condition(node), False

    def negate(self, node: Neg) -> tuple[Code, bool]:
        code, nullable = self.value(node.operand)
        minus = ARITH.minus
        if isinstance(code, _Const):
            value = cast(Decimal | None, code.value)
            return _Const(None if value is None else minus(value)), value is None
        get = code
        if not nullable:
            return (lambda event: minus(get(event))), False

        def neg(event: object) -> Value:
            a = get(event)
            return None if a is None else minus(a)

        return neg, True

    def arith(self, node: Arith) -> tuple[Code, bool]:
        left, ln = self.value(node.left)
        right, rn = self.value(node.right)
        op, f = node.op, _ARITH_OPS[node.op]
        if isinstance(left, _Const) and isinstance(right, _Const):
            result = _arith(op, left.value, right.value)
            return _Const(result), result is None
        if isinstance(right, _Const):
            c = right.value
            if c is None or (op == "/" and not c):
                return _Const(None), True
            get = _fn(left)
            if not ln:
                return (lambda event: f(get(event), c)), False

            def right_const(event: object) -> Value:
                a = get(event)
                return None if a is None else f(a, c)

            return right_const, True
        lget, rget = _fn(left), right
        if op == "/":

            def divide(event: object) -> Value:
                a, b = lget(event), rget(event)
                return None if a is None or not b else f(a, b)

            return divide, True
        if not (ln or rn):
            return (lambda event: f(lget(event), rget(event))), False

        def generic(event: object) -> Value:
            a, b = lget(event), rget(event)
            return None if a is None or b is None else f(a, b)

        return generic, True

    def condition(self, node: Node) -> _Const | Pred:
        """The predicate for a bool-typed ``node``; a missing value counts as false."""
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, In):
            return self.member(node)
        if isinstance(node, Between):
            return self.between(node)
        if isinstance(node, Not):
            inner = self.condition(node.operand)
            if isinstance(inner, _Const):
                return _Const(not inner.value)
            return lambda event: not inner(event)
        if isinstance(node, And | Or):
            return self.logic(node)
        code, nullable = self.value(node)  # a bool field or literal
        if isinstance(code, _Const):
            return _Const(code.value is True)
        get = code
        return (lambda event: get(event) is True) if nullable else get

    def logic(self, node: And | Or) -> _Const | Pred:
        is_and = isinstance(node, And)
        preds: list[Pred] = []
        for operand in node.operands:
            code = self.condition(operand)
            if not isinstance(code, _Const):
                preds.append(code)
            elif code.value is not is_and:  # false in an 'and', true in an 'or': decided
                return _Const(not is_and)
        if not preds:
            return _Const(is_and)
        if len(preds) == 1:
            return preds[0]
        if len(preds) == 2:
            a, b = preds
            if is_and:
                return lambda event: a(event) and b(event)
            return lambda event: a(event) or b(event)
        if is_and:
            return lambda event: all(p(event) for p in preds)
        return lambda event: any(p(event) for p in preds)

    def compare(self, node: Compare) -> _Const | Pred:
        op, lnode, rnode = node.op, node.left, node.right
        left, ln = self.value(lnode)
        right, rn = self.value(rnode)
        if isinstance(left, _Const) and isinstance(right, _Const):
            return _Const(_compare(op, left.value, right.value))
        if isinstance(left, _Const):  # constant OP x  ->  x FLIPPED-OP constant
            return self.compare_const(_FLIP[op], rnode, _fn(right), rn, left.value)
        if isinstance(right, _Const):
            return self.compare_const(op, lnode, left, ln, right.value)
        lget, rget, opf = left, right, _OPS[op]

        def generic(event: object) -> bool:
            a, b = lget(event), rget(event)
            if a is None or b is None:
                return False
            try:
                return opf(a, b)
            except ArithmeticError:
                return False

        return generic

    def compare_const(
        self, op: str, node: Node, get: Fn, nullable: bool, c: Value
    ) -> _Const | Pred:
        """``node OP c``: the shape most filters have, so it gets the fastest closures."""
        if c is None:
            return _Const(False)
        if self.is_int(node):
            c = _as_int(c)
        if not nullable:
            if isinstance(node, Field) and node.name != "kind":
                return _field_pred(op, node.name, c)
            return _CMP_CONST[op](get, c)
        return _cmp_nullable(get, _OPS[op], c)

    def member(self, node: In) -> _Const | Pred:
        operand, nullable = self.value(node.operand)
        items = [self.value(item)[0] for item in node.items]
        negated = node.negated
        if all(isinstance(item, _Const) for item in items):
            convert = _as_int if self.is_int(node.operand) else (lambda v: v)
            values = frozenset(
                convert(item.value)
                for item in items
                if isinstance(item, _Const) and item.value is not None
            )
            if isinstance(operand, _Const):
                v = operand.value
                return _Const(v is not None and (v in values) != negated)
            if not (values or negated):
                return _Const(False)
            get = operand
            if not negated:
                return lambda event: get(event) in values
            if not nullable:
                return lambda event: get(event) not in values

            def not_in(event: object) -> bool:
                v = get(event)
                return v is not None and v not in values

            return not_in
        oget, igets = _fn(operand), tuple(_fn(item) for item in items)

        def generic(event: object) -> bool:
            v = oget(event)
            if v is None:
                return False
            for iget in igets:
                x = iget(event)
                if x is not None and x == v:
                    return not negated
            return negated

        return generic

    def between(self, node: Between) -> _Const | Pred:
        operand, nullable = self.value(node.operand)
        low, high = self.value(node.low)[0], self.value(node.high)[0]
        negated = node.negated
        if isinstance(low, _Const) and isinstance(high, _Const):
            lo, hi = low.value, high.value
            if lo is None or hi is None:
                return _Const(False)
            if self.is_int(node.operand):
                lo, hi = _as_int(lo), _as_int(hi)
            if isinstance(operand, _Const):
                return _Const(_between(operand.value, lo, hi, negated))
            get = operand
            if not (nullable or negated):

                def within(event: object) -> Any:
                    try:
                        return lo <= get(event) <= hi
                    except ArithmeticError:
                        return False

                return within
            low, high = _Const(lo), _Const(hi)
        oget, lget, hget = _fn(operand), _fn(low), _fn(high)

        return lambda event: _between(oget(event), lget(event), hget(event), negated)


def _cmp_nullable(get: Fn, opf: Callable[[Any, Any], bool], c: Any) -> Pred:
    def pred(event: object) -> bool:
        v = get(event)
        if v is None:
            return False
        try:
            return opf(v, c)
        except ArithmeticError:
            return False

    return pred


# ---------------------------------------------------------------------------------- public


@attrs.frozen
class Filter:
    """A compiled filter: call it with an event to learn whether the event passes.

    Two filters are equal when they have the same canonical text and the same kinds.

    Attributes:
        text: The text as given.
        fields: The field names the filter uses (``kind`` included when used).
        kinds: The event classes that can pass; any other class never passes.
    """

    text: str = attrs.field(eq=False)
    _canonical: str = attrs.field(repr=False)
    fields: frozenset[str] = attrs.field(eq=False, repr=False)
    kinds: frozenset[type[Event]] = attrs.field(repr=False)
    _predicates: dict[type[Event], Pred] = attrs.field(eq=False, repr=False)

    def __call__(self, event: Event) -> bool:
        """Whether ``event`` passes. Never raises."""
        # Every registered kind is a key (``_never`` for those that cannot pass): a plain
        # subscript is the fastest lookup, and only an unregistered class takes the except.
        try:
            return self._predicates[type(event)](event)
        except KeyError:
            return False

    def __str__(self) -> str:
        """The canonical text, e.g. ``price > 45000 and side == 'buy'``; it parses back equal."""
        return self._canonical

    def predicate_for(self, cls: type[Event]) -> Callable[[Event], bool] | None:
        """The bare predicate for events of class ``cls`` (``None``: they never pass).

        A pipeline step that already knows the class can call this directly.
        """
        predicate = self._predicates.get(cls, _never)
        return None if predicate is _never else predicate


@attrs.frozen
class Expression:
    """A compiled value expression: call it with an event to compute the value.

    Attributes:
        text: The text as given.
        type: ``'number'``, ``'string'`` or ``'bool'``.
        fields: The field names the expression uses.
        kinds: The event classes it has a value for; others (and missing values) give ``None``.
    """

    text: str = attrs.field(eq=False)
    _canonical: str = attrs.field(repr=False)
    type: ValueType = attrs.field(eq=False)
    fields: frozenset[str] = attrs.field(eq=False, repr=False)
    kinds: frozenset[EventClass] = attrs.field(repr=False)
    _evaluators: dict[EventClass, Fn] = attrs.field(eq=False, repr=False)

    def __call__(self, event: Event) -> Value:
        """The value for ``event``: ``Decimal``/``int``, ``str``, ``bool`` or ``None``."""
        try:
            value: Value = self._evaluators[type(event)](event)
        except KeyError:  # a class that is not registered
            return None
        return value

    def __str__(self) -> str:
        """The canonical text; it parses back to an equal expression."""
        return self._canonical


def compile_filter(text: str, kinds: Iterable[type[Event]] | None = None) -> Filter:
    """Parse, type-check and compile a filter.

    Args:
        text: The filter, e.g. ``"symbol == 'BTCUSDT' and price > 45000"``.
        kinds: The event classes the stream can produce (default: every registered kind).

    Returns:
        The compiled :class:`Filter`.

    Raises:
        FilterError: the text does not parse or type-check, uses a field no kind has, is not
            a condition, or can never pass. The message's first line says what is wrong;
            the next lines show the text with a caret under the spot.
    """
    root, result, classes, candidates, fields = _analyse(text, kinds, "filter")
    if result != "bool":
        example = "> 0" if result == "number" else "== 'value'"
        raise fail(
            text,
            root.span,
            f"filter {shorten(text)} is a {result}, not a condition"
            f" (compare it with something, e.g. {to_text(root)} {example})",
        )
    predicates: dict[type[Event], Pred] = {}
    for cls in candidates:
        code = _Builder(cls).condition(root)
        if not isinstance(code, _Const):
            predicates[cls] = code
        elif code.value:
            predicates[cls] = _always
    if not predicates:
        produced = f"{kind_names(classes)} events" if classes else "no events at all"
        raise fail(
            text,
            root.span,
            f"filter {shorten(text)} can never pass: it is false for every kind this stream"
            f" produces ({produced})",
        )
    kinds_passing = frozenset(predicates)
    predicates = dict.fromkeys((*KINDS.values(), *classes), _never) | predicates
    return Filter(text, to_text(root), fields, kinds_passing, predicates)


def compile_expression(text: str, kinds: Iterable[type[Event]] | None = None) -> Expression:
    """Parse, type-check and compile a value expression such as ``price * qty``.

    Args:
        text: The expression.
        kinds: The event classes the stream can produce (default: every registered kind).

    Returns:
        The compiled :class:`Expression`.

    Raises:
        FilterError: the text does not parse or type-check, or uses a field no kind has.
    """
    root, result, classes, candidates, fields = _analyse(text, kinds, "expression")
    evaluators: dict[type[Event], Fn] = dict.fromkeys((*KINDS.values(), *classes), _nothing)
    for cls in candidates:
        evaluators[cls] = _fn(_Builder(cls).value(root)[0])
    kinds_with_value = frozenset(candidates)
    return Expression(text, to_text(root), result, fields, kinds_with_value, evaluators)


def fields_for(kinds: Iterable[type[Event]] | None = None) -> dict[str, str]:
    """The fields the language can name for ``kinds``, with their types.

    Types are ``number``, ``string``, ``bool``, or ``list`` and ``other`` (not usable in an
    expression; ``other`` is any type the language does not know, such as float), with
    ``?`` appended when the field may be missing in some kind (``X | None``), e.g.
    ``{'kind': 'string', 'venue': 'string', ..., 'update_id': 'number?'}``. ``kind`` (the
    event's kind name) is always there.
    """
    out: dict[str, tuple[str, bool]] = {"kind": ("string", False)}
    for cls in _classes(kinds):
        for name, info in kind_fields(cls).items():
            base, nullable = out.get(name, (info.type, False))
            out[name] = (base, nullable or info.nullable)
    return {name: base + ("?" if nullable else "") for name, (base, nullable) in out.items()}


def _classes(kinds: Iterable[type[Event]] | None) -> list[type[Event]]:
    if kinds is None:
        return list(KINDS.values())
    classes = list(dict.fromkeys(kinds))
    for cls in classes:
        if not (isinstance(cls, type) and attrs.has(cls)):
            raise TypeError(f"kinds must be attrs event classes such as Trade, got {cls!r}")
    return classes


def _analyse(
    text: str, kinds: Iterable[type[Event]] | None, what: str
) -> tuple[Node, ValueType, list[type[Event]], list[type[Event]], frozenset[str]]:
    classes = _classes(kinds)
    root = parse(text, what)
    candidates, env = check_fields(root, text, what, classes)
    result = Checker(text, what, env, classes).check(root)
    fields = frozenset(node.name for node in walk(root) if isinstance(node, Field))
    return root, result, classes, candidates, fields
