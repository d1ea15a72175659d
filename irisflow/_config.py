"""The configuration file, ``irisflow.toml``.

Looked up at ``--config FILE``, else ``$IRISFLOW_CONFIG``, else ``irisflow.toml`` in the user's
config directory (``$XDG_CONFIG_HOME/irisflow/`` or ``~/.config/irisflow/``). Every section is
optional::

    [database]
    dsn = "postgresql://irisflow@localhost/market"

    [telegram]
    token = "123:abc"          # better: the TELEGRAM_BOT_TOKEN environment variable
    chat = "-1001234567890"

    [venues.polygon]
    api_key = "..."            # better: POLYGON_API_KEY

    [pipelines.big-trades]
    pipe = "filter qty * price > 100000 | by symbol | window 1m | agg count, vwap"

    [[alerts]]
    name = "btc-45k"
    condition = "price > 45000"
    symbols = ["BTCUSDT"]
    cooldown = "5m"

Environment variables win over the file for secrets, so a shared file need not hold any.
One explicit cattrs converter reads it; an unknown key is an error that names its place.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import attrs
import cattrs

from ._errors import UsageError

__all__ = [
    "AlertConfig",
    "Config",
    "DatabaseConfig",
    "PipelineConfig",
    "TelegramConfig",
    "VenueConfig",
    "default_config_path",
    "load_config",
    "make_converter",
]


@attrs.frozen
class DatabaseConfig:
    """``[database]``."""

    dsn: str | None = None
    """PostgreSQL connection string; ``IRISFLOW_DATABASE_URL`` and ``DATABASE_URL`` win."""


@attrs.frozen
class TelegramConfig:
    """``[telegram]``."""

    token: str | None = attrs.field(default=None, repr=False)
    """Bot token; ``TELEGRAM_BOT_TOKEN`` wins. Never printed."""
    chat: str | None = None
    """Default chat id for alerts; ``TELEGRAM_CHAT_ID`` wins."""
    api_url: str | None = None
    """Another Bot API server (a local one, or a test double)."""


@attrs.frozen
class VenueConfig:
    """``[venues.NAME]``: credentials and defaults for one venue."""

    api_key: str | None = attrs.field(default=None, repr=False)
    """API key (Polygon/Massive, Alchemy); the venue's environment variable wins."""
    secret: str | None = attrs.field(default=None, repr=False)
    """Webhook secret (Moralis Streams); the venue's environment variable wins."""
    endpoint: str | None = None
    """Default ``--endpoint`` for this venue."""


@attrs.frozen
class PipelineConfig:
    """``[pipelines.NAME]``: a named pipeline, run with ``--pipeline NAME``."""

    pipe: str
    """The pipeline in ``--pipe`` syntax."""
    description: str = ""
    """One line on what it is for."""


@attrs.frozen
class AlertConfig:
    """``[[alerts]]``: one alert rule (see ``irisflow._rules`` for what each field means)."""

    name: str
    """Unique rule name, shown in every alert it fires."""
    condition: str = ""
    """A filter expression over events or window results. For ``threshold`` rules it is what
    fires, and required; for the other kinds it narrows the events they look at (default
    ``'true'``: all)."""
    venues: tuple[str, ...] = ()
    """Only events of these venues (empty: all)."""
    symbols: tuple[str, ...] = ()
    """Only events of these symbols (empty: all)."""
    cooldown: str | None = None
    """Least time between two alerts of this rule for one venue and symbol, e.g. ``'5m'``;
    firings in between are folded into one digest alert when it ends."""
    rearm: str | None = None
    """What must happen before the rule can fire again (hysteresis): a condition such as
    ``'price < 44500'``, or a band such as ``'500'`` or ``'1%'`` that the value must move back
    past. Default: the condition is false again."""
    message: str | None = None
    """Message template with ``{field}`` placeholders, e.g. ``'{symbol} at {price}'``."""
    severity: str = "warning"
    """``info``, ``warning`` or ``critical``."""
    targets: tuple[str, ...] = ()
    """Telegram chat ids (empty: the default chat)."""
    kind: str = "threshold"
    """Rule kind: ``threshold``, ``change``, ``volume_spike``, ``whale`` or ``rsi``."""
    window: str | None = None
    """Time window for ``change`` and ``volume_spike`` rules, e.g. ``'5m'``."""
    threshold: str | None = None
    """The kind's threshold, as text: percent for ``change`` (``'3'`` either way, ``'+3'``
    up, ``'-3'`` down), standard deviations for ``volume_spike`` (default ``'3'``), tokens or
    ETH for ``whale``, the band ``'30..70'`` for ``rsi`` (the default)."""
    value: str | None = None
    """The value expression ``change`` follows (default: price, close or last) or
    ``volume_spike`` sums (default: ``qty``)."""
    period: int | None = None
    """RSI period in candles (default 14), or trailing windows for ``volume_spike`` (20)."""

    def __attrs_post_init__(self) -> None:
        if self.condition.strip():
            return
        if self.kind.strip().lower() == "threshold":
            raise UsageError(
                f"alert {self.name!r}: a threshold alert needs a condition, e.g. "
                "condition = 'price > 45000' (other kinds look at every event without one)"
            )
        object.__setattr__(self, "condition", "true")  # frozen: set once, while building


@attrs.frozen
class Config:
    """The whole file."""

    database: DatabaseConfig = DatabaseConfig()
    telegram: TelegramConfig = TelegramConfig()
    venues: dict[str, VenueConfig] = attrs.field(factory=dict)
    pipelines: dict[str, PipelineConfig] = attrs.field(factory=dict)
    alerts: tuple[AlertConfig, ...] = ()
    path: Path | None = None
    """Where it was read from (None: no file)."""


def make_converter() -> cattrs.Converter:
    """The converter for ``irisflow.toml``: unknown keys are errors."""
    return cattrs.Converter(forbid_extra_keys=True)


_CONVERTER = make_converter()


def default_config_path(environ: dict[str, str] | None = None) -> Path:
    """Where irisflow looks for its config file when ``--config`` is not given."""
    env = os.environ if environ is None else environ
    if env.get("IRISFLOW_CONFIG"):
        return Path(env["IRISFLOW_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "irisflow" / "irisflow.toml"


def load_config(path: Path | None = None, *, environ: dict[str, str] | None = None) -> Config:
    """Read the config file; a missing default file is an empty config.

    Args:
        path: ``--config FILE``; a file named here must exist.

    Raises:
        UsageError: the file is missing (when named), unreadable, not TOML, or has unknown keys
            or wrong types; the message names the place.
    """
    explicit = path is not None
    target = path if path is not None else default_config_path(environ)
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"config file {str(target)!r} does not exist") from None
        return Config()
    except OSError as exc:
        raise UsageError(f"cannot read config file {str(target)!r}: {exc.strerror}") from exc
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {str(target)!r} is not valid TOML: {exc}") from exc
    try:
        config = _CONVERTER.structure(data, Config)
    except Exception as exc:  # cattrs raises exception groups; say where, in one line
        own = _own_error(exc)
        if own is not None:
            raise UsageError(f"config file {str(target)!r}: {own}") from exc
        details = "; ".join(cattrs.transform_error(exc, path="$")) if _is_cattrs(exc) else str(exc)
        raise UsageError(f"config file {str(target)!r}: {details}") from exc
    names = [alert.name for alert in config.alerts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(
            f"config file {str(target)!r}: alert names must be unique; repeated: "
            + ", ".join(duplicates)
        )
    return attrs.evolve(config, path=target)


def _own_error(exc: BaseException) -> str | None:
    """The message of an irisflow error raised inside a cattrs error group, if any."""
    from ._errors import IrisflowError

    if isinstance(exc, IrisflowError):
        return str(exc)
    for sub in getattr(exc, "exceptions", ()):
        found = _own_error(sub)
        if found is not None:
            return found
    return None


def _is_cattrs(exc: BaseException) -> bool:
    return isinstance(exc, cattrs.BaseValidationError | cattrs.ForbiddenExtraKeysError)
