"""The configuration file."""

from __future__ import annotations

from pathlib import Path

import pytest

from irisflow._config import AlertConfig, Config, default_config_path, load_config
from irisflow._errors import UsageError

EXAMPLE = """
[database]
dsn = "postgresql://u@h/db"

[telegram]
chat = "-100123"

[venues.polygon]
api_key = "k3y"

[pipelines.big]
pipe = "filter qty * price > 100000"
description = "big trades"

[[alerts]]
name = "btc-45k"
condition = "price > 45000"
symbols = ["BTCUSDT"]
cooldown = "5m"
"""


def test_reads_every_section(tmp_path: Path) -> None:
    path = tmp_path / "irisflow.toml"
    path.write_text(EXAMPLE)
    config = load_config(path)
    assert config.database.dsn == "postgresql://u@h/db"
    assert config.telegram.chat == "-100123"
    assert config.venues["polygon"].api_key == "k3y"
    assert config.pipelines["big"].pipe == "filter qty * price > 100000"
    assert config.alerts == (
        AlertConfig(name="btc-45k", condition="price > 45000", symbols=("BTCUSDT",), cooldown="5m"),
    )
    assert config.path == path
    assert "k3y" not in repr(config)


def test_missing_default_file_is_an_empty_config(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert default_config_path(env) == tmp_path / "irisflow" / "irisflow.toml"
    assert load_config(environ=env) == Config()


def test_a_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[database\n", "is not valid TOML"),
        ("[databse]\ndsn = 'x'\n", "databse"),
        ("[[alerts]]\nname = 'a'\n", "condition"),
        (
            "[[alerts]]\nname='a'\ncondition='price > 1'\n[[alerts]]\nname='a'\ncondition='x'\n",
            "repeated: a",
        ),
    ],
)
def test_bad_files_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "irisflow.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
