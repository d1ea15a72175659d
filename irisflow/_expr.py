"""Type checking for the filter/expression language (compiled in ``_filter.py``).

The language lives in three modules: ``_expr_lex.py`` lexes the text and builds the error
messages with their carets, ``_expr_parse.py`` parses it into a tree of frozen attrs nodes and
prints trees back, and this module checks a tree against the fields of the event kinds: which
fields exist (with "did you mean" suggestions), which kinds have them all, and what type every
sub-expression has. Nothing here evaluates anything: user text is only ever parsed, never handed
to ``eval``.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Literal, TypeAlias

import attrs

from ._errors import FilterError
from ._events import KINDS, Event
from ._expr_lex import NUMBER, Span, and_list, fail, where
from ._expr_parse import (
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
    Str,
    children,
    describe,
    walk,
)

ORDERING_OPS = frozenset({">", ">=", "<", "<="})

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
            if isinstance(node, Str) and NUMBER.fullmatch(node.value.lstrip("-")):
                return f"write the number without quotes: {node.value}"
            if isinstance(node, Num):
                return f"put the value in quotes: '{node.value}'"
        return "compare numbers with numbers and strings with strings"
    return "compare bools with true or false"
