"""The CLI's pipeline, alert, storage and saved-filter options, end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import trio
from fix_db import fetch_one
from typer.testing import CliRunner

from irisflow._cli import _optional_db_value, app
from irisflow.testing import FakeTelegram

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "binance-sample.jsonl"
IRISFLOW = [sys.executable, "-m", "irisflow"]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No user config, saved-filter file, outbox or database from the machine leaks in.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for name in ("IRISFLOW_DATABASE_URL", "DATABASE_URL", "TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def jsonl(text: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def test_pipe_windows_the_replay() -> None:
    code, out, err = run(
        "replay",
        str(SAMPLE),
        "--filter",
        "kind == 'trade'",
        "--pipe",
        "by symbol | window 1m | agg vwap, ohlc(price), count, sum(qty)",
        "--output",
        "jsonl",
    )
    assert code == 0, err
    windows = [e for e in jsonl(out) if e["kind"] == "window"]
    assert {w["symbol"] for w in windows} == {"BTCUSDT", "ETHUSDT"}
    for w in windows:
        assert w["low"] <= w["vwap"] <= w["high"] or not w["complete"]  # type: ignore[operator]


def test_a_bad_pipe_is_a_usage_error_with_a_caret() -> None:
    code, _, err = run("replay", str(SAMPLE), "--pipe", "by symbol | windw 1m")
    assert code == 2
    assert "windw" in err
    assert "did you mean 'window'" in err
    assert "^" in err


def test_named_pipeline_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / "irisflow.toml"
    config.write_text(
        "[pipelines.minute]\npipe = \"filter kind == 'trade' | window 1m | agg count\"\n"
    )
    code, out, err = run(
        "replay", str(SAMPLE), "--pipeline", "minute", "--config", str(config), "--output", "jsonl"
    )
    assert code == 0, err
    assert [e["kind"] for e in jsonl(out) if e["kind"] != "gap"][:3] == ["window"] * 3
    code, _, err = run("replay", str(SAMPLE), "--pipeline", "minut", "--config", str(config))
    assert code == 2
    assert "minute" in err


def test_alerts_come_out_as_events() -> None:
    code, out, err = run(
        "replay",
        str(SAMPLE),
        "--filter",
        "kind == 'trade'",
        "--alert",
        "price < 93500; cooldown=10m",
        "--output",
        "jsonl",
    )
    assert code == 0, err
    alerts = [e for e in jsonl(out) if e["kind"] == "alert"]
    assert alerts, "the sample dips under 93500"
    assert len({a["symbol"] for a in alerts}) == len(alerts)  # fires on crossing, not per trade


def test_alerts_list_shows_rules(tmp_path: Path) -> None:
    config = tmp_path / "irisflow.toml"
    config.write_text(
        '[[alerts]]\nname = "dip"\ncondition = "price < 90000"\ncooldown = "5m"\n'
        'symbols = ["BTCUSDT"]\n'
    )
    code, out, err = run("alerts", "list", "--config", str(config), "--alert", "qty > 5")
    assert code == 0, err
    rows = jsonl(out)
    assert [r["rule"] for r in rows][-1] == "dip"
    assert any(r["condition"] == "qty > 5" for r in rows)


def test_alerts_test_without_a_token_says_what_to_set() -> None:
    code, _, err = run("alerts", "test", "--chat", "42")
    assert code == 2
    assert "TELEGRAM_BOT_TOKEN" in err


@pytest.fixture
async def telegram() -> AsyncIterator[tuple[FakeTelegram, str]]:
    fake = FakeTelegram()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(fake.serve)
        yield fake, url
        nursery.cancel_scope.cancel()


async def test_alerts_reach_telegram_and_the_token_stays_secret(
    telegram: tuple[FakeTelegram, str],
) -> None:
    fake, url = telegram
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_CHAT_ID": "4242"}
    with trio.fail_after(30):
        test = await trio.run_process(
            [*IRISFLOW, "alerts", "test", "--telegram-api-url", url],
            capture_stdout=True,
            capture_stderr=True,
            env=env,
        )
        done = await trio.run_process(
            [
                *IRISFLOW,
                "replay",
                str(SAMPLE),
                "--filter",
                "kind == 'trade'",
                "--alert",
                "price < 93500; cooldown=10m",
                "--telegram-api-url",
                url,
                "--output",
                "none",
            ],
            capture_stdout=True,
            capture_stderr=True,
            env=env,
        )
    assert b"sent a test message to chat 4242" in test.stdout
    texts = [m.text for m in fake.messages]
    assert len(texts) >= 2  # the test message and at least one alert
    assert all(m.chat_id == "4242" for m in fake.messages)
    for output in (test.stdout, test.stderr, done.stdout, done.stderr):
        assert fake.token.encode() not in output


@pytest.mark.postgres
def test_migrate_then_store_a_replay_twice_without_duplicates(empty_db: str) -> None:
    code, out, err = run("migrate", "--dsn", empty_db, "--dry-run")
    assert code == 0, err
    assert "0001_core" in out
    code, out, err = run("migrate", "--dsn", empty_db)
    assert code == 0, err
    assert "plain PostgreSQL mode" in out
    code, out, _ = run("migrate", "--dsn", empty_db, "--status")
    assert "up to date" in out
    for _ in range(2):
        code, _, err = run(
            "replay",
            str(SAMPLE),
            "--filter",
            "kind == 'trade'",
            "--db",
            empty_db,
            "--output",
            "none",
        )
        assert code == 0, err
    trades = fetch_one(empty_db, "select count(*) from irisflow.trades")
    code, out, _ = run("replay", str(SAMPLE), "--filter", "kind == 'trade'", "--output", "jsonl")
    assert trades == len(jsonl(out)) - sum(e["kind"] == "gap" for e in jsonl(out))


def test_db_without_a_database_is_one_clear_line() -> None:
    code, _, err = run("replay", str(SAMPLE), "--db=", "--output", "none")
    assert code == 2
    assert "no database configured" in err
    assert len(err.strip().splitlines()) == 1


def test_a_bare_db_flag_means_the_configured_database() -> None:
    assert _optional_db_value(["replay", "f.jsonl", "--db"]) == ["replay", "f.jsonl", "--db="]
    assert _optional_db_value(["replay", "--db", "f.jsonl"]) == ["replay", "--db=", "f.jsonl"]
    dsn = "postgresql://u@h/db"
    assert _optional_db_value(["watch", "--db", dsn]) == ["watch", "--db", dsn]
    assert _optional_db_value(["replay", "f", "--db", "--filter=price>1"]) == [
        "replay",
        "f",
        "--db=",
        "--filter=price>1",
    ]


def test_a_bad_store_is_a_usage_error_even_without_db() -> None:
    code, _, err = run("replay", str(SAMPLE), "--store", "bogus")
    assert code == 2
    assert "bad --store 'bogus'" in err


def test_saved_filters_in_the_file_store(tmp_path: Path) -> None:
    code, out, err = run("filters", "add", "big", "qty * price > 20000", "--venue", "binance")
    assert code == 0, err
    code, out, _ = run("filters", "list")
    assert [r["name"] for r in jsonl(out)] == ["big"]
    code, _, err = run("filters", "add", "bad", "prise > 1")
    assert code == 2
    assert "did you mean 'price'" in err
    code, out, err = run("replay", str(SAMPLE), "--saved", "big", "--output", "jsonl")
    assert code == 0, err
    trades = [e for e in jsonl(out) if e["kind"] == "trade"]
    assert trades
    assert all(float(e["qty"]) * float(e["price"]) > 19999 for e in trades)  # type: ignore[arg-type]
    code, _, err = run("replay", str(SAMPLE), "--saved", "bgi")
    assert code == 2
    assert "did you mean 'big'" in err
    code, _, _ = run("filters", "rm", "big")
    assert code == 0
    code, out, _ = run("filters", "list")
    assert jsonl(out) == []


def test_subprocess_db_flag_alone_uses_the_configured_database(tmp_path: Path) -> None:
    done = subprocess.run(
        [*IRISFLOW, "replay", str(SAMPLE), "--db", "--output", "none"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path)},
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "no database configured" in done.stderr


def test_the_table_has_an_alert_panel_and_readable_windows() -> None:
    code, out, err = run(
        "replay",
        str(SAMPLE),
        "--filter",
        "kind == 'trade'",
        "--pipe",
        "by symbol | window 1m | agg vwap",
        "--alert",
        "vwap < 93500",
        "--output",
        "table",
    )
    assert code == 0, err
    assert "alerts" in out
    assert "vwap < 93500" in out  # the rule's default message names its condition
    assert "start 00:0" in out  # window times shown as times, not integers


@pytest.mark.postgres
def test_the_table_shows_the_database_state(migrated_db: str) -> None:
    code, out, err = run(
        "replay",
        str(SAMPLE),
        "--filter",
        "kind == 'trade'",
        "--db",
        migrated_db,
        "--output",
        "table",
    )
    assert code == 0, err
    assert "db ok" in out
