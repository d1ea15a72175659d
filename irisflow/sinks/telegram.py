"""Deliver alerts to Telegram chats: durably, paced, and folded into digests in a burst.

:class:`TelegramSink` reads batches of :class:`~irisflow.Alert` from a channel. Each alert is
written to an :class:`~irisflow.Outbox` (one entry per target chat) before anything is sent, and
ticked off once Telegram accepted it, so a crash or a restart loses nothing: on start the sink
sends what the previous run left pending, once more each.

One delivery task sends, asking a :class:`~irisflow.Pacer` when each chat may get its next
message. Alerts of one rule for one chat that pile up meanwhile are folded into a single digest
(``"whale fired 12 times in 5 min, last at 14:03:07 UTC: <last text>"``), so a burst never turns
into a queue of stale messages.

A chat that Telegram refuses (blocked the bot, does not exist) is disabled and reported in
:meth:`TelegramSink.statistics`; the other chats keep receiving. The token is checked with
``getMe`` before the sink reports ready, so a bad token stops it with
:class:`~irisflow.TelegramAuthError` before any event flows. A token rejected later (revoked
mid-run) turns Telegram delivery off for the rest of the run instead: alerts are still recorded
in the outbox, for the next run to send, and the run goes on. When Telegram is unreachable the
sink backs off and keeps the alerts pending. On cancellation it finishes the message in flight
within ``shutdown_timeout`` seconds and leaves the rest pending in the outbox; alerts left
pending when it stops are reported once, through ``warn``.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable

import attrs
import trio

from .._alert import SEVERITIES, Alert, Severity
from .._errors import UsageError, WorldError
from .._events import to_datetime
from .._groups import raise_lone
from .._outbox import Outbox, OutboxItem
from .._telegram import (
    Pacer,
    Telegram,
    TelegramAuthError,
    TelegramMessageError,
    TelegramTargetError,
    check_chat_id,
)
from .._telegram_text import ParseMode, escape_html, escape_markdown_v2, split_message

__all__ = ["DisabledTarget", "TelegramSink", "TelegramSinkStatistics"]

_LOGGER = logging.getLogger("irisflow.telegram")
_CHECK_TIMEOUT = 15.0  # seconds for the getMe check at start, retries included


@attrs.frozen
class DisabledTarget:
    """A chat the sink stopped sending to, and why."""

    chat_id: str
    """The chat."""
    reason: str
    """Telegram's refusal, e.g. ``Forbidden: bot was blocked by the user (403)``."""


@attrs.frozen
class TelegramSinkStatistics:
    """Counters of a :class:`TelegramSink` (from :meth:`TelegramSink.statistics`)."""

    sent: int
    """Alerts delivered (per chat; a digest counts every alert it folds)."""
    messages: int
    """Telegram messages sent (digests and the parts of long alerts included)."""
    digests: int
    """Digest messages sent."""
    pending: int
    """Alerts waiting for delivery (they are in the outbox too)."""
    retries: int
    """Requests sent again after a 429, a 5xx or a network failure, plus deliveries put back
    after Telegram stayed unreachable."""
    rate_limited: int
    """``429 Too Many Requests`` replies."""
    failed: int
    """Alerts given up on (disabled chat, refused message, not delivered after a restart)."""
    duplicates: int
    """Alerts ignored because the outbox already knew their key for that chat."""
    disabled_targets: tuple[DisabledTarget, ...]
    """Chats Telegram refused, in the order they were disabled."""
    delivery_off: str | None = None
    """Why Telegram delivery was turned off for the rest of the run (the bot token was
    rejected mid-run; alerts stay in the outbox); None while delivering."""


@attrs.define(eq=False)
class _Waiting:
    item: OutboxItem
    seq: int
    resend: bool  # left pending by a previous run: one more attempt only


@attrs.define(eq=False)
class _Job:
    chat: str
    rule: str
    items: list[_Waiting]
    parts: list[str]
    parse_mode: ParseMode
    silent: bool
    digest: bool
    next_part: int = 0
    message_id: int | None = None


class TelegramSink:
    """Deliver alerts to Telegram; see the module docstring for the guarantees.

    Args:
        telegram: An open client (see :func:`~irisflow.open_telegram`).
        outbox: Where alerts are recorded before sending (e.g. :class:`~irisflow.FileOutbox`).
        default_chat: The chat for alerts without targets.
        parse_mode: How alert texts are written (the rules render them for this mode).
        pacer: The rate limits; defaults to Telegram's documented ones.
        silent: Severities delivered without a notification sound.
        max_parts: A longer alert is split into at most this many messages, then trimmed.
        max_pending: Alerts held before the sink stops reading its channel (backpressure).
        shutdown_timeout: Seconds to finish the message in flight (or, when the channel
            closes, to send what is waiting) before leaving the rest in the outbox.
        retry_backoff: Seconds to hold every chat after Telegram stayed unreachable; doubles
            on each further failure up to ``max_retry_backoff``.
        max_retry_backoff: Longest hold, seconds.
        check_token: Check the token with ``getMe`` before reporting ready.
        warn: Where one-line reports go: a chat disabled, the token rejected mid-run,
            alerts left undelivered when the sink stops. Default: the ``irisflow.telegram``
            logger, at WARNING.

    Raises:
        UsageError: a setting is out of range or ``default_chat`` is malformed.
    """

    def __init__(
        self,
        telegram: Telegram,
        outbox: Outbox,
        *,
        default_chat: int | str | None = None,
        parse_mode: ParseMode = "HTML",
        pacer: Pacer | None = None,
        silent: tuple[Severity, ...] = ("info",),
        max_parts: int = 4,
        max_pending: int = 10_000,
        shutdown_timeout: float = 5.0,
        retry_backoff: float = 5.0,
        max_retry_backoff: float = 300.0,
        check_token: bool = True,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        if max_parts < 1 or max_pending < 1 or shutdown_timeout <= 0 or retry_backoff <= 0:
            raise UsageError(
                "TelegramSink needs max_parts >= 1, max_pending >= 1, shutdown_timeout > 0 and "
                f"retry_backoff > 0 (got {max_parts}, {max_pending}, {shutdown_timeout}, "
                f"{retry_backoff})"
            )
        unknown = set(silent) - set(SEVERITIES)
        if unknown:
            raise UsageError(f"unknown severities {sorted(unknown)} (use {SEVERITIES})")
        self._telegram = telegram
        self._outbox = outbox
        self._default_chat = None if default_chat is None else check_chat_id(default_chat)
        self._parse_mode: ParseMode = parse_mode
        self._pacer = pacer if pacer is not None else Pacer()
        self._silent = frozenset(silent)
        self._max_parts = max_parts
        self._max_pending = max_pending
        self._shutdown_timeout = shutdown_timeout
        self._retry_backoff = retry_backoff
        self._max_retry_backoff = max(max_retry_backoff, retry_backoff)
        self._backoff = retry_backoff
        self._check_token = check_token
        self._warn = warn

        self._waiting: dict[str, dict[str, list[_Waiting]]] = {}  # chat -> rule -> oldest first
        self._jobs: dict[str, _Job] = {}  # chat -> message being delivered
        self._count = 0  # alerts waiting or in a job
        self._held = 0  # alerts left in the outbox, unqueued, while delivery is off
        self._delivery_off: str | None = None
        self._seq = 0
        self._disabled: dict[str, DisabledTarget] = {}
        self._work = trio.Event()
        self._room = trio.Event()
        self._scope = trio.CancelScope(shield=True)
        self._done = trio.Event()
        self._running = False
        self._input_done = False
        self._stopping = False
        self._sent = self._messages = self._digests = self._failed = 0
        self._duplicates = self._requeues = 0
        base = telegram.statistics()
        self._base_retries, self._base_rate_limited = base.retries, base.rate_limited

    def statistics(self) -> TelegramSinkStatistics:
        """Counters since the sink was made."""
        client = self._telegram.statistics()
        return TelegramSinkStatistics(
            sent=self._sent,
            messages=self._messages,
            digests=self._digests,
            pending=self._count + self._held,
            retries=client.retries - self._base_retries + self._requeues,
            rate_limited=client.rate_limited - self._base_rate_limited,
            failed=self._failed,
            duplicates=self._duplicates,
            disabled_targets=tuple(self._disabled.values()),
            delivery_off=self._delivery_off,
        )

    async def run(
        self,
        alerts: trio.abc.ReceiveChannel[list[Alert]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver alerts from ``alerts`` until it is closed (then flush) or until cancelled.

        Reports ready once the token was checked and the outbox was read. Alerts still
        pending when it returns are reported through ``warn``. Call it once per sink.

        Raises:
            UsageError: an alert has a malformed target, or none and there is no default chat.
            TelegramAuthError: Telegram rejected the bot token at start (a token rejected
                later turns delivery off instead, see :attr:`TelegramSinkStatistics.delivery_off`).
        """
        if self._running:
            raise UsageError("TelegramSink.run() was already called; make a new sink")
        self._running = True
        if self._check_token:
            await self._check()
        for item in await self._outbox.pending():
            self._enqueue(item, resend=True)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deliver)
                nursery.start_soon(self._watch_cancellation)
                task_status.started()
                await self._receive(alerts)
                self._input_done = True
                self._stop_within(self._shutdown_timeout)
                await self._done.wait()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise_lone(group)
        finally:
            self._report_pending()

    async def _check(self) -> None:
        """Ask ``getMe``: a rejected token fails now, before any alert is taken in."""
        try:
            with trio.move_on_after(_CHECK_TIMEOUT):
                await self._telegram.get_me()
                return
            problem = f"no answer in {_CHECK_TIMEOUT:.0f} s"
        except TelegramAuthError:
            raise
        except WorldError as exc:
            problem = str(exc)
        # Unreachable is not fatal: delivery backs off and the alerts wait in the outbox.
        self._report(
            f"could not check the Telegram bot token ({problem}); alerts are kept in the "
            "outbox and sent once Telegram answers"
        )

    def _report(self, message: str) -> None:
        if self._warn is None:
            _LOGGER.warning("%s", message)
        else:
            self._warn(message)

    def _report_pending(self) -> None:
        pending = self._count + self._held
        if not pending:
            return
        what, stays = (
            (f"{pending} alerts", "they stay") if pending != 1 else ("1 alert", "it stays")
        )
        goes = "go out" if pending != 1 else "goes out"
        if self._delivery_off is not None:
            self._report(
                f"{what} not delivered because Telegram rejected the bot token; {stays} in "
                f"the outbox and {goes} on the next run with a valid token"
            )
        else:
            self._report(
                f"{what} not delivered yet; {stays} in the outbox and {goes} on the next run"
            )

    # Receiving ----------------------------------------------------------------------------

    async def _receive(self, alerts: trio.abc.ReceiveChannel[list[Alert]]) -> None:
        async with alerts:
            async for batch in alerts:
                entries = [(alert, chat) for alert in batch for chat in self._chats(alert)]
                while self._count >= self._max_pending:
                    self._room = trio.Event()
                    await self._room.wait()
                # A batch taken from the channel is recorded even if we are being cancelled.
                with trio.move_on_after(self._shutdown_timeout, shield=True):
                    await self._record(entries)
                self._work.set()

    async def _record(self, entries: list[tuple[Alert, str]]) -> None:
        added = await self._outbox.add_many(entries)
        for (alert, chat), new in zip(entries, added, strict=True):
            if not new:
                self._duplicates += 1
            elif self._delivery_off is not None:
                self._held += 1  # recorded: the next run sends it
            elif chat in self._disabled:
                reason = f"chat disabled: {self._disabled[chat].reason}"
                await self._outbox.mark_failed(alert.key, chat, reason)
                self._failed += 1
            else:
                self._enqueue(OutboxItem(alert, chat), resend=False)

    def _chats(self, alert: Alert) -> list[str]:
        if alert.targets:
            return list(dict.fromkeys(check_chat_id(t) for t in alert.targets))
        if self._default_chat is None:
            raise UsageError(
                f"alert from rule {alert.rule!r} has no targets and the Telegram sink has no "
                "default chat; set TelegramSink(default_chat=...) or give the rule targets"
            )
        return [self._default_chat]

    def _enqueue(self, item: OutboxItem, *, resend: bool) -> None:
        self._seq += 1
        rules = self._waiting.setdefault(item.chat_id, {})
        rules.setdefault(item.alert.rule, []).append(_Waiting(item, self._seq, resend))
        self._count += 1

    # Stopping -----------------------------------------------------------------------------

    async def _watch_cancellation(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self._stopping = True
            self._stop_within(self._shutdown_timeout)

    def _stop_within(self, seconds: float) -> None:
        self._scope.deadline = min(self._scope.deadline, trio.current_time() + seconds)
        self._work.set()

    # Delivering ---------------------------------------------------------------------------

    async def _deliver(self) -> None:
        try:
            with self._scope:
                while not self._stopping and self._delivery_off is None:
                    now = trio.current_time()
                    choice = self._choose(now)
                    if choice is None and self._input_done:
                        return
                    self._work = trio.Event()
                    if choice is None:
                        await self._work.wait()
                    elif choice[0] > now:
                        with trio.move_on_at(choice[0]):
                            await self._work.wait()
                    else:
                        await self._send(choice[1])
        finally:
            self._done.set()

    def _choose(self, now: float) -> tuple[float, str] | None:
        """The chat to serve next and when it may be served: soonest, then oldest alert."""
        best: tuple[float, int, str] | None = None
        for chat in self._jobs.keys() | self._waiting.keys():
            job = self._jobs.get(chat)
            seq = job.items[0].seq if job else min(g[0].seq for g in self._waiting[chat].values())
            candidate = (self._pacer.next_send(chat, now), seq, chat)
            if best is None or candidate < best:
                best = candidate
        return None if best is None else (best[0], best[2])

    async def _send(self, chat: str) -> None:
        job = self._jobs.get(chat) or await self._new_job(chat)
        if job is None:
            return
        try:
            sent = await self._telegram.send_message(
                chat,
                job.parts[job.next_part],
                parse_mode=job.parse_mode,
                disable_notification=job.silent,
            )
        except TelegramAuthError as exc:
            self._turn_off(exc)
        except TelegramTargetError as exc:
            await self._disable(chat, exc)
        except TelegramMessageError as exc:
            await self._refused(job, exc)
        except WorldError as exc:
            await self._unreachable(job, exc)
        else:
            self._pacer.record(chat, trio.current_time())
            self._messages += 1
            self._backoff = self._retry_backoff
            job.message_id = job.message_id or sent.message_id
            job.next_part += 1
            if job.next_part == len(job.parts):
                # Tick off even if the stop deadline just passed: it was delivered.
                with trio.move_on_after(self._shutdown_timeout, shield=True):
                    await self._finish(job, sent=True, reason="")

    async def _new_job(self, chat: str) -> _Job | None:
        rules = self._waiting[chat]
        rule = min(rules, key=lambda r: rules[r][0].seq)
        items = rules.pop(rule)
        if not rules:
            del self._waiting[chat]
        text, digest = self._render(items)
        parts = split_message(text, parse_mode=self._parse_mode, max_parts=self._max_parts)
        job = _Job(
            chat=chat,
            rule=rule,
            items=items,
            parts=[p for p in parts if p.strip()],
            parse_mode=self._parse_mode,
            silent=all(w.item.alert.severity in self._silent for w in items),
            digest=digest,
        )
        if not job.parts:
            await self._finish(job, sent=False, reason="the alert text is blank")
            return None
        self._jobs[chat] = job
        return job

    def _render(self, items: list[_Waiting]) -> tuple[str, bool]:
        alerts = [w.item.alert for w in items]
        if len(alerts) == 1:
            return alerts[0].text, False
        last = max(reversed(alerts), key=lambda a: a.ts)
        span = (last.ts - min(a.ts for a in alerts)) / 1e9
        total = sum(a.count for a in alerts)
        header = (
            f"{last.rule} fired {total} times in {_duration(span)}, "
            f"last at {to_datetime(last.ts):%H:%M:%S} UTC: "
        )
        if self._parse_mode == "HTML":
            header = escape_html(header)
        elif self._parse_mode == "MarkdownV2":
            header = escape_markdown_v2(header)
        return header + last.text, True

    async def _finish(self, job: _Job, *, sent: bool, reason: str) -> None:
        """Tick off a whole job: delivered (as ``job.message_id``) or given up on."""
        self._jobs.pop(job.chat, None)
        await self._close(job.chat, job.items, job.message_id if sent else None, reason)
        if sent:
            self._digests += job.digest

    async def _close(
        self, chat: str, items: list[_Waiting], message_id: int | None, reason: str
    ) -> None:
        for waiting in items:
            if message_id is not None:
                await self._outbox.mark_sent(waiting.item.key, chat, message_id)
            else:
                await self._outbox.mark_failed(waiting.item.key, chat, reason)
        if message_id is not None:
            self._sent += len(items)
        else:
            self._failed += len(items)
        self._count -= len(items)
        self._room.set()

    async def _disable(self, chat: str, exc: TelegramTargetError) -> None:
        reason = f"{exc.description} ({exc.error_code})"
        if exc.migrate_to_chat_id is not None:
            reason += f"; the group is now chat {exc.migrate_to_chat_id}"
        self._disabled[chat] = DisabledTarget(chat, reason)
        self._report(f"Telegram chat {chat} disabled for this run, its alerts are dropped: {exc}")
        job = self._jobs[chat]
        job.items += [w for group in self._waiting.pop(chat, {}).values() for w in group]
        await self._finish(job, sent=False, reason=f"chat disabled: {reason}")

    def _turn_off(self, exc: TelegramAuthError) -> None:
        """The token was rejected mid-run: stop sending, keep every alert in the outbox."""
        self._delivery_off = str(exc)
        # Nothing queued is ticked off: it stays pending in the outbox for the next run.
        self._held += self._count
        self._count = 0
        self._waiting.clear()
        self._jobs.clear()
        self._room.set()
        self._report(
            f"{exc}; Telegram delivery is off for the rest of this run, alerts stay in the "
            "outbox for the next run and the other outputs go on"
        )

    async def _refused(self, job: _Job, exc: TelegramMessageError) -> None:
        if job.parse_mode is None:
            _LOGGER.warning("Telegram refused an alert for chat %s: %s", job.chat, exc)
            await self._finish(job, sent=False, reason=f"refused: {exc.description}")
            return
        # Delivering the alert matters more than its formatting: send the rest as plain text.
        _LOGGER.warning(
            "Telegram refused an alert's %s (%s); sending it as plain text",
            job.parse_mode,
            exc.description,
        )
        rest = _plain("".join(job.parts[job.next_part :]), job.parse_mode)
        tail = split_message(rest, max_parts=max(1, self._max_parts - job.next_part))
        job.parts = job.parts[: job.next_part] + [p for p in tail if p.strip()]
        job.parse_mode = None
        if job.next_part >= len(job.parts):
            await self._finish(job, sent=job.message_id is not None, reason="blank after markup")

    async def _unreachable(self, job: _Job, exc: WorldError) -> None:
        self._requeues += 1
        resent = [w for w in job.items if w.resend]
        job.items = [w for w in job.items if not w.resend]
        if resent:
            reason = f"not delivered after a restart: {exc}"
            await self._close(job.chat, resent, None, reason)
        if job.next_part == 0 or not job.items:
            # Nothing of it went out yet: put the alerts back so they fold with newer ones.
            del self._jobs[job.chat]
            if job.items:
                group = self._waiting.setdefault(job.chat, {}).setdefault(job.rule, [])
                group[:0] = job.items
        hold = self._backoff
        self._backoff = min(self._backoff * 2, self._max_retry_backoff)
        self._pacer.pause(trio.current_time() + hold)
        _LOGGER.warning("Telegram delivery failed, holding alerts for %.0f s: %s", hold, exc)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _plain(text: str, parse_mode: ParseMode) -> str:
    if parse_mode == "HTML":
        return html.unescape(re.sub(r"<[^>]*>", "", text))
    if parse_mode == "MarkdownV2":
        return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)
    return text
