"""The tree of the filter/expression language: its nodes, the parser and the printer.

:func:`parse` turns text (lexed by ``_expr_lex.py``) into a small tree of frozen attrs nodes by
recursive descent; :func:`to_text` prints a tree back as canonical text. The tree is checked
against event fields in ``_expr.py`` and compiled in ``_filter.py``.

Grammar, loosest binding first::

    or_expr   := and_expr ("or" and_expr)*
    and_expr  := not_expr ("and" not_expr)*
    not_expr  := "not" not_expr | cmp_expr
    cmp_expr  := sum [ CMP sum | ["not"] "in" list | ["not"] "between" sum "and" sum ]
    sum       := product (("+" | "-") product)*
    product   := unary (("*" | "/") unary)*
    unary     := "-" unary | atom
    atom      := NUMBER | STRING | "true" | "false" | NAME | "(" or_expr ")"
    list      := "[" [sum ("," sum)*] "]"
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import TypeAlias

import attrs

from ._errors import FilterError
from ._expr_lex import Span, Token, fail, lex, shorten, where

MAX_NESTING = 50
"""Most nested brackets, ``not`` and unary minus a text may hold (keeps recursion bounded)."""

MAX_DEPTH = 100
"""Deepest tree a text may parse to (long ``a + b + c ...`` chains nest too)."""

CMP_OPS = frozenset({"==", "!=", ">", ">=", "<", "<="})
_INFIX = frozenset({"==", "!=", ">", ">=", "<", "<=", "=", "+", "*", "/"})
_INFIX_KW = frozenset({"and", "or", "in", "between"})

# ---------------------------------------------------------------------------------- tree


@attrs.frozen
class Num:
    """A number literal, kept exact."""

    value: Decimal
    span: Span = attrs.field(eq=False, repr=False)


@attrs.frozen
class Str:
    """A string literal (escapes already resolved)."""

    value: str
    span: Span = attrs.field(eq=False, repr=False)


@attrs.frozen
class Bool:
    """``true`` or ``false``."""

    value: bool
    span: Span = attrs.field(eq=False, repr=False)


@attrs.frozen
class Field:
    """A field of the event, or the pseudo-field ``kind``."""

    name: str
    span: Span = attrs.field(eq=False, repr=False)


@attrs.frozen
class Neg:
    """Unary minus on a non-literal."""

    operand: Node
    span: Span = attrs.field(eq=False, repr=False)


@attrs.frozen
class Arith:
    """``left op right`` for ``op`` in ``+ - * /``."""

    op: str
    left: Node
    right: Node
    span: Span = attrs.field(eq=False, repr=False)


@attrs.frozen
class Compare:
    """``left op right`` for ``op`` in :data:`CMP_OPS` (``=`` is stored as ``==``)."""

    op: str
    left: Node
    right: Node
    span: Span = attrs.field(eq=False, repr=False)


@attrs.frozen
class In:
    """``operand [not] in [items]``."""

    operand: Node
    items: tuple[Node, ...]
    negated: bool
    span: Span = attrs.field(eq=False, repr=False)


@attrs.frozen
class Between:
    """``operand [not] between low and high`` (inclusive)."""

    operand: Node
    low: Node
    high: Node
    negated: bool
    span: Span = attrs.field(eq=False, repr=False)


@attrs.frozen
class Not:
    """``not operand``."""

    operand: Node
    span: Span = attrs.field(eq=False, repr=False)


@attrs.frozen
class And:
    """Two or more conditions joined by ``and`` (nested ``and`` is flattened)."""

    operands: tuple[Node, ...]
    span: Span = attrs.field(eq=False, repr=False)


@attrs.frozen
class Or:
    """Two or more conditions joined by ``or`` (nested ``or`` is flattened)."""

    operands: tuple[Node, ...]
    span: Span = attrs.field(eq=False, repr=False)


Node: TypeAlias = Num | Str | Bool | Field | Neg | Arith | Compare | In | Between | Not | And | Or


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-nodes of ``node``, in source order."""
    if isinstance(node, Neg | Not):
        return (node.operand,)
    if isinstance(node, Arith | Compare):
        return (node.left, node.right)
    if isinstance(node, In):
        return (node.operand, *node.items)
    if isinstance(node, Between):
        return (node.operand, node.low, node.high)
    if isinstance(node, And | Or):
        return node.operands
    return ()


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, parents first, in source order (iterative, any depth)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


def depth(node: Node) -> int:
    """The height of the tree under ``node`` (iterative, any depth)."""
    deepest = 0
    stack = [(node, 1)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children(current))
    return deepest


# ---------------------------------------------------------------------------------- parser


def parse(text: str, what: str = "filter") -> Node:
    """Parse ``text`` into a tree.

    Raises:
        FilterError: the text is empty or not well formed.
    """
    return _Parser(text, what).parse()


class _Parser:
    def __init__(self, text: str, what: str) -> None:
        self.text = text
        self.what = what
        self.where = where(what, text)
        self.tokens = lex(text, what)
        self.pos = 0
        self.nesting = 0

    def fail(self, span: Span, message: str) -> FilterError:
        return fail(self.text, span, message)

    @property
    def peek(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def enter(self, token: Token) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self.fail(
                token.span,
                f"too many nested levels {self.where}"
                f" (the limit is {MAX_NESTING}; simplify the {self.what})",
            )

    def parse(self) -> Node:
        if self.peek.kind == "eof":
            example = (
                "a condition such as 'price > 45000'"
                if self.what == "filter"
                else "an expression such as 'price * qty'"
            )
            raise self.fail((0, 1), f"empty {self.what} {shorten(self.text)} (write {example})")
        node = self.parse_or()
        token = self.peek
        if token.kind != "eof":
            if token.is_op(")", "]"):
                opener = "(" if token.text == ")" else "["
                raise self.fail(
                    token.span,
                    f"unmatched {token.text!r} {self.where}"
                    f" (remove it, or add a {opener!r} before it)",
                )
            raise self.unexpected(token)
        if depth(node) > MAX_DEPTH:
            raise self.fail(
                (0, len(self.text)),
                f"too many nested levels {self.where}"
                f" (the limit is {MAX_DEPTH}; simplify the {self.what})",
            )
        return node

    def unexpected(self, token: Token) -> FilterError:
        return self.fail(
            token.span,
            f"unexpected {token.text!r} {self.where}"
            " (expected an operator such as 'and', 'or', '>' or '+')",
        )

    def parse_or(self) -> Node:
        operands = [self.parse_and()]
        while self.peek.is_kw("or"):
            self.advance()
            operands.append(self.parse_and())
        return _logic(Or, operands)

    def parse_and(self) -> Node:
        operands = [self.parse_not()]
        while self.peek.is_kw("and"):
            self.advance()
            operands.append(self.parse_not())
        return _logic(And, operands)

    def parse_not(self) -> Node:
        token = self.peek
        if not token.is_kw("not"):
            return self.parse_cmp()
        self.advance()
        self.enter(token)
        operand = self.parse_not()
        self.nesting -= 1
        return Not(operand, (token.start, operand.span[1]))

    def parse_cmp(self) -> Node:
        left = self.parse_sum()
        token = self.peek
        negated = token.is_kw("not")
        if negated:
            following = self.tokens[self.pos + 1]
            if not following.is_kw("in", "between"):
                raise self.fail(
                    token.span,
                    f"expected 'in' or 'between' after {token.text!r} {self.where}"
                    " (to negate a condition, put 'not' in front of it)",
                )
            self.advance()
            token = following
        node: Node
        if token.kind == "op" and (token.text in CMP_OPS or token.text == "="):
            self.advance()
            right = self.parse_sum()
            op = "==" if token.text == "=" else token.text
            node = Compare(op, left, right, (left.span[0], right.span[1]))
        elif token.is_kw("in"):
            self.advance()
            items, end = self.parse_list(token)
            node = In(left, items, negated, (left.span[0], end))
        elif token.is_kw("between"):
            self.advance()
            low = self.parse_sum()
            if not self.peek.is_kw("and"):
                raise self.fail(
                    self.peek.span,
                    f"expected 'and' after the lower bound of 'between' {self.where}"
                    " (write e.g. 'price between 90000 and 95000')",
                )
            self.advance()
            high = self.parse_sum()
            node = Between(left, low, high, negated, (left.span[0], high.span[1]))
        else:
            return left
        following = self.peek
        chained = following.is_kw("in", "between") or (
            following.is_kw("not") and self.tokens[self.pos + 1].is_kw("in", "between")
        )
        if chained or (following.kind == "op" and following.text in (*CMP_OPS, "=")):
            raise self.fail(
                following.span,
                f"comparisons cannot be chained {self.where}"
                " (write 'a < b and b < c', or use 'between')",
            )
        return node

    def parse_list(self, in_token: Token) -> tuple[tuple[Node, ...], int]:
        opener = self.peek
        if not opener.is_op("["):
            raise self.fail(
                opener.span if opener.kind != "eof" else in_token.span,
                f"expected a list after {in_token.text!r} {self.where}"
                " (write it in brackets, e.g. symbol in ['BTCUSDT', 'ETHUSDT'])",
            )
        self.advance()
        self.enter(opener)
        items: list[Node] = []
        if not self.peek.is_op("]"):
            while True:
                items.append(self.parse_sum())
                token = self.advance()
                if token.is_op("]"):
                    break
                if token.is_op(","):
                    continue
                if token.kind == "eof":
                    raise self.fail(
                        opener.span, f"unclosed '[' {self.where} (add a ']' to close it)"
                    )
                raise self.fail(
                    token.span,
                    f"unexpected {token.text!r} in a list {self.where}"
                    " (separate items with ',' and end the list with ']')",
                )
        else:
            self.advance()
        self.nesting -= 1
        return tuple(items), self.tokens[self.pos - 1].end

    def parse_sum(self) -> Node:
        node = self.parse_product()
        while self.peek.is_op("+", "-"):
            op = self.advance().text
            right = self.parse_product()
            node = Arith(op, node, right, (node.span[0], right.span[1]))
        return node

    def parse_product(self) -> Node:
        node = self.parse_unary()
        while self.peek.is_op("*", "/"):
            op = self.advance().text
            right = self.parse_unary()
            node = Arith(op, node, right, (node.span[0], right.span[1]))
        return node

    def parse_unary(self) -> Node:
        token = self.peek
        if not token.is_op("-"):
            return self.parse_atom()
        self.advance()
        self.enter(token)
        operand = self.parse_unary()
        self.nesting -= 1
        span = (token.start, operand.span[1])
        if isinstance(operand, Num):
            # A negative literal stays one literal, so ``-5`` prints and compares as ``-5``.
            return Num(operand.value.copy_negate(), span)
        return Neg(operand, span)

    def parse_atom(self) -> Node:
        token = self.peek
        if token.kind == "num":
            self.advance()
            assert isinstance(token.value, Decimal)
            return Num(token.value, token.span)
        if token.kind == "str":
            self.advance()
            return Str(str(token.value), token.span)
        if token.is_kw("true", "false"):
            self.advance()
            return Bool(token.value == "true", token.span)
        if token.kind == "name":
            self.advance()
            return Field(token.text, token.span)
        if token.is_op("(") and not self.tokens[self.pos + 1].is_op(")"):
            self.advance()
            self.enter(token)
            node = self.parse_or()
            closer = self.peek
            if closer.kind == "eof":
                raise self.fail(token.span, f"unclosed '(' {self.where} (add a ')' to close it)")
            if not closer.is_op(")"):
                raise self.unexpected(closer)
            self.advance()
            self.nesting -= 1
            return attrs.evolve(node, span=(token.start, closer.end))
        raise self.missing_operand(token)

    def missing_operand(self, token: Token) -> FilterError:
        previous = self.tokens[self.pos - 1] if self.pos > 0 else None
        if token.is_op("("):
            return self.fail(
                (token.start, self.tokens[self.pos + 1].end),
                f"empty parentheses {self.where} (put a condition or a value inside)",
            )
        infix = (
            token.kind == "eof"
            or (token.kind == "op" and (token.text in _INFIX or token.text in ")],"))
            or (token.kind == "kw" and token.value in _INFIX_KW)
        )
        if not infix:
            return self.fail(
                token.span,
                f"unexpected {token.text!r} {self.where}"
                " (expected a value: a field name, a number or a quoted string)",
            )
        if previous is not None and (token.kind == "eof" or not previous.is_op("(", "[", ",")):
            return self.fail(
                previous.span,
                f"missing operand after {previous.text!r} {self.where} (put a value after it)",
            )
        return self.fail(
            token.span,
            f"missing operand before {token.text!r} {self.where} (put a value before it)",
        )


def _logic(cls: type[And | Or], operands: list[Node]) -> Node:
    if len(operands) == 1:
        return operands[0]
    flat: list[Node] = []
    for operand in operands:
        flat.extend(operand.operands if isinstance(operand, cls) else (operand,))
    return cls(tuple(flat), (operands[0].span[0], operands[-1].span[1]))


# ---------------------------------------------------------------------------------- printer

_PRECEDENCE: dict[type, int] = {Or: 1, And: 2, Not: 3, Compare: 4, In: 4, Between: 4, Neg: 7}


def _precedence(node: Node) -> int:
    if isinstance(node, Arith):
        return 5 if node.op in "+-" else 6
    return _PRECEDENCE.get(type(node), 8)


def to_text(node: Node) -> str:
    """The canonical text of ``node``: minimal brackets, lower-case keywords, ``==``."""
    if isinstance(node, Num):
        return str(node.value)
    if isinstance(node, Str):
        return quote(node.value)
    if isinstance(node, Bool):
        return "true" if node.value else "false"
    if isinstance(node, Field):
        return node.name
    if isinstance(node, Neg):
        return f"-{_sub(node.operand, 7)}"
    if isinstance(node, Not):
        inner = to_text(node.operand)
        return f"not {inner}" if _precedence(node.operand) >= 7 else f"not ({inner})"
    if isinstance(node, Arith):
        level = _precedence(node)
        return f"{_sub(node.left, level)} {node.op} {_sub(node.right, level + 1)}"
    if isinstance(node, Compare):
        return f"{_sub(node.left, 5)} {node.op} {_sub(node.right, 5)}"
    if isinstance(node, In):
        items = ", ".join(_sub(item, 5) for item in node.items)
        return f"{_sub(node.operand, 5)} {'not in' if node.negated else 'in'} [{items}]"
    if isinstance(node, Between):
        word = "not between" if node.negated else "between"
        parts = (_sub(node.operand, 5), _sub(node.low, 5), _sub(node.high, 5))
        return f"{parts[0]} {word} {parts[1]} and {parts[2]}"
    word, level = (" and ", 3) if isinstance(node, And) else (" or ", 2)
    return word.join(_sub(operand, level) for operand in node.operands)


def _sub(node: Node, level: int) -> str:
    text = to_text(node)
    return f"({text})" if _precedence(node) < level else text


def quote(value: str) -> str:
    """``value`` as a single-quoted literal that lexes back to ``value``."""
    out = ["'"]
    for ch in value:
        if ch in "\\'":
            out.append("\\" + ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif not ch.isprintable():
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    out.append("'")
    return "".join(out)


def describe(node: Node) -> str:
    """A short rendering of ``node`` for messages."""
    text = to_text(node)
    return text if len(text) <= 40 else text[:39] + "…"
