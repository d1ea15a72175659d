"""Migrations against the real PostgreSQL, and the DSN helpers."""

from __future__ import annotations

import re
import shutil
import threading
import traceback
from pathlib import Path

import pytest
from fix_db import fetch, fetch_one

from irisflow._errors import DatabaseError, UsageError
from irisflow._migrate import (
    MigrateReport,
    default_migrations_directory,
    load_migrations,
    migrate,
    migration_status,
    redact_dsn,
    resolve_dsn,
)

PLAIN = ["0001_core", "0002_pipeline", "0003_chain"]
TIMESCALE = ["0004_timescale_hypertables", "0005_timescale_compression", "0006_timescale_ohlcv_1m"]
LATER = ["0007_books_depth", "0008_window_results_key", "0009_chain_events"]


def names(states: tuple[object, ...] | list[object]) -> list[str]:
    return [s.name for s in states]  # type: ignore[attr-defined]


def schema_exists(dsn: str) -> bool:
    return fetch_one(dsn, "SELECT to_regclass('irisflow.schema_migrations') IS NOT NULL")


def timescale_installed(dsn: str) -> bool:
    return bool(fetch(dsn, "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"))


# --------------------------------------------------------------------------- files


def test_bundled_files_are_numbered_and_marked() -> None:
    migrations = load_migrations()
    assert default_migrations_directory() == Path(__file__).parent.parent / "migrations"
    assert [m.name for m in migrations] == PLAIN + TIMESCALE + LATER
    for m in migrations:
        assert m.requires == (("timescaledb",) if "timescale" in m.name else ())
        assert len(m.checksum) == 64
        # No destructive statements: undoing is a new file, never a DROP.
        code = "\n".join(line.split("--")[0] for line in m.text.splitlines()).upper()
        assert not re.search(r"\b(DROP|TRUNCATE|DELETE)\b", code), m.name


def test_misnamed_and_duplicate_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_core.sql").write_text("SELECT 1;")
    with pytest.raises(UsageError, match=r"'1_core.sql'.*misnamed"):
        load_migrations(tmp_path)
    (tmp_path / "1_core.sql").unlink()
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(UsageError, match="share number 1"):
        load_migrations(tmp_path)


# --------------------------------------------------------------------------- migrate

pytestmark_db = pytest.mark.postgres


@pytestmark_db
def test_migrate_from_empty_then_rerun_is_a_noop(empty_db: str) -> None:
    report = migrate(empty_db)
    assert not report.dry_run
    assert names(report.applied) == PLAIN + LATER
    if timescale_installed(empty_db):  # pragma: no cover - not on the plain CI server
        assert report.mode == "timescaledb"
        return
    assert names(report.skipped) == TIMESCALE
    assert report.mode == "plain"
    assert report.lines()[-1] == "plain PostgreSQL mode"
    assert any("timescaledb" in note for note in report.notes)
    tables = {
        t
        for (t,) in fetch(empty_db, "SELECT tablename FROM pg_tables WHERE schemaname = 'irisflow'")
    }
    assert {
        "schema_migrations", "trades", "quotes", "candles", "tickers", "books", "book_updates",
        "gaps", "window_results", "alerts", "saved_filters", "blocks", "transactions",
        "token_transfers", "swaps",
    } <= tables  # fmt: skip
    brin = fetch_one(
        empty_db,
        "SELECT count(*) FROM pg_indexes WHERE schemaname = 'irisflow' AND indexdef LIKE '%brin%'",
    )
    assert brin >= 7
    before = fetch(empty_db, "SELECT version, applied_at, mode FROM irisflow.schema_migrations")

    again = migrate(empty_db)
    assert again.applied == ()
    assert again.skipped == ()
    assert "nothing to do: the schema is up to date" in again.lines()
    assert again.mode == "plain"
    assert (
        fetch(empty_db, "SELECT version, applied_at, mode FROM irisflow.schema_migrations")
        == before
    )


@pytestmark_db
def test_status_tracks_applied_skipped_pending(empty_db: str) -> None:
    assert {s.state for s in migration_status(empty_db)} == {"pending"}
    migrate(empty_db, to=2)
    status = {s.name: s for s in migration_status(empty_db)}
    assert status["0001_core"].state == "applied"
    assert status["0001_core"].mode == "plain"
    assert status["0001_core"].applied_at is not None
    assert status["0002_pipeline"].state == "applied"
    assert status["0003_chain"].state == "pending"
    assert status["0003_chain"].applied_at is None
    migrate(empty_db)
    states = {s.name: s.state for s in migration_status(empty_db)}
    if not timescale_installed(empty_db):
        assert states == dict.fromkeys(PLAIN + LATER, "applied") | dict.fromkeys(
            TIMESCALE, "skipped"
        )
    rows = fetch(empty_db, "SELECT version, mode FROM irisflow.schema_migrations ORDER BY 1")
    assert [v for v, _ in rows] == [1, 2, 3, 4, 5, 6, 7, 8, 9]


@pytestmark_db
def test_dry_run_plans_without_applying(empty_db: str) -> None:
    report = migrate(empty_db, dry_run=True)
    assert report.dry_run
    assert names(report.applied) == PLAIN + LATER
    assert not schema_exists(empty_db)
    lines = report.lines()
    assert "would apply 0001_core" in lines
    if not timescale_installed(empty_db):
        assert "would skip 0004_timescale_hypertables (needs timescaledb)" in lines
        assert lines[-1] == "plain PostgreSQL mode"

    migrate(empty_db, to=1)
    plan = migrate(empty_db, dry_run=True, to=2)
    assert names(plan.applied) == ["0002_pipeline"]
    assert names(plan.pending) == ["0003_chain", *TIMESCALE, *LATER]
    assert fetch_one(empty_db, "SELECT count(*) FROM irisflow.schema_migrations") == 1


@pytestmark_db
def test_to_applies_up_to_a_number(empty_db: str) -> None:
    report = migrate(empty_db, to=2)
    assert names(report.applied) == ["0001_core", "0002_pipeline"]
    assert names(report.pending) == ["0003_chain", *TIMESCALE, *LATER]
    assert "left pending 0003_chain (past --to)" in report.lines()
    assert fetch_one(empty_db, "SELECT to_regclass('irisflow.blocks')") is None
    assert names(migrate(empty_db).applied) == ["0003_chain", *LATER]
    with pytest.raises(
        UsageError, match=r"no migration numbered 42 \(have: 1, 2, 3, 4, 5, 6, 7, 8, 9\)"
    ):
        migrate(empty_db, to=42)


@pytestmark_db
def test_changed_file_is_refused(empty_db: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(default_migrations_directory(), folder)
    migrate(empty_db, directory=folder)
    edited = folder / "0002_pipeline.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(UsageError, match=r"migration 0002_pipeline\.sql in .* was changed") as err:
        migrate(empty_db, directory=folder)
    assert "append-only" in str(err.value)
    with pytest.raises(UsageError, match=r"0002_pipeline\.sql"):
        migrate(empty_db, directory=folder, dry_run=True)
    status = {s.name: s.state for s in migration_status(empty_db, directory=folder)}
    assert status["0002_pipeline"] == "changed"
    # A skipped file is protected the same way.
    if not timescale_installed(empty_db):
        edited.write_text((default_migrations_directory() / "0002_pipeline.sql").read_text())
        hyper = folder / "0004_timescale_hypertables.sql"
        hyper.write_text(hyper.read_text() + "\n-- edit\n")
        with pytest.raises(
            UsageError, match=r"0004_timescale_hypertables\.sql .* was changed after it was skipped"
        ):
            migrate(empty_db, directory=folder)


@pytestmark_db
def test_concurrent_migrates_apply_once(empty_db: str) -> None:
    barrier = threading.Barrier(2)
    reports: list[MigrateReport] = []
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            reports.append(migrate(empty_db))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(reports) == 2
    applied = sorted(n for r in reports for n in names(r.applied))
    assert applied == sorted(PLAIN + LATER)  # each file applied by exactly one of the two
    assert fetch_one(empty_db, "SELECT count(*) FROM irisflow.schema_migrations") == 9


@pytestmark_db
def test_failed_migration_is_rolled_back(empty_db: str, tmp_path: Path) -> None:
    (tmp_path / "0001_base.sql").write_text(
        "CREATE SCHEMA IF NOT EXISTS irisflow; CREATE TABLE irisflow.base (x int);"
    )
    (tmp_path / "0002_broken.sql").write_text(
        "CREATE TABLE irisflow.half (x int);\nSELECT 1 / 0;\n"
    )
    with pytest.raises(DatabaseError, match=r"migration 0002_broken\.sql failed.*division by zero"):
        migrate(empty_db, directory=tmp_path)
    assert fetch_one(empty_db, "SELECT to_regclass('irisflow.base') IS NOT NULL")
    assert fetch_one(empty_db, "SELECT to_regclass('irisflow.half')") is None
    status = {s.name: s.state for s in migration_status(empty_db, directory=tmp_path)}
    assert status == {"0001_base": "applied", "0002_broken": "pending"}


@pytestmark_db
def test_status_reports_files_missing_on_disk(empty_db: str, tmp_path: Path) -> None:
    (tmp_path / "0001_base.sql").write_text("CREATE SCHEMA IF NOT EXISTS irisflow;")
    (tmp_path / "0002_more.sql").write_text("CREATE TABLE irisflow.more (x int);")
    migrate(empty_db, directory=tmp_path)
    (tmp_path / "0002_more.sql").unlink()  # e.g. an older irisflow against a newer database
    status = {s.name: s.state for s in migration_status(empty_db, directory=tmp_path)}
    assert status == {"0001_base": "applied", "0002_more": "missing"}
    assert migrate(empty_db, directory=tmp_path).applied == ()


@pytestmark_db
def test_requires_line_applies_or_skips_by_extension(empty_db: str, tmp_path: Path) -> None:
    available = {n for (n,) in fetch(empty_db, "SELECT name FROM pg_available_extensions")}
    if "pg_trgm" not in available:
        pytest.skip("needs the pg_trgm contrib extension")
    (tmp_path / "0001_base.sql").write_text(
        "CREATE SCHEMA IF NOT EXISTS irisflow; CREATE TABLE irisflow.words (w text);"
    )
    (tmp_path / "0002_trgm.sql").write_text(
        "-- requires: pg_trgm\n"
        "CREATE INDEX words_trgm ON irisflow.words USING gin (w gin_trgm_ops);"
    )
    (tmp_path / "0003_exotic.sql").write_text("-- requires: no_such_ext_here\nSELECT 1 / 0;")
    plan = migrate(empty_db, directory=tmp_path, dry_run=True)
    assert names(plan.applied) == ["0001_base", "0002_trgm"]
    assert names(plan.skipped) == ["0003_exotic"]
    report = migrate(empty_db, directory=tmp_path)
    assert names(report.applied) == ["0001_base", "0002_trgm"]
    assert names(report.skipped) == ["0003_exotic"]
    assert any("no_such_ext_here" in note for note in report.notes)
    assert (
        fetch_one(empty_db, "SELECT mode FROM irisflow.schema_migrations WHERE version = 3")
        == "skipped"
    )
    assert migrate(empty_db, directory=tmp_path).applied == ()


# --------------------------------------------------------------------------- DSNs


def test_resolve_dsn_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"IRISFLOW_DATABASE_URL": "postgresql://iris", "DATABASE_URL": "postgresql://generic"}
    assert resolve_dsn("postgresql://cli", environ=env, cwd=tmp_path) == "postgresql://cli"
    assert resolve_dsn(None, environ=env, cwd=tmp_path) == "postgresql://iris"
    assert resolve_dsn("", environ={"DATABASE_URL": "postgresql://generic"}, cwd=tmp_path) == (
        "postgresql://generic"
    )
    (tmp_path / ".env").write_text(
        "# local settings\n"
        "TELEGRAM_BOT_TOKEN=abc\n"
        "export DATABASE_URL='postgresql://from-dotenv-generic'\n"
        'IRISFLOW_DATABASE_URL="postgresql://u:p@h/db"  \n'
        "BROKEN LINE\n"
    )
    assert resolve_dsn(None, environ={}, cwd=tmp_path) == "postgresql://u:p@h/db"
    # The environment beats the file; an empty variable counts as unset.
    assert resolve_dsn(None, environ={"DATABASE_URL": "postgresql://env"}, cwd=tmp_path) == (
        "postgresql://env"
    )
    assert resolve_dsn(None, environ={"IRISFLOW_DATABASE_URL": ""}, cwd=tmp_path) == (
        "postgresql://u:p@h/db"
    )
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://only-generic # a comment\n")
    assert resolve_dsn(None, environ={}, cwd=tmp_path) == "postgresql://only-generic"
    # Defaults: the real environment and the current directory.
    monkeypatch.delenv("IRISFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://real-env")
    monkeypatch.chdir(tmp_path)
    assert resolve_dsn(None) == "postgresql://real-env"
    monkeypatch.delenv("DATABASE_URL")
    assert resolve_dsn(None) == "postgresql://only-generic"


def test_resolve_dsn_without_any_setting(tmp_path: Path) -> None:
    with pytest.raises(
        UsageError, match="no database configured: pass --dsn or set IRISFLOW_DATABASE_URL"
    ):
        resolve_dsn(None, environ={}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("dsn", "redacted"),
    [
        ("postgresql://bob:hunter22@db:5432/x", "postgresql://bob:***@db:5432/x"),
        ("postgres://bob:p%40ss@db/x?sslmode=require", "postgres://bob:***@db/x?sslmode=require"),
        ("postgresql://bob@db/x?password=hunter22&a=1", "postgresql://bob@db/x?password=***&a=1"),
        ("postgresql://db/x", "postgresql://db/x"),
        ("postgresql://bob:@db/x", "postgresql://bob:***@db/x"),
        ("host=db password=hunter22 user=bob", "host=db password=*** user=bob"),
        ("host=db password = 'hunt er\\'22' user=bob", "host=db password = *** user=bob"),
        ("password=hunter22", "password=***"),
        ("host=db user=bob", "host=db user=bob"),
    ],
)
def test_redact_dsn(dsn: str, redacted: str) -> None:
    assert redact_dsn(dsn) == redacted


SECRET = "Sup3r-Secret-Pw"


@pytestmark_db
@pytest.mark.parametrize(
    "make_dsn",
    [
        # Nothing listens on port 1.
        lambda server: f"postgresql://postgres:{SECRET}@127.0.0.1:1/x",
        # The server answers, the database does not exist.
        lambda server: f"{server} password={SECRET} dbname=no_such_db_here",
        # libpq rejects the URL and quotes the password in its message.
        lambda server: f"postgresql://postgres:{SECRET} with spaces@127.0.0.1/x",
        lambda server: f"host=127.0.0.1 password='{SECRET}' {SECRET}",
    ],
)
def test_password_never_in_error_text(pg_server_dsn: str, make_dsn: object) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    server = make_conninfo(**dict(conninfo_to_dict(pg_server_dsn).items()))
    dsn = make_dsn(server)  # type: ignore[operator]
    with pytest.raises((DatabaseError, UsageError)) as err:
        migrate(dsn)
    text = "".join(traceback.format_exception(err.value))
    assert SECRET not in text
    assert "***" in str(err.value) or "password" not in str(err.value)
    with pytest.raises((DatabaseError, UsageError)) as err:
        migration_status(dsn)
    assert SECRET not in "".join(traceback.format_exception(err.value))
