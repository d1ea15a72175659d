"""Telegram message text, pure and sans-IO: escape it, measure it, split it.

:func:`escape_markdown_v2` and :func:`escape_html` make any text show literally in Telegram's
two parse modes. Telegram measures text in UTF-16 code units (:func:`utf16_len`) and refuses a
message longer than :data:`MESSAGE_LIMIT`; :func:`split_message` cuts a long text into parts
that fit, never inside an escape, entity or tag, and preferably outside any formatting.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Literal

from ._errors import UsageError

__all__ = [
    "MESSAGE_LIMIT",
    "ParseMode",
    "escape_html",
    "escape_markdown_v2",
    "split_message",
    "utf16_len",
]


MESSAGE_LIMIT = 4096
"""Longest message text Telegram accepts, counted in UTF-16 code units (the safe reading)."""

ParseMode = Literal["HTML", "MarkdownV2"] | None
"""How Telegram reads message text: HTML tags, MarkdownV2 markup, or plain text (``None``)."""


_MD_TEXT = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")
_MD_CODE = re.compile(r"([`\\])")
_MD_URL = re.compile(r"([)\\])")


def escape_markdown_v2(text: str, *, entity: Literal["code", "pre", "url"] | None = None) -> str:
    """Escape ``text`` so Telegram's MarkdownV2 shows it literally.

    Args:
        text: Any text.
        entity: Where the text goes: ordinary text (``None``, escapes
            ``_*[]()~`>#+-=|{}.!`` and ``\\``), inside inline code or a pre block
            (``'code'``/``'pre'``: only the backtick and ``\\``), or inside the ``(...)`` URL
            of an inline link (``'url'``: only ``)`` and ``\\``).
    """
    if entity is None:
        return _MD_TEXT.sub(r"\\\1", text)
    if entity in ("code", "pre"):
        return _MD_CODE.sub(r"\\\1", text)
    return _MD_URL.sub(r"\\\1", text)


def escape_html(text: str, *, quote: bool = False) -> str:
    """Escape ``&``, ``<`` and ``>`` so Telegram's HTML mode shows ``text`` literally.

    Args:
        text: Any text.
        quote: Also escape quotes, for an attribute value such as ``href``.
    """
    return html.escape(text, quote=quote)


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, the unit Telegram measures text in."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


_HTML_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[a-zA-Z]+);")
_HTML_TAG_NAME = re.compile(r"</?\s*([a-zA-Z][a-zA-Z0-9-]*)")


def _scan_html(text: str, ok: list[bool], flat: list[bool]) -> None:
    stack: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "<":
            end = text.find(">", i)
            end = n - 1 if end < 0 else end
            for p in range(i + 1, end + 1):
                ok[p] = False
            match = _HTML_TAG_NAME.match(text, i)
            if match:
                name = match.group(1).lower()
                if text.startswith("</", i):
                    if name in stack:
                        del stack[len(stack) - 1 - stack[::-1].index(name) :]
                else:
                    stack.append(name)
            i = end + 1
        elif ch == "&" and (match := _HTML_ENTITY.match(text, i)):
            for p in range(i + 1, match.end()):
                ok[p] = False
            i = match.end()
        else:
            i += 1
        flat[i] = not stack


def _scan_markdown_v2(text: str, ok: list[bool], flat: list[bool]) -> None:
    open_: list[str] = []
    code: str | None = None
    in_url = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        step = 1
        if ch == "\\" and i + 1 < n:
            step = 2
        elif code is not None:
            if text.startswith(code, i):
                step, code = len(code), None
        elif in_url:
            in_url = ch != ")"
        elif text.startswith("```", i):
            step, code = 3, "```"
        elif ch == "`":
            code = "`"
        elif text.startswith("||", i) or text.startswith("__", i):
            step = 2
            marker = text[i : i + 2]
            _toggle(open_, marker)
        elif ch in "*_~":
            _toggle(open_, ch)
        elif ch == "[":
            open_.append("[")
        elif text.startswith("](", i) and "[" in open_:
            del open_[len(open_) - 1 - open_[::-1].index("[") :]
            step, in_url = 2, True
        for p in range(i + 1, i + step):
            ok[p] = False
        i += step
        flat[min(i, n)] = not open_ and code is None and not in_url


def _toggle(open_: list[str], marker: str) -> None:
    if marker in open_:
        del open_[len(open_) - 1 - open_[::-1].index(marker) :]
    else:
        open_.append(marker)


def split_message(
    text: str,
    limit: int = MESSAGE_LIMIT,
    *,
    parse_mode: ParseMode = None,
    max_parts: int | None = None,
    marker: str = "…",
) -> list[str]:
    """Split ``text`` into parts Telegram accepts, each at most ``limit`` UTF-16 units long.

    Cuts go after the last line break that fits, else after the last space, else anywhere; a
    cut never falls inside a MarkdownV2 escape (``\\.``), an HTML entity (``&amp;``) or tag,
    and a cut outside any formatting (bold, link, code) is preferred to one inside. Length is
    counted on the raw text, which is never shorter than what Telegram counts after parsing.
    Joining the parts gives back ``text``, unless ``max_parts`` trims it.

    Args:
        text: The message text.
        limit: Longest part, in UTF-16 code units.
        parse_mode: How Telegram will read the text, so cuts respect its markup.
        max_parts: Keep at most this many parts; the last one then ends with ``marker``
            (``max_parts=1`` trims the text to one message).
        marker: Appended to a trimmed text (``…`` needs no escaping in any parse mode).

    Raises:
        UsageError: ``limit`` or ``max_parts`` is too small.
    """
    if limit < utf16_len(marker) + 2:
        raise UsageError(f"split limit {limit} is too small: it must leave room for {marker!r}")
    if max_parts is not None and max_parts < 1:
        raise UsageError(f"max_parts must be at least 1 (got {max_parts})")
    n = len(text)
    units = [0] * (n + 1)
    for i, ch in enumerate(text):
        units[i + 1] = units[i] + (2 if ord(ch) > 0xFFFF else 1)
    if units[n] <= limit:
        return [text]
    ok = [True] * (n + 1)
    flat = [True] * (n + 1)
    if parse_mode == "HTML":
        _scan_html(text, ok, flat)
    elif parse_mode == "MarkdownV2":
        _scan_markdown_v2(text, ok, flat)

    parts: list[str] = []
    start = 0
    while units[n] - units[start] > limit:
        last = max_parts is not None and len(parts) == max_parts - 1
        budget = limit - utf16_len(marker) if last else limit
        end = start
        while end < n and units[end + 1] - units[start] <= budget:
            end += 1
        cut = _best_cut(text, start, max(end, start + 1), ok, flat)
        if last:
            parts.append(text[start:cut] + marker)
            return parts
        parts.append(text[start:cut])
        start = cut
    parts.append(text[start:])
    return parts


def _best_cut(text: str, start: int, end: int, ok: list[bool], flat: list[bool]) -> int:
    """The best cut position in ``(start, end]``: see :func:`split_message`."""
    tiers: tuple[Callable[[int], bool], ...] = (
        lambda p: flat[p] and ok[p] and text[p - 1] == "\n",
        lambda p: flat[p] and ok[p] and text[p - 1].isspace(),
        lambda p: flat[p] and ok[p],
        lambda p: ok[p] and text[p - 1] == "\n",
        lambda p: ok[p],
    )
    for good in tiers:
        for p in range(end, start, -1):
            if good(p):
                return p
    return end
