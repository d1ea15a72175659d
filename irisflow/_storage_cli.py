"""What the storage commands do, as plain functions the Typer commands call.

Each function takes already-parsed values, does the work and returns data or lines of text;
printing (and the choice between a table and JSON lines) is ``_render``'s. Passwords never
appear in what they return: DSNs are shown through :func:`~irisflow._migrate.redact_dsn`.

The blocking ones (``migrate_command``, ``filters_*``) are called outside Trio: the
``filters_*`` functions run one ``trio.run`` each.

Which database: :func:`configured_dsn` applies the precedence ``--db/--dsn`` value, then
``IRISFLOW_DATABASE_URL``, ``DATABASE_URL``, the same keys in ``./.env``, then the config
file's ``[database] dsn``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from ._config import Config
from ._database import redact_dsn, resolve_dsn
from ._errors import UsageError
from ._events import Event
from ._migrate import migrate, migration_status
from ._run import Sink
from ._saved import SavedFilterStep, load_saved_step, store_for
from ._saved_filter import FilterStore, SavedFilter, saved_filter
from ._saved_watch import watch_saved
from .sinks.postgres import PostgresSink

__all__ = [
    "configured_dsn",
    "filters_add",
    "filters_list",
    "filters_rm",
    "migrate_command",
    "require_dsn",
    "saved_filters_for_run",
    "store_sinks",
]


def configured_dsn(
    cli_value: str | None,
    config: Config,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str | None:
    """The database to use, or ``None`` when none is configured anywhere.

    Precedence: ``cli_value``, ``IRISFLOW_DATABASE_URL``, ``DATABASE_URL``, ``./.env``, then
    ``config.database.dsn``.
    """
    try:
        return resolve_dsn(cli_value, environ=environ, cwd=cwd)
    except UsageError:
        return config.database.dsn or None


def require_dsn(
    cli_value: str | None,
    config: Config,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """Like :func:`configured_dsn`, for commands that need a database.

    Raises:
        UsageError: no database is configured; the message lists every way to name one.
    """
    dsn = configured_dsn(cli_value, config, environ=environ, cwd=cwd)
    if dsn is None:
        raise UsageError(
            "no database configured: pass --dsn (or --db DSN), set IRISFLOW_DATABASE_URL "
            "(DATABASE_URL and a ./.env file are read too), or set [database] dsn in the "
            "config file"
        )
    return dsn


def migrate_command(
    dsn: str,
    *,
    to: int | None = None,
    status: bool = False,
    dry_run: bool = False,
    directory: Path | None = None,
) -> list[str]:
    """``irisflow migrate``: apply (or with ``dry_run`` plan) migrations, or show ``status``.

    Returns:
        Lines to show, the first naming the database with its password redacted.

    Raises:
        UsageError: ``status`` combined with ``to``/``dry_run``, a bad ``to``, a bad DSN,
            bad or edited migration files.
        DatabaseError: the database cannot be reached, or a migration failed.
    """
    if status:
        if to is not None or dry_run:
            raise UsageError("--status only shows where things stand: drop --to and --dry-run")
        states = migration_status(dsn, directory=directory)
        lines = [f"database {redact_dsn(dsn)}"]
        width = max((len(s.name) for s in states), default=0)
        for s in states:
            when = f" {s.applied_at:%Y-%m-%d %H:%M:%S%z}" if s.applied_at is not None else ""
            needs = (
                f" (needs {', '.join(s.requires)})" if s.requires and s.state != "applied" else ""
            )
            lines.append(f"{s.name:<{width}}  {s.state}{when}{needs}")
        pending = sum(s.state == "pending" for s in states)
        if not states:
            lines.append("no migration files")
        elif pending:
            lines.append(f"{pending} pending: run `irisflow migrate` to apply")
        else:
            lines.append("the schema is up to date")
        return lines
    return migrate(dsn, to=to, dry_run=dry_run, directory=directory).lines()


def _run_store(
    dsn: str | None,
    config_dir: Path | None,
    work: Callable[[FilterStore], Awaitable[Any]],
) -> Any:
    store = store_for(dsn, config_dir=config_dir)
    return trio.run(work, store)


def filters_add(
    dsn: str | None,
    name: str,
    expr: str,
    *,
    venues: Sequence[str] = (),
    symbols: Sequence[str] = (),
    config_dir: Path | None = None,
) -> list[str]:
    """``irisflow filters add NAME EXPR [--venue V]... [--symbols S,...]``.

    The filter goes to the database when ``dsn`` is set, else to the filters file.

    Returns:
        Lines to show: what was saved where, and what it replaced if the name was taken.

    Raises:
        UsageError: a bad name, an unknown venue, or an unusable store.
        FilterError: the expression does not compile.
        DatabaseError: the database cannot be reached.
    """
    candidate = saved_filter(name, expr, venues, symbols)  # checked before touching the store

    async def work(store: FilterStore) -> list[str]:
        result = await store.add(candidate)
        saved = result.saved
        lines = [f"saved filter {saved.name!r} in {store.where}: {saved.expr}"]
        lines.append(f"applies to {saved.scope()}")
        if result.replaced is not None:
            old = result.replaced
            lines.append(f"replaced the previous {old.name!r}: {old.expr} ({old.scope()})")
        return lines

    lines: list[str] = _run_store(dsn, config_dir, work)
    return lines


def _row(f: SavedFilter) -> dict[str, Any]:
    return {
        "name": f.name,
        "expr": f.expr,
        "venues": list(f.venues),
        "symbols": list(f.symbols),
        "updated_at": f.updated_at.isoformat() if f.updated_at is not None else None,
    }


def filters_list(dsn: str | None, *, config_dir: Path | None = None) -> list[dict[str, Any]]:
    """``irisflow filters list``: one JSON-ready row per saved filter, by name.

    Rows have ``name``, ``expr``, ``venues`` and ``symbols`` (lists; empty means all) and
    ``updated_at`` (ISO-8601 text or ``None``).
    """

    async def work(store: FilterStore) -> list[dict[str, Any]]:
        return [_row(f) for f in await store.list()]

    rows: list[dict[str, Any]] = _run_store(dsn, config_dir, work)
    return rows


def filters_rm(dsn: str | None, name: str, *, config_dir: Path | None = None) -> list[str]:
    """``irisflow filters rm NAME``.

    Raises:
        UsageError: no filter has that name (the message suggests the closest).
    """

    async def work(store: FilterStore) -> list[str]:
        removed = await store.remove(name)
        return [f"removed saved filter {removed.name!r} from {store.where}: {removed.expr}"]

    lines: list[str] = _run_store(dsn, config_dir, work)
    return lines


def store_sinks(dsn: str, store: str = "output", **options: Any) -> tuple[list[Sink], list[Sink]]:
    """The ``(sinks, taps)`` for ``--db [DSN] --store output|all``.

    ``output`` stores what comes out of the pipeline (a sink); ``all`` stores every decoded
    event, before any filter (a tap). ``options`` go to :class:`PostgresSink`.

    Raises:
        UsageError: ``store`` is neither ``output`` nor ``all``, or bad sink options.
    """
    mode = store.strip().lower()
    if mode not in ("output", "all"):
        raise UsageError(f"bad --store {store!r}: use output (the pipeline's output) or all")
    sink: Sink = PostgresSink(dsn, **options)
    return ([sink], []) if mode == "output" else ([], [sink])


def saved_filters_for_run(
    dsn: str | None,
    names: Iterable[str],
    *,
    kinds: Iterable[type[Event]] | None,
    warn: Callable[[str], None],
    config_dir: Path | None = None,
) -> tuple[SavedFilterStep, Callable[[], Awaitable[None]]]:
    """The step and the listener service for ``watch --saved NAME ...`` (call outside Trio).

    Reads and checks the named filters now, so a typo fails before anything connects. Put the
    step in the pipeline and the service in ``Runner.services``.

    Raises:
        UsageError: an unknown name (with a suggestion), an unknown venue, a bad store.
        FilterError: a filter cannot work for ``kinds``.
        DatabaseError: the database cannot be reached.
    """
    store = store_for(dsn, config_dir=config_dir)
    wanted = list(names)
    kind_set = frozenset(kinds) if kinds is not None else None
    step = trio.run(functools.partial(load_saved_step, store, wanted, kinds=kind_set))
    service = functools.partial(watch_saved, store, step, warn=warn)
    return step, service
