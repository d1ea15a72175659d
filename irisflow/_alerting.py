"""Alert delivery wiring for the CLI: Telegram settings, the alert sink, ``alerts test/list``.

:func:`telegram_settings` finds the bot token and default chat (environment first, then the
config file). :class:`AlertSink` is a :class:`~irisflow.Runner` sink: it keeps the
:class:`~irisflow.Alert` events of each batch and hands them to a
:class:`~irisflow.sinks.telegram.TelegramSink`, with a durable outbox in PostgreSQL when a
database is configured, else in a file in the user's data directory. With a database and no
Telegram it only stores the alerts.

The bot token is checked (``getMe``) before the sink reports ready, so a bad one stops the run
before any event flows; a token rejected later only turns Telegram delivery off (the alerts stay
in the outbox). Alerts still undelivered when the run ends are reported through ``warn``.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import cast

import attrs
import trio

from ._alert import Alert
from ._config import Config
from ._errors import UsageError
from ._events import Event
from ._groups import raise_lone
from ._outbox import FileOutbox, Outbox
from ._pg_outbox import PostgresOutbox, open_postgres_outbox
from ._rules import Rule
from ._telegram import DEFAULT_API_URL, Pacer, check_chat_id, open_telegram
from .sinks.telegram import TelegramSink

__all__ = [
    "ALERT_LIST_COLUMNS",
    "AlertSink",
    "TelegramSettings",
    "alerts_list",
    "alerts_test",
    "default_outbox_path",
    "telegram_settings",
]

_TOKEN = re.compile(r"\d+:[A-Za-z0-9_-]+")
TEST_MESSAGE = "irisflow test alert: this chat will receive irisflow alerts."


@attrs.frozen
class TelegramSettings:
    """Where alerts go on Telegram. The token never shows in a repr."""

    token: str = attrs.field(repr=False)
    """The bot token, ``<digits>:<secret>``."""
    chat: str | None
    """The default chat (canonical form); None when every rule names its targets."""
    api_url: str = DEFAULT_API_URL
    """The Bot API base URL."""


def telegram_settings(
    config: Config,
    *,
    chat: str | None,
    api_url: str | None,
    environ: Mapping[str, str] | None = None,
    rules: Sequence[Rule] = (),
    required: bool = False,
) -> TelegramSettings | None:
    """The Telegram settings of this run, or None when alerts are not sent to Telegram.

    The token is ``TELEGRAM_BOT_TOKEN``, else ``[telegram] token``. The default chat is
    ``chat`` (``--telegram-chat``), else ``TELEGRAM_CHAT_ID``, else ``[telegram] chat``. The API
    URL is ``api_url`` (``--telegram-api-url``), else ``[telegram] api_url``, else Telegram's.

    Args:
        config: The loaded config file.
        chat: ``--telegram-chat``.
        api_url: ``--telegram-api-url``.
        environ: The environment (default ``os.environ``).
        rules: The run's rules: with a token and no default chat, rules that all name their
            targets still get settings (chat None).
        required: Raise instead of returning None.

    Returns:
        The settings; None without a token, or with a token but neither rules nor a default
        chat (then alerts only go to the table, JSON lines or database).

    Raises:
        UsageError: the token, chat or URL is malformed (``api_url`` is checked even without
            a token); some rules have no targets while there is no default chat (an error
            rather than alerts silently not sent); ``required`` and something is missing.
    """
    env = os.environ if environ is None else environ
    token = (env.get("TELEGRAM_BOT_TOKEN") or config.telegram.token or "").strip()
    chat_text = chat or env.get("TELEGRAM_CHAT_ID") or config.telegram.chat
    if api_url is not None:
        _check_url(api_url.rstrip("/"), "--telegram-api-url")
    url = (api_url or config.telegram.api_url or DEFAULT_API_URL).rstrip("/")
    if not token:
        if required:
            raise UsageError(
                "no Telegram bot token: set TELEGRAM_BOT_TOKEN (from @BotFather) or "
                "[telegram] token in the config file"
            )
        return None
    if not _TOKEN.fullmatch(token):
        raise UsageError(
            "the Telegram bot token is malformed (expected '<digits>:<secret>' as @BotFather "
            "gives it); check TELEGRAM_BOT_TOKEN or [telegram] token"
        )
    _check_url(url, "--telegram-api-url" if api_url else "[telegram] api_url")
    default = None if not chat_text else check_chat_id(chat_text)
    if default is None:
        if required:
            raise UsageError(
                "no Telegram chat: pass --chat/--telegram-chat, set TELEGRAM_CHAT_ID, or "
                "set [telegram] chat in the config file"
            )
        if not rules:
            return None
        untargeted = [rule.name for rule in rules if not rule.targets]
        if untargeted:
            # A token says alerts should go to Telegram: sending some of them nowhere,
            # silently, would be worse than stopping here.
            raise UsageError(
                f"alerts {', '.join(map(repr, untargeted))} have no targets and there is no "
                "default Telegram chat: pass --telegram-chat ID, set TELEGRAM_CHAT_ID or "
                "[telegram] chat in the config file, or give the rules targets (without "
                "TELEGRAM_BOT_TOKEN and [telegram] token, alerts are only shown and stored)"
            )
    return TelegramSettings(token=token, chat=default, api_url=url)


def _check_url(url: str, where: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or " " in url:
        raise UsageError(
            f"Telegram API URL {url!r} must start with http:// or https:// and name a host, "
            f"e.g. {DEFAULT_API_URL}; check {where}"
        )


def default_outbox_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/irisflow/outbox.jsonl``, else ``~/.local/share/irisflow/outbox.jsonl``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "irisflow" / "outbox.jsonl"


class AlertSink:
    """A :class:`~irisflow.Runner` sink that delivers the alerts among the events it gets.

    Every batch is read; its :class:`~irisflow.Alert` events go on to a
    :class:`~irisflow.sinks.telegram.TelegramSink` (plain-text messages), everything else is
    dropped. The outbox is the database's ``irisflow.alerts`` table when ``dsn`` is given,
    else a file (``outbox_path``, default :func:`default_outbox_path`). Without Telegram
    settings, alerts are only stored in the database.

    Args:
        settings: Where to send, from :func:`telegram_settings`; None: store only.
        dsn: The database for the outbox (``--dsn``/``IRISFLOW_DATABASE_URL``).
        outbox_path: The outbox file when there is no database.
        outbox_name: The outbox name in the database (one process per name).
        buffer: Capacity of the channel to the Telegram sink, in batches.
        pacer: Telegram's rate limits (default: the documented ones).
        shutdown_timeout: Seconds to finish sending when the run ends; the rest stays in
            the outbox for the next run.
        environ: The environment, for the default outbox path.
        warn: Where one-line reports go (e.g. ``irisflow._render.warn``): alerts left
            undelivered when the run ends, the token rejected mid-run, a chat disabled.
            Default: the ``irisflow.telegram`` logger.

    Raises:
        UsageError: neither Telegram settings nor a database.
    """

    def __init__(
        self,
        settings: TelegramSettings | None,
        *,
        dsn: str | None = None,
        outbox_path: Path | None = None,
        outbox_name: str = "default",
        buffer: int = 16,
        pacer: Pacer | None = None,
        shutdown_timeout: float = 5.0,
        environ: Mapping[str, str] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        if settings is None and dsn is None:
            raise UsageError("AlertSink needs Telegram settings, a database, or both")
        if buffer < 1:
            raise UsageError(f"AlertSink buffer must be at least 1 (got {buffer})")
        self.settings = settings
        """Where alerts are sent (None: only stored)."""
        self._dsn = dsn
        self._outbox_path = outbox_path or default_outbox_path(environ)
        self._outbox_name = outbox_name
        self._buffer = buffer
        self._pacer = pacer
        self._shutdown_timeout = shutdown_timeout
        self._warn = warn
        self.telegram: TelegramSink | None = None
        """The Telegram sink while running (for its statistics)."""

    def __repr__(self) -> str:
        where = "database" if self._dsn else str(self._outbox_path)
        chat = self.settings.chat if self.settings else None
        return f"<AlertSink chat={chat!r} outbox={where!r}>"

    async def run(
        self,
        batches: trio.MemoryReceiveChannel[list[Event]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver the alerts of every batch until the channel closes, then flush.

        Reports ready once the outbox is open, the bot token checked and what the outbox
        held is queued again.

        Raises:
            UsageError: the outbox cannot be opened or is in use by another process, or the
                database is not migrated.
            DatabaseError: alerts could not be recorded in PostgreSQL before the shutdown
                deadline (outages during the run are waited out, not raised).
            TelegramAuthError: Telegram rejected the bot token at start (before any event).
        """
        try:
            async with contextlib.AsyncExitStack() as stack:
                outbox: Outbox
                if self._dsn is not None:
                    pg = await stack.enter_async_context(
                        open_postgres_outbox(self._dsn, name=self._outbox_name)
                    )
                    if self.settings is None:
                        await self._store(pg, batches, task_status)
                        return
                    outbox = pg
                else:
                    outbox = stack.enter_context(FileOutbox(self._outbox_path))
                assert self.settings is not None
                await self._deliver(stack, outbox, self.settings, batches, task_status)
        except BaseExceptionGroup as group:
            raise_lone(group)

    async def _store(
        self,
        outbox: PostgresOutbox,
        batches: trio.MemoryReceiveChannel[list[Event]],
        task_status: trio.TaskStatus[None],
    ) -> None:
        task_status.started()
        async with batches:
            async for batch in batches:
                alerts = _alerts(batch)
                if alerts:
                    await outbox.store(alerts)

    async def _deliver(
        self,
        stack: contextlib.AsyncExitStack,
        outbox: Outbox,
        settings: TelegramSettings,
        batches: trio.MemoryReceiveChannel[list[Event]],
        task_status: trio.TaskStatus[None],
    ) -> None:
        telegram = await stack.enter_async_context(
            open_telegram(settings.token, api_url=settings.api_url)
        )
        sink = TelegramSink(
            telegram,
            outbox,
            default_chat=settings.chat,
            parse_mode=None,
            pacer=self._pacer,
            shutdown_timeout=self._shutdown_timeout,
            warn=self._warn,
        )
        self.telegram = sink
        send, receive = trio.open_memory_channel[list[Alert]](self._buffer)
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run, receive)
            task_status.started()
            async with send, batches:
                async for batch in batches:
                    alerts = _alerts(batch)
                    if alerts:
                        await send.send(alerts)


def _alerts(batch: list[Event]) -> list[Alert]:
    # Every event of the run passes here and few are alerts: one class test each, no more.
    return cast("list[Alert]", [event for event in batch if event.__class__ is Alert])


async def alerts_test(settings: TelegramSettings | None, chat: str | None = None) -> str:
    """Send one test message (``irisflow alerts test [--chat ID]``).

    Args:
        settings: From :func:`telegram_settings` (``required=True`` gives the clearest
            errors).
        chat: The chat to test (default: the settings' default chat).

    Returns:
        A one-line confirmation, e.g. ``"sent a test message to chat 42 as @my_bot
        (message 7)"``.

    Raises:
        UsageError: no token, no chat, or a malformed chat id.
        TelegramAuthError: the token was rejected.
        TelegramTargetError: the chat refused the bot.
        ConnectError: Telegram could not be reached.
        VenueError: Telegram kept failing.
    """
    if settings is None:
        raise UsageError(
            "Telegram is not configured: set TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID (or "
            "[telegram] token and chat in the config file)"
        )
    target = chat or settings.chat
    if not target:
        raise UsageError("no chat to test: pass --chat ID or set TELEGRAM_CHAT_ID")
    target = check_chat_id(target)
    async with open_telegram(settings.token, api_url=settings.api_url, max_attempts=3) as bot:
        me = await bot.get_me()
        sent = await bot.send_message(target, TEST_MESSAGE, parse_mode=None)
    who = f"@{me.username}" if me.username else me.first_name or str(me.id)
    return f"sent a test message to chat {sent.chat_id} as {who} (message {sent.message_id})"


ALERT_LIST_COLUMNS = (
    "rule",
    "kind",
    "condition",
    "parameters",
    "scope",
    "cooldown",
    "rearm",
    "severity",
    "targets",
    "from",
)
"""The headers of :func:`alerts_list` rows."""


def alerts_list(rules: Sequence[Rule]) -> list[tuple[str, ...]]:
    """Rows describing ``rules`` for ``irisflow alerts list`` (see :data:`ALERT_LIST_COLUMNS`).

    Every cell is plain text; an empty cell means the default.
    """
    rows: list[tuple[str, ...]] = []
    for rule in rules:
        spec = rule.config
        scope = [*sorted(rule.venues), *sorted(rule.symbols)]
        rows.append(
            (
                rule.name,
                rule.kind,
                spec.condition if spec is not None else str(rule.condition),
                _parameters(rule),
                ", ".join(scope) or "all",
                (spec.cooldown or "") if spec is not None else "",
                (spec.rearm or "") if spec is not None else "",
                rule.severity,
                ", ".join(rule.targets) or "default chat",
                rule.source,
            )
        )
    return rows


def _parameters(rule: Rule) -> str:
    spec = rule.config
    window = spec.window if spec is not None and spec.window else ""
    if rule.kind == "change":
        sign = {"both": "±", "up": "+", "down": "-"}[rule.direction]
        return f"{sign}{rule.threshold}% in {window}"
    if rule.kind == "volume_spike":
        return f"> mean + {rule.threshold} stddev of {rule.period} windows of {window}"
    if rule.kind == "rsi":
        return f"RSI({rule.period}) outside {rule.low}..{rule.high}"
    if rule.kind == "whale":
        return f">= {rule.threshold} ETH or tokens"
    return ""
