"""A fake Telegram Bot API: a real HTTP server on 127.0.0.1 for tests.

:class:`FakeTelegram` answers ``sendMessage`` and ``getMe`` the way the Bot API does (same
bodies, same status codes), records every request and every accepted message with its arrival
time (``trio.current_time()``, so ``MockClock`` tests can check pacing), and can be scripted to
fail: 429 with ``retry_after``, 5xx, dropped connections, chats that blocked the bot or do not
exist, a wrong token, slow replies. It parses MarkdownV2 and HTML like Telegram does and refuses
unescaped reserved characters with ``400 can't parse entities``, so escaping bugs fail tests.

Example::

    fake = FakeTelegram()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(fake.serve)
        async with open_telegram(fake.token, api_url=url) as telegram:
            await telegram.send_message(42, "<b>hi</b>")
        nursery.cancel_scope.cancel()
"""

from __future__ import annotations

import collections
import html
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

import attrs
import h11
import orjson
import trio

__all__ = [
    "FakeTelegram",
    "MarkupError",
    "ReceivedMessage",
    "ReceivedRequest",
    "parse_html",
    "parse_markdown_v2",
]

_MD_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_HTML_TAGS = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a"}
    | {"tg-emoji", "code", "pre", "blockquote"}
)
_HTML_TAG = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)"
    r"((?:\s+[a-zA-Z-]+(?:\s*=\s*(?:\"[^\"<>]*\"|'[^'<>]*'|[^\s<>\"']+))?)*)\s*>"
)
_HTML_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|lt|gt|amp|quot);")
_MESSAGE_LIMIT = 4096


class MarkupError(ValueError):
    """Text that Telegram would refuse with ``400 Bad Request: can't parse entities: ...``."""


def _offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8", "surrogatepass"))


def parse_markdown_v2(text: str) -> str:
    """The plain text Telegram shows for MarkdownV2 ``text``.

    Raises:
        MarkupError: a reserved character is not escaped, or an entity is not closed.
    """
    out: list[str] = []
    stack: list[tuple[str, int]] = []
    i, n = 0, len(text)
    line_start = True
    while i < n:
        ch = text[i]
        start = i
        if ch == "\\":
            if i + 1 >= n or not 1 <= ord(text[i + 1]) <= 126:
                raise MarkupError(
                    f"Character '\\' is reserved and must be escaped with the preceding '\\' "
                    f"(byte offset {_offset(text, i)})"
                )
            out.append(text[i + 1])
            i += 2
        elif ch == "`":
            fence = "```" if text.startswith("```", i) else "`"
            i += len(fence)
            if fence == "```":
                newline = text.find("\n", i)
                if newline >= 0 and re.fullmatch(r"[A-Za-z0-9_+-]*", text[i:newline]):
                    i = newline + 1
            i = _code(text, i, fence, out)
        elif ch in "*~" or (ch == "|" and text.startswith("||", i)) or ch == "_":
            marker = "__" if text.startswith("__", i) else "||" if ch == "|" else ch
            _toggle(text, stack, marker, i)
            i += len(marker)
        elif ch == "[":
            stack.append(("[", i))
            i += 1
        elif ch == "]" and stack and stack[-1][0] == "[" and text.startswith("(", i + 1):
            stack.pop()
            i = _url(text, i + 2)
        elif ch == ">" and line_start:
            i += 1
        elif ch in _MD_RESERVED:
            raise MarkupError(
                f"Character '{ch}' is reserved and must be escaped with the preceding '\\'"
            )
        else:
            out.append(ch)
            i += 1
        line_start = text[start] == "\n"
    if stack:
        raise MarkupError(
            f"Can't find end of the entity starting at byte offset {_offset(text, stack[-1][1])}"
        )
    return "".join(out)


def _toggle(text: str, stack: list[tuple[str, int]], marker: str, i: int) -> None:
    if stack and stack[-1][0] == marker:
        stack.pop()
    elif any(m == marker for m, _ in stack):
        raise MarkupError(
            f"Can't find end of the entity starting at byte offset {_offset(text, stack[-1][1])}"
        )
    else:
        stack.append((marker, i))


def _code(text: str, i: int, fence: str, out: list[str]) -> int:
    start = i
    while i < len(text):
        if text[i] == "\\":
            if i + 1 < len(text) and text[i + 1] in "`\\":
                out.append(text[i + 1])
                i += 2
                continue
            raise MarkupError(
                f"Character '\\' is reserved and must be escaped with the preceding '\\' "
                f"(byte offset {_offset(text, i)})"
            )
        if text.startswith(fence, i):
            return i + len(fence)
        if text[i] == "`":
            raise MarkupError(
                "Character '`' is reserved and must be escaped with the preceding '\\'"
            )
        out.append(text[i])
        i += 1
    raise MarkupError(
        f"Can't find end of the entity starting at byte offset {_offset(text, start - 1)}"
    )


def _url(text: str, i: int) -> int:
    start = i
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in ")\\":
            i += 2
        elif text[i] == ")":
            return i + 1
        else:
            i += 1
    raise MarkupError(f"Can't find end of a URL at byte offset {_offset(text, start)}")


def parse_html(text: str) -> str:
    """The plain text Telegram shows for HTML ``text``.

    Stricter than Telegram where Telegram is vague: every ``<``, ``>`` and ``&`` outside markup
    must be escaped, only the named entities ``&lt; &gt; &amp; &quot;`` and numeric ones count.

    Raises:
        MarkupError: an unsupported or unbalanced tag, or an unescaped ``<``, ``>`` or ``&``.
    """
    out: list[str] = []
    stack: list[tuple[str, int]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "<":
            match = _HTML_TAG.match(text, i)
            word = re.match(r"</?([^\s>]*)", text[i:])
            name = (match.group(2) if match else word.group(1) if word else "").lower()
            if match is None or name not in _HTML_TAGS:
                raise MarkupError(
                    f'Unsupported start tag "{name}" at byte offset {_offset(text, i)}'
                )
            if match.group(1):
                if not stack or stack[-1][0] != name:
                    expected = f'"</{stack[-1][0]}>"' if stack else "no end tag"
                    raise MarkupError(
                        f"Unmatched end tag at byte offset {_offset(text, i)}, expected "
                        f'{expected}, found "</{name}>"'
                    )
                stack.pop()
            else:
                if name == "span" and "tg-spoiler" not in match.group(3):
                    raise MarkupError('Tag "span" must have class "tg-spoiler"')
                stack.append((name, i))
            i = match.end()
        elif ch == "&":
            entity = _HTML_ENTITY.match(text, i)
            value = html.unescape(entity.group()) if entity else ""
            if entity is None or (len(value) == 1 and 0xD800 <= ord(value) <= 0xDFFF):
                raise MarkupError(
                    f"Unsupported HTML entity or unescaped '&' at byte offset {_offset(text, i)}"
                )
            out.append(value)
            i = entity.end()
        elif ch == ">":
            raise MarkupError(f"Unescaped '>' at byte offset {_offset(text, i)}; use &gt;")
        else:
            out.append(ch)
            i += 1
    if stack:
        raise MarkupError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return "".join(out)


@attrs.frozen
class ReceivedMessage:
    """A message the fake accepted."""

    chat_id: str
    """The chat it was sent to, as a string."""
    text: str
    """The text exactly as sent (markup included)."""
    plain: str
    """The text as Telegram would show it (markup parsed)."""
    parse_mode: str | None
    """``"HTML"``, ``"MarkdownV2"`` or ``None``."""
    disable_notification: bool
    """Whether it was sent silently."""
    message_id: int
    """The id the fake gave it."""
    time: float
    """When it arrived, ``trio.current_time()``."""


@attrs.frozen
class ReceivedRequest:
    """One HTTP request to the Bot API, whatever the answer."""

    method: str
    """The Bot API method, e.g. ``"sendMessage"``."""
    params: dict[str, Any]
    """The decoded parameters (JSON body, form or query string)."""
    status: int
    """The HTTP status answered (0 when the connection was dropped)."""
    time: float
    """When it arrived, ``trio.current_time()``."""
    path: str
    """The request path, token included (so tests can check the URL format)."""
    content_type: str
    """The request's ``Content-Type``."""


def _chat_set(chats: Iterable[int | str]) -> set[str]:
    return {str(chat) for chat in chats}


@attrs.define
class _Failure:
    status: int
    retry_after: int | None
    in_parameters: bool
    description: str | None
    json_body: bool


@attrs.define
class FakeTelegram:
    """A scriptable Bot API server; start it with ``url = await nursery.start(fake.serve)``.

    Attributes:
        token: The only token it accepts; other tokens get ``401 Unauthorized``.
        delay: Seconds to wait before answering each request (``trio.sleep``).
        blocked_chats: Chat ids answered ``403 Forbidden: bot was blocked by the user``.
        unknown_chats: Chat ids answered ``400 Bad Request: chat not found``.
        messages: Every accepted message, in order.
        requests: Every request, in order, failures included.
        url: The base URL once serving, e.g. ``http://127.0.0.1:45678``.
    """

    token: str = attrs.field(default="123456789:AAFakeTelegramTokenForTests_0123456", repr=False)
    delay: float = 0.0
    blocked_chats: set[str] = attrs.field(factory=set, converter=_chat_set)
    unknown_chats: set[str] = attrs.field(factory=set, converter=_chat_set)
    messages: list[ReceivedMessage] = attrs.field(factory=list, init=False, repr=False)
    requests: list[ReceivedRequest] = attrs.field(factory=list, init=False, repr=False)
    url: str = attrs.field(default="", init=False)
    _failures: collections.deque[_Failure] = attrs.field(
        factory=collections.deque, init=False, repr=False
    )
    _drops: int = attrs.field(default=0, init=False, repr=False)
    _lot: trio.lowlevel.ParkingLot = attrs.field(
        factory=trio.lowlevel.ParkingLot, init=False, repr=False
    )
    _next_id: int = attrs.field(default=1, init=False, repr=False)

    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        *,
        retry_after: int | None = 3,
        retry_after_in_parameters: bool = True,
        description: str | None = None,
        json_body: bool = True,
    ) -> None:
        """Answer the next ``n`` ``sendMessage`` requests with an error.

        Args:
            n: How many requests fail.
            status: The HTTP status and ``error_code``: 429, 500, 502, ...
            retry_after: For 429, the seconds to ask for (``None``: do not say).
            retry_after_in_parameters: Put ``retry_after`` in ``parameters`` (as the Bot API
                documents); when false it appears only in the description, as some replies do.
            description: Override the description.
            json_body: Answer a Bot API JSON body; when false, an HTML error page (a proxy).
        """
        for _ in range(n):
            self._failures.append(
                _Failure(status, retry_after, retry_after_in_parameters, description, json_body)
            )

    def drop_next(self, n: int = 1) -> None:
        """Close the connection without answering the next ``n`` ``sendMessage`` requests."""
        self._drops += n

    def messages_to(self, chat_id: int | str) -> list[ReceivedMessage]:
        """The accepted messages sent to ``chat_id``."""
        return [m for m in self.messages if m.chat_id == str(chat_id)]

    async def wait_for_messages(self, count: int) -> None:
        """Wait until at least ``count`` messages were accepted."""
        while len(self.messages) < count:
            await self._lot.park()

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve on 127.0.0.1 on a free port until cancelled; reports the base URL."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._connection, listeners)
            task_status.started(self.url)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await _read_request(conn, stream)
                if request is None:
                    return
                answer = await self._answer(*request)
                if answer is None:
                    return
                status, body, content_type = answer
                headers = [("content-type", content_type), ("content-length", str(len(body)))]
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=body)) or b"")
                await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await stream.aclose()

    async def _answer(self, request: h11.Request, body: bytes) -> tuple[int, bytes, str] | None:
        now = trio.current_time()
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        content_type = ""
        for name, value in request.headers:
            if name == b"content-type":
                content_type = value.decode("latin-1")
        params = _params(query, body, content_type)
        match = re.fullmatch(r"/bot([^/]*)/([A-Za-z]+)", path)
        method = match.group(2) if match else ""
        dropped = method == "sendMessage" and self._drops > 0
        if dropped:
            self._drops -= 1
            status, payload, raw = 0, dict[str, Any](), b""
        else:
            status, payload, raw = self._reply(match, method, params)
        self.requests.append(
            ReceivedRequest(method, params, status, now, urllib.parse.unquote(path), content_type)
        )
        self._lot.unpark_all()
        if self.delay > 0:
            await trio.sleep(self.delay)
        if dropped:
            return None
        if raw:
            return status, raw, "text/html"
        return status, orjson.dumps(payload), "application/json"

    def _reply(
        self, match: re.Match[str] | None, method: str, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any], bytes]:
        if match is None or urllib.parse.unquote(match.group(1)) != self.token:
            return _error(401, "Unauthorized") if match else _error(404, "Not Found")
        if method == "getMe":
            return 200, {"ok": True, "result": _BOT}, b""
        if method != "sendMessage":
            return _error(404, "Not Found")
        if self._failures:
            return _scripted(self._failures.popleft())
        return self._send_message(params)

    def _send_message(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], bytes]:
        chat = str(params.get("chat_id", "")).strip()
        text = params.get("text")
        parse_mode = params.get("parse_mode") or None
        if not chat:
            return _error(400, "Bad Request: chat_id is empty")
        if chat in self.blocked_chats:
            return _error(403, "Forbidden: bot was blocked by the user")
        if chat in self.unknown_chats:
            return _error(400, "Bad Request: chat not found")
        if not isinstance(text, str) or not text.strip():
            return _error(400, "Bad Request: message text is empty")
        try:
            if parse_mode == "MarkdownV2":
                plain = parse_markdown_v2(text)
            elif parse_mode == "HTML":
                plain = parse_html(text)
            elif parse_mode is None:
                plain = text
            else:
                return _error(400, f"Bad Request: unsupported parse_mode {parse_mode!r}")
        except MarkupError as exc:
            return _error(400, f"Bad Request: can't parse entities: {exc}")
        if not plain.strip():
            return _error(400, "Bad Request: message text is empty")
        if len(plain.encode("utf-16-le", "surrogatepass")) // 2 > _MESSAGE_LIMIT:
            return _error(400, "Bad Request: message is too long")
        message_id = self._next_id
        self._next_id += 1
        silent = bool(params.get("disable_notification", False))
        self.messages.append(
            ReceivedMessage(chat, text, plain, parse_mode, silent, message_id, trio.current_time())
        )
        chat_id = int(chat) if re.fullmatch(r"-?\d+", chat) else -1001000000000
        chat_type = "private" if chat_id > 0 else "supergroup"
        result = {
            "message_id": message_id,
            "from": _BOT,
            "chat": {"id": chat_id, "type": chat_type, "title": "irisflow test"},
            "date": 1767225600 + int(trio.current_time()),
            "text": plain.strip(),
        }
        return 200, {"ok": True, "result": result}, b""


_BOT = {
    "id": 123456789,
    "is_bot": True,
    "first_name": "irisflow fake",
    "username": "irisflow_fake_bot",
}


def _error(
    code: int, description: str, parameters: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any], bytes]:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return code, body, b""


def _scripted(failure: _Failure) -> tuple[int, dict[str, Any], bytes]:
    if not failure.json_body:
        page = f"<html><body><h1>{failure.status} Bad Gateway</h1></body></html>"
        return failure.status, {}, page.encode()
    if failure.status == 429:
        after = failure.retry_after
        description = failure.description or (
            f"Too Many Requests: retry after {after}" if after is not None else "Too Many Requests"
        )
        params = {"retry_after": after} if after is not None and failure.in_parameters else None
        return _error(429, description, params)
    return _error(failure.status, failure.description or "Internal Server Error")


def _params(query: str, body: bytes, content_type: str) -> dict[str, Any]:
    params: dict[str, Any] = dict(urllib.parse.parse_qsl(query))
    if content_type.startswith("application/json") and body:
        decoded = orjson.loads(body)
        if isinstance(decoded, dict):
            params.update(decoded)
    elif content_type.startswith("application/x-www-form-urlencoded"):
        params.update(urllib.parse.parse_qsl(body.decode()))
    return params


async def _read_request(
    conn: h11.Connection, stream: trio.SocketStream
) -> tuple[h11.Request, bytes] | None:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None
