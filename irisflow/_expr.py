"""Parsing and type checking for the filter/expression language (compiled in ``_filter.py``).

The text is lexed, parsed by recursive descent into a small tree of frozen attrs nodes, and
type-checked against the fields of the event kinds. Nothing here evaluates anything: user text
is only ever parsed, never handed to ``eval``.

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

import decimal
import difflib
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Literal, TypeAlias

import attrs

from ._errors import FilterError
from ._events import KINDS, Event

Span: TypeAlias = tuple[int, int]
"""Where a token or node sits in the text: ``(start, end)`` character offsets."""

MAX_NESTING = 50
"""Most nested brackets, ``not`` and unary minus a text may hold (keeps recursion bounded)."""

MAX_DEPTH = 100
"""Deepest tree a text may parse to (long ``a + b + c ...`` chains nest too)."""

CMP_OPS = frozenset({"==", "!=", ">", ">=", "<", "<="})
ORDERING_OPS = frozenset({">", ">=", "<", "<="})
_KEYWORDS = frozenset({"and", "or", "not", "in", "between", "true", "false"})
_INFIX = frozenset({"==", "!=", ">", ">=", "<", "<=", "=", "+", "*", "/"})
_INFIX_KW = frozenset({"and", "or", "in", "between"})
_OPERATORS = (">=", "<=", "==", "!=", ">", "<", "=", "+", "-", "*", "/", "(", ")", "[", "]", ",")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD = re.compile(r"[A-Za-z0-9_.]*")
_SPACE = frozenset(" \t\r\n")
_EXCERPT = 80
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "r": "\r", "t": "\t", "0": "\0"}
_CHAR_HINTS = {
    "&": "write 'and'",
    "|": "write 'or'",
    "!": "write 'not', or '!=' for not equal",
    ".": "write decimals with a leading digit, e.g. 0.5",
}
_PARSE_CONTEXT = decimal.Context(traps=[decimal.InvalidOperation])

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


# ---------------------------------------------------------------------------------- errors


def fail(text: str, span: Span, message: str) -> FilterError:
    """A :class:`FilterError`: ``message``, then the offending line with a caret under ``span``."""
    start, end = span
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", start)
    if line_end == -1:
        line_end = len(text)
    line = "".join(ch if ch.isprintable() else " " for ch in text[line_start:line_end])
    column, width = start - line_start, max(1, min(end, line_end) - start)
    if len(line) > _EXCERPT:  # show a window around the spot, not a whole huge line
        first = max(0, column - _EXCERPT // 2)
        line = ("…" if first else "") + line[first : first + _EXCERPT] + "…"
        column -= first - (1 if first else 0)
        width = min(width, _EXCERPT)
    return FilterError(f"{message}\n  {line}\n  {' ' * column}{'^' * width}")


def where(what: str, text: str) -> str:
    """``in filter 'price > 1'``: the tail every message uses to show the text."""
    return f"in {what} {shorten(text)}"


def shorten(text: str) -> str:
    """``text`` quoted for a message's first line, cut short if it is long."""
    return repr(text) if len(text) <= _EXCERPT else repr(text[: _EXCERPT - 1] + "…")


def and_list(words: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"


# ---------------------------------------------------------------------------------- lexer


@attrs.frozen
class Token:
    """One lexical token; ``value`` is the literal's value or the lower-cased keyword."""

    kind: Literal["num", "str", "name", "kw", "op", "eof"]
    text: str
    value: object
    start: int
    end: int

    @property
    def span(self) -> Span:
        return (self.start, self.end)

    def is_kw(self, *words: str) -> bool:
        return self.kind == "kw" and self.value in words

    def is_op(self, *ops: str) -> bool:
        return self.kind == "op" and self.text in ops


def lex(text: str, what: str) -> list[Token]:
    """Split ``text`` into tokens, ending with an ``eof`` token.

    Raises:
        FilterError: an unknown character, a malformed number or a bad string.
    """
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _SPACE:
            i += 1
        elif ch in "'\"":
            value, end = _lex_string(text, i, what)
            tokens.append(Token("str", text[i:end], value, i, end))
            i = end
        elif "0" <= ch <= "9" or (ch == "." and "0" <= text[i + 1 : i + 2] <= "9"):
            tokens.append(_lex_number(text, i, what))
            i = tokens[-1].end
        elif match := _NAME.match(text, i):
            word = match.group()
            lower = word.lower()
            if lower in _KEYWORDS:
                tokens.append(Token("kw", word, lower, i, match.end()))
            else:
                tokens.append(Token("name", word, word, i, match.end()))
            i = match.end()
        else:
            op = next((op for op in _OPERATORS if text.startswith(op, i)), None)
            if op is None:
                hint = _CHAR_HINTS.get(ch, "remove it; text values go in quotes, e.g. 'BTCUSDT'")
                raise fail(
                    text, (i, i + 1), f"unexpected character {ch!r} {where(what, text)} ({hint})"
                )
            tokens.append(Token("op", op, op, i, i + len(op)))
            i += len(op)
    tokens.append(Token("eof", "", None, n, n))
    return tokens


def _lex_number(text: str, i: int, what: str) -> Token:
    match = _NUMBER.match(text, i)
    end = match.end() if match else i
    tail = _WORD.match(text, end)
    if match is None or (tail is not None and tail.end() > end):
        stop = tail.end() if tail is not None else i + 1
        word = text[i:stop]
        raise fail(
            text,
            (i, stop),
            f"malformed number {word!r} {where(what, text)}"
            " (write numbers like 45000, 0.5 or 1e5, without '_')",
        )
    try:
        with decimal.localcontext(_PARSE_CONTEXT):
            value = Decimal(match.group())
    except decimal.InvalidOperation:
        raise fail(
            text,
            (i, end),
            f"number {match.group()!r} is out of range {where(what, text)}"
            " (use a smaller exponent)",
        ) from None
    return Token("num", match.group(), value, i, end)


def _lex_string(text: str, i: int, what: str) -> tuple[str, int]:
    quote, j, n = text[i], i + 1, len(text)
    out: list[str] = []
    while j < n:
        ch = text[j]
        if ch == quote:
            return "".join(out), j + 1
        if ch != "\\":
            out.append(ch)
            j += 1
            continue
        if j + 1 >= n:
            break
        esc = text[j + 1]
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            j += 2
        elif esc in "uU":
            width = 4 if esc == "u" else 8
            digits = text[j + 2 : j + 2 + width]
            if (
                len(digits) != width
                or any(c not in "0123456789abcdefABCDEF" for c in digits)
                or int(digits, 16) > 0x10FFFF
            ):
                raise fail(
                    text,
                    (j, j + 2 + len(digits)),
                    f"bad unicode escape in a string {where(what, text)}"
                    " (write \\u and 4 hex digits, or \\U and 8)",
                )
            out.append(chr(int(digits, 16)))
            j += 2 + width
        else:
            raise fail(
                text,
                (j, j + 2),
                f"unknown escape '\\{esc}' in a string {where(what, text)}"
                " (write '\\\\' for a backslash)",
            )
    raise fail(
        text,
        (i, n),
        f"unterminated string {where(what, text)} (close it with a matching {quote!r})",
    )


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


# ---------------------------------------------------------------------------------- types

TypeName: TypeAlias = Literal["number", "string", "bool", "list", "other"]
ValueType: TypeAlias = Literal["number", "string", "bool"]


@attrs.frozen
class FieldType:
    """What the language knows about one attrs field of an event class."""

    type: TypeName
    nullable: bool
    is_int: bool


_FIELD_TYPES: dict[type[Event], Mapping[str, FieldType]] = {}


def kind_fields(cls: type[Event]) -> Mapping[str, FieldType]:
    """The fields of event class ``cls`` and their language types (cached per class)."""
    if cls in _FIELD_TYPES:
        return _FIELD_TYPES[cls]
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError, AttributeError):  # unresolvable annotations: fields are opaque
        hints = {}
    fields = {field.name: _classify(hints.get(field.name)) for field in attrs.fields(cls)}
    _FIELD_TYPES[cls] = types.MappingProxyType(fields)
    return _FIELD_TYPES[cls]


def _classify(hint: object) -> FieldType:
    nullable = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        rest = [arg for arg in args if arg is not type(None)]
        nullable = len(rest) < len(args)
        hint = rest[0] if len(rest) == 1 else None
    if hint is bool:
        return FieldType("bool", nullable, False)
    if hint is int:
        return FieldType("number", nullable, True)
    if hint is Decimal:  # not float: arithmetic would need a float conversion, never done
        return FieldType("number", nullable, False)
    if hint is str:
        return FieldType("string", nullable, False)
    if typing.get_origin(hint) in (tuple, list, set, frozenset) or hint in (tuple, list):
        return FieldType("list", nullable, False)
    return FieldType("other", nullable, False)


def kind_names(classes: Sequence[type[Event]]) -> str:
    """``quote and ticker``: the ``kind`` names of ``classes`` for messages."""
    return and_list([cls.kind for cls in classes]) or "no"


def check_fields(
    root: Node, text: str, what: str, classes: Sequence[type[Event]]
) -> tuple[list[type[Event]], dict[str, tuple[TypeName, bool]]]:
    """Check that every field exists and that some class has them all.

    Returns:
        The classes that have every field used, and the merged ``{name: (type, nullable)}``
        of those classes plus ``kind``.

    Raises:
        FilterError: an unknown field, or no class has all the fields.
    """
    known: dict[str, FieldType] = {}
    for cls in classes:
        for name, info in kind_fields(cls).items():
            known.setdefault(name, info)
    fields = [node for node in walk(root) if isinstance(node, Field) and node.name != "kind"]
    for node in fields:
        if node.name not in known:
            raise _unknown_field(root, node, text, what, classes, known)
    candidates = list(classes)
    for index, node in enumerate(fields):
        remaining = [cls for cls in candidates if node.name in kind_fields(cls)]
        if not remaining:
            having = [cls for cls in classes if node.name in kind_fields(cls)]
            earlier = list(dict.fromkeys(f.name for f in fields[:index]))
            verb = "is" if len(earlier) == 1 else "are"
            raise fail(
                text,
                node.span,
                f"no event kind has all the fields used {where(what, text)}:"
                f" {and_list(earlier)} {verb} in {kind_names(candidates)} events,"
                f" {node.name} in {kind_names(having)} events (use the fields of one kind)",
            )
        candidates = remaining
    env: dict[str, tuple[TypeName, bool]] = {"kind": ("string", False)}
    for cls in candidates:
        for name, info in kind_fields(cls).items():
            base, nullable = env.get(name, (info.type, False))
            env[name] = (base, nullable or info.nullable)
    # A field typed differently by another kind would break the closures: leave that kind out.
    used = {node.name for node in fields}
    candidates = [
        cls for cls in candidates if all(kind_fields(cls)[n].type == env[n][0] for n in used)
    ]
    return candidates, env


def _unknown_field(
    root: Node,
    node: Field,
    text: str,
    what: str,
    classes: Sequence[type[Event]],
    known: Mapping[str, FieldType],
) -> FilterError:
    name, at = node.name, where(what, text)
    elsewhere = [cls for cls in KINDS.values() if cls not in classes and name in kind_fields(cls)]
    if elsewhere:
        return fail(
            text,
            node.span,
            f"field {name!r} {at} belongs to {kind_names(elsewhere)} events, which this stream"
            f" does not produce (it produces {kind_names(classes)} events)",
        )
    if _compared_with_string(root, node, known):
        return fail(
            text,
            node.span,
            f"unknown field {name!r} {at} (to compare with the text {name!r}, put it in quotes)",
        )
    choices = ["kind", *known]
    close = [c for c in choices if c.lower() == name.lower()]
    close = close or difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return fail(text, node.span, f"unknown field {name!r} {at} (did you mean {close[0]!r}?)")
    return fail(
        text, node.span, f"unknown field {name!r} {at} (known fields: {', '.join(choices)})"
    )


def _compared_with_string(root: Node, field: Field, known: Mapping[str, FieldType]) -> bool:
    def is_string_field(node: Node) -> bool:
        return isinstance(node, Field) and (
            node.name == "kind" or (node.name in known and known[node.name].type == "string")
        )

    for node in walk(root):
        if isinstance(node, Compare) and (node.left is field or node.right is field):
            other = node.right if node.left is field else node.left
            return is_string_field(other)
        if isinstance(node, In) and any(item is field for item in node.items):
            return is_string_field(node.operand)
    return False


class Checker:
    """The type checker: every sub-expression gets ``number``, ``string`` or ``bool``."""

    def __init__(
        self,
        text: str,
        what: str,
        env: Mapping[str, tuple[TypeName, bool]],
        classes: Sequence[type[Event]],
    ) -> None:
        self.text = text
        self.where = where(what, text)
        self.env = env
        self.kinds = list(dict.fromkeys([*KINDS, *(cls.kind for cls in classes)]))

    def fail(self, span: Span, message: str) -> FilterError:
        return fail(self.text, span, message)

    def check(self, node: Node) -> ValueType:
        """The type of ``node``.

        Raises:
            FilterError: the first (leftmost, innermost) type error.
        """
        if isinstance(node, Num):
            return "number"
        if isinstance(node, Str):
            return "string"
        if isinstance(node, Bool):
            return "bool"
        if isinstance(node, Field):
            kind = self.env[node.name][0]
            if kind == "number" or kind == "string" or kind == "bool":
                return kind
            what = "a list" if kind == "list" else "not a number, string or bool"
            raise self.fail(
                node.span,
                f"cannot use field {node.name!r} {self.where}: it is {what}"
                " (use number, string and bool fields)",
            )
        if isinstance(node, Neg):
            kind = self.check(node.operand)
            if kind != "number":
                raise self.fail(
                    node.operand.span,
                    f"cannot negate {describe(node.operand)} (a {kind}) {self.where}"
                    " (only numbers can be negated)",
                )
            return "number"
        if isinstance(node, Arith):
            for side in (node.left, node.right):
                kind = self.check(side)
                if kind != "number":
                    raise self.fail(
                        side.span,
                        f"cannot use {node.op!r} on {describe(side)} (a {kind}) {self.where}"
                        " (arithmetic works on numbers only)",
                    )
            return "number"
        if isinstance(node, Compare):
            self.same_type(node, node.left, node.right, node.op)
            return "bool"
        if isinstance(node, In):
            for item in node.items:
                self.same_type(item, node.operand, item, "==")
            if not node.items:
                self.check(node.operand)
            return "bool"
        if isinstance(node, Between):
            self.same_type(node, node.operand, node.low, "between")
            self.same_type(node, node.operand, node.high, "between")
            return "bool"
        for operand in children(node):
            self.condition(operand, "not" if isinstance(node, Not) else type(node).__name__.lower())
        return "bool"

    def condition(self, node: Node, op: str) -> None:
        """Check that ``node`` is a condition (operand of ``and``, ``or``, ``not``)."""
        kind = self.check(node)
        if kind != "bool":
            example = "> 0" if kind == "number" else "== 'value'"
            raise self.fail(
                node.span,
                f"{op!r} needs conditions, but {describe(node)} is a {kind} {self.where}"
                f" (compare it with something, e.g. {describe(node)} {example})",
            )

    def same_type(self, at: Node, left: Node, right: Node, op: str) -> None:
        """Check that ``left op right`` compares like with like (errors point at ``at``)."""
        lt, rt = self.check(left), self.check(right)
        if lt != rt:
            raise self.fail(
                at.span,
                f"cannot compare {describe(left)} (a {lt}) with {describe(right)} (a {rt})"
                f" {self.where} ({_mismatch_hint(left, lt, right, rt)})",
            )
        if lt == "bool" and (op in ORDERING_OPS or op == "between"):
            raise self.fail(
                at.span,
                f"cannot use {op!r} on bools {self.where} (bools support only == and !=)",
            )
        for a, b in ((left, right), (right, left)):
            if isinstance(a, Field) and a.name == "kind" and isinstance(b, Str):
                self.known_kind(b)

    def known_kind(self, node: Str) -> None:
        if node.value in self.kinds:
            return
        close = difflib.get_close_matches(node.value, self.kinds, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known kinds: {', '.join(self.kinds)}"
        raise self.fail(node.span, f"unknown kind {node.value!r} {self.where} ({hint})")


def _mismatch_hint(left: Node, lt: ValueType, right: Node, rt: ValueType) -> str:
    if {lt, rt} == {"number", "string"}:
        for node in (left, right):
            if isinstance(node, Str) and _NUMBER.fullmatch(node.value.lstrip("-")):
                return f"write the number without quotes: {node.value}"
            if isinstance(node, Num):
                return f"put the value in quotes: '{node.value}'"
        return "compare numbers with numbers and strings with strings"
    return "compare bools with true or false"
