"""Lexer and error messages for the filter/expression language (parsed in ``_expr_parse.py``).

:func:`lex` splits the text into :class:`Token` s. :func:`fail` builds every
:class:`~irisflow.FilterError` of the language, the message followed by the offending line with a
caret under the spot; :func:`where`, :func:`shorten` and :func:`and_list` make the pieces those
messages share.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Literal, TypeAlias

import attrs

from ._errors import FilterError

Span: TypeAlias = tuple[int, int]
"""Where a token or node sits in the text: ``(start, end)`` character offsets."""

NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
"""A number literal as the lexer reads it (the checker's hints use it too)."""

_KEYWORDS = frozenset({"and", "or", "not", "in", "between", "true", "false"})
_OPERATORS = (">=", "<=", "==", "!=", ">", "<", "=", "+", "-", "*", "/", "(", ")", "[", "]", ",")
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
    match = NUMBER.match(text, i)
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
