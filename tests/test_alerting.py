"""Alert delivery wiring: settings, ``alerts test``/``list``, and a replay delivering to Telegram.

Telegram is :class:`FakeTelegram`, a real HTTP server on 127.0.0.1; time is pytest-trio's
``autojump_clock`` (loopback I/O completes while trio polls, so only real waits are skipped).
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import trio

from irisflow._alert import Alert
from irisflow._alerting import (
    ALERT_LIST_COLUMNS,
    AlertSink,
    TelegramSettings,
    alerts_list,
    alerts_test,
    default_outbox_path,
    telegram_settings,
)
from irisflow._config import Config, TelegramConfig
from irisflow._errors import UsageError
from irisflow._events import Event, Trade
from irisflow._outbox import FileOutbox
from irisflow._pipeline import Pipeline
from irisflow._rules import AlertStep, Rule, build_rules
from irisflow._run import Runner
from irisflow._telegram import TelegramAuthError
from irisflow.testing import FakeTelegram, ListSink, trade

TOKEN = "123456789:AAFakeTelegramTokenForTests_0123456"
SECRET = TOKEN.split(":")[1]
DIGEST = re.compile(r"^(.+?) fired (\d+) times in .+?, last at \d\d:\d\d:\d\d UTC: (.*)$")


def config(**telegram: str) -> Config:
    return Config(telegram=TelegramConfig(**telegram))


# --------------------------------------------------------------------------------------------
# Settings


def test_settings_sources_and_precedence() -> None:
    file = config(token="1:fromfile", chat="-100", api_url="http://file:1")
    assert telegram_settings(file, chat=None, api_url=None, environ={}) == TelegramSettings(
        "1:fromfile", "-100", "http://file:1"
    )
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "7"}
    settings = telegram_settings(file, chat=None, api_url=None, environ=env)
    assert settings == TelegramSettings(TOKEN, "7", "http://file:1")
    settings = telegram_settings(
        file, chat="@alerts_chan", api_url="http://127.0.0.1:9/", environ=env
    )
    assert settings == TelegramSettings(TOKEN, "@alerts_chan", "http://127.0.0.1:9")
    assert SECRET not in repr(settings)
    assert telegram_settings(config(), chat=None, api_url=None, environ={}) is None
    default = telegram_settings(
        config(), chat="5", api_url=None, environ={"TELEGRAM_BOT_TOKEN": TOKEN}
    )
    assert default is not None
    assert default.api_url == "https://api.telegram.org"


def test_settings_without_token_or_chat() -> None:
    only_token = {"TELEGRAM_BOT_TOKEN": TOKEN}
    assert telegram_settings(config(), chat=None, api_url=None, environ=only_token) is None
    assert telegram_settings(config(chat="5"), chat=None, api_url=None, environ={}) is None
    with pytest.raises(UsageError, match="no Telegram bot token: set TELEGRAM_BOT_TOKEN"):
        telegram_settings(config(), chat="5", api_url=None, environ={}, required=True)
    with pytest.raises(UsageError, match="no Telegram chat"):
        telegram_settings(config(), chat=None, api_url=None, environ=only_token, required=True)
    # Rules that all name their chats need no default chat; a mix is refused up front.
    targeted = Rule.parse("price > 1; targets=42", [Trade])
    plain = Rule.parse("price > 2", [Trade])
    settings = telegram_settings(
        config(), chat=None, api_url=None, environ=only_token, rules=[targeted]
    )
    assert settings is not None
    assert settings.chat is None
    with pytest.raises(UsageError, match=r"alerts 'price > 2' have no targets"):
        telegram_settings(
            config(), chat=None, api_url=None, environ=only_token, rules=[targeted, plain]
        )


@pytest.mark.parametrize(
    ("env", "chat", "url", "message"),
    [
        ({"TELEGRAM_BOT_TOKEN": "not a token " + SECRET}, "5", None, "token is malformed"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN}, "me", None, "neither a number nor an @channelusername"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN}, "5", "ftp://x", "must start with http"),
    ],
)
def test_bad_settings_are_usage_errors_without_the_token(
    env: dict[str, str], chat: str, url: str | None, message: str
) -> None:
    with pytest.raises(UsageError, match=message) as info:
        telegram_settings(config(), chat=chat, api_url=url, environ=env)
    assert SECRET not in str(info.value)


def test_token_without_any_chat_for_the_rules_is_an_error_before_connecting() -> None:
    only_token = {"TELEGRAM_BOT_TOKEN": TOKEN}
    rules = [Rule.parse("price > 1", [Trade]), Rule.parse("price > 2", [Trade])]
    with pytest.raises(UsageError) as info:
        telegram_settings(config(), chat=None, api_url=None, environ=only_token, rules=rules)
    text = str(info.value)
    assert text.startswith("alerts 'price > 1', 'price > 2' have no targets and there is no")
    for name in ("--telegram-chat", "TELEGRAM_CHAT_ID", "[telegram] chat"):
        assert name in text
    # A default chat from any source, or targets on every rule, is enough.
    assert telegram_settings(
        config(chat="5"), chat=None, api_url=None, environ=only_token, rules=rules
    ) == TelegramSettings(TOKEN, "5")
    targeted = [Rule.parse("price > 1; targets=1,2", [Trade])]
    settings = telegram_settings(
        config(), chat=None, api_url=None, environ=only_token, rules=targeted
    )
    assert settings == TelegramSettings(TOKEN, None)


@pytest.mark.parametrize("url", ["ftp://x", "x", "http://", "telegram.org"])
def test_telegram_api_url_is_http_or_https_even_without_a_token(url: str) -> None:
    with pytest.raises(
        UsageError, match=r"must start with http:// or https://.*--telegram-api-url"
    ):
        telegram_settings(config(), chat=None, api_url=url, environ={})
    with pytest.raises(UsageError, match="must start with http:// or https://"):
        telegram_settings(config(), chat="5", api_url=url, environ={"TELEGRAM_BOT_TOKEN": TOKEN})
    settings = telegram_settings(
        config(), chat="5", api_url="HTTPS://bot.example/", environ={"TELEGRAM_BOT_TOKEN": TOKEN}
    )
    assert settings is not None
    assert settings.api_url == "HTTPS://bot.example"


def test_default_outbox_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    assert default_outbox_path({"XDG_DATA_HOME": str(data)}) == data / "irisflow" / "outbox.jsonl"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_outbox_path({}) == tmp_path / ".local" / "share" / "irisflow" / "outbox.jsonl"


def test_alert_sink_needs_somewhere_to_go() -> None:
    with pytest.raises(UsageError, match="needs Telegram settings, a database, or both"):
        AlertSink(None)


async def test_alert_sink_outbox_in_an_unusable_place_is_a_usage_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_text("XDG_DATA_HOME points at this file")
    sink = AlertSink(
        TelegramSettings(TOKEN, "42", "http://127.0.0.1:9"), environ={"XDG_DATA_HOME": str(data)}
    )
    batches = trio.open_memory_channel[list[Event]](1)[1]
    with trio.fail_after(10), pytest.raises(UsageError, match="point XDG_DATA_HOME") as info:
        await sink.run(batches)
    assert str(data / "irisflow" / "outbox.jsonl") in str(info.value)


# --------------------------------------------------------------------------------------------
# irisflow alerts list / test


def test_alerts_list_rows() -> None:
    rules = build_rules(
        [
            "price > 45000; cooldown=5m; rearm=1%; symbols=btcusdt; venues=binance",
            "kind=change; window=5m; threshold=-3; severity=critical; targets=42,-100",
        ],
        Config(),
        None,
    )
    rows = alerts_list(rules)
    assert all(len(row) == len(ALERT_LIST_COLUMNS) for row in rows)
    assert rows == [
        (
            "price > 45000",
            "threshold",
            "price > 45000",
            "",
            "binance, BTCUSDT",
            "5m",
            "1%",
            "warning",
            "default chat",
            "--alert 'price > 45000; cooldown=5m; rearm=1%; symbols=btcusdt; venues=binance'",
        ),
        (
            "change -3 5m",
            "change",
            "true",
            "-3% in 5m",
            "all",
            "",
            "",
            "critical",
            "42, -100",
            "--alert 'kind=change; window=5m; threshold=-3; severity=critical; targets=42,-100'",
        ),
    ]


async def test_alerts_test_sends_one_message(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeTelegram(token=TOKEN)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(fake.serve)
            settings = TelegramSettings(TOKEN, "42", url)
            line = await alerts_test(settings)
            assert line == "sent a test message to chat 42 as @irisflow_fake_bot (message 1)"
            assert await alerts_test(settings, "-1001") == (
                "sent a test message to chat -1001 as @irisflow_fake_bot (message 2)"
            )
            assert [(m.chat_id, m.parse_mode) for m in fake.messages] == [
                ("42", None),
                ("-1001", None),
            ]
            assert fake.messages[0].text.startswith("irisflow test alert")

            wrong = TelegramSettings("123456789:WrongSecretTokenValue_999", "42", url)
            with pytest.raises(TelegramAuthError, match="rejected the bot token") as info:
                await alerts_test(wrong)
            assert "WrongSecretTokenValue_999" not in repr(info.value)
            assert "WrongSecretTokenValue_999" not in str(info.value.__cause__)
            with pytest.raises(UsageError, match="Telegram is not configured"):
                await alerts_test(None)
            with pytest.raises(UsageError, match="no chat to test"):
                await alerts_test(TelegramSettings(TOKEN, None, url))
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------------------------
# End to end: a replay through the rules to Telegram


def recording(path: Path) -> tuple[Path, int]:
    """BTCUSDT crossing 45000 three times and ETHUSDT once, one trade per second."""
    prices = [
        ("BTCUSDT", 44000),
        ("BTCUSDT", 45001),
        ("ETHUSDT", 2500),
        ("BTCUSDT", 44000),
        ("BTCUSDT", 45002),
        ("BTCUSDT", 44000),
        ("BTCUSDT", 45003),
    ]
    lines = []
    for i, (symbol, price) in enumerate(prices):
        payload = trade(
            symbol,
            price=price,
            qty="0.5",
            trade_id=i,
            time_ms=1_767_225_600_000 + i * 1000,
            buyer_maker=False,
        )
        frame = orjson.dumps({"stream": f"{symbol.lower()}@trade", "data": payload}).decode()
        recv = 1_767_225_600_000_000_000 + i * 1_000_000_000
        lines.append(orjson.dumps({"venue": "binance", "recv_ts": recv, "frame": frame}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, len(prices)


def represented(plain: str) -> tuple[int, str]:
    """How many alerts a message stands for, and the text of the last one."""
    match = DIGEST.match(plain)
    return (int(match.group(2)), match.group(3)) if match else (1, plain)


async def test_replay_delivers_alerts_to_telegram(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    path, frames = recording(tmp_path / "trades.jsonl")
    rules = build_rules(
        [
            "price > 45000; message='{symbol} traded {qty} at {price} on {venue}'",
            "price < 3000; targets=-1001; severity=info",
        ],
        Config(),
        [Trade],
    )
    fake = FakeTelegram(token=TOKEN)
    fake.fail_next(1, 429, retry_after=3)
    outbox_path = tmp_path / "outbox.jsonl"
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(fake.serve)
            settings = telegram_settings(
                config(chat="42"), chat=None, api_url=url, environ={"TELEGRAM_BOT_TOKEN": TOKEN}
            )
            assert settings is not None
            table = ListSink()
            sink = AlertSink(settings, outbox_path=outbox_path, shutdown_timeout=60)
            runner = Runner(Pipeline([AlertStep(rules)]), sinks=[table, sink])
            summary = await runner.replay(path)
            nursery.cancel_scope.cancel()

    # Alerts are events: the table got every trade and the alerts in between.
    alerts = [e for e in table.events if isinstance(e, Alert)]
    assert summary.events == frames
    assert len(table.events) == frames + len(alerts)
    assert [a.text for a in alerts] == [
        "BTCUSDT traded 0.5 at 45001 on binance",
        "price < 3000: ETHUSDT on binance, price = 2500",
        "BTCUSDT traded 0.5 at 45002 on binance",
        "BTCUSDT traded 0.5 at 45003 on binance",
    ]
    # Telegram got them all, once each, as plain text (a burst to one chat may be folded).
    _, first_last = represented(fake.messages_to(42)[0].plain)
    assert first_last.startswith("BTCUSDT traded 0.5 at 4500")
    delivered: dict[str, int] = {}
    for message in fake.messages:
        assert message.parse_mode is None
        count, last = represented(message.plain)
        delivered[message.chat_id] = delivered.get(message.chat_id, 0) + count
        assert any(a.text == last for a in alerts)
    assert delivered == {"42": 3, "-1001": 1}
    ethusdt = fake.messages_to(-1001)[0]
    assert ethusdt.disable_notification  # severity info is silent
    # The 429 was honoured: the retry came retry_after (3 s) later.
    sends = [r for r in fake.requests if r.method == "sendMessage"]
    assert sends[0].status == 429
    assert sends[1].time - sends[0].time >= 3
    assert sink.telegram is not None
    stats = sink.telegram.statistics()
    assert (stats.sent, stats.pending, stats.rate_limited) == (4, 0, 1)
    with FileOutbox(outbox_path) as outbox:
        assert await outbox.pending() == []

    # The token never shows: not in logs, output, the outbox file or reprs.
    out, err = capsys.readouterr()
    for text in (caplog.text, out, err, outbox_path.read_text(), repr(sink), repr(settings)):
        assert SECRET not in text
    assert any(r.path.startswith(f"/bot{TOKEN}/") for r in fake.requests)  # it was used


async def test_replay_with_a_rejected_token_stops_before_any_event(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path, _ = recording(tmp_path / "trades.jsonl")
    rules = build_rules(["price > 45000"], Config(), [Trade])
    fake = FakeTelegram(token=TOKEN)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(fake.serve)
            settings = TelegramSettings("123456789:WrongSecretTokenValue_999", "42", url)
            table = ListSink()
            sink = AlertSink(settings, outbox_path=tmp_path / "outbox.jsonl")
            runner = Runner(Pipeline([AlertStep(rules)]), sinks=[table, sink])
            with pytest.raises(TelegramAuthError) as info:
                await runner.replay(path)
            nursery.cancel_scope.cancel()
    assert str(info.value) == (
        "Telegram rejected the bot token (401 Unauthorized): check TELEGRAM_BOT_TOKEN or "
        "[telegram] token"
    )
    assert "WrongSecretTokenValue_999" not in str(info.value)
    assert table.events == []  # found at start, not at the first alert
    assert [r.method for r in fake.requests] == ["getMe"]


async def test_alert_sink_reports_alerts_left_undelivered_at_the_end(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    fake = FakeTelegram(token=TOKEN, delay=4)  # each reply takes longer than the run allows
    warnings: list[str] = []

    def alert(i: int) -> Alert:
        return Alert(
            venue="binance",
            symbol="BTCUSDT",
            ts=1_767_225_600_000_000_000 + i,
            recv_ts=1_767_225_600_000_000_000 + i,
            rule="big",
            severity="warning",
            text=f"alert {i}",
            key=f"big:{i}",
        )

    outbox_path = tmp_path / "outbox.jsonl"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(fake.serve)
            sink = AlertSink(
                TelegramSettings(TOKEN, "42", url),
                outbox_path=outbox_path,
                shutdown_timeout=5,
                warn=warnings.append,
            )
            send, receive = trio.open_memory_channel[list[Event]](1)
            async with trio.open_nursery() as inner:
                await inner.start(sink.run, receive)
                async with send:
                    await send.send([trade_event(0), alert(0)])
                    await send.send([alert(i) for i in range(1, 51)] + [trade_event(1)])
            nursery.cancel_scope.cancel()
    assert len(fake.messages) == 1
    assert warnings == [
        "50 alerts not delivered yet; they stay in the outbox and go out on the next run"
    ]
    with FileOutbox(outbox_path) as outbox:
        assert len(await outbox.pending()) == 50


def trade_event(i: int) -> Trade:
    ts = 1_767_225_600_000_000_000 + i
    return Trade("binance", "BTCUSDT", ts, ts, Decimal(1), Decimal(1), "buy", i)
