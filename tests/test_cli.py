"""The command line, in process (Typer's CliRunner) and as a real subprocess."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import trio
from typer.testing import CliRunner

from irisflow._cli import app
from irisflow.testing import FakeBinance, trade

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "binance-sample.jsonl"
IRISFLOW = [sys.executable, "-m", "irisflow"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def jsonl(text: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def test_version() -> None:
    code, out, _ = run("--version")
    assert code == 0
    assert re.fullmatch(r"irisflow \d+\.\d+\.\d+\S*\n", out)


def test_python_dash_m_works() -> None:
    done = subprocess.run([*IRISFLOW, "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert done.stdout.startswith("irisflow ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["replay", str(SAMPLE), "--filter", "prise > 45000"],
            "unknown field 'prise' in filter 'prise > 45000' (did you mean 'price'?)",
        ),
        (["watch", "--venue", "binanse"], "unknown venue 'binanse' (did you mean 'binance'?)"),
        (["watch", "--channels", "kline_1min"], "valid intervals: 1s, 1m, 3m"),
        (["watch", "--symbols", "btc_usdt"], "bad binance symbol 'btc_usdt'"),
        (
            ["watch", "--filter", "bid_price > 1"],
            "belongs to quote and ticker events, which this stream does not produce",
        ),
        (["replay", "no-such-file.jsonl"], "cannot read 'no-such-file.jsonl'"),
        (["replay", str(SAMPLE), "--speed", "fast"], "bad --speed 'fast'"),
        (["watch", "--endpoint", "ws://127.0.0.1:99999"], "not a websocket URL"),
        (["watch", "--endpoint", "ws://[::1"], "not a websocket URL"),
        (["watch", "--duration", "-1"], "--duration must be a positive number of seconds"),
        (["watch", "--stale-timeout", "nan"], "--stale-timeout must be a positive number"),
    ],
)
def test_user_mistakes_are_one_clear_line_and_exit_2(args: list[str], message: str) -> None:
    code, out, err = run(*args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out
    assert err.startswith("irisflow: error:")


def test_filter_errors_show_a_caret() -> None:
    code, _, err = run("replay", str(SAMPLE), "--filter", "price >> 1")
    assert code == 2
    lines = err.splitlines()
    caret_line = next(line for line in lines if line.strip().startswith("^"))
    expr_line = lines[lines.index(caret_line) - 1]
    assert expr_line.strip() == "price >> 1"
    assert expr_line[caret_line.index("^")] == ">"


def test_unreachable_endpoint_exits_1_with_one_line() -> None:
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    code, out, err = run("watch", "--endpoint", f"ws://127.0.0.1:{port}", "--output", "jsonl")
    assert code == 1
    assert f"127.0.0.1:{port}" in err
    assert len(err.strip().splitlines()) == 1
    assert out == ""


def test_replay_sample_as_json_lines_through_a_filter() -> None:
    code, out, err = run(
        "replay", str(SAMPLE), "--filter", "qty * price > 20000", "--output", "jsonl"
    )
    assert code == 0, err
    events = jsonl(out)
    trades = [e for e in events if e["kind"] == "trade"]
    assert trades, "the sample holds large trades"
    for event in trades:
        assert next(iter(event)) == "kind"
        assert isinstance(event["price"], str)
        assert Decimal(event["qty"]) * Decimal(event["price"]) > 20000  # type: ignore[arg-type]
        assert str(event["ts"]).endswith("Z")
    assert {e["kind"] for e in events} <= {"trade", "gap"}
    assert any(e["kind"] == "gap" for e in events), "gaps pass every filter"


def test_replay_max_events() -> None:
    code, out, _ = run("replay", str(SAMPLE), "--output", "jsonl", "--max-events", "7")
    assert code == 0
    assert len(jsonl(out)) == 7


def test_replay_table_output_shows_the_latest_events_and_symbols() -> None:
    code, out, _ = run("replay", str(SAMPLE), "--output", "table", "--filter", "kind == 'trade'")
    assert code == 0
    assert "latest events" in out
    assert "BTCUSDT" in out
    assert "ETHUSDT" in out
    assert "by symbol" in out


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def sample_lines(n: int) -> list[bytes]:
    with SAMPLE.open("rb") as fh:
        return [next(fh).rstrip(b"\n") for _ in range(n)]


def test_corrupt_lines_are_skipped_and_reported_with_line_numbers(tmp_path: Path) -> None:
    good = sample_lines(6)
    lines = [good[0], b"{not json", good[1], good[2], b'{"venue":"binance"}', good[3]]
    path = write(tmp_path / "bad.jsonl", lines)
    code, out, err = run("replay", str(path), "--output", "jsonl")
    assert code == 0
    assert "skipped 2 corrupt lines" in err
    assert "line 2: invalid JSON" in err
    assert "line 5: not a recording line" in err
    assert len(jsonl(out)) >= 3


def test_strict_stops_at_the_first_corrupt_line(tmp_path: Path) -> None:
    good = sample_lines(3)
    path = write(tmp_path / "bad.jsonl", [good[0], good[1], b"{not json", good[2]])
    code, _, err = run("replay", str(path), "--output", "jsonl", "--strict")
    assert code == 2
    assert "line 3: invalid JSON" in err


def test_a_frame_that_does_not_decode_is_reported_by_line(tmp_path: Path) -> None:
    good = sample_lines(2)
    broken = orjson.dumps(
        {
            "venue": "binance",
            "recv_ts": 1,
            "frame": '{"stream":"btcusdt@trade","data":{"e":"trade"}}',
        }
    )
    path = write(tmp_path / "bad.jsonl", [good[0], broken, good[1]])
    code, _, err = run("replay", str(path), "--output", "none")
    assert code == 0
    assert "line 2: binance: missing field @ $.data.s" in err


def test_bare_frames_need_a_venue(tmp_path: Path) -> None:
    frames = [orjson.loads(line)["frame"].encode() for line in sample_lines(20)]
    path = write(tmp_path / "frames.txt", frames)
    code, _, err = run("replay", str(path))
    assert code == 2
    assert "pass --venue" in err
    code, out, err = run("replay", str(path), "--venue", "binance", "--output", "jsonl")
    assert code == 0, err
    assert len(jsonl(out)) > 0


def test_bare_frames_keep_their_line_numbers_across_blank_lines(tmp_path: Path) -> None:
    frames = [orjson.loads(line)["frame"].encode() for line in sample_lines(3)]
    path = write(tmp_path / "frames.txt", [frames[0], b"", frames[1], b"{broken", frames[2]])
    code, out, err = run("replay", str(path), "--venue", "binance", "--output", "jsonl")
    assert code == 0
    assert "line 4: binance: invalid JSON" in err
    assert len(jsonl(out)) == 3


def test_venues_lists_channels_and_fields() -> None:
    code, out, _ = run("venues")
    assert code == 0
    assert "binance" in out
    assert "kline_<interval>" in out
    code, out, _ = run("venues", "binance")
    assert code == 0
    assert "trade_id" in out
    assert "bid_price" in out
    assert "streams" in out


def test_a_closed_stdout_ends_quietly() -> None:
    head = subprocess.run(
        f"{shlex.join([*IRISFLOW, 'replay', str(SAMPLE), '--output', 'jsonl'])} | head -3",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
        executable="/bin/bash",
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert head.returncode == 0
    assert len(head.stdout.splitlines()) == 3
    status = subprocess.run(
        f"set -o pipefail; {shlex.join([*IRISFLOW, 'replay', str(SAMPLE)])} | head -1 >/dev/null",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
        executable="/bin/bash",
    )
    assert status.returncode == 0, status.stderr
    assert status.stderr == ""
    # Paced output (as live): the reader leaves while irisflow is still producing.
    paced = subprocess.run(
        f"set -o pipefail; {shlex.join([*IRISFLOW, 'replay', str(SAMPLE), '--speed', '20x'])}"
        " | head -2 >/dev/null",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
        executable="/bin/bash",
    )
    assert paced.returncode == 0, paced.stderr
    assert paced.stderr == ""


def test_the_readme_main_command_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^python3 -m venv .*$", readme, flags=re.MULTILINE)
    assert len(commands) == 2, "the README holds exactly two set-up commands"
    main_job = commands[0].split("&& .venv/bin/")[-1]
    assert main_job.startswith("irisflow replay examples/binance-sample.jsonl")
    done = subprocess.run(
        [*IRISFLOW, *shlex.split(main_job)[1:], "--output", "jsonl"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert jsonl(done.stdout.decode())
    assert "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    server = FakeBinance()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


async def test_watch_subprocess_records_and_stops_cleanly_on_sigint(
    fake: FakeBinance, tmp_path: Path
) -> None:
    recording = tmp_path / "live.jsonl"
    args = [
        *IRISFLOW,
        "watch",
        "--endpoint",
        fake.url,
        "--symbols",
        "BTCUSDT",
        "--filter",
        "price > 45000",
        "--record",
        str(recording),
    ]
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            await fake.wait_subscribed("btcusdt@trade")
            for n in range(10):
                price = "44000" if n % 2 else "46000.5"
                payload = trade(
                    "BTCUSDT",
                    price=price,
                    qty="1",
                    trade_id=n,
                    time_ms=1767225600000 + n,
                    buyer_maker=False,
                )
                await fake.publish("btcusdt@trade", payload)
            received = b""
            while received.count(b"\n") < 5:
                received += await proc.stdout.receive_some()
            proc.send_signal(signal.SIGINT)
            rest = b""
            while chunk := await proc.stdout.receive_some():
                rest += chunk
            err = b""
            while chunk := await proc.stderr.receive_some():
                err += chunk
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await proc.stdout.aclose()
            await proc.stderr.aclose()
        assert proc.returncode == 0, err
    events = jsonl((received + rest).decode())
    assert [e["trade_id"] for e in events] == [0, 2, 4, 6, 8]  # piped: JSON lines
    assert b"Traceback" not in err
    # The recording replays to the same output.
    replayed = await trio.run_process(
        [*IRISFLOW, "replay", str(recording), "--filter", "price > 45000", "--output", "jsonl"],
        capture_stdout=True,
        capture_stderr=True,
    )
    assert jsonl(replayed.stdout.decode()) == events


async def test_a_second_ctrl_c_quits_at_once_with_130() -> None:
    # Nobody reads stdout after the first chunk: the output blocks once the pipe is full, so
    # the first Ctrl-C's drain cannot finish; the second one must still end the process.
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(
            [*IRISFLOW, "replay", str(SAMPLE), "--output", "jsonl"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            await proc.stdout.receive_some()  # running, signal handlers in place
            proc.send_signal(signal.SIGINT)
            err = b""
            while b"Ctrl-C again" not in err:
                err += await proc.stderr.receive_some()
            proc.send_signal(signal.SIGINT)
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await proc.stdout.aclose()
            await proc.stderr.aclose()
    assert code == 130


async def test_record_command_and_duration(fake: FakeBinance, tmp_path: Path) -> None:
    recording = tmp_path / "rec.jsonl"
    args = [*IRISFLOW, "record", str(recording), "--endpoint", fake.url, "--duration", "2"]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            result: list[subprocess.CompletedProcess[bytes]] = []

            async def run() -> None:
                result.append(
                    await trio.run_process(args, capture_stdout=True, capture_stderr=True)
                )

            nursery.start_soon(run)
            await fake.wait_subscribed("btcusdt@trade")
            payload = trade(
                "BTCUSDT", price="1", qty="1", trade_id=1, time_ms=1767225600000, buyer_maker=True
            )
            await fake.publish("btcusdt@trade", payload)
    (done,) = result
    assert done.stdout == b""
    assert b"recorded 2 frames" in done.stderr  # the subscription ack and the trade
    lines = [orjson.loads(line) for line in recording.read_bytes().splitlines()]
    assert [line["venue"] for line in lines] == ["binance", "binance"]
    assert orjson.loads(lines[1]["frame"])["data"]["t"] == 1


def test_messages_of_unknown_kinds_are_counted_in_the_summary(tmp_path: Path) -> None:
    path = write(
        tmp_path / "polygon.txt",
        [
            b'[{"ev":"FMV","fmv":1.5,"sym":"AAPL","t":1}]',
            b'[{"ev":"XT","pair":"BTC-USD","p":1,"s":1,"t":1},{"ev":"LULD","T":"AAPL"}]',
        ],
    )
    code, out, err = run("replay", str(path), "--venue", "polygon", "--output", "jsonl")
    assert code == 0, err
    assert [e["kind"] for e in jsonl(out)] == ["trade"]
    assert "polygon: ignored 2 messages of kinds irisflow does not decode (FMV 1, LULD 1)" in err


@pytest.mark.parametrize("name", ["minute-bars", "big-trades"])
def test_the_example_pipelines_run(name: str) -> None:
    config = ROOT / "examples" / "irisflow.toml"
    code, out, err = run(
        "replay", str(SAMPLE), "--config", str(config), "--pipeline", name, "--output", "jsonl"
    )
    assert code == 0, err
    events = [e for e in jsonl(out) if e["kind"] not in ("gap", "alert")]
    assert events
    if name == "minute-bars":
        assert {e["kind"] for e in events} == {"window"}
        assert "can never fire on this stream" in err  # a price rule, on window results
    else:
        assert all(Decimal(str(e["notional"])) > 20000 for e in events)
        assert any(e["kind"] == "alert" for e in jsonl(out))  # the config's rule fired
    code, out, _ = run("alerts", "list", "--config", str(config))
    assert "btc-dip" in out


def test_a_line_of_an_unknown_venue_is_a_corrupt_line(tmp_path: Path) -> None:
    good = sample_lines(3)
    path = write(tmp_path / "r.jsonl", [good[0], good[1].replace(b'"binance"', b'"nope"'), good[2]])
    code, out, err = run("replay", str(path), "--output", "jsonl")
    assert code == 0
    assert "line 2: unknown venue 'nope'" in err
    assert len(jsonl(out)) >= 1


# -- several files -----------------------------------------------------------------------------


def split_sample(directory: Path) -> tuple[Path, Path, Path]:
    """The sample as two recordings (BTCUSDT frames, the rest) and the two merged by hand."""
    lines = SAMPLE.read_bytes().splitlines()
    btc = [line for line in lines if b"btcusdt@" in line and b'"gap"' not in line]
    rest = [line for line in lines if line not in btc]
    by_hand = sorted(btc + rest, key=lambda line: orjson.loads(line)["recv_ts"])  # stable
    return (
        write(directory / "btc.jsonl", btc),
        write(directory / "rest.jsonl", rest),
        write(directory / "both.jsonl", by_hand),
    )


@pytest.mark.parametrize("pipe", [[], ["--pipe", "by symbol | window 1m | agg vwap, count"]])
def test_replaying_several_files_is_replaying_them_merged(tmp_path: Path, pipe: list[str]) -> None:
    btc, rest, both = split_sample(tmp_path)
    code, merged, err = run("replay", str(btc), str(rest), *pipe, "--output", "jsonl")
    assert code == 0, err
    code, by_hand, err = run("replay", str(both), *pipe, "--output", "jsonl")
    assert code == 0, err
    assert merged == by_hand
    assert len(jsonl(merged)) > (1 if pipe else 6000)


def test_replay_of_two_recordings_as_a_subprocess(tmp_path: Path) -> None:
    split_sample(tmp_path)
    trades = ["--filter", "kind == 'trade'"]
    done = subprocess.run(
        [*IRISFLOW, "replay", "btc.jsonl", "rest.jsonl", *trades],
        cwd=tmp_path,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    _, by_hand, _ = run("replay", str(tmp_path / "both.jsonl"), *trades, "--output", "jsonl")
    assert done.stdout.decode() == by_hand


@pytest.mark.parametrize("missing", ["missing.jsonl", "a-directory"])
def test_a_missing_second_file_is_one_line_before_any_output(
    tmp_path: Path, missing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "good.jsonl", sample_lines(50))
    (tmp_path / "a-directory").mkdir()
    code, out, err = run("replay", "good.jsonl", missing, "--output", "jsonl")
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith(f"irisflow: error: cannot read {missing!r}: ")


def test_problems_of_several_files_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    good = sample_lines(6)
    write(tmp_path / "a.jsonl", good[:3])
    write(tmp_path / "b.jsonl", [good[3], b"{not json", good[4], b'{"venue":"binance"}'])
    code, out, err = run("replay", "a.jsonl", "b.jsonl", "--output", "jsonl")
    assert code == 0
    assert "skipped 2 corrupt lines" in err
    assert "b.jsonl line 2: invalid JSON" in err
    assert "b.jsonl line 4: not a recording line" in err
    assert len(jsonl(out)) >= 4
    code, _, err = run("replay", "a.jsonl", "b.jsonl", "--output", "jsonl", "--strict")
    assert code == 2
    assert "b.jsonl line 2: invalid JSON" in err


def test_several_bare_files_play_one_after_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    trades = [line for line in SAMPLE.read_bytes().splitlines() if b"@trade" in line][:6]
    frames = [orjson.loads(line)["frame"].encode() for line in trades]
    write(tmp_path / "one.txt", frames[:3])
    write(tmp_path / "two.txt", [frames[3], b"{broken", *frames[4:]])
    code, out, err = run("replay", "two.txt", "one.txt", "--venue", "binance", "--output", "jsonl")
    assert code == 0, err
    ids = [orjson.loads(frame)["data"]["t"] for frame in frames]
    assert [e["trade_id"] for e in jsonl(out)] == ids[3:] + ids[:3]
    assert "two.txt line 2: binance: invalid JSON" in err
    # A recording and bare frames: nothing to merge the frames by.
    write(tmp_path / "r.jsonl", trades)
    code, out, err = run("replay", "r.jsonl", "one.txt", "--venue", "binance")
    assert code == 2
    assert out == ""
    assert err.startswith(
        "irisflow: error: cannot replay bare frames ('one.txt') together with recordings"
        " ('r.jsonl')"
    )
