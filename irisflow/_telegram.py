"""A small Telegram Bot API client: send a message, pace it, keep the token secret.

Escaping and splitting message text live in :mod:`irisflow._telegram_text`.

The client speaks ``sendMessage`` and ``getMe`` over :class:`httpx.AsyncClient` (which runs
under Trio through anyio). It retries what is worth retrying: ``429 Too Many Requests`` after
the ``retry_after`` Telegram asks for, ``5xx`` replies and network failures with capped
exponential backoff and jitter. It does not retry what will not get better: a chat that does not
exist or blocked the bot (:class:`TelegramTargetError`), a message Telegram cannot parse
(:class:`TelegramMessageError`), a bad token (:class:`TelegramAuthError`).

The bot token is a password. It never appears in a message, a log line, an exception or a repr:
irisflow builds request URLs with ``/bot<redacted>/`` and a transport puts the real token in only
on the way to the socket, so even httpx's own log lines and exceptions show the redacted URL.

:class:`Pacer` is sans-IO: given the current time it says when the next message to a chat may
go, so that delivery stays inside Telegram's documented limits (about 1 message per second per
chat, 20 per minute per group, 30 per second overall).
"""

from __future__ import annotations

import collections
import logging
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import cattrs
import httpx
import orjson
import trio

from ._errors import ConnectError, DecodeError, UsageError, VenueError
from ._telegram_text import ParseMode

# Re-exported for the tests, which import them from here; the text helpers live in _telegram_text.
from ._telegram_text import escape_html as escape_html
from ._telegram_text import escape_markdown_v2 as escape_markdown_v2
from ._telegram_text import split_message as split_message
from ._telegram_text import utf16_len as utf16_len

__all__ = [
    "DEFAULT_API_URL",
    "BotUser",
    "Pacer",
    "SentMessage",
    "Telegram",
    "TelegramAuthError",
    "TelegramMessageError",
    "TelegramStatistics",
    "TelegramTargetError",
    "check_chat_id",
    "is_group_chat",
    "make_converter",
    "open_telegram",
]

_LOGGER = logging.getLogger("irisflow.telegram")

DEFAULT_API_URL = "https://api.telegram.org"
_REDACTED = "<redacted>"
_TOKEN_RE = re.compile(r"\d+:[A-Za-z0-9_-]+")
_RETRY_AFTER_RE = re.compile(r"retry after (\d+)", re.IGNORECASE)
# 400 descriptions that blame the message rather than the chat. Wording is not a contract,
# so an unknown 400 is blamed on the chat, as the Bot API docs describe most 400s.
_MESSAGE_FAULTS = ("parse entities", "message is too long", "text is empty", "text must be")


class TelegramTargetError(VenueError):
    """Telegram refused to deliver to a chat (400/403): not found, bot blocked or removed.

    Not retried. :class:`~irisflow.sinks.telegram.TelegramSink` disables the chat and keeps
    delivering to the others.

    Attributes:
        chat_id: The chat that was refused.
        error_code: Telegram's error code (400 or 403).
        description: Telegram's description, e.g. ``"Forbidden: bot was blocked by the user"``.
        migrate_to_chat_id: For a group upgraded to a supergroup, the id to use now.
    """

    def __init__(
        self,
        message: str,
        *,
        chat_id: str,
        error_code: int,
        description: str,
        migrate_to_chat_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.chat_id = chat_id
        self.error_code = error_code
        self.description = description
        self.migrate_to_chat_id = migrate_to_chat_id


class TelegramMessageError(VenueError):
    """Telegram refused one message (400): markup it cannot parse, too long, empty.

    Not retried as is; the chat itself is fine.

    Attributes:
        chat_id: The chat the message was for.
        description: Telegram's description, e.g. ``"Bad Request: can't parse entities: ..."``.
    """

    def __init__(self, message: str, *, chat_id: str, description: str) -> None:
        super().__init__(message)
        self.chat_id = chat_id
        self.description = description


class TelegramAuthError(VenueError):
    """Telegram rejected the bot token (401, or 404 for a malformed one)."""


# --------------------------------------------------------------------------------------------
# Pacing


def is_group_chat(chat_id: str) -> bool:
    """Whether ``chat_id`` names a group, supergroup or channel (negative id or ``@name``)."""
    return chat_id.startswith(("-", "@"))


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise UsageError(f"Pacer.{attribute.name} must be positive (got {value})")


@attrs.define
class Pacer:
    """When the next message to a chat may go, inside Telegram's rate limits (sans-IO).

    Call :meth:`next_send` for the earliest time a message to a chat may go and
    :meth:`record` once it went. Times are seconds on any monotonic clock (e.g.
    ``trio.current_time()``). The limits are sliding windows, so no window of
    ``group_window`` seconds holds more than ``per_group`` messages to one group, and so on.
    """

    per_chat: float = attrs.field(default=1.0, validator=_positive)
    """Least time between two messages to one chat, seconds."""
    per_group: int = attrs.field(default=20, validator=_positive)
    """Most messages to one group chat (negative id or @name) per ``group_window``."""
    group_window: float = attrs.field(default=60.0, validator=_positive)
    """Window for ``per_group``, seconds."""
    overall: int = attrs.field(default=30, validator=_positive)
    """Most messages to all chats together per ``overall_window``."""
    overall_window: float = attrs.field(default=1.0, validator=_positive)
    """Window for ``overall``, seconds."""
    _last: dict[str, float] = attrs.field(factory=dict, init=False, repr=False)
    _groups: dict[str, collections.deque[float]] = attrs.field(factory=dict, init=False, repr=False)
    _all: collections.deque[float] = attrs.field(init=False, repr=False)
    _paused_until: float = attrs.field(default=float("-inf"), init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._all = collections.deque(maxlen=self.overall)

    def next_send(self, chat_id: str, now: float) -> float:
        """The earliest time (``>= now``) a message to ``chat_id`` may go."""
        at = max(now, self._paused_until)
        last = self._last.get(chat_id)
        if last is not None:
            at = max(at, last + self.per_chat)
        if len(self._all) == self.overall:
            at = max(at, self._all[0] + self.overall_window)
        window = self._groups.get(chat_id)
        if window is not None and len(window) == self.per_group:
            at = max(at, window[0] + self.group_window)
        return at

    def record(self, chat_id: str, now: float) -> None:
        """Note that a message to ``chat_id`` went at ``now``."""
        self._last[chat_id] = now
        self._all.append(now)
        if is_group_chat(chat_id):
            window = self._groups.get(chat_id)
            if window is None:
                window = self._groups[chat_id] = collections.deque(maxlen=self.per_group)
            window.append(now)

    def pause(self, until: float) -> None:
        """Hold every chat until ``until`` (e.g. while Telegram is unreachable)."""
        self._paused_until = max(self._paused_until, until)


# --------------------------------------------------------------------------------------------
# The client


@attrs.frozen
class SentMessage:
    """A message Telegram accepted."""

    chat_id: str
    """The chat it went to, as Telegram reports it."""
    message_id: int
    """Its id within that chat."""
    date: int
    """When Telegram stored it, Unix seconds."""


@attrs.frozen
class BotUser:
    """Who the bot is, from ``getMe``."""

    id: int
    """The bot's user id."""
    username: str
    """The bot's @username, without the @."""
    first_name: str
    """The bot's display name."""


@attrs.frozen
class TelegramStatistics:
    """Counters of a :class:`Telegram` client since it was opened."""

    requests: int
    """HTTP requests made, retries included."""
    retries: int
    """Requests made again after a 429, a 5xx or a network failure."""
    rate_limited: int
    """``429 Too Many Requests`` replies."""


@attrs.frozen
class _Parameters:
    retry_after: float | None = None
    migrate_to_chat_id: int | None = None


@attrs.frozen
class _Reply:
    ok: bool
    result: Any = None
    error_code: int | None = None
    description: str = ""
    parameters: _Parameters | None = None


@attrs.frozen
class _Chat:
    id: int


@attrs.frozen
class _User:
    id: int
    first_name: str = ""
    username: str = ""


@attrs.frozen
class _Message:
    message_id: int
    date: int
    chat: _Chat


def make_converter() -> cattrs.Converter:
    """The converter for Bot API replies (unknown fields are ignored)."""
    return cattrs.Converter(forbid_extra_keys=False)


_CONVERTER = make_converter()


def _structure(data: Any, cls: type[Any], what: str) -> Any:
    try:
        return _CONVERTER.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        errors = (
            cattrs.transform_error(exc, path="$")
            if isinstance(exc, cattrs.BaseValidationError)
            else [str(exc)]
        )
        raise DecodeError(f"unexpected Telegram reply to {what}: {'; '.join(errors)}") from exc


class _TokenTransport(httpx.AsyncBaseTransport):
    """Puts the real token into the URL path on the way to the socket, and nowhere else."""

    def __init__(self, inner: httpx.AsyncBaseTransport, token: str) -> None:
        self._inner = inner
        self._placeholder = httpx.URL(f"/bot{_REDACTED}/").raw_path
        self._real = f"/bot{token}/".encode()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.replace(self._placeholder, self._real, 1)
        wire = httpx.Request(
            request.method,
            request.url.copy_with(raw_path=path),
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return await self._inner.handle_async_request(wire)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _chat_param(chat_id: int | str) -> int | str:
    text = str(chat_id).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"@[A-Za-z0-9_]{4,}", text):
        return text
    raise UsageError(
        f"Telegram chat id {str(chat_id)!r} is neither a number nor an @channelusername "
        "(ask @userinfobot or read it from the group's invite link)"
    )


def check_chat_id(chat_id: int | str) -> str:
    """``chat_id`` in its canonical string form.

    Raises:
        UsageError: it is neither a number nor an ``@channelusername``.
    """
    return str(_chat_param(chat_id))


class Telegram:
    """A Bot API client; get one from :func:`open_telegram`."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        token: str,
        api_url: str,
        max_attempts: int,
        backoff: float,
        max_backoff: float,
    ) -> None:
        self._client = client
        self._token = token
        self.api_url = api_url
        """The Bot API base URL, e.g. ``https://api.telegram.org``."""
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._random = random.Random()
        self._requests = 0
        self._retries = 0
        self._rate_limited = 0

    def __repr__(self) -> str:
        return f"<Telegram api_url={self.api_url!r} token={_REDACTED}>"

    def statistics(self) -> TelegramStatistics:
        """Counters since the client was opened."""
        return TelegramStatistics(
            requests=self._requests, retries=self._retries, rate_limited=self._rate_limited
        )

    def _redact(self, text: str) -> str:
        """``text`` with the bot token (and its secret half) replaced by ``<redacted>``."""
        text = text.replace(self._token, _REDACTED)
        secret = self._token.partition(":")[2]
        return text.replace(secret, _REDACTED) if len(secret) >= 8 else text

    async def send_message(
        self,
        chat_id: int | str,
        text: str,
        *,
        parse_mode: ParseMode = "HTML",
        disable_notification: bool = False,
        link_preview: bool = False,
    ) -> SentMessage:
        """Send ``text`` to ``chat_id``; retry 429, 5xx and network failures.

        Args:
            chat_id: A numeric chat id (negative for groups) or ``"@channelusername"``.
            text: 1 to 4096 characters after Telegram parses the markup; see
                :func:`split_message`, :func:`escape_html`, :func:`escape_markdown_v2`.
            parse_mode: ``"HTML"``, ``"MarkdownV2"`` or ``None`` for plain text.
            disable_notification: Deliver silently.
            link_preview: Let Telegram show a preview of the first link.

        Raises:
            UsageError: ``chat_id`` is malformed or ``text`` is blank.
            TelegramTargetError: the chat does not exist or does not accept the bot (400/403).
            TelegramMessageError: Telegram cannot parse the text or finds it too long (400).
            TelegramAuthError: the token was rejected (401).
            ConnectError: Telegram stayed unreachable through every attempt.
            VenueError: Telegram kept failing (5xx, 429) through every attempt.
        """
        chat = _chat_param(chat_id)
        if not text.strip():
            raise UsageError(f"message text for Telegram chat {chat} is blank; Telegram refuses it")
        payload: dict[str, Any] = {"chat_id": chat, "text": text}
        if parse_mode is not None:
            payload["parse_mode"] = parse_mode
        if disable_notification:
            payload["disable_notification"] = True
        if not link_preview:
            payload["link_preview_options"] = {"is_disabled": True}
        result = await self._call("sendMessage", payload, chat=str(chat))
        message: _Message = _structure(result, _Message, "sendMessage")
        return SentMessage(
            chat_id=str(message.chat.id), message_id=message.message_id, date=message.date
        )

    async def get_me(self) -> BotUser:
        """Who the bot is; a cheap way to check the token.

        Raises:
            TelegramAuthError: the token was rejected.
            ConnectError: Telegram stayed unreachable through every attempt.
            VenueError: Telegram kept failing through every attempt.
        """
        result = await self._call("getMe", {}, chat="")
        user: _User = _structure(result, _User, "getMe")
        return BotUser(id=user.id, username=user.username, first_name=user.first_name)

    def _url(self, method: str) -> str:
        return f"{self.api_url}/bot{_REDACTED}/{method}"

    async def _call(self, method: str, payload: dict[str, Any], *, chat: str) -> Any:
        body = orjson.dumps(payload)
        headers = {"content-type": "application/json"}
        attempt = 0
        while True:
            attempt += 1
            self._requests += 1
            try:
                response = await self._client.post(self._url(method), content=body, headers=headers)
            except httpx.RequestError as exc:
                problem = f"{type(exc).__name__}: {self._redact(str(exc)) or 'no detail'}"
                if attempt >= self._max_attempts:
                    raise ConnectError(
                        f"could not reach the Telegram Bot API at {self.api_url} in "
                        f"{attempt} attempts ({problem}); check the network and the API URL"
                    ) from exc
                wait = self._backoff_delay(attempt)
                _LOGGER.info("Telegram %s failed (%s); retrying in %.1f s", method, problem, wait)
            else:
                reply = self._decode(response, method)
                if reply.ok:
                    return reply.result
                code = reply.error_code or response.status_code
                description = self._redact(reply.description) or response.reason_phrase
                if code == 429:
                    self._rate_limited += 1
                    retry_after = _retry_after(reply)
                    wait = retry_after if retry_after is not None else self._backoff_delay(attempt)
                    if attempt >= self._max_attempts:
                        raise VenueError(
                            f"Telegram kept answering 429 Too Many Requests to {method} "
                            f"({description!r}) through {attempt} attempts; send fewer "
                            "messages (see Pacer)"
                        )
                    _LOGGER.warning(
                        "Telegram rate-limited %s to chat %s; waiting %.1f s as asked",
                        method,
                        chat or "-",
                        wait,
                    )
                elif code >= 500:
                    if attempt >= self._max_attempts:
                        raise VenueError(
                            f"the Telegram Bot API kept failing ({code} {description!r}) "
                            f"through {attempt} attempts; try again later"
                        )
                    wait = self._backoff_delay(attempt)
                    _LOGGER.info("Telegram %s answered %s; retrying in %.1f s", method, code, wait)
                else:
                    raise self._refusal(code, description, reply, method, chat)
            self._retries += 1
            await trio.sleep(wait)

    def _decode(self, response: httpx.Response, method: str) -> _Reply:
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or "ok" not in data:
            if response.status_code == 200:
                raise DecodeError(
                    f"Telegram answered {method} with 200 but the body is not a Bot API reply "
                    f"(starts {self._redact(repr(response.content[:60]))}); is the API URL "
                    f"{self.api_url} right?"
                )
            return _Reply(ok=False, error_code=response.status_code)
        reply: _Reply = _structure(data, _Reply, method)
        return reply

    def _refusal(
        self, code: int, description: str, reply: _Reply, method: str, chat: str
    ) -> VenueError:
        if code in (401, 404):
            # A 404 also comes from a server that is not a Bot API at all: say so.
            also = f", and that {self.api_url} is a Bot API server" if code == 404 else ""
            return TelegramAuthError(
                f"Telegram rejected the bot token ({code} {description or 'Unauthorized'}): "
                f"check TELEGRAM_BOT_TOKEN or [telegram] token{also}"
            )
        migrate = reply.parameters.migrate_to_chat_id if reply.parameters else None
        if code == 400 and any(fault in description.lower() for fault in _MESSAGE_FAULTS):
            return TelegramMessageError(
                f"Telegram refused the message to chat {chat}: {description} ({code}); "
                "escape venue and user text with escape_html or escape_markdown_v2 and keep "
                "it within 4096 characters (split_message)",
                chat_id=chat,
                description=description,
            )
        if code in (400, 403):
            if migrate is not None:
                advice = f"the group is now a supergroup: use chat id {migrate}"
            elif code == 403:
                advice = "add the bot to the chat again, or unblock it"
            else:
                advice = "check the chat id and that the bot was added to the chat"
            return TelegramTargetError(
                f"Telegram refused to deliver to chat {chat}: {description} ({code}); {advice}",
                chat_id=chat,
                error_code=code,
                description=description,
                migrate_to_chat_id=None if migrate is None else str(migrate),
            )
        return VenueError(f"Telegram refused {method}: {description} ({code})")

    def _backoff_delay(self, attempt: int) -> float:
        delay = min(self._max_backoff, self._backoff * 2.0 ** (attempt - 1))
        return delay / 2 + self._random.uniform(0, delay / 2)


def _retry_after(reply: _Reply) -> float | None:
    if reply.parameters is not None and reply.parameters.retry_after is not None:
        return max(0.0, float(reply.parameters.retry_after))
    match = _RETRY_AFTER_RE.search(reply.description)
    return float(match.group(1)) if match else None


@asynccontextmanager
async def open_telegram(
    token: str,
    *,
    api_url: str = DEFAULT_API_URL,
    timeout: float = 10.0,  # noqa: ASYNC109 (per HTTP request, not for the whole call)
    max_attempts: int = 5,
    backoff: float = 0.5,
    max_backoff: float = 30.0,
    proxy: str | None = None,
) -> AsyncIterator[Telegram]:
    """Open a Bot API client.

    Args:
        token: The bot token from @BotFather, ``<digits>:<secret>``.
        api_url: The Bot API base URL (a local Bot API server or a test fake).
        timeout: Seconds to wait for a connection, a reply or a write.
        max_attempts: Attempts per request before giving up on 429, 5xx and network errors.
        backoff: First backoff after a 5xx or network failure, seconds; doubles per attempt.
        max_backoff: Longest backoff, seconds.
        proxy: An HTTP(S) proxy URL, if Telegram is only reachable through one.

    Raises:
        UsageError: the token or the URL is malformed, or a number is out of range.
    """
    if not _TOKEN_RE.fullmatch(token):
        raise UsageError(
            "the Telegram bot token is malformed (expected '<digits>:<secret>' as @BotFather "
            "gives it); check TELEGRAM_BOT_TOKEN"
        )
    api_url = api_url.rstrip("/")
    if not re.match(r"https?://[^/\s]+", api_url):
        raise UsageError(f"Telegram API URL {api_url!r} must start with http:// or https://")
    if max_attempts < 1 or timeout <= 0 or backoff < 0 or max_backoff < backoff:
        raise UsageError(
            "open_telegram needs max_attempts >= 1, timeout > 0 and 0 <= backoff <= max_backoff "
            f"(got {max_attempts}, {timeout}, {backoff}, {max_backoff})"
        )
    transport = _TokenTransport(httpx.AsyncHTTPTransport(proxy=proxy), token)
    async with httpx.AsyncClient(
        transport=transport, timeout=httpx.Timeout(timeout), follow_redirects=False
    ) as client:
        yield Telegram(
            client,
            token=token,
            api_url=api_url,
            max_attempts=max_attempts,
            backoff=backoff,
            max_backoff=max_backoff,
        )
