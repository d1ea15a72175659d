"""Schema migrations: what ``irisflow migrate`` (and ``--status``) call.

Finding the database and connecting to it live in :mod:`irisflow._database`.

Migrations are numbered SQL files, ``0001_core.sql``, ``0002_pipeline.sql``, ... Each one runs
in its own transaction together with its row in the bookkeeping table
``irisflow.schema_migrations``, so a file is either applied whole or not at all. Files are
append-only: the SHA-256 of every applied file is recorded and a changed file is refused.
There are no down migrations: undoing a change is a new file.

A file whose first comment lines say ``-- requires: timescaledb`` runs only when
``CREATE EXTENSION IF NOT EXISTS timescaledb`` succeeds. Otherwise it is recorded as
*skipped* and the database runs in *plain PostgreSQL mode*; a later ``migrate`` applies the
skipped files once the extension can be created.

Concurrent runs are safe: the runner holds a PostgreSQL advisory lock while it works, so a
second ``migrate`` waits, then finds nothing left to do.

These functions block (they talk to PostgreSQL): from Trio code call them through
``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import psycopg
from psycopg import sql

# connect, is_permanent, redact_dsn, resolve_dsn and scrub are re-exported for the tests,
# which import them from here; connections live in _database.
from ._database import connect as connect
from ._database import is_permanent as is_permanent
from ._database import pg_message, raise_database_error
from ._database import redact_dsn as redact_dsn
from ._database import resolve_dsn as resolve_dsn
from ._database import scrub as scrub
from ._errors import UsageError

__all__ = [
    "MigrateReport",
    "MigrationState",
    "default_migrations_directory",
    "migrate",
    "migration_status",
]

LOCK_KEY = 0x6972_6973_666C_6F77
"""The advisory lock key held while migrating (the bytes of ``irisflow``)."""

_FILENAME = re.compile(r"^(\d{4})_([a-z0-9][a-z0-9_]*)\.sql$")
_REQUIRES = re.compile(r"^--\s*requires:\s*(.+?)\s*$")
_EXTENSION = re.compile(r"^[a-z_][a-z0-9_]*$")

MigrationStateName = Literal["applied", "skipped", "pending", "changed", "missing"]
Mode = Literal["plain", "timescaledb"]


@attrs.frozen
class Migration:
    """One migration file on disk."""

    version: int
    """The number in the file name."""
    name: str
    """The file name without ``.sql``, e.g. ``0001_core``."""
    path: Path
    """Where the file is."""
    text: str
    """The SQL."""
    checksum: str
    """SHA-256 of the file's bytes, hex."""
    requires: tuple[str, ...]
    """Extensions the file needs (its ``-- requires:`` line), e.g. ``('timescaledb',)``."""


@attrs.frozen
class MigrationState:
    """Where one migration stands in one database."""

    version: int
    """The migration number."""
    name: str
    """The file name without ``.sql``."""
    state: MigrationStateName
    """``applied``, ``skipped`` (its extension was missing), ``pending``, ``changed`` (the
    file differs from what was applied) or ``missing`` (recorded, but no such file)."""
    requires: tuple[str, ...] = ()
    """Extensions the file needs."""
    applied_at: _dt.datetime | None = None
    """When it was applied or skipped; ``None`` while pending."""
    mode: str | None = None
    """As recorded: ``plain``, ``timescaledb`` or ``skipped``; ``None`` while pending."""
    checksum: str | None = None
    """SHA-256 of the file, hex (``None`` when the file is missing)."""


@attrs.frozen
class MigrateReport:
    """What :func:`migrate` did (or, with ``dry_run``, would do)."""

    database: str
    """The database, password redacted."""
    mode: Mode
    """``timescaledb`` when the extension is installed (or would be), else ``plain``."""
    dry_run: bool
    """True when nothing was changed."""
    applied: tuple[MigrationState, ...] = ()
    """Files applied by this run (in a dry run: files that would be applied)."""
    skipped: tuple[MigrationState, ...] = ()
    """Files recorded as skipped because an extension is missing (or would be)."""
    pending: tuple[MigrationState, ...] = ()
    """Files left pending because they are past ``to``."""
    notes: tuple[str, ...] = ()
    """Extra remarks, e.g. why an extension could not be created."""

    def lines(self) -> list[str]:
        """The report as short human-readable lines, for the CLI to print."""
        verb, skip = ("would apply", "would skip") if self.dry_run else ("applied", "skipped")
        out = [f"database {self.database}"]
        out += [f"{verb} {m.name}" for m in self.applied]
        out += [f"{skip} {m.name} (needs {', '.join(m.requires)})" for m in self.skipped]
        out += [f"left pending {m.name} (past --to)" for m in self.pending]
        if not self.applied and not self.skipped:
            out.append("nothing to do: the schema is up to date")
        out += list(self.notes)
        out.append("TimescaleDB mode" if self.mode == "timescaledb" else "plain PostgreSQL mode")
        return out


def default_migrations_directory() -> Path:
    """The bundled migrations: ``irisflow/migrations`` in a wheel, else the repo's ``migrations``.

    Raises:
        UsageError: neither exists.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "0001_core.sql").is_file():
            return candidate
    raise UsageError(
        f"irisflow's migrations are not installed (looked in {here / 'migrations'} and "
        f"{here.parent / 'migrations'}); reinstall irisflow or pass the directory explicitly"
    )


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Read and check the migration files in ``directory``, ordered by version.

    Raises:
        UsageError: the directory is missing, a ``.sql`` file is misnamed, two files share a
            number, or a ``requires`` line names something that is not an extension name.
    """
    folder = default_migrations_directory() if directory is None else Path(directory)
    if not folder.is_dir():
        raise UsageError(f"migrations directory {folder} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        m = _FILENAME.match(path.name)
        if not m:
            raise UsageError(
                f"migration file {path.name!r} in {folder} is misnamed: "
                "use NNNN_lower_case_name.sql, e.g. 0007_add_index.sql"
            )
        version = int(m.group(1))
        if version in found:
            raise UsageError(
                f"migrations {found[version].path.name} and {path.name} share number {version}; "
                "renumber the newer one"
            )
        data = path.read_bytes()
        text = data.decode("utf-8")
        found[version] = Migration(
            version=version,
            name=path.stem,
            path=path,
            text=text,
            checksum=hashlib.sha256(data).hexdigest(),
            requires=_requires(path.name, text),
        )
    return [found[v] for v in sorted(found)]


def _requires(filename: str, text: str) -> tuple[str, ...]:
    """The extensions named by ``-- requires:`` lines in the file's leading comments."""
    names: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        m = _REQUIRES.match(stripped)
        if m:
            for name in (n.strip() for n in m.group(1).split(",")):
                if not _EXTENSION.match(name):
                    raise UsageError(
                        f"migration {filename}: {name!r} in its requires line is not an "
                        "extension name"
                    )
                names.append(name)
    return tuple(names)


_BOOKKEEPING = b"""
CREATE SCHEMA IF NOT EXISTS irisflow;
CREATE TABLE IF NOT EXISTS irisflow.schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    mode        text        NOT NULL CHECK (mode IN ('plain', 'timescaledb', 'skipped'))
);
COMMENT ON TABLE irisflow.schema_migrations IS
    'Migration files applied (or skipped for a missing extension) by irisflow migrate.';
"""

_Recorded = dict[int, tuple[str, str, _dt.datetime, str]]


def _recorded(conn: psycopg.Connection[Any]) -> _Recorded:
    """Rows of ``irisflow.schema_migrations`` by version (empty if it does not exist)."""
    exists = conn.execute("SELECT to_regclass('irisflow.schema_migrations')").fetchone()
    if exists is None or exists[0] is None:
        return {}
    rows = conn.execute(
        "SELECT version, name, checksum, applied_at, mode FROM irisflow.schema_migrations"
    ).fetchall()
    return {int(r[0]): (str(r[1]), str(r[2]), r[3], str(r[4])) for r in rows}


def _installed_extensions(conn: psycopg.Connection[Any]) -> set[str]:
    return {str(r[0]) for r in conn.execute("SELECT extname FROM pg_extension").fetchall()}


def _available_extensions(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute("SELECT name FROM pg_available_extensions").fetchall()
    return {str(r[0]) for r in rows}


def _state(m: Migration, recorded: _Recorded) -> MigrationState:
    row = recorded.get(m.version)
    if row is None:
        return MigrationState(m.version, m.name, "pending", m.requires, checksum=m.checksum)
    _, checksum, applied_at, mode = row
    state: MigrationStateName = "skipped" if mode == "skipped" else "applied"
    if checksum != m.checksum:
        state = "changed"
    return MigrationState(m.version, m.name, state, m.requires, applied_at, mode, m.checksum)


def _states(migrations: Sequence[Migration], recorded: _Recorded) -> list[MigrationState]:
    states = [_state(m, recorded) for m in migrations]
    known = {m.version for m in migrations}
    for version, (name, _, applied_at, mode) in recorded.items():
        if version not in known:
            states.append(MigrationState(version, name, "missing", (), applied_at, mode))
    return sorted(states, key=lambda s: s.version)


def _check_unchanged(states: Sequence[MigrationState], folder: Path, dsn: str) -> None:
    for s in states:
        if s.state == "changed":
            raise UsageError(
                f"migration {s.name}.sql in {folder} was changed after it was "
                f"{'skipped' if s.mode == 'skipped' else 'applied'} to {redact_dsn(dsn)} "
                "(its SHA-256 differs from the recorded one); migrations are append-only: "
                "undo the edit and put the change in a new numbered file"
            )


def migration_status(dsn: str, *, directory: Path | None = None) -> list[MigrationState]:
    """Where each migration stands in the database ``dsn``, ordered by version.

    Raises:
        UsageError: bad DSN or bad migration files.
        DatabaseError: the database cannot be reached or queried.
    """
    migrations = load_migrations(directory)
    with connect(dsn, application_name="irisflow-migrate") as conn:
        try:
            recorded = _recorded(conn)
        except psycopg.Error as exc:
            raise_database_error("could not read the migration status", dsn, exc)
    return _states(migrations, recorded)


def migrate(
    dsn: str,
    *,
    to: int | None = None,
    dry_run: bool = False,
    directory: Path | None = None,
) -> MigrateReport:
    """Bring the irisflow schema in the database ``dsn`` up to date.

    Every pending file up to ``to`` runs in its own transaction with its bookkeeping row.
    Files that need an extension which cannot be created are recorded as skipped; files
    recorded as skipped are applied once their extension can be created.

    Args:
        dsn: The database (libpq URL or key/value string).
        to: Apply files up to and including this number only (default: all).
        dry_run: Only work out the plan; change nothing.
        directory: Where the ``NNNN_name.sql`` files are (default: the bundled ones).

    Returns:
        What was applied and skipped, and the database mode.

    Raises:
        UsageError: bad DSN, bad ``to``, bad migration files, or an applied file was edited.
        DatabaseError: the database cannot be reached, or a migration failed (that file
            was rolled back; the files before it stay applied).
    """
    migrations = load_migrations(directory)
    folder = migrations[0].path.parent if migrations else Path(directory or ".")
    if to is not None and to not in {m.version for m in migrations}:
        have = ", ".join(f"{m.version}" for m in migrations) or "none"
        raise UsageError(f"no migration numbered {to} (have: {have})")
    with connect(dsn, application_name="irisflow-migrate") as conn:
        try:
            if dry_run:
                return _plan(conn, dsn, migrations, folder, to)
            conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            try:
                return _apply(conn, dsn, migrations, folder, to)
            finally:
                # Closing the session releases the lock too: a failed unlock needs no report.
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        except psycopg.Error as exc:
            raise_database_error("migration failed", dsn, exc)


def _todo(
    migrations: Sequence[Migration], states: Sequence[MigrationState], to: int | None
) -> tuple[list[Migration], list[MigrationState]]:
    """Files to run now (pending, or skipped ones to retry), and those left past ``to``."""
    by_version = {s.version: s for s in states}
    todo: list[Migration] = []
    later: list[MigrationState] = []
    for m in migrations:
        s = by_version[m.version]
        if s.state not in ("pending", "skipped"):
            continue
        if to is not None and m.version > to:
            if s.state == "pending":
                later.append(s)
            continue
        todo.append(m)
    return todo, later


def _mode(installed: set[str]) -> Mode:
    return "timescaledb" if "timescaledb" in installed else "plain"


def _plan(
    conn: psycopg.Connection[Any],
    dsn: str,
    migrations: Sequence[Migration],
    folder: Path,
    to: int | None,
) -> MigrateReport:
    states = _states(migrations, _recorded(conn))
    _check_unchanged(states, folder, dsn)
    todo, later = _todo(migrations, states, to)
    installed = _installed_extensions(conn)
    usable = installed | _available_extensions(conn)
    by_version = {s.version: s for s in states}
    apply = [by_version[m.version] for m in todo if set(m.requires) <= usable]
    skip = [
        by_version[m.version]
        for m in todo
        if not set(m.requires) <= usable and by_version[m.version].state == "pending"
    ]
    needs_ts = any("timescaledb" in m.requires for m in todo)
    mode: Mode = "timescaledb" if needs_ts and "timescaledb" in usable else _mode(installed)
    return MigrateReport(
        database=redact_dsn(dsn),
        mode=mode,
        dry_run=True,
        applied=tuple(apply),
        skipped=tuple(skip),
        pending=tuple(later),
    )


def _apply(
    conn: psycopg.Connection[Any],
    dsn: str,
    migrations: Sequence[Migration],
    folder: Path,
    to: int | None,
) -> MigrateReport:
    with conn.transaction():
        conn.execute(_BOOKKEEPING)
    states = _states(migrations, _recorded(conn))
    _check_unchanged(states, folder, dsn)
    todo, later = _todo(migrations, states, to)
    by_version = {s.version: s for s in states}

    installed = _installed_extensions(conn)
    notes: list[str] = []
    for ext in sorted({e for m in todo for e in m.requires} - installed):
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext))
                )
            installed.add(ext)
        except psycopg.Error as exc:
            reason = exc.diag.message_primary or pg_message(exc)
            notes.append(f"cannot create extension {ext}: {scrub(reason, dsn)}")
    mode = _mode(installed)

    applied: list[MigrationState] = []
    skipped: list[MigrationState] = []
    for m in todo:
        before = by_version[m.version]
        if not set(m.requires) <= installed:
            if before.state == "pending":
                with conn.transaction():
                    _record(conn, m, "skipped")
                skipped.append(attrs.evolve(before, state="skipped", mode="skipped"))
            continue
        try:
            with conn.transaction():
                conn.execute(m.text.encode("utf-8"))
                _record(conn, m, mode)
        except psycopg.Error as exc:
            raise_database_error(
                f"migration {m.path.name} failed and was rolled back"
                f"{f' (applied before it: {len(applied)} file(s))' if applied else ''}",
                dsn,
                exc,
            )
        applied.append(attrs.evolve(before, state="applied", mode=mode))
    return MigrateReport(
        database=redact_dsn(dsn),
        mode=mode,
        dry_run=False,
        applied=tuple(applied),
        skipped=tuple(skipped),
        pending=tuple(later),
        notes=tuple(notes),
    )


def _record(conn: psycopg.Connection[Any], m: Migration, mode: str) -> None:
    conn.execute(
        "INSERT INTO irisflow.schema_migrations (version, name, checksum, applied_at, mode)"
        " VALUES (%s, %s, %s, now(), %s)"
        " ON CONFLICT (version) DO UPDATE SET name = excluded.name,"
        " checksum = excluded.checksum, applied_at = excluded.applied_at, mode = excluded.mode",
        (m.version, m.name, m.checksum, mode),
    )
