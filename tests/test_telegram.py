"""Telegram: the Bot API client, text helpers, pacing, the fake server and the alert sink.

The Bot API is :class:`FakeTelegram`, a real HTTP server on 127.0.0.1. Timing tests run on
pytest-trio's ``autojump_clock``: loopback I/O completes while trio polls, so the clock only
jumps when every task really waits (a retry_after, a pacing delay). Deadlines on that clock are
virtual; a hang still fails at once because the clock jumps straight to the deadline.
"""

from __future__ import annotations

import collections
import itertools
import logging
import re
import socket
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from irisflow._alert import Alert, alert_key
from irisflow._errors import ConnectError, UsageError, VenueError
from irisflow._events import Trade
from irisflow._outbox import FileOutbox
from irisflow._telegram import (
    Pacer,
    Telegram,
    TelegramAuthError,
    TelegramMessageError,
    TelegramStatistics,
    TelegramTargetError,
    escape_html,
    escape_markdown_v2,
    open_telegram,
    split_message,
    utf16_len,
)
from irisflow.sinks.telegram import DisabledTarget, TelegramSink
from irisflow.testing._telegram import FakeTelegram, MarkupError, parse_html, parse_markdown_v2

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
DIGEST = re.compile(r"^(\w+) fired (\d+) times in .+?, last at \d\d:\d\d:\d\d UTC: ")


@asynccontextmanager
async def bot(fake: FakeTelegram, **options: Any) -> AsyncIterator[Telegram]:
    """Serve ``fake`` and open a client on it."""
    async with trio.open_nursery() as nursery:
        url = await nursery.start(fake.serve)
        async with open_telegram(fake.token, api_url=url, **options) as telegram:
            yield telegram
        nursery.cancel_scope.cancel()


def make_alert(
    i: int,
    *targets: str,
    rule: str = "whale",
    severity: str = "warning",
    text: str | None = None,
    ts: int | None = None,
) -> Alert:
    return Alert(
        venue="binance",
        symbol="BTCUSDT",
        ts=T0 + i * 100_000_000 if ts is None else ts,
        recv_ts=T0,
        rule=rule,
        severity=severity,  # type: ignore[arg-type]
        text=f"<b>BTCUSDT</b> {rule} #{i} &amp; more" if text is None else text,
        key=f"{rule}:{i}",
        targets=targets,
    )


def represented(plain: str) -> int:
    """How many alerts one delivered message stands for (a digest says so)."""
    match = DIGEST.match(plain)
    return int(match.group(2)) if match else 1


# --------------------------------------------------------------------------------------------
# Client: request format and replies


async def test_send_message_request_format() -> None:
    fake = FakeTelegram()
    with trio.fail_after(10):
        async with bot(fake) as telegram:
            sent = await telegram.send_message(42, "<b>BTC</b> &amp; up")
            await telegram.send_message(
                "-1001234567890", "a_b", parse_mode=None, disable_notification=True
            )
            await telegram.send_message("@irisflow_alerts", "*x*", parse_mode="MarkdownV2")
            me = await telegram.get_me()
    first, second, third, _ = fake.requests
    assert first.method == "sendMessage"
    assert first.path == f"/bot{fake.token}/sendMessage"
    assert first.content_type == "application/json"
    assert first.params == {
        "chat_id": 42,
        "text": "<b>BTC</b> &amp; up",
        "parse_mode": "HTML",
        "link_preview_options": {"is_disabled": True},
    }
    assert second.params == {
        "chat_id": -1001234567890,
        "text": "a_b",
        "disable_notification": True,
        "link_preview_options": {"is_disabled": True},
    }
    assert third.params["chat_id"] == "@irisflow_alerts"
    assert third.params["parse_mode"] == "MarkdownV2"
    assert sent.chat_id == "42"
    assert sent.message_id == 1
    assert fake.messages[0].plain == "BTC & up"
    assert me.username == "irisflow_fake_bot"


async def test_bad_chat_id_and_blank_text_are_usage_errors() -> None:
    fake = FakeTelegram()
    with trio.fail_after(10):
        async with bot(fake) as telegram:
            with pytest.raises(UsageError, match="neither a number nor an @channelusername"):
                await telegram.send_message("my group", "hi")
            with pytest.raises(UsageError, match="blank"):
                await telegram.send_message(42, "  \n")
    assert fake.requests == []


@pytest.mark.parametrize("in_parameters", [True, False])
async def test_429_waits_retry_after(
    autojump_clock: trio.testing.MockClock, in_parameters: bool
) -> None:
    fake = FakeTelegram()
    fake.fail_next(1, 429, retry_after=3, retry_after_in_parameters=in_parameters)
    with trio.fail_after(10):
        async with bot(fake) as telegram:
            await telegram.send_message(42, "hi")
    first, second = fake.requests
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 3
    assert telegram.statistics() == TelegramStatistics(requests=2, retries=1, rate_limited=1)


async def test_429_without_retry_after_backs_off(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeTelegram()
    fake.fail_next(2, 429, retry_after=None)
    with trio.fail_after(10):
        async with bot(fake, backoff=1.0) as telegram:
            await telegram.send_message(42, "hi")
    times = [r.time for r in fake.requests]
    assert [r.status for r in fake.requests] == [429, 429, 200]
    assert times[1] - times[0] >= 0.5  # first backoff: 1 s with jitter down to half
    assert times[2] - times[1] >= 1.0  # then 2 s, at least half of it


async def test_5xx_and_dropped_connections_are_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTelegram()
    fake.fail_next(1, 500)
    fake.fail_next(1, 502, json_body=False)
    fake.drop_next(1)
    with trio.fail_after(10):
        async with bot(fake) as telegram:
            sent = await telegram.send_message(42, "hi")
    assert sent.message_id == 1
    assert [r.status for r in fake.requests] == [0, 500, 502, 200]  # 0: dropped first
    assert len(fake.messages) == 1
    assert telegram.statistics().retries == 3


async def test_5xx_gives_up_after_max_attempts(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeTelegram()
    fake.fail_next(10, 500)
    with trio.fail_after(10):
        async with bot(fake, max_attempts=3) as telegram:
            with pytest.raises(VenueError, match=r"kept failing \(500 .* 3 attempts"):
                await telegram.send_message(42, "hi")
    assert len(fake.requests) == 3


async def test_unreachable_api_is_a_connect_error(autojump_clock: trio.testing.MockClock) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = "987654:unreachable-secret-XYZ"
    with trio.fail_after(10):
        async with open_telegram(
            token, api_url=f"http://127.0.0.1:{port}", max_attempts=2
        ) as telegram:
            with pytest.raises(ConnectError, match="could not reach the Telegram Bot API") as info:
                await telegram.send_message(42, "hi")
    assert info.value.__cause__ is not None
    assert "unreachable-secret" not in "".join(traceback.format_exception(info.value))


@pytest.mark.parametrize(
    ("chat", "code", "text"),
    [("666", 403, "bot was blocked by the user"), ("777", 400, "chat not found")],
)
async def test_refused_chat_is_a_target_error_not_retried(chat: str, code: int, text: str) -> None:
    fake = FakeTelegram(blocked_chats={"666"}, unknown_chats={"777"})
    with trio.fail_after(10):
        async with bot(fake) as telegram:
            with pytest.raises(TelegramTargetError, match=text) as info:
                await telegram.send_message(chat, "hi")
    assert info.value.chat_id == chat
    assert info.value.error_code == code
    assert len(fake.requests) == 1


async def test_unparsable_text_is_a_message_error() -> None:
    fake = FakeTelegram()
    with trio.fail_after(10):
        async with bot(fake) as telegram:
            with pytest.raises(TelegramMessageError, match="can't parse entities"):
                await telegram.send_message(42, "price > 5", parse_mode="HTML")
            with pytest.raises(TelegramMessageError, match="reserved"):
                await telegram.send_message(42, "up 5.2%", parse_mode="MarkdownV2")
    assert len(fake.requests) == 2


async def test_wrong_token_is_a_clear_auth_error() -> None:
    fake = FakeTelegram()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(fake.serve)
            async with open_telegram("111:wrong-token-secret", api_url=url) as telegram:
                with pytest.raises(TelegramAuthError) as info:
                    await telegram.send_message(42, "hi")
            nursery.cancel_scope.cancel()
    assert str(info.value) == (
        "Telegram rejected the bot token (401 Unauthorized): check TELEGRAM_BOT_TOKEN or "
        "[telegram] token"
    )
    assert isinstance(info.value, VenueError)


def test_malformed_token_is_a_usage_error_without_the_token() -> None:
    async def main() -> None:
        async with open_telegram("not a token/secretpart"):
            pass  # pragma: no cover

    with pytest.raises(UsageError, match="check TELEGRAM_BOT_TOKEN") as info:
        trio.run(main)
    assert "secretpart" not in str(info.value)


async def test_token_never_shown(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    fake = FakeTelegram(token="424242:VerySecretTokenValue-abc_123", unknown_chats={"777"})
    secret = "VerySecretTokenValue-abc_123"
    caplog.set_level(logging.DEBUG)
    shown: list[str] = []
    fake.fail_next(1, 429, retry_after=1)
    fake.fail_next(1, 500)
    fake.drop_next(1)
    with trio.fail_after(10):
        async with bot(fake) as telegram:
            await telegram.send_message(42, "hi")
            chats_texts: list[tuple[int | str, str]] = [("777", "hi"), (42, "a < b")]
            for chat, text in chats_texts:
                with pytest.raises(VenueError) as info:
                    await telegram.send_message(chat, text)
                shown += [str(info.value), repr(info.value)]
                shown += traceback.format_exception(info.value)
            shown.append(repr(telegram))
            with FileOutbox(tmp_path / "outbox.jsonl") as outbox:
                shown.append(repr(TelegramSink(telegram, outbox, default_chat=42)))
    url = fake.url
    async with open_telegram(fake.token, api_url=url, max_attempts=1) as telegram:
        with pytest.raises(ConnectError) as stopped:  # the fake has stopped
            await telegram.send_message(42, "hi")
        shown += traceback.format_exception(stopped.value)
    captured = capsys.readouterr()
    shown += [caplog.text, captured.out, captured.err]
    assert "HTTP Request: POST" in caplog.text  # httpx did log its URLs...
    assert "redacted" in caplog.text  # ...redacted
    for text in shown:
        assert secret not in text


# --------------------------------------------------------------------------------------------
# Escaping and the fake's parsers

MD_SPECIAL = "_*[]()~`>#+-=|{}.!\\"


def test_escape_markdown_v2_escapes_every_special_character() -> None:
    assert escape_markdown_v2(MD_SPECIAL) == "".join("\\" + ch for ch in MD_SPECIAL)
    assert escape_markdown_v2("BTC-USD 1.5% (up)!") == "BTC\\-USD 1\\.5% \\(up\\)\\!"
    assert escape_markdown_v2("a`b\\c*", entity="code") == "a\\`b\\\\c*"
    assert escape_markdown_v2("http://x/(a)\\", entity="url") == "http://x/(a\\)\\\\"


@pytest.mark.parametrize("ch", list(MD_SPECIAL))
def test_fake_refuses_each_unescaped_markdown_v2_character(ch: str) -> None:
    text = f"a {ch}" if ch == "\\" else f"a {ch} b"  # "\\ " would escape the space
    with pytest.raises(MarkupError):
        parse_markdown_v2(text)
    assert parse_markdown_v2(escape_markdown_v2(text)) == text


def test_escape_html() -> None:
    assert escape_html('a < b && c > d "q"') == 'a &lt; b &amp;&amp; c &gt; d "q"'
    assert escape_html('"q"', quote=True) == "&quot;q&quot;"
    for bad in ["a < b", "a > b", "AT&T", "<h3>x</h3>", "<b>x", "<b>x</i>"]:
        with pytest.raises(MarkupError):
            parse_html(bad)


def test_fake_parsers_accept_valid_markup() -> None:
    assert parse_markdown_v2("*bold* _it_ __u__ ~s~ ||sp|| `c\\`` [l](http://x/\\))") == (
        "bold it u s sp c` l"
    )
    assert parse_markdown_v2("```python\nprint(1)\n```") == "print(1)\n"
    assert parse_html('<b>a</b> <a href="http://x?a=1&amp;b=2">l</a> &#x1F600;&lt;') == ("a l 😀<")
    with pytest.raises(MarkupError, match="Can't find end of the entity"):
        parse_markdown_v2("*bold")


@given(st.text())
def test_markdown_v2_escaping_round_trips(text: str) -> None:
    assert parse_markdown_v2(escape_markdown_v2(text)) == text


@given(st.text())
def test_html_escaping_round_trips(text: str) -> None:
    assert parse_html(escape_html(text)) == text


@given(st.text())
def test_code_escaping_round_trips(text: str) -> None:
    assert parse_markdown_v2("`" + escape_markdown_v2(text, entity="code") + "`") == text


# --------------------------------------------------------------------------------------------
# Splitting


def test_split_prefers_line_boundaries() -> None:
    lines = [f"line {i:02d} " + "x" * 20 + "\n" for i in range(10)]
    parts = split_message("".join(lines), 100)
    assert all(utf16_len(p) <= 100 for p in parts)
    assert "".join(parts) == "".join(lines)
    assert all(p.endswith("\n") for p in parts)


def test_split_counts_utf16_units() -> None:
    text = "😀" * 3000  # 6000 UTF-16 units, 3000 code points
    parts = split_message(text)
    assert len(parts) == 2
    assert [utf16_len(p) for p in parts] == [4096, 6000 - 4096]


def test_split_never_cuts_an_escape_or_entity() -> None:
    md = escape_markdown_v2("." * 50)
    for part in split_message(md, 7, parse_mode="MarkdownV2"):
        parse_markdown_v2(part)
    html_text = "&amp;" * 50
    for part in split_message(html_text, 7, parse_mode="HTML"):
        parse_html(part)


def test_split_keeps_html_tags_whole_and_balanced() -> None:
    text = "".join(f"<b>BTC {i}</b> crossed <i>{i}</i> &amp; more\n" for i in range(200))
    parts = split_message(text, 120, parse_mode="HTML")
    assert "".join(parts) == text
    for part in parts:
        assert utf16_len(part) <= 120
        parse_html(part)


def test_split_keeps_markdown_v2_entities_whole() -> None:
    line = "*BTC {i}* crossed _{i}_ \\& [chart](http://x/{i}) `code \\`` ||s||\n"
    text = "".join(line.format(i=i) for i in range(200))
    parse_markdown_v2(text)
    parts = split_message(text, 150, parse_mode="MarkdownV2")
    assert "".join(parts) == text
    for part in parts:
        assert utf16_len(part) <= 150
        parse_markdown_v2(part)


def test_split_trims_with_a_marker() -> None:
    text = "word " * 2000
    (only,) = split_message(text, 100, max_parts=1)
    assert only.endswith("…")
    assert utf16_len(only) <= 100
    parts = split_message(text, 100, max_parts=3)
    assert len(parts) == 3
    assert parts[-1].endswith("…")
    with pytest.raises(UsageError):
        split_message(text, 2)


@settings(deadline=None)
@given(st.text(), st.integers(min_value=4, max_value=60))
def test_split_round_trips(text: str, limit: int) -> None:
    parts = split_message(text, limit)
    assert "".join(parts) == text
    assert all(utf16_len(p) <= limit for p in parts)
    assert all(parts) or parts == [""]


@settings(deadline=None)
@given(st.text(), st.integers(min_value=8, max_value=60), st.sampled_from(["HTML", "MarkdownV2"]))
def test_split_escaped_text_parts_parse(text: str, limit: int, mode: str) -> None:
    escaped = escape_html(text) if mode == "HTML" else escape_markdown_v2(text)
    parse = parse_html if mode == "HTML" else parse_markdown_v2
    parts = split_message(escaped, limit, parse_mode=mode)  # type: ignore[arg-type]
    assert "".join(parts) == escaped
    assert all(utf16_len(p) <= limit for p in parts)
    assert "".join(parse(p) for p in parts) == text


# --------------------------------------------------------------------------------------------
# Pacer (sans-IO)


def test_pacer_per_chat_group_and_overall_limits() -> None:
    pacer = Pacer()
    sent: list[tuple[float, str]] = []
    chats = [str(i) for i in range(1, 41)] + ["-100", "@channel"]
    now = 0.0
    for _ in range(3000):
        chat = min(chats, key=lambda c: (pacer.next_send(c, now), c))
        now = pacer.next_send(chat, now)
        pacer.record(chat, now)
        sent.append((now, chat))
    check_limits(sent, Pacer())


def test_pacer_pause_holds_every_chat() -> None:
    pacer = Pacer()
    pacer.record("1", 0.0)
    pacer.pause(10.0)
    assert pacer.next_send("2", 0.0) == 10.0
    assert pacer.next_send("1", 12.0) == 12.0
    with pytest.raises(UsageError, match="per_chat must be positive"):
        Pacer(per_chat=0)


def check_limits(sent: list[tuple[float, str]], pacer: Pacer) -> None:
    """No window of any limit holds more messages than the limit allows."""
    eps = 1e-9
    times = sorted(t for t, _ in sent)
    for a, b in zip(times, times[pacer.overall :], strict=False):
        assert b - a >= pacer.overall_window - eps
    by_chat: dict[str, list[float]] = collections.defaultdict(list)
    for t, chat in sent:
        by_chat[chat].append(t)
    for chat, chat_times in by_chat.items():
        chat_times.sort()
        for a, b in itertools.pairwise(chat_times):
            assert b - a >= pacer.per_chat - eps, chat
        if chat.startswith(("-", "@")):
            for a, b in zip(chat_times, chat_times[pacer.per_group :], strict=False):
                assert b - a >= pacer.group_window - eps, chat


# --------------------------------------------------------------------------------------------
# The sink


async def run_sink(
    fake: FakeTelegram,
    outbox: FileOutbox,
    batches: list[list[Alert]],
    *,
    every: float = 0.0,
    client: dict[str, Any] | None = None,
    **options: Any,
) -> TelegramSink:
    """Feed ``batches`` to a sink (one every ``every`` s), close the channel, let it flush."""
    async with bot(fake, **(client or {})) as telegram:
        sink = TelegramSink(telegram, outbox, **{"shutdown_timeout": 300.0, **options})
        send, receive = trio.open_memory_channel[list[Alert]](4)
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run, receive)
            async with send:
                for batch in batches:
                    await send.send(batch)
                    if every:
                        await trio.sleep(every)
    return sink


async def test_sink_delivers_and_flushes_on_close(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    fake = FakeTelegram()
    with trio.fail_after(10), FileOutbox(tmp_path / "outbox.jsonl") as outbox:
        sink = await run_sink(
            fake,
            outbox,
            [[make_alert(1, severity="info")], [make_alert(2, "43", rule="spread")]],
            default_chat=42,
        )
        assert await outbox.pending() == []
    assert [(m.chat_id, m.plain, m.disable_notification) for m in fake.messages] == [
        ("42", "BTCUSDT whale #1 & more", True),
        ("43", "BTCUSDT spread #2 & more", False),
    ]
    stats = sink.statistics()
    assert (stats.sent, stats.messages, stats.pending, stats.failed) == (2, 2, 0, 0)


async def test_sink_disables_refused_chat_and_keeps_delivering_to_others(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    fake = FakeTelegram(blocked_chats={"666"})
    batches = [[make_alert(i, "666", "42")] for i in range(10)]
    with trio.fail_after(60), FileOutbox(tmp_path / "outbox.jsonl") as outbox:
        sink = await run_sink(fake, outbox, batches, every=1.0)
        assert await outbox.pending() == []
    assert len(fake.messages_to(42)) == 10
    assert [r.params.get("chat_id") for r in fake.requests].count(666) == 1
    stats = sink.statistics()
    assert stats.disabled_targets == (
        DisabledTarget("666", "Forbidden: bot was blocked by the user (403)"),
    )
    assert (stats.sent, stats.failed) == (10, 10)


async def test_sink_sends_plain_text_when_markup_is_refused(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    fake = FakeTelegram()
    with trio.fail_after(10), FileOutbox(tmp_path / "outbox.jsonl") as outbox:
        sink = await run_sink(fake, outbox, [[make_alert(1, "42", text="<b>BTC</b> < 5 &amp;")]])
    assert [m.text for m in fake.messages] == ["BTC < 5 &"]
    assert fake.messages[0].parse_mode is None
    assert sink.statistics().sent == 1


async def test_sink_holds_alerts_while_telegram_is_down(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    fake = FakeTelegram()
    fake.fail_next(6, 500)
    batches = [[make_alert(i, "42")] for i in range(5)]
    with trio.fail_after(60), FileOutbox(tmp_path / "outbox.jsonl") as outbox:
        sink = await run_sink(fake, outbox, batches, client={"max_attempts": 3}, retry_backoff=5)
        assert await outbox.pending() == []
    assert sum(represented(m.plain) for m in fake.messages) == 5
    stats = sink.statistics()
    assert stats.retries >= 6
    assert stats.sent == 5


async def test_sink_long_alert_is_split(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    fake = FakeTelegram()
    text = "".join(f"<b>0x{i:040x}</b> moved 1&amp;000 ETH\n" for i in range(200))
    with trio.fail_after(10), FileOutbox(tmp_path / "outbox.jsonl") as outbox:
        sink = await run_sink(fake, outbox, [[make_alert(1, "42", text=text)]])
    assert len(fake.messages) == len(split_message(text, parse_mode="HTML")) == 4
    assert "".join(m.text for m in fake.messages) == text
    times = [m.time for m in fake.messages]
    assert times[1] - times[0] >= 1.0
    assert sink.statistics().sent == 1


async def test_sink_without_default_chat_refuses_untargeted_alerts(tmp_path: Path) -> None:
    fake = FakeTelegram()
    with trio.fail_after(10), FileOutbox(tmp_path / "outbox.jsonl") as outbox:
        async with bot(fake) as telegram:
            sink = TelegramSink(telegram, outbox)
            send, receive = trio.open_memory_channel[list[Alert]](1)
            await send.send([make_alert(1)])
            with pytest.raises(UsageError, match="no default chat"):  # not an ExceptionGroup
                await sink.run(receive)
        assert await outbox.pending() == []


async def test_sink_checks_the_token_before_it_is_ready(tmp_path: Path) -> None:
    fake = FakeTelegram()
    with trio.fail_after(10), FileOutbox(tmp_path / "outbox.jsonl") as outbox:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(fake.serve)
            async with open_telegram("1:bad-token", api_url=url) as telegram:
                sink = TelegramSink(telegram, outbox, default_chat=42)
                send, receive = trio.open_memory_channel[list[Alert]](1)
                await send.send([make_alert(1)])
                with pytest.raises(TelegramAuthError, match="rejected the bot token"):
                    await nursery.start(sink.run, receive)  # never ready: not an ExceptionGroup
            nursery.cancel_scope.cancel()
        # Found before any alert was taken in: nothing recorded, nothing sent.
        assert await outbox.pending() == []
    assert [r.method for r in fake.requests] == ["getMe"]


async def test_sink_turns_delivery_off_when_the_token_is_revoked_mid_run(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    fake = FakeTelegram()
    warnings: list[str] = []
    with trio.fail_after(60), FileOutbox(tmp_path / "outbox.jsonl") as outbox:
        async with bot(fake) as telegram:
            sink = TelegramSink(telegram, outbox, max_pending=2, warn=warnings.append)
            send, receive = trio.open_memory_channel[list[Alert]](0)
            async with trio.open_nursery() as nursery:
                await nursery.start(sink.run, receive)
                async with send:
                    await send.send([make_alert(1, "42")])
                    await fake.wait_for_messages(1)
                    fake.token = "1:revoked-by-botfather"
                    # More alerts than max_pending: the sink keeps reading, it never blocks
                    # the run while it cannot deliver.
                    for i in range(2, 12):
                        await send.send([make_alert(i, "42", rule=f"r{i}")])
                        await trio.sleep(2)
            pending = await outbox.pending()
    assert len(fake.messages) == 1
    assert sorted(item.key for item in pending) == sorted(f"r{i}:{i}" for i in range(2, 12))
    stats = sink.statistics()
    assert (stats.sent, stats.pending, stats.failed) == (1, 10, 0)
    assert stats.delivery_off is not None
    assert stats.delivery_off.startswith("Telegram rejected the bot token (401 Unauthorized)")
    # One attempt with the revoked token, then no more requests.
    assert [r.status for r in fake.requests if r.method == "sendMessage"] == [200, 401]
    assert len(warnings) == 2
    assert "Telegram delivery is off for the rest of this run" in warnings[0]
    assert warnings[1] == (
        "10 alerts not delivered because Telegram rejected the bot token; they stay in the "
        "outbox and go out on the next run with a valid token"
    )


async def test_sink_reports_alerts_left_pending_when_it_stops(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeTelegram(delay=4)  # slower than the shutdown timeout allows
    batches = [[make_alert(0, "42")], [make_alert(i, "42") for i in range(1, 51)]]
    with trio.fail_after(60), FileOutbox(tmp_path / "outbox.jsonl") as outbox:
        sink = await run_sink(fake, outbox, batches, shutdown_timeout=5)
        assert len(await outbox.pending()) == 50
    assert sink.statistics().pending == 50
    # Without a warn callback the report goes to the irisflow.telegram logger.
    reports = [r.getMessage() for r in caplog.records if r.name == "irisflow.telegram"]
    assert reports == [
        "50 alerts not delivered yet; they stay in the outbox and go out on the next run"
    ]


async def test_sink_goes_on_when_telegram_is_unreachable_at_start(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there
    warnings: list[str] = []
    with trio.fail_after(600), FileOutbox(tmp_path / "outbox.jsonl") as outbox:
        url = f"http://127.0.0.1:{port}"
        async with open_telegram("1:some-token", api_url=url, max_attempts=2) as telegram:
            sink = TelegramSink(telegram, outbox, shutdown_timeout=1, warn=warnings.append)
            send, receive = trio.open_memory_channel[list[Alert]](1)
            async with trio.open_nursery() as nursery:
                await nursery.start(sink.run, receive)
                async with send:
                    await send.send([make_alert(1, "42")])
        assert [item.key for item in await outbox.pending()] == ["whale:1"]
    assert warnings[0].startswith("could not check the Telegram bot token (could not reach")
    assert warnings[0].endswith("alerts are kept in the outbox and sent once Telegram answers")
    assert warnings[-1] == (
        "1 alert not delivered yet; it stays in the outbox and goes out on the next run"
    )


async def test_sink_burst_of_1000_stays_within_limits_and_folds(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    fake = FakeTelegram()
    private = [str(1000 + i) for i in range(36)]
    groups = ["-1001", "-1002", "-1003", "-1004"]
    rules = ["whale", "spread", "liquidation"]
    alerts = []
    for i in range(1000):
        chat = groups[i // 2 % 4] if i % 2 else private[i // 2 % 36]
        alerts.append(make_alert(i, chat, rule=rules[i % 3], ts=T0 + i * 40_000_000))
    expected = collections.Counter(a.targets[0] for a in alerts)
    # 200 alerts at once (every chat at once: the overall limit), then 5 every 0.2 s for 32 s.
    batches = [alerts[:200]] + [alerts[i : i + 5] for i in range(200, 1000, 5)]
    # Virtual seconds: the group limit (20 a minute) needs minutes of simulated time.
    with trio.fail_after(600), FileOutbox(tmp_path / "outbox.jsonl") as outbox:
        sink = await run_sink(fake, outbox, batches, every=0.2)
        assert await outbox.pending() == []
    check_limits([(m.time, m.chat_id) for m in fake.messages], Pacer())
    delivered: collections.Counter[str] = collections.Counter()
    for message in fake.messages:
        delivered[message.chat_id] += represented(message.plain)
    assert delivered == expected
    stats = sink.statistics()
    assert stats.sent == 1000
    assert stats.pending == 0
    assert stats.digests > 0
    assert stats.messages == len(fake.messages) < 1000
    for group in groups:  # 125 alerts each, about 3 a second: folded
        assert len(fake.messages_to(group)) < 60
    # The limits were really reached: 30 messages in the first second (40 chats were due),
    # 20 messages in a minute to a group.
    assert sum(1 for m in fake.messages if m.time < 1.0) == 30
    group_times = [m.time for m in fake.messages_to("-1001")]
    assert len(group_times) > 20
    assert any(b - a < 61 for a, b in zip(group_times, group_times[20:], strict=False))


def test_alert_targets_are_strings() -> None:
    assert make_alert(1, "-1001").targets == ("-1001",)
    one = attrs.evolve(make_alert(1), targets="-1001")  # type: ignore[arg-type]
    assert one.targets == ("-1001",)  # not ("-", "1", "0", "0", "1")
    many = attrs.evolve(one, targets=[42, "@chan"])  # type: ignore[arg-type]
    assert many.targets == ("42", "@chan")
    with pytest.raises(ValueError, match="severity"):
        attrs.evolve(one, severity="urgent")  # type: ignore[arg-type]


def test_alert_key_is_stable_and_distinct() -> None:
    trade = Trade(
        venue="binance",
        symbol="BTCUSDT",
        ts=T0,
        recv_ts=T0 + 5,
        price=1,  # type: ignore[arg-type]
        qty=2,  # type: ignore[arg-type]
        side="buy",
        trade_id=7,
    )
    later = Trade("binance", "BTCUSDT", T0, T0 + 99, 1, 2, "buy", 7)  # type: ignore[arg-type]
    other = Trade("binance", "BTCUSDT", T0, T0 + 5, 1, 2, "buy", 8)  # type: ignore[arg-type]
    assert alert_key("whale", trade) == alert_key("whale", later)
    assert alert_key("whale", trade) != alert_key("whale", other)
    assert alert_key("whale", trade) != alert_key("spread", trade)
    assert alert_key("whale", trade).startswith("whale:")
