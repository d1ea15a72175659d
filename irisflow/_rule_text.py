"""Texts of alert rules: durations (``'5m'``) and message templates (``'{symbol} at {price}'``).

Both are parsed once, when the rules are built, so a typo is reported before anything
connects; rendering a template is then a plain loop over its parts. A template is never handed
to :meth:`str.format`: only plain field names are allowed, so user text cannot reach into an
object's attributes.
"""

from __future__ import annotations

import decimal
import difflib
import re
import string
from collections.abc import Collection, Iterable, Mapping
from decimal import Decimal
from typing import Any

import attrs

from ._config import AlertConfig
from ._duration import duration_hint, duration_ns
from ._errors import UsageError
from ._events import to_datetime
from ._jsonl import iso_time

__all__ = [
    "NUMBERS",
    "OPTIONS",
    "Template",
    "Time",
    "number",
    "parse_cli",
    "parse_duration",
    "plain_decimal",
    "show_duration",
    "suggest",
]

# --------------------------------------------------------------------------------------------
# Small parsers


def parse_duration(text: str, *, what: str = "duration") -> int:
    """A duration such as ``'30s'``, ``'5m'``, ``'1h'``, ``'1h30m'`` or ``'250ms'``, in ns.

    Raises:
        UsageError: anything else, or zero; the message suggests the spelling meant.
    """
    ns = duration_ns(text)
    if ns is not None:
        return ns
    raise UsageError(
        f"bad {what} {text!r}{duration_hint(text)}: write a positive number and a unit, e.g. "
        "'30s', '5m', '1h' or '1h30m' (units: ms, s, m, h, d)"
    )


def show_duration(ns: int) -> str:
    """``ns`` as ``'under 1 s'``, ``'42 s'``, ``'5 min'`` or ``'2 h 5 min'``."""
    seconds = ns / 1e9
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


# Numbers in rules: 40 digits, magnitudes up to 1e999. Any signal is an error, so a number
# that would overflow later arithmetic (1e999999999) is refused where it is written.
NUMBERS = decimal.Context(
    prec=40,
    Emax=999,
    Emin=-999,
    traps=[
        decimal.InvalidOperation,
        decimal.DivisionByZero,
        decimal.Overflow,
        decimal.Underflow,
    ],
)
"""The decimal context rule numbers are read with."""


def number(text: str, what: str) -> Decimal:
    """``text`` as a finite decimal within :data:`NUMBERS`' range.

    Raises:
        UsageError: not a number, or too large or too small; ``what`` names it.
    """
    try:
        value = NUMBERS.plus(Decimal(text.strip()))
    except (decimal.Overflow, decimal.Underflow):
        raise UsageError(
            f"{what} {text.strip()!r} is out of range: use a number between 1e-999 and 1e999 "
            "in size, e.g. 3 or 0.5"
        ) from None
    except (decimal.DecimalException, ValueError, TypeError):
        value = Decimal("NaN")
    if not value.is_finite():
        raise UsageError(f"{what} must be a number (got {text!r})")
    return value


def suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def plain_decimal(value: Decimal) -> str:
    """``Decimal('45000.5000')`` as ``'45000.5'``: no exponent, no trailing zeros."""
    if not value.is_finite():
        return str(value)
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


# --------------------------------------------------------------------------------------------
# Templates


@attrs.frozen
class Time:
    """A time field for a template: ISO-8601 UTC, or ``strftime`` codes in the format spec."""

    ns: int

    def __format__(self, spec: str) -> str:
        return iso_time(self.ns) if not spec else format(to_datetime(self.ns), spec)


_SAMPLES: Mapping[str, Any] = {
    "number": Decimal("1234.5"),
    "int": 1234,
    "string": "text",
    "bool": True,
    "time": Time(0),
    "list": (),
    "other": object(),
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _show(value: Any, spec: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return format("true" if value else "false", spec)
    if isinstance(value, Decimal) and not spec:
        return plain_decimal(value)
    return format(value, spec)


@attrs.frozen
class Template:
    """A message template: text with ``{field}`` or ``{field:spec}`` placeholders.

    ``{{`` and ``}}`` are literal braces. Only plain field names are allowed (no ``{a.b}``,
    ``{a[0]}`` or ``!r``), so a template can never reach into an object.

    Attributes:
        text: The template as given.
        fields: The field names it uses, in order of first use.
    """

    text: str
    fields: tuple[str, ...]
    _parts: tuple[tuple[str, str | None, str], ...] = attrs.field(repr=False, eq=False)

    @classmethod
    def parse(cls, text: str) -> Template:
        """Parse ``text``.

        Raises:
            UsageError: unbalanced braces, an empty or dotted placeholder, a conversion.
        """
        parts: list[tuple[str, str | None, str]] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise UsageError(
                f"message template {text!r} is malformed ({exc}); write fields as {{name}} "
                "and literal braces as {{ and }}"
            ) from None
        for literal, name, spec, conversion in parsed:
            if name is None:
                parts.append((literal, None, ""))
                continue
            if not _NAME.fullmatch(name):
                shown = "{" + name + "}"
                raise UsageError(
                    f"message template {text!r}: placeholder {shown} must be a plain field "
                    "name such as {price}"
                )
            if conversion is not None or (spec and "{" in spec):
                raise UsageError(
                    f"message template {text!r}: placeholder {{{name}}} may have a format "
                    f"spec such as {{{name}:,.2f}} but no conversion or nested field"
                )
            parts.append((literal, name, spec or ""))
        fields = tuple(dict.fromkeys(name for _, name, _ in parts if name is not None))
        return cls(text, fields, tuple(parts))

    def check(self, types: Mapping[str, str], where: str) -> None:
        """Check every field exists in ``types`` (name -> type) and takes its format spec.

        Raises:
            UsageError: an unknown field (with a suggestion) or a spec its type refuses.
        """
        for _, name, spec in self._parts:
            if name is None:
                continue
            if name not in types:
                raise UsageError(
                    f"{where}: message template {self.text!r} names unknown field {name!r}"
                    f"{suggest(name, types)}; fields here: {', '.join(sorted(types))}"
                )
            if spec:
                try:
                    _show(_SAMPLES[types[name]], spec)
                except (ValueError, TypeError) as exc:
                    raise UsageError(
                        f"{where}: message template {self.text!r}: format spec {spec!r} does "
                        f"not suit field {name!r} (a {types[name]}): {exc}"
                    ) from None

    def render(self, values: Mapping[str, Any]) -> str:
        """The text, with each field's value from ``values`` (``n/a`` when missing)."""
        out: list[str] = []
        for literal, name, spec in self._parts:
            out.append(literal)
            if name is not None:
                try:
                    out.append(_show(values.get(name), spec))
                except (ValueError, TypeError):  # a value of another type than checked
                    out.append(_show(values.get(name), ""))
        return "".join(out)


# --------------------------------------------------------------------------------------------
# --alert expressions

OPTIONS = (
    "name",
    "kind",
    "condition",
    "cooldown",
    "rearm",
    "message",
    "severity",
    "targets",
    "venues",
    "symbols",
    "window",
    "threshold",
    "value",
    "period",
)
"""The options of a ``--alert`` expression: the keys of an ``[[alerts]]`` table."""


def _split_options(text: str) -> list[str]:
    """Split on ``;`` outside quotes."""
    parts: list[str] = []
    current: list[str] = []
    quote: str | None = None
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quote is not None and ch == "\\":
            escaped = True
        elif quote is not None:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ";":
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.DOTALL)
    return value


def parse_cli(text: str, event_fields: Collection[str] = ()) -> AlertConfig:
    """The ``[[alerts]]`` table a ``--alert`` expression stands for.

    ``CONDITION[; option=value ...]``; values may be quoted, ``;`` inside quotes is kept. A
    ``name=`` part that is not an option but close to one is a typo, unless it is one of
    ``event_fields`` (``side = 'buy'`` is a condition).

    Raises:
        UsageError: an unknown or repeated option, two conditions, no condition.
    """
    where = f"--alert {text!r}"
    options: dict[str, str] = {}
    condition: str | None = None
    for part in _split_options(text):
        match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)(.*)\Z", part, flags=re.DOTALL)
        name = match.group(1).lower() if match else ""
        typo = name not in event_fields and bool(difflib.get_close_matches(name, OPTIONS, n=1))
        if match and (name in OPTIONS or typo):
            if name not in OPTIONS:
                raise UsageError(
                    f"{where}: unknown option {match.group(1)!r}{suggest(name, OPTIONS)}; "
                    f"options: {', '.join(OPTIONS)}"
                )
            if name in options or (name == "condition" and condition is not None):
                raise UsageError(f"{where}: option {name!r} is given twice")
            options[name] = _unquote(match.group(2))
        elif condition is None and "condition" not in options:
            condition = part
        else:
            raise UsageError(
                f"{where}: more than one condition ({condition or options['condition']!r} and "
                f"{part!r}); join them with 'and', and give options as name=value"
            )
    condition = options.pop("condition", condition)
    kind = options.get("kind", "threshold")
    if condition is None:
        if kind == "threshold":
            raise UsageError(
                f"{where}: a threshold alert needs a condition, e.g. --alert 'price > 45000'"
            )
        condition = "true"
    name = options.pop("name", "") or _default_name(condition, options)
    lists = {
        key: tuple(p for p in (x.strip() for x in options.pop(key).split(",")) if p)
        for key in ("targets", "venues", "symbols")
        if key in options
    }
    period: int | None = None
    if "period" in options:
        raw = options.pop("period")
        if not re.fullmatch(r"\d+", raw.strip()):
            raise UsageError(f"{where}: period must be a whole number (got {raw!r})")
        period = int(raw)
    unknown = sorted(
        set(options)
        - {"kind", "cooldown", "rearm", "message", "severity"}
        - {"window", "threshold", "value"}
    )
    assert not unknown, unknown
    return AlertConfig(
        name=name,
        condition=condition,
        venues=lists.get("venues", ()),
        symbols=lists.get("symbols", ()),
        cooldown=options.get("cooldown"),
        rearm=options.get("rearm"),
        message=options.get("message"),
        severity=options.get("severity", "warning"),
        targets=lists.get("targets", ()),
        kind=kind,
        window=options.get("window"),
        threshold=options.get("threshold"),
        value=options.get("value"),
        period=period,
    )


def _default_name(condition: str, options: Mapping[str, str]) -> str:
    kind = options.get("kind", "threshold")
    if kind == "threshold":
        name = " ".join(condition.split())
        return name if len(name) <= 60 else name[:59] + "…"
    details = [options[key] for key in ("threshold", "window") if options.get(key)]
    return " ".join([kind, *details])
