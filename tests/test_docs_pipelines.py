"""Every example in docs/pipelines.md runs, and prints what the page says it prints.

Python blocks run as scripts in a subprocess from the repository root (never ``exec``); a
``text`` block right after one is its expected output. Console commands are built with the
same ``build_pipeline`` the CLI uses, and run through the CLI once it has ``--pipe``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from irisflow._cli import _replay_kinds, app
from irisflow._config import load_config
from irisflow._errors import UsageError
from irisflow._pipe import build_pipeline, parse_pipe

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "pipelines.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def fenced() -> list[tuple[str, str, int, int]]:
    text = PAGE.read_text()
    return [(m.group(1), m.group(2), m.start(), m.end()) for m in FENCE.finditer(text)]


def examples() -> list[tuple[str, str | None]]:
    """``(code, expected output or None)`` for every python block."""
    text = PAGE.read_text()
    blocks = fenced()
    out: list[tuple[str, str | None]] = []
    for index, (lang, body, _, end) in enumerate(blocks):
        if lang != "python":
            continue
        expected = None
        if index + 1 < len(blocks):
            nxt_lang, nxt_body, nxt_start, _ = blocks[index + 1]
            if nxt_lang == "text" and not text[end:nxt_start].strip():
                expected = nxt_body
        out.append((body, expected))
    return out


def commands() -> list[list[str]]:
    lines = [
        line.removeprefix("$ ")
        for lang, body, _, _ in fenced()
        if lang == "console"
        for line in body.splitlines()
        if line.startswith("$ irisflow ")
    ]
    return [shlex.split(line)[1:] for line in lines]


def options(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == name]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    (toml,) = [body for lang, body, _, _ in fenced() if lang == "toml"]
    path = tmp_path / "irisflow.toml"
    path.write_text(toml)
    return path


def test_the_page_has_examples() -> None:
    assert len(examples()) >= 8
    assert all(expected is not None for _, expected in examples())
    assert len(commands()) >= 4


@pytest.mark.parametrize("index", range(len(examples())))
def test_python_example_runs_and_prints_what_the_page_shows(index: int, tmp_path: Path) -> None:
    code, expected = examples()[index]
    script = tmp_path / f"example_{index}.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    if expected is not None:
        assert done.stdout == expected


@pytest.mark.parametrize("args", commands(), ids=lambda a: " ".join(a)[:60])
def test_console_pipelines_build(args: list[str], config_file: Path) -> None:
    config = load_config(config_file) if "--config" in args else None
    (pipeline,) = options(args, "--pipeline") or [None]
    built = build_pipeline(
        options(args, "--filter"),
        options(args, "--pipe"),
        _replay_kinds(None),
        config=config,
        pipeline=pipeline,
    )
    assert built.steps


@pytest.mark.parametrize("args", commands(), ids=lambda a: " ".join(a)[:60])
def test_console_commands_run(args: list[str], config_file: Path) -> None:
    args = [str(config_file) if a == "irisflow.toml" else a for a in args]
    result = CliRunner().invoke(app, [*args, "--output", "jsonl"])
    assert result.exit_code == 0, result.stderr
    assert '"kind"' in result.stdout


def test_the_error_shown_on_the_page_is_the_real_one() -> None:
    (shown,) = [
        body for lang, body, _, _ in fenced() if lang == "text" and "irisflow: error:" in body
    ]
    message = shown.removeprefix("irisflow: error: ").rstrip("\n")
    pipe = message.splitlines()[1].strip()
    with pytest.raises(UsageError) as info:
        parse_pipe(pipe, _replay_kinds(None))
    assert str(info.value) == message
