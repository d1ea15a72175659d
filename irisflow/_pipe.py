"""The pipeline language as text: ``--pipe``, ``--pipeline NAME`` and ``[pipelines.NAME]``.

Steps are separated by ``|`` (outside quotes and brackets) and begin with their name::

    filter EXPR                                  keep events EXPR accepts (gaps always pass)
    select NAME = EXPR, ...                      add computed fields
    by EXPR, ...                                 key later steps (also: key_by)
    throttle DURATION                            at most one event per key per DURATION
    dedupe DURATION [on EXPR, ...]               drop repeats within DURATION
    sample N | sample DURATION                   every N-th event / latest per DURATION, per key
    window SIZE [slide D] [lateness D] [late emit|drop] [idle D]   tumbling or sliding
    window session GAP [lateness D] [late emit|drop] [idle D]      session windows
    bars count N | bars volume X [on EXPR] | bars notional X [on EXPR]
    agg AGG, ...                                 what the window or bars compute
    join (EXPR) within D [lateness D] [idle D] [outer] [map 'A' = 'B', ...]    as-of join
    spike PCT% in DURATION [on EXPR]             spikes and drops per key
    rsi [PERIOD] [on EXPR]                       Wilder's RSI per key over closed bars

Every step is type-checked against the event kinds that reach it before anything connects.
A mistake is reported with a caret under it in the whole pipe text; unknown step, option and
aggregate names come with the nearest known one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Literal

from ._config import Config
from ._errors import UsageError
from ._events import Event
from ._pipeline import DEFAULT_LATENESS, Pipeline, Step
from ._steps import (
    Located,
    PipelineError,
    error,
    nearest,
    split_spans,
    split_top,
    sub,
)

__all__ = ["STEP_NAMES", "build_pipeline", "parse_pipe"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"[0-9]+")


def parse_pipe(text: str, kinds: Iterable[type[Event]]) -> list[Step]:
    """The steps of a ``--pipe`` text, type-checked against ``kinds`` (what enters it).

    Raises:
        PipelineError: a step is unknown or malformed (caret under it, nearest name).
        FilterError: an expression in a step does not parse or type-check.
    """
    return apply_pipe(Pipeline(kinds=frozenset(kinds)), text).steps


def build_pipeline(
    filters: Sequence[str],
    pipes: Sequence[str],
    kinds: Iterable[type[Event]],
    *,
    config: Config | None = None,
    pipeline: str | None = None,
) -> Pipeline:
    """The whole pipeline of a run: ``--filter``s, then ``--pipeline NAME``, then ``--pipe``s.

    Args:
        filters: ``--filter`` texts (all must hold; one filter step on the raw events).
        pipes: ``--pipe`` texts, applied in order after the named pipeline.
        kinds: The event classes the sources can produce.
        config: The loaded ``irisflow.toml`` (for ``pipeline``).
        pipeline: A ``[pipelines.NAME]`` to run.

    Raises:
        UsageError: ``pipeline`` is not defined (the message lists those that are).
        PipelineError, FilterError: a step or expression is wrong.
    """
    built = Pipeline(kinds=frozenset(kinds))
    if filters:
        built = built.filter(*filters)
    if pipeline is not None:
        named = dict(config.pipelines) if config is not None else {}
        where = f" in {str(config.path)!r}" if config is not None and config.path else ""
        if pipeline not in named:
            if not named:
                raise UsageError(
                    f"unknown pipeline {pipeline!r}: no pipelines are defined{where}"
                    ' (add [pipelines.NAME] with pipe = "..." to irisflow.toml)'
                )
            hint = nearest(pipeline, sorted(named)).removesuffix(")")
            hint = hint if "did you mean" in hint else " ("
            listing = ", ".join(sorted(named))
            sep = "; " if "did you mean" in hint else ""
            raise UsageError(
                f"unknown pipeline {pipeline!r}{hint}{sep}pipelines{where}: {listing})"
            )
        try:
            built = apply_pipe(built, named[pipeline].pipe)
        except UsageError as exc:
            raise type(exc)(f"pipeline {pipeline!r}{where}: {exc}") from None
    for text in pipes:
        built = apply_pipe(built, text)
    return built


def apply_pipe(pipeline: Pipeline, text: str) -> Pipeline:
    """``pipeline`` with the steps of ``text`` appended.

    Raises:
        PipelineError, FilterError: as :func:`parse_pipe`.
    """
    if not text.strip():
        raise PipelineError(
            f"empty pipe {text!r} (write steps separated by '|', e.g."
            " 'filter price > 45000 | by symbol | window 1m | agg vwap')"
        )
    for start, end in split_spans(text, "|"):
        segment = Located.at(text, start, end)
        if not segment:
            at = Located.at(text, start, start)
            raise error(at, "empty step (remove the extra '|', or put a step between them)")
        match = _NAME.match(segment)
        if match is None:
            raise error(segment, f"expected a step name at {str(segment)[:20]!r}{_KNOWN}")
        word = sub(segment, 0, match.end())
        rest = sub(segment, match.end(), len(segment))
        handler = _HANDLERS.get(word.lower())
        if handler is None:
            raise error(word, f"unknown step {str(word)!r}{nearest(word, STEP_NAMES)}")
        try:
            pipeline = handler(pipeline, word, rest)
        except PipelineError as exc:
            if "\n" in str(exc):
                raise
            raise error(segment, str(exc)) from None
    return pipeline


# ---------------------------------------------------------------------------- helpers


def _words(text: str) -> list[str]:
    """Whitespace-separated words of ``text`` (quotes kept together), located."""
    spans: list[tuple[int, int]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start = i
        quote = ""
        while i < n and (quote or not text[i].isspace()):
            if quote:
                if text[i] == "\\":
                    i += 1
                elif text[i] == quote:
                    quote = ""
            elif text[i] in "'\"":
                quote = text[i]
            i += 1
        spans.append((start, i))
    return [sub(text, a, b) for a, b in spans]


def _tail(text: str, word: str) -> str:
    """The text after ``word`` (located)."""
    assert isinstance(word, Located)
    assert isinstance(text, Located)
    return sub(text, word.offset - text.offset + len(word), len(text))


def _need(rest: str, at: str, what: str) -> None:
    if not rest:
        raise error(at, what)


def _on(words: list[str], rest: str, step: str) -> tuple[list[str], str | None]:
    """Split ``... on EXPR`` into the words before ``on`` and the expression."""
    for index, word in enumerate(words):
        if word.lower() == "on":
            expr = _tail(rest, word)
            if not expr:
                raise error(word, f"'on' needs an expression in {step} (e.g. on price)")
            return words[:index], expr
    return words, None


def _options(
    words: list[str], known: dict[str, bool], step: str
) -> dict[str, tuple[str, str | None]]:
    """``lateness 2s late emit outer`` -> ``{name: (word, value)}``; ``known``: takes a value."""
    out: dict[str, tuple[str, str | None]] = {}
    index = 0
    while index < len(words):
        word = words[index]
        name = word.lower()
        if name not in known:
            raise error(word, f"unknown option {str(word)!r} of {step}{nearest(name, known)}")
        if name in out:
            raise error(word, f"option {name!r} given twice in {step}")
        value = None
        if known[name]:
            if index + 1 >= len(words):
                raise error(word, f"option {name!r} of {step} needs a value")
            value = words[index + 1]
            index += 1
        out[name] = (word, value)
        index += 1
    return out


# ---------------------------------------------------------------------------- steps

Handler = Callable[[Pipeline, str, str], Pipeline]


def _filter(p: Pipeline, word: str, rest: str) -> Pipeline:
    _need(rest, word, "filter needs a condition, e.g. filter price > 45000")
    return p.filter(rest)


def _select(p: Pipeline, word: str, rest: str) -> Pipeline:
    _need(rest, word, "select needs NAME = EXPRESSION, e.g. select notional = price * qty")
    return p.select(rest)


def _by(p: Pipeline, word: str, rest: str) -> Pipeline:
    _need(rest, word, "by needs what to key on, e.g. by symbol or by venue, symbol")
    parts = split_top(rest)
    for part in parts:
        _need(part, rest, "empty expression in by (write e.g. by venue, symbol)")
    return p.key_by(*parts)


def _throttle(p: Pipeline, word: str, rest: str) -> Pipeline:
    words = _words(rest)
    if len(words) != 1:
        raise error(rest or word, "throttle takes one duration, e.g. throttle 1s")
    return p.throttle(words[0])


def _dedupe(p: Pipeline, word: str, rest: str) -> Pipeline:
    words, on = _on(_words(rest), rest, "dedupe")
    if len(words) != 1:
        raise error(
            rest or word, "dedupe takes one duration, e.g. dedupe 10s or dedupe 1m on trade_id"
        )
    return p.dedupe(words[0], on=split_top(on) if on else ())


def _sample(p: Pipeline, word: str, rest: str) -> Pipeline:
    words = _words(rest)
    if len(words) != 1:
        raise error(rest or word, "sample takes a count or a duration, e.g. sample 10 or sample 1s")
    if _INT.fullmatch(words[0]):
        return p.sample(int(words[0]))
    return p.sample(words[0])


_WINDOW_OPTIONS = {"slide": True, "every": True, "lateness": True, "late": True, "idle": True}


def _window(p: Pipeline, word: str, rest: str) -> Pipeline:
    words = _words(rest)
    _need(rest, word, "window needs a size, e.g. window 1m, window 5m slide 1m, window session 30s")
    kind = words[0].lower()
    if kind in ("session", "tumbling", "sliding", "hopping"):
        words = words[1:]
        if not words:
            raise error(rest, f"window {kind} needs a duration, e.g. window {kind} 1m")
    size, options = words[0], _options(words[1:], _WINDOW_OPTIONS, "window")
    slide = options.get("slide") or options.get("every")
    if "slide" in options and "every" in options:
        raise error(options["every"][0], "give 'slide' or 'every', not both")
    late: Literal["drop", "emit"] = "drop"
    if "late" in options:
        value = options["late"][1]
        assert value is not None
        if value.lower() not in ("emit", "drop"):
            raise error(value, f"late takes emit or drop (got {str(value)!r})")
        late = "emit" if value.lower() == "emit" else "drop"
    lateness = options["lateness"][1] if "lateness" in options else DEFAULT_LATENESS
    idle = options["idle"][1] if "idle" in options else 0
    assert lateness is not None
    assert idle is not None
    if kind == "session":
        if slide is not None:
            raise error(slide[0], "session windows have no slide")
        return p.window(session=size, lateness=lateness, late=late, idle=idle)
    if slide is not None:
        assert slide[1] is not None
        return p.window(sliding=size, slide=slide[1], lateness=lateness, late=late, idle=idle)
    if kind == "sliding":
        raise error(rest, "a sliding window needs a slide, e.g. window sliding 5m slide 1m")
    return p.window(size, lateness=lateness, late=late, idle=idle)


def _bars(p: Pipeline, word: str, rest: str) -> Pipeline:
    words, on = _on(_words(rest), rest, "bars")
    usage = "bars count 100, bars volume 10 or bars notional 1000000"
    if len(words) != 2:
        raise error(rest or word, f"bars takes a measure and a threshold, e.g. {usage}")
    measure, threshold = words[0].lower(), words[1]
    if measure == "count":
        if not _INT.fullmatch(threshold) or int(threshold) < 1:
            raise error(
                threshold, f"bars count needs a whole number of events (got {str(threshold)!r})"
            )
        if on is not None:
            raise error(on, "bars count counts events: it takes no 'on'")
        return p.bars(count=int(threshold))
    if measure == "volume":
        return p.bars(volume=threshold, on=on)
    if measure == "notional":
        return p.bars(notional=threshold, on=on)
    raise error(
        words[0],
        f"unknown bar measure {str(words[0])!r}{nearest(measure, ['count', 'volume', 'notional'])}",
    )


def _agg(p: Pipeline, word: str, rest: str) -> Pipeline:
    _need(rest, word, "agg needs aggregates, e.g. agg vwap, ohlc, count, sum(qty)")
    return p.agg(rest)


_JOIN_OPTIONS = {"within": True, "lateness": True, "idle": True, "outer": False, "map": False}


def _join(p: Pipeline, word: str, rest: str) -> Pipeline:
    usage = "join (venue == 'coinbase') within 1s"
    if not rest.startswith("("):
        raise error(rest or word, f"join needs the right stream's condition in brackets: {usage}")
    close = _closing(rest)
    if close < 0:
        raise error(rest, f"unclosed '(' in join: {usage}")
    right = sub(rest, 1, close)
    _need(right, rest, f"empty condition in join: {usage}")
    tail = sub(rest, close + 1, len(rest))
    words = _words(tail)
    key_map: dict[str, str] = {}
    for index, item in enumerate(words):
        if item.lower() == "map":
            key_map = _key_map(_tail(tail, item), item)
            words = words[:index]
            break
    options = _options(words, _JOIN_OPTIONS, "join")
    if "within" not in options:
        raise error(tail or rest, f"join needs a tolerance: {usage}")
    within = options["within"][1]
    lateness = options["lateness"][1] if "lateness" in options else 0
    idle = options["idle"][1] if "idle" in options else 0
    assert within is not None
    assert lateness is not None
    assert idle is not None
    return p.join(
        right,
        within=within,
        key_map=key_map,
        lateness=lateness,
        outer="outer" in options,
        idle=idle,
    )


def _closing(text: str) -> int:
    """The index of the ``)`` that closes ``text[0]`` (quotes skipped), or -1."""
    depth, quote, i = 0, "", 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _key_map(text: str, at: str) -> dict[str, str]:
    out: dict[str, str] = {}
    pattern = re.compile(
        r"\s*('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\s*=\s*('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\s*"
    )
    for part in split_top(text):
        match = pattern.fullmatch(part)
        if match is None:
            raise error(
                part or at,
                "map takes 'RIGHT KEY' = 'LEFT KEY' pairs, e.g. map 'BTC-USD' = 'BTCUSDT'",
            )
        out[match.group(1)[1:-1]] = match.group(2)[1:-1]
    return out


def _spike(p: Pipeline, word: str, rest: str) -> Pipeline:
    words, on = _on(_words(rest), rest, "spike")
    words = [w for w in words if w.lower() != "in"]
    if len(words) != 2:
        raise error(rest or word, "spike takes a percent and a window, e.g. spike 2% in 1m")
    return p.spike(words[0], words[1], on=on or "price")


def _rsi(p: Pipeline, word: str, rest: str) -> Pipeline:
    words, on = _on(_words(rest), rest, "rsi")
    if len(words) > 1 or (words and not _INT.fullmatch(words[0])):
        raise error(rest, "rsi takes a period, e.g. rsi 14 (or rsi 14 on close)")
    return p.rsi(int(words[0]) if words else 14, on=on or "close")


def _whale(p: Pipeline, word: str, rest: str) -> Pipeline:
    """``whale eth=100 USDC=1000000 tokens=N raw=N``: large on-chain transfers only."""
    from ._whale import WhaleStep  # the chain kinds register only when asked for

    usage = (
        "whale takes thresholds, e.g. whale eth=100 USDC=1000000 (tokens=N for any known"
        " token, raw=N for tokens of unknown decimals)"
    )
    words = _words(rest)
    if not words:
        raise error(word, usage)
    limits: dict[str, Decimal] = {}
    for item in words:
        name, eq, value = item.partition("=")
        try:
            number = Decimal(value) if eq and name else Decimal("nan")
        except InvalidOperation:
            number = Decimal("nan")
        if not number.is_finite() or number < 0:
            raise error(item, f"bad whale threshold {str(item)!r}: {usage}")
        limits[name] = number
    min_eth = limits.pop("eth", None)
    min_tokens = limits.pop("tokens", None)
    raw = limits.pop("raw", None)
    try:
        step = WhaleStep(
            min_eth=min_eth,
            min_tokens=min_tokens,
            per_token=limits,
            min_raw=None if raw is None else int(raw),
        )
    except UsageError as exc:
        raise error(rest, str(exc)) from exc
    return p.then(step)


_HANDLERS: dict[str, Handler] = {
    "filter": _filter,
    "select": _select,
    "by": _by,
    "key_by": _by,
    "throttle": _throttle,
    "dedupe": _dedupe,
    "sample": _sample,
    "window": _window,
    "bars": _bars,
    "agg": _agg,
    "join": _join,
    "spike": _spike,
    "rsi": _rsi,
    "whale": _whale,
}

STEP_NAMES: tuple[str, ...] = tuple(_HANDLERS)
"""Every step name of the text form."""

_KNOWN = f" (steps: {', '.join(STEP_NAMES)})"
