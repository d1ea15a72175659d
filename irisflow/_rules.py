"""Alert rules: conditions over events that fire :class:`~irisflow.Alert` events (sans-IO).

A :class:`Rule` comes from an ``[[alerts]]`` table of the config file or from a ``--alert``
expression. :func:`build_rules` parses every rule and checks it against the event kinds the
stream can produce before anything connects. :class:`AlertStep` is a pipeline step: it passes
every event through unchanged and appends the alerts its rules fire, so alerts show up in the
table and the JSON lines like any other event.

Rule kinds:

* ``threshold``: fires when its condition *becomes* true for a venue and symbol, not on every
  event while it stays true. It fires again once re-armed: by default when the condition is
  false again; with ``rearm`` when a re-arm condition holds, or when the value moved back
  past a band (``rearm = '500'``, or ``'1%'`` of the threshold) -- hysteresis.
* ``change``: the value (trade price, candle close, ticker last, quote mid, or ``value``)
  moved ``threshold`` percent or more against its value ``window`` ago, in event time
  (``'+3'``: up only, ``'-3'``: down only).
* ``volume_spike``: the volume of the current ``window`` (event time, windows aligned to the
  epoch) is more than ``threshold`` sample standard deviations above the mean of the
  ``period`` windows before it (quiet windows count as 0). Fires once per window.
* ``rsi``: RSI(``period``, default 14) with Wilder's smoothing over closed candles leaves the
  ``threshold`` band (default ``30..70``); re-arms once back inside (less a ``rearm`` band).
* ``whale``: an on-chain transaction or token transfer of at least ``threshold`` ETH or
  tokens (each transfer fires once).

Cooldown: once a rule fired for a venue and symbol, further firings within ``cooldown``
(receive time) are folded. When the cooldown ends (:meth:`AlertStep.advance`), one digest alert
with ``count=N`` says ``"<rule> fired N times in 4 min, last at 14:03:07 UTC: <last text>"``,
and the next cooldown starts.

Message templates name fields in braces: ``'{symbol} traded {qty} at {price} on {venue}'``,
with an optional format spec (``{price:,.2f}``, ``{ts:%H:%M}``). Every event field of the
kinds a rule fires on can be named, plus ``rule``, ``severity``, ``kind``, ``time``,
``condition`` and the values the rule kind computes (:data:`COMPUTED_FIELDS`). Texts are plain
(no markup).

On the command line a rule is ``CONDITION[; option=value ...]``, e.g.
``--alert 'price > 45000; cooldown=5m; rearm=1%; message="{symbol} at {price}"'`` or
``--alert 'kind=change; window=5m; threshold=3'``; the options are the ``[[alerts]]`` keys.
"""

from __future__ import annotations

import contextlib
import decimal
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal, TypeAlias

import attrs

from ._alert import SEVERITIES, Alert, Severity
from ._config import AlertConfig, Config
from ._errors import FilterError, UsageError
from ._events import KINDS, Candle, Event, Quote, Ticker, Trade, is_time_field
from ._expr import kind_fields
from ._expr_parse import Compare, Num, parse, to_text
from ._filter import Filter, compile_expression, compile_filter
from ._rule_step import AlertStep, AlertStepStatistics, Getter, chain_kinds
from ._rule_text import Template, number, parse_cli, parse_duration, plain_decimal, suggest
from ._telegram import check_chat_id

__all__ = [
    "COMPUTED_FIELDS",
    "RULE_KINDS",
    "AlertStep",
    "AlertStepStatistics",
    "Rule",
    "RuleKind",
    "Template",
    "build_rules",
    "parse_duration",
]

RuleKind: TypeAlias = Literal["threshold", "change", "volume_spike", "whale", "rsi"]
"""What a rule watches for."""

RULE_KINDS: tuple[RuleKind, ...] = ("threshold", "change", "volume_spike", "whale", "rsi")
"""The rule kinds."""

_COMMON_FIELDS = {"rule": "string", "severity": "string", "kind": "string", "time": "time"}
COMPUTED_FIELDS: Mapping[RuleKind, Mapping[str, str]] = {
    "threshold": {"condition": "string", "measure": "string", "value": "number"},
    "change": {
        "condition": "string",
        "change_pct": "number",
        "start_value": "number",
        "value": "number",
        "window": "string",
    },
    "volume_spike": {
        "condition": "string",
        "volume": "number",
        "mean": "number",
        "stddev": "number",
        "zscore": "number",
        "window": "string",
        "period": "number",
    },
    "rsi": {
        "condition": "string",
        "rsi": "number",
        "low": "number",
        "high": "number",
        "period": "number",
    },
    "whale": {"condition": "string", "amount": "number"},
}
"""Template fields each rule kind adds to the event's own (besides rule, severity, kind, time).

``measure``/``value`` of a threshold rule exist when its condition compares a value with a
number (``price > 45000``); ``amount`` of a whale rule is in tokens, or ETH for a transaction.
"""

_DEFAULT_MESSAGES: Mapping[RuleKind, str] = {
    "threshold": "{rule}: {symbol} on {venue}, {measure} = {value}",
    "change": "{rule}: {symbol} on {venue} moved {change_pct:+}% in {window} "
    "({start_value} → {value})",
    "volume_spike": "{rule}: {symbol} on {venue} volume {volume} in {window} "
    "(mean {mean}, stddev {stddev}, z {zscore})",
    "rsi": "{rule}: {symbol} on {venue} RSI({period}) is {rsi}, outside {low}..{high}",
    "whale": "{rule}: {amount} {symbol} from {from_address} to {to_address} on {venue} "
    "(tx {tx_hash})",
}
_PLAIN_THRESHOLD_MESSAGE = "{rule}: {symbol} on {venue} at {time}"

_HUNDRED = Decimal(100)


# --------------------------------------------------------------------------------------------
# Rules


def _all_kinds() -> list[type[Event]]:
    """Every event kind a rule can look at: the registered ones, on-chain kinds included."""
    with contextlib.suppress(ImportError):
        from . import _chain  # noqa: F401  (registers the on-chain kinds)
    return [cls for cls in KINDS.values() if cls is not Alert]


class _NotOnStream(UsageError):
    """A valid rule that cannot fire on the kinds this stream produces."""


def _mid(event: Event) -> Decimal:
    assert isinstance(event, Quote)
    return (event.bid_price + event.ask_price) / 2


_DEFAULT_CHANGE_VALUES: Mapping[type[Event], Getter] = {
    Trade: operator.attrgetter("price"),
    Candle: operator.attrgetter("close"),
    Ticker: operator.attrgetter("last"),
    Quote: _mid,
}


@attrs.frozen
class Rule:
    """One alert rule, parsed and checked: see the module docstring for the kinds.

    Build rules with :meth:`from_config`, :meth:`parse` or :func:`build_rules`, which check
    everything against the event kinds of the stream.
    """

    name: str
    """Unique name; shown in every alert."""
    kind: RuleKind
    """What the rule watches for."""
    condition: Filter
    """What fires (``threshold``), or which events the other kinds look at."""
    template: Template
    """The message."""
    severity: Severity
    """How urgent its alerts are."""
    venues: frozenset[str] = frozenset()
    """Only events of these venues (empty: all)."""
    symbols: frozenset[str] = frozenset()
    """Only events of these symbols (empty: all)."""
    cooldown: int = 0
    """Least time between two alerts for one venue and symbol, ns of receive time (0: none)."""
    rearm: Filter | None = None
    """A condition that re-arms the rule (a band is turned into one for ``threshold``)."""
    band: Decimal = Decimal(0)
    """Hysteresis of ``change`` and ``rsi`` rules, in percent points or RSI points."""
    targets: tuple[str, ...] = ()
    """Chat ids (empty: the sink's default chat)."""
    window: int | None = None
    """Window of ``change`` and ``volume_spike`` rules, ns of event time."""
    threshold: Decimal | None = None
    """Percent (``change``), standard deviations (``volume_spike``), ETH/tokens (``whale``)."""
    direction: Literal["both", "up", "down"] = "both"
    """Which moves a ``change`` rule fires on."""
    low: Decimal = Decimal(30)
    """Lower edge of the ``rsi`` band."""
    high: Decimal = Decimal(70)
    """Upper edge of the ``rsi`` band."""
    period: int = 0
    """RSI period, or the trailing windows of ``volume_spike``."""
    values: Mapping[type[Event], Getter] = attrs.field(factory=dict, repr=False, eq=False)
    """How ``change`` and ``volume_spike`` rules read the value of an event, by kind."""
    measure: tuple[str, Getter] | None = attrs.field(default=None, repr=False, eq=False)
    """For a threshold rule comparing a value with a number: the value's text and getter."""
    kinds: frozenset[type[Event]] = frozenset()
    """The event kinds the rule can fire on."""
    source: str = ""
    """Where the rule came from, e.g. ``"--alert 'price > 1'"`` or ``"config file 'x.toml'"``."""
    config: AlertConfig | None = attrs.field(default=None, repr=False)
    """The rule as written."""

    @classmethod
    def from_config(
        cls,
        config: AlertConfig,
        kinds: Iterable[type[Event]] | None = None,
        *,
        source: str = "the config file",
    ) -> Rule:
        """The rule an ``[[alerts]]`` table describes, checked against ``kinds``.

        Args:
            config: The table.
            kinds: The event kinds the stream can produce (default: every kind).
            source: Where the table came from, for messages.

        Raises:
            UsageError: anything is wrong, or the rule cannot fire on ``kinds``.
            FilterError: the condition or re-arm condition does not parse or type-check.
        """
        return _build(config, kinds, source)

    @classmethod
    def parse(cls, text: str, kinds: Iterable[type[Event]] | None = None) -> Rule:
        """The rule of a ``--alert`` expression: ``CONDITION[; option=value ...]``.

        Raises:
            UsageError: anything is wrong, or the rule cannot fire on ``kinds``.
            FilterError: the condition or re-arm condition does not parse or type-check.
        """
        return _build(parse_cli(text, _event_fields()), kinds, f"--alert {text!r}", cli=True)


def _event_fields() -> frozenset[str]:
    return frozenset(name for cls in _all_kinds() for name in kind_fields(cls))


def _scope(values: Sequence[str], what: str, where: str) -> frozenset[str]:
    out: set[str] = set()
    for value in values:
        text = value.strip()
        if not text:
            raise UsageError(f"{where}: an empty name in {what}")
        if what == "venues":
            from ._venue import venue_names

            known = venue_names()
            if text.lower() not in known:
                raise UsageError(
                    f"{where}: unknown venue {text!r}{suggest(text.lower(), known)}; "
                    f"known venues: {', '.join(known)}"
                )
            out.add(text.lower())
        else:
            # Venue symbols are upper case; contract addresses (on-chain) are lower case.
            out.add(text.lower() if text.lower().startswith("0x") else text.upper())
    return frozenset(out)


def _filter(text: str, kinds: Sequence[type[Event]], where: str, what: str) -> Filter:
    try:
        return compile_filter(text, kinds)
    except FilterError as exc:
        raise FilterError(f"{where}: {what}: {exc}") from None


_BAND = re.compile(r"\s*\+?(\d+(?:\.\d+)?)\s*(%?)\s*")


def _build(
    spec: AlertConfig, kinds: Iterable[type[Event]] | None, source: str, *, cli: bool = False
) -> Rule:
    try:
        return _build_rule(spec, kinds, source, cli=cli)
    except decimal.DecimalException as exc:
        # number() keeps rule numbers in range; this is the net for the ones it does not see.
        raise UsageError(
            f"alert {spec.name.strip()!r} ({source}): a number in it is out of range "
            f"({type(exc).__name__}); use numbers between 1e-999 and 1e999 in size"
        ) from None


def _build_rule(
    spec: AlertConfig, kinds: Iterable[type[Event]] | None, source: str, *, cli: bool
) -> Rule:
    name = spec.name.strip()
    if not name or len(name) > 100 or any(not ch.isprintable() for ch in name):
        raise UsageError(
            f"alert name {spec.name!r} ({source}) must be 1 to 100 printable characters"
        )
    where = f"alert {name!r} ({source})"
    registered = _all_kinds()
    stream = registered if kinds is None else [c for c in dict.fromkeys(kinds) if c is not Alert]
    # Conditions are checked against every kind (a typo is a typo on any stream), and the
    # stream's kinds too: a step's result kinds need not be registered.
    every = list(dict.fromkeys([*registered, *stream]))

    kind_text = spec.kind.strip().lower()
    if kind_text not in RULE_KINDS:
        hint = (
            f" (to look at {kind_text} events only, write the condition kind == {kind_text!r})"
            if kind_text in KINDS
            else suggest(kind_text.replace("-", "_"), RULE_KINDS)
        )
        raise UsageError(
            f"{where}: unknown rule kind {spec.kind!r}{hint}; kinds: {', '.join(RULE_KINDS)}"
        )
    kind: RuleKind = kind_text
    severity_text = spec.severity.strip().lower()
    if severity_text not in SEVERITIES:
        raise UsageError(
            f"{where}: unknown severity {spec.severity!r}{suggest(severity_text, SEVERITIES)}; "
            f"use {', '.join(SEVERITIES)}"
        )
    severity: Severity = severity_text
    cooldown = 0 if spec.cooldown is None else _duration(spec.cooldown, "cooldown", where)
    for option in ("targets", "venues", "symbols"):
        values = getattr(spec, option)
        # TOML `targets = "123"` reads as ('1', '2', '3'); on the command line lists are
        # comma-separated, so `targets=1,2,3` means three chats.
        if not cli and len(values) > 1 and all(len(value) == 1 for value in values):
            raise UsageError(
                f"{where}: {option} must be a list, e.g. {option} = [{''.join(values)!r}]"
            )
    targets = tuple(dict.fromkeys(_target(t, where) for t in spec.targets))
    venues = _scope(spec.venues, "venues", where)
    symbols = _scope(spec.symbols, "symbols", where)
    _check_unused(spec, kind, where)

    condition = _filter(spec.condition, every, where, "condition")
    fields: dict[str, Any] = {}
    classes: set[type[Event]]
    if kind == "threshold":
        classes = set(condition.kinds)
        fields.update(_threshold_parts(spec, condition, every, where))
    elif kind == "change":
        fields.update(_change_parts(spec, every, where))
        classes = set(fields["values"])
    elif kind == "volume_spike":
        fields.update(_volume_parts(spec, every, where))
        classes = set(fields["values"])
    elif kind == "rsi":
        fields.update(_rsi_parts(spec, where))
        classes = {Candle}
    else:
        fields.update(_whale_parts(spec, where))
        classes = set(chain_kinds())
    if kind != "threshold" and spec.rearm is not None and "band" not in fields:
        fields["rearm"] = _filter(spec.rearm, every, where, "re-arm condition")
    if kind != "threshold":
        classes &= condition.kinds
    usable = frozenset(cls for cls in stream if cls in classes)
    if not usable:
        raise _NotOnStream(_not_on_stream(where, kind, classes, stream))

    template = Template.parse(spec.message) if spec.message is not None else None
    if template is None:
        default = _DEFAULT_MESSAGES[kind]
        if kind == "threshold" and fields.get("measure") is None:
            default = _PLAIN_THRESHOLD_MESSAGE
        template = Template.parse(default)
    types = _field_types(usable, kind)
    if kind == "threshold" and fields.get("measure") is None:
        types.pop("measure")
        types.pop("value")
    try:
        template.check(types, where)
    except UsageError as exc:
        if spec.message is None:  # pragma: no cover - the defaults only name known fields
            raise AssertionError(f"default message of {kind} rules: {exc}") from exc
        raise
    return Rule(
        name=name,
        kind=kind,
        condition=condition,
        template=template,
        severity=severity,
        venues=venues,
        symbols=symbols,
        cooldown=cooldown,
        targets=targets,
        kinds=usable,
        source=source,
        config=spec,
        **fields,
    )


def _target(text: str, where: str) -> str:
    try:
        return check_chat_id(text)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None


_USES: Mapping[str, tuple[RuleKind, ...]] = {
    "window": ("change", "volume_spike"),
    "threshold": ("change", "volume_spike", "whale", "rsi"),
    "value": ("change", "volume_spike"),
    "period": ("volume_spike", "rsi"),
    "rearm": ("threshold", "change", "rsi"),
}


def _check_unused(spec: AlertConfig, kind: RuleKind, where: str) -> None:
    for option, users in _USES.items():
        if getattr(spec, option) is not None and kind not in users:
            hint = " (put the number in the condition, e.g. 'price > 45000')"
            raise UsageError(
                f"{where}: {option!r} does not apply to {kind} rules"
                f"{hint if kind == 'threshold' and option == 'threshold' else ''}; it is used "
                f"by {', '.join(users)} rules"
            )


def _not_on_stream(
    where: str, kind: RuleKind, classes: set[type[Event]], stream: Sequence[type[Event]]
) -> str:
    needs = ", ".join(sorted(cls.kind for cls in classes)) or "no kind at all"
    has = ", ".join(sorted(cls.kind for cls in stream)) or "nothing"
    what = "its condition applies to" if kind == "threshold" else f"{kind} rules read"
    return (
        f"{where} can never fire on this stream: {what} {needs} events, and the stream "
        f"produces {has}; subscribe to a channel with those events or change the rule"
    )


def _band(text: str, where: str) -> tuple[Decimal, bool] | None:
    """``'500'`` -> (500, False), ``'1%'`` -> (1, True); None for a condition."""
    match = _BAND.fullmatch(text)
    if match is None:
        return None
    return number(match.group(1), f"{where}: the re-arm band"), bool(match.group(2))


def _threshold_parts(
    spec: AlertConfig, condition: Filter, every: Sequence[type[Event]], where: str
) -> dict[str, Any]:
    root = parse(spec.condition)
    out: dict[str, Any] = {}
    compared: tuple[str, Any, Decimal] | None = None
    if isinstance(root, Compare) and root.op in (">", ">=", "<", "<=", "==", "!="):
        flip = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "==": "==", "!=": "!="}
        if isinstance(root.right, Num) and not isinstance(root.left, Num):
            compared = (root.op, root.left, root.right.value)
        elif isinstance(root.left, Num) and not isinstance(root.right, Num):
            compared = (flip[root.op], root.right, root.left.value)
    if compared is not None:
        text = to_text(compared[1])
        expression = compile_expression(text, every)
        if expression.type == "number":
            out["measure"] = (text, expression)
    if spec.rearm is None:
        return out
    band = _band(spec.rearm, where)
    if band is None:
        out["rearm"] = _filter(spec.rearm, every, where, "re-arm condition")
        return out
    if compared is None or compared[0] not in (">", ">=", "<", "<="):
        raise UsageError(
            f"{where}: a re-arm band ({spec.rearm!r}) needs a condition of the form "
            "'value > number' or 'value < number'; give a re-arm condition instead, "
            "e.g. rearm = 'price < 44500'"
        )
    op, node, limit = compared
    width = abs(limit) * band[0] / _HUNDRED if band[1] else band[0]
    measure = to_text(node)
    if op in (">", ">="):
        text = f"{measure} <= {plain_decimal(limit - width)}"
    else:
        text = f"{measure} >= {plain_decimal(limit + width)}"
    out["rearm"] = _filter(text, every, where, f"re-arm band {spec.rearm!r} ({text})")
    return out


def _value_getters(
    spec: AlertConfig, every: Sequence[type[Event]], where: str, default: str | None
) -> dict[type[Event], Getter]:
    if spec.value is None and default is None:
        return dict(_DEFAULT_CHANGE_VALUES)
    text = spec.value if spec.value is not None else default
    assert text is not None
    try:
        expression = compile_expression(text, every)
    except FilterError as exc:
        raise FilterError(f"{where}: value: {exc}") from None
    if expression.type != "number":
        raise UsageError(f"{where}: value {text!r} is a {expression.type}, not a number")
    return dict.fromkeys(expression.kinds, expression)


def _window(spec: AlertConfig, kind: RuleKind, where: str) -> int:
    if spec.window is None:
        raise UsageError(f"{where}: {kind} rules need a window, e.g. window = '5m'")
    return _duration(spec.window, "window", where)


def _duration(text: str, what: str, where: str) -> int:
    try:
        return parse_duration(text, what=what)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _change_parts(spec: AlertConfig, every: Sequence[type[Event]], where: str) -> dict[str, Any]:
    if spec.threshold is None:
        raise UsageError(
            f"{where}: change rules need a threshold in percent, e.g. threshold = '3' "
            "('+3': rises only, '-3': falls only)"
        )
    text = spec.threshold.strip().removesuffix("%")
    direction = "up" if text.startswith("+") else "down" if text.startswith("-") else "both"
    threshold = abs(number(text, f"{where}: threshold"))
    if threshold == 0:
        raise UsageError(f"{where}: the change threshold must not be 0 (got {spec.threshold!r})")
    out: dict[str, Any] = {
        "window": _window(spec, "change", where),
        "threshold": threshold,
        "direction": direction,
        "values": _value_getters(spec, every, where, None),
    }
    if spec.rearm is not None and (band := _band(spec.rearm, where)) is not None:
        out["band"] = threshold * band[0] / _HUNDRED if band[1] else band[0]
        if out["band"] >= threshold:
            raise UsageError(
                f"{where}: the re-arm band {spec.rearm!r} must be smaller than the threshold"
            )
    return out


def _volume_parts(spec: AlertConfig, every: Sequence[type[Event]], where: str) -> dict[str, Any]:
    threshold = number(spec.threshold or "3", f"{where}: threshold")
    if threshold <= 0:
        raise UsageError(f"{where}: the spike threshold must be positive (got {threshold})")
    period = 20 if spec.period is None else spec.period
    if period < 2:
        raise UsageError(f"{where}: period must be at least 2 windows (got {period})")
    return {
        "window": _window(spec, "volume_spike", where),
        "threshold": threshold,
        "period": period,
        "values": _value_getters(spec, every, where, "qty"),
    }


def _rsi_parts(spec: AlertConfig, where: str) -> dict[str, Any]:
    text = spec.threshold or "30..70"
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:\.\.|,|-)\s*(\d+(?:\.\d+)?)\s*", text)
    low, high = (Decimal(match.group(1)), Decimal(match.group(2))) if match else (None, None)
    if low is None or high is None or not 0 <= low < high <= 100:
        raise UsageError(
            f"{where}: the RSI band {text!r} must be 'LOW..HIGH' with 0 <= LOW < HIGH <= 100, "
            "e.g. '30..70'"
        )
    period = 14 if spec.period is None else spec.period
    if period < 2:
        raise UsageError(f"{where}: the RSI period must be at least 2 candles (got {period})")
    out: dict[str, Any] = {"low": low, "high": high, "period": period}
    if spec.rearm is not None and (band := _band(spec.rearm, where)) is not None:
        width = band[0]
        out["band"] = width
        if band[1] or low + width >= high - width:
            raise UsageError(
                f"{where}: the RSI re-arm band {spec.rearm!r} must be RSI points (no %) and "
                f"leave room inside {low}..{high}"
            )
    return out


def _whale_parts(spec: AlertConfig, where: str) -> dict[str, Any]:
    if not chain_kinds():  # pragma: no cover - the on-chain module is part of irisflow
        raise UsageError(f"{where}: whale rules need irisflow's on-chain support")
    if spec.threshold is None:
        raise UsageError(
            f"{where}: whale rules need a threshold in ETH or tokens, e.g. threshold = '1000'"
        )
    threshold = number(spec.threshold, f"{where}: threshold")
    if threshold < 0:
        raise UsageError(f"{where}: the whale threshold must be at least 0 (got {threshold})")
    return {"threshold": threshold}


def _field_types(classes: Iterable[type[Event]], kind: RuleKind) -> dict[str, str]:
    types: dict[str, str] = {}
    for cls in classes:
        for name, info in kind_fields(cls).items():
            if is_time_field(cls, name):
                types.setdefault(name, "time")
            elif info.type == "number" and info.is_int:
                types.setdefault(name, "int")
            else:
                types.setdefault(name, info.type)
    types.update(_COMMON_FIELDS)
    types.update(COMPUTED_FIELDS[kind])
    return types


def build_rules(
    cli_alerts: Sequence[str],
    config: Config,
    kinds: Iterable[type[Event]] | None = None,
    *,
    warn: Callable[[str], None] | None = None,
) -> list[Rule]:
    """Every rule of this run: the ``--alert`` expressions, then the config file's tables.

    Everything is checked before anything connects. A ``--alert`` rule that cannot fire on
    ``kinds`` is an error; a config rule that cannot is left out for this run (the config file
    serves every stream), with a note to ``warn``.

    Args:
        cli_alerts: The ``--alert`` options.
        config: The loaded config file (its ``alerts``).
        kinds: The event kinds the stream can produce (default: every kind).
        warn: Where notes about rules left out go.

    Raises:
        UsageError: a rule is wrong (unknown kind, severity, duration, field...), or two
            rules share a name.
        FilterError: a condition does not parse or type-check.
    """
    stream = None if kinds is None else list(kinds)
    rules = [Rule.parse(text, stream) for text in cli_alerts]
    source = f"config file {str(config.path)!r}" if config.path is not None else "config"
    for spec in config.alerts:
        try:
            rules.append(Rule.from_config(spec, stream, source=source))
        except _NotOnStream as exc:
            if warn is not None:
                warn(f"{exc}; it is off for this run")
    seen: dict[str, Rule] = {}
    for rule in rules:
        if rule.name in seen:
            raise UsageError(
                f"two alerts are named {rule.name!r} ({seen[rule.name].source} and "
                f"{rule.source}); give one of them another name (name=...)"
            )
        seen[rule.name] = rule
    return rules
