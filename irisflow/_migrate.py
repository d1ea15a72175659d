"""Database settings and schema migrations: what ``irisflow migrate`` (and ``--status``) call.

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
import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn

import attrs
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ._errors import DatabaseError, UsageError

__all__ = [
    "MigrateReport",
    "MigrationState",
    "connect",
    "default_migrations_directory",
    "is_permanent",
    "migrate",
    "migration_status",
    "normalize_dsn",
    "pg_message",
    "raise_database_error",
    "redact_dsn",
    "resolve_dsn",
    "scrub",
]

DSN_ENV_VARS = ("IRISFLOW_DATABASE_URL", "DATABASE_URL")
"""Environment variables (and ``.env`` keys) that name the database, first one wins."""

LOCK_KEY = 0x6972_6973_666C_6F77
"""The advisory lock key held while migrating (the bytes of ``irisflow``)."""

_FILENAME = re.compile(r"^(\d{4})_([a-z0-9][a-z0-9_]*)\.sql$")
_REQUIRES = re.compile(r"^--\s*requires:\s*(.+?)\s*$")
_EXTENSION = re.compile(r"^[a-z_][a-z0-9_]*$")

MigrationStateName = Literal["applied", "skipped", "pending", "changed", "missing"]
Mode = Literal["plain", "timescaledb"]


# --------------------------------------------------------------------------- settings


def resolve_dsn(
    cli_value: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """Find the database to use.

    The first of these that is set and not empty wins: ``cli_value`` (``--dsn``), the
    environment variables ``IRISFLOW_DATABASE_URL`` then ``DATABASE_URL``, then the same keys
    in a ``.env`` file in the current directory (simple ``KEY=VALUE`` lines). Each value is
    cleaned by :func:`normalize_dsn` (surrounding whitespace and quotes go).

    Args:
        cli_value: The ``--dsn`` option, or ``None``.
        environ: The environment to read (default ``os.environ``).
        cwd: Where to look for ``.env`` (default the current directory).

    Returns:
        A libpq connection string or URL.

    Raises:
        UsageError: none of them is set.
    """
    if cli_value and normalize_dsn(cli_value):
        return normalize_dsn(cli_value)
    env = os.environ if environ is None else environ
    for key in DSN_ENV_VARS:
        if normalize_dsn(env.get(key) or ""):
            return normalize_dsn(env[key])
    dotenv = (Path.cwd() if cwd is None else cwd) / ".env"
    if dotenv.is_file():
        values = _read_dotenv(dotenv)
        for key in DSN_ENV_VARS:
            if normalize_dsn(values.get(key) or ""):
                return normalize_dsn(values[key])
    raise UsageError(
        "no database configured: pass --dsn or set IRISFLOW_DATABASE_URL "
        "(DATABASE_URL and a ./.env file are read too)"
    )


def normalize_dsn(dsn: str) -> str:
    """``dsn`` without surrounding whitespace and without one pair of quotes around it all.

    A DSN pasted as ``' postgresql://...'`` or ``"postgresql://..."`` (a shell or an editor
    kept the quotes) would otherwise be read by libpq as a broken key/value string.
    """
    text = dsn.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].strip()
    return text


def _read_dotenv(path: Path) -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines; ``#`` comments, ``export`` prefixes and quotes allowed."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        values[key] = _dotenv_value(value)
    return values


def _dotenv_value(text: str) -> str:
    """The value of a ``.env`` line: comments go first, then the quotes.

    A quoted value ends at its closing quote (what follows, a comment, is dropped). In an
    unquoted value a ``#`` starts a comment only after whitespace, so ``pa#ss`` stays whole.
    """
    value = text.strip()
    if value[:1] in ("'", '"'):
        end = value.find(value[0], 1)
        if end > 0:
            return value[1:end]
        value = value[1:]  # no closing quote: read on as if unquoted
    return re.sub(r"(?:^|\s)#.*$", "", value).strip()


# A URL's user info, like libpq reads it: up to the first '@' seen before any '/'.
_URL_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/@\n]*)@")
# A bare ``user:password@host`` anywhere in a text.
_BARE_USERINFO = re.compile(r"(?<![\w%.+-])(?P<user>[\w%.+-]+):(?P<pw>[^\s@/'\"]*)@(?=[\w\[])")
# ``password=...`` in a URL query (up to '&') or a key/value string (a quoted or bare value),
# also as part of a longer name (``sslpassword=``, ``PGPASSWORD=``).
_PASSWORD_PARAM = re.compile(
    r"(?P<head>password\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|\"[^\"]*\"?|[^\s&#'\"]*)",
    re.IGNORECASE,
)


def redact_dsn(dsn: str) -> str:
    """Return ``dsn`` with its password replaced by ``***``.

    Works on URLs (``postgresql://user:pw@host/db?password=pw``) and on key/value strings
    (``host=h password='pw'``), also when they are wrapped in whitespace or quotes or sit
    inside a longer text, and never raises, even on a malformed string.
    """
    return scrub(normalize_dsn(dsn), dsn)


def _redact_patterns(text: str) -> str:
    """Redact every ``scheme://user:password@``, ``user:password@`` and ``password=...``."""

    def userinfo(m: re.Match[str]) -> str:
        info = m.group("info")
        if ":" not in info:
            return m.group(0)
        return f"{m.group('head')}{info.split(':', 1)[0]}:***@"

    text = _URL_USERINFO.sub(userinfo, text)
    text = _BARE_USERINFO.sub(lambda m: f"{m.group('user')}:***@", text)
    return _PASSWORD_PARAM.sub(lambda m: f"{m.group('head')}***", text)


def _passwords(dsn: str) -> list[str]:
    """Every spelling of the password(s) in ``dsn``: raw, percent-decoded, unquoted."""
    text = normalize_dsn(dsn)
    found = [
        m.group("info").split(":", 1)[1]
        for m in _URL_USERINFO.finditer(text)
        if ":" in m.group("info")
    ]
    for m in _PASSWORD_PARAM.finditer(text):
        value = m.group("value")
        found.append(value)
        if value[:1] in ("'", '"'):
            inner = value[1:-1] if len(value) >= 2 and value[-1] == value[0] else value[1:]
            found.append(inner)
            found.append(re.sub(r"\\(.)", r"\1", inner))
    found += [urllib.parse.unquote(p) for p in list(found)]
    # Very short passwords would garble every message; the patterns still catch them in place.
    return sorted({p for p in found if len(p) >= 3}, key=len, reverse=True)


def scrub(text: str, dsn: str) -> str:
    """Remove the password of ``dsn`` from ``text``, and redact anything that looks like one.

    Any ``user:password@`` and ``password=...`` is redacted wherever it appears, whatever
    ``dsn`` is: libpq quotes parts of a malformed DSN in its messages.
    """
    for secret in _passwords(dsn):
        text = text.replace(secret, "***")
    return _redact_patterns(text)


def pg_message(exc: BaseException) -> str:
    """The useful text of a psycopg error: primary message, detail and hint."""
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        parts = [exc.diag.message_primary]
        if exc.diag.message_detail:
            parts.append(exc.diag.message_detail)
        if exc.diag.message_hint:
            parts.append(f"hint: {exc.diag.message_hint}")
        return "; ".join(parts)
    return " ".join(str(exc).split()) or type(exc).__name__


def raise_database_error(what: str, dsn: str, exc: BaseException) -> NoReturn:
    """Raise a :class:`DatabaseError` for ``exc`` whose text never contains the password.

    The message reads ``<what> (<redacted dsn>): <error>``. The original exception stays the
    ``__cause__``, unless its own text holds the password: then it is dropped, and only its
    type name is kept in the message.
    """
    message = f"{what} ({redact_dsn(dsn)}): {scrub(pg_message(exc), dsn)}"
    leaks = any(secret in repr(exc) or secret in str(exc) for secret in _passwords(dsn))
    if leaks:
        raise DatabaseError(f"{message} [{type(exc).__name__}]") from None
    raise DatabaseError(message) from exc


# libpq and server messages of connection failures that retrying cannot cure: the DSN or the
# credentials are wrong (psycopg gives connection failures no SQLSTATE, so the text decides).
_PERMANENT = re.compile(
    "|".join(
        (
            r"authentication failed",  # password, scram, ident, peer, ...
            r"no pg_hba\.conf entry",
            r"no password supplied",
            r"role \"[^\"]*\" does not exist",
            r"not permitted to log in",
            r"database \"[^\"]*\" does not exist",
            r"invalid [\w ]*(?:value|number|option)",  # invalid port number, sslmode value...
            r"unrecognized configuration parameter",  # options=-c...
            r"invalid value for parameter",
            r"missing \"=\" after",
            r"invalid connection option",
            r"invalid URI",
        )
    ),
    re.IGNORECASE,
)


def is_permanent(exc: BaseException) -> bool:
    """True when a failed connection attempt will fail the same way if tried again.

    Wrong credentials, a missing role or database, and DSN options libpq or the server
    refuse: retrying those only hides the mistake. Unreachable or restarting servers, a
    full connection table, timeouts and dropped connections are transient.
    """
    if isinstance(exc, UsageError):
        return True
    return isinstance(exc, psycopg.Error) and bool(_PERMANENT.search(str(exc)))


def connect(
    dsn: str,
    *,
    application_name: str = "irisflow",
    connect_timeout: int = 10,
    **defaults: Any,
) -> psycopg.Connection[Any]:
    """Open an autocommit psycopg connection, translating failures.

    ``connect_timeout``, ``application_name`` and any other libpq parameter given in
    ``defaults`` (e.g. ``tcp_user_timeout``) apply unless the DSN sets them. The DSN is read
    through :func:`normalize_dsn`.

    Raises:
        UsageError: the DSN does not parse, or the server refused it for good (wrong
            password or user, no such database, an invalid option: see
            :func:`is_permanent`); trying again cannot help.
        DatabaseError: the server cannot be reached or dropped the connection attempt.
    """
    try:
        params: dict[str, Any] = conninfo_to_dict(normalize_dsn(dsn))
    except psycopg.Error as exc:
        message = f"invalid database DSN {redact_dsn(dsn)!r}: {scrub(pg_message(exc), dsn)}"
        raise UsageError(message) from None
    params.setdefault("connect_timeout", connect_timeout)
    params.setdefault("application_name", application_name)
    for key, value in defaults.items():
        params.setdefault(key, value)
    try:
        return psycopg.connect(autocommit=True, **params)
    except psycopg.Error as exc:
        if is_permanent(exc):
            message = (
                f"PostgreSQL refused the connection ({redact_dsn(dsn)}): "
                f"{scrub(pg_message(exc), dsn)}; check the user, password, database and "
                "options of the DSN (retrying will not help)"
            )
            raise UsageError(message) from None
        raise_database_error("could not connect to PostgreSQL", dsn, exc)


# --------------------------------------------------------------------------- migrations


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
