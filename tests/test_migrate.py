"""Migrations against the real PostgreSQL, and the DSN helpers."""

from __future__ import annotations

import re
import shutil
import threading
import traceback
from pathlib import Path

import psycopg
import pytest
from fix_db import fetch, fetch_one
from typer.testing import CliRunner

from irisflow._cli import app
from irisflow._errors import DatabaseError, UsageError
from irisflow._migrate import (
    MigrateReport,
    connect,
    default_migrations_directory,
    is_permanent,
    load_migrations,
    migrate,
    migration_status,
    redact_dsn,
    resolve_dsn,
    scrub,
)

PLAIN = ["0001_core", "0002_pipeline", "0003_chain"]
TIMESCALE = ["0004_timescale_hypertables", "0005_timescale_compression", "0006_timescale_ohlcv_1m"]
LATER = ["0007_books_depth", "0008_window_results_key", "0009_chain_events", "0010_optional_ids"]
TIMESCALE_LATER = ["0011_timescale_later_tables"]
NEWER = ["0012_more_chain_kinds", "0013_withdrawn_results"]
ALL = PLAIN + TIMESCALE + LATER + TIMESCALE_LATER + NEWER
APPLIED = PLAIN + LATER + NEWER  # on plain PostgreSQL
SKIPPED = TIMESCALE + TIMESCALE_LATER  # on plain PostgreSQL
VERSIONS = list(range(1, len(ALL) + 1))


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
    assert [m.name for m in migrations] == ALL
    for m in migrations:
        assert m.requires == (("timescaledb",) if "timescale" in m.name else ())
        assert len(m.checksum) == 64
        # No statement that destroys data: undoing is a new file.
        assert destructive(m.text) == [], m.name


def code_of(sql_text: str) -> str:
    """The SQL without its ``--`` comments, upper case."""
    return "\n".join(line.split("--")[0] for line in sql_text.splitlines()).upper()


def destructive(sql_text: str) -> list[str]:
    """Statements that would destroy data: any DROP but ``DROP NOT NULL`` and ``DROP INDEX``
    (an index holds no data of its own), and DELETE and TRUNCATE."""
    code = code_of(sql_text)
    found = [
        m.group(0)
        for m in re.finditer(r"\bDROP\s+(\w+)(?:\s+(\w+))?", code)
        if not (m.group(1) == "INDEX" or (m.group(1), m.group(2)) == ("NOT", "NULL"))
    ]
    return found + re.findall(r"\b(?:TRUNCATE|DELETE)\b", code)


def test_destructive_statements_are_told_apart() -> None:
    assert destructive("ALTER TABLE irisflow.t ALTER COLUMN c DROP NOT NULL;") == []
    assert destructive("DROP INDEX irisflow.k; DROP INDEX IF EXISTS irisflow.j;") == []
    assert destructive("-- DROP TABLE in a comment\nSELECT 1;") == []
    assert destructive("DROP TABLE irisflow.t;") == ["DROP TABLE IRISFLOW"]
    assert destructive("drop schema irisflow cascade") == ["DROP SCHEMA IRISFLOW"]
    assert destructive("ALTER TABLE t DROP COLUMN c") == ["DROP COLUMN C"]
    assert destructive("DELETE FROM t; TRUNCATE t") == ["DELETE", "TRUNCATE"]


TIMESCALE_ONLY = re.compile(
    r"\b(?:create_hypertable|add_compression_policy|remove_compression_policy|decompress_chunk"
    r"|add_continuous_aggregate_policy|time_bucket|timescaledb\.\w+|timescaledb_information)\b",
    re.IGNORECASE,
)
GUARD = re.compile(
    r"IF EXISTS \(SELECT 1 FROM irisflow\.schema_migrations WHERE version = (\d+) AND"
    r" mode = 'timescaledb'\) THEN(.*?)END IF;",
    re.DOTALL,
)


def test_timescaledb_calls_live_in_requires_files() -> None:
    """What the audit found: 0007-0009 are plain files with TimescaleDB calls inside, each
    under a guard that runs it only when a requires-timescaledb file was applied in
    timescaledb mode (so never on plain PostgreSQL); 0011 holds what they meant. Later plain
    files must hold no TimescaleDB call at all, guarded or not."""
    migrations = {m.version: m for m in load_migrations()}
    guarded_files = set()
    for m in migrations.values():
        if "timescaledb" in m.requires:
            continue
        code = "\n".join(line.split("--")[0] for line in m.text.splitlines())
        for guard in GUARD.finditer(code):
            if TIMESCALE_ONLY.search(guard.group(2)):
                guarded_files.add(m.name)
                assert "timescaledb" in migrations[int(guard.group(1))].requires, m.name
        assert not TIMESCALE_ONLY.search(GUARD.sub("", code)), m.name
    assert guarded_files == set(LATER[:3])  # the legacy files, which may not be edited
    later = migrations[11].text
    for table in ("books", "window_results", "blocks", "logs", "gaps"):
        assert f"create_hypertable('irisflow.{table}'" in later, table


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
    assert names(report.applied) == APPLIED
    if timescale_installed(empty_db):  # pragma: no cover - not on the plain CI server
        assert report.mode == "timescaledb"
        return
    assert names(report.skipped) == SKIPPED
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
        "token_transfers", "swaps", "logs", "internal_transactions", "token_approvals",
        "nft_transfers",
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
        assert states == dict.fromkeys(APPLIED, "applied") | dict.fromkeys(SKIPPED, "skipped")
    rows = fetch(empty_db, "SELECT version, mode FROM irisflow.schema_migrations ORDER BY 1")
    assert [v for v, _ in rows] == VERSIONS


@pytestmark_db
def test_dry_run_plans_without_applying(empty_db: str) -> None:
    report = migrate(empty_db, dry_run=True)
    assert report.dry_run
    assert names(report.applied) == APPLIED
    assert not schema_exists(empty_db)
    lines = report.lines()
    assert "would apply 0001_core" in lines
    if not timescale_installed(empty_db):
        assert "would skip 0004_timescale_hypertables (needs timescaledb)" in lines
        assert lines[-1] == "plain PostgreSQL mode"

    migrate(empty_db, to=1)
    plan = migrate(empty_db, dry_run=True, to=2)
    assert names(plan.applied) == ["0002_pipeline"]
    assert names(plan.pending) == ["0003_chain", *TIMESCALE, *LATER, *TIMESCALE_LATER, *NEWER]
    assert fetch_one(empty_db, "SELECT count(*) FROM irisflow.schema_migrations") == 1


@pytestmark_db
def test_to_applies_up_to_a_number(empty_db: str) -> None:
    report = migrate(empty_db, to=2)
    assert names(report.applied) == ["0001_core", "0002_pipeline"]
    assert names(report.pending) == ["0003_chain", *TIMESCALE, *LATER, *TIMESCALE_LATER, *NEWER]
    assert "left pending 0003_chain (past --to)" in report.lines()
    assert fetch_one(empty_db, "SELECT to_regclass('irisflow.blocks')") is None
    assert names(migrate(empty_db).applied) == ["0003_chain", *LATER, *NEWER]
    have = ", ".join(map(str, VERSIONS))
    with pytest.raises(UsageError, match=rf"no migration numbered 42 \(have: {have}\)"):
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
    assert applied == sorted(APPLIED)  # each file applied by exactly one of the two
    assert fetch_one(empty_db, "SELECT count(*) FROM irisflow.schema_migrations") == len(ALL)


@pytestmark_db
def test_0010_leaves_compressed_hypertables_to_0011(empty_db: str) -> None:
    # Under TimescaleDB with compression (0005 applied), 0010 must not touch trades, quotes
    # and book_updates (TimescaleDB refuses it); 0011 does. Plain PostgreSQL cannot run 0011,
    # so play the database that went through 0005 in timescaledb mode: 0010 skips them.
    try:
        migrate(empty_db, to=9)
        fetch(
            empty_db, "UPDATE irisflow.schema_migrations SET mode = 'timescaledb' WHERE version = 5"
        )
        migrate(empty_db, to=10)
        nullable = dict(
            fetch(
                empty_db,
                "SELECT table_name || '.' || column_name, is_nullable FROM"
                " information_schema.columns WHERE table_schema = 'irisflow' AND column_name IN"
                " ('trade_id', 'bid_qty', 'first_update_id') AND table_name <> 'tickers'",
            )
        )
        assert nullable == {
            "trades.trade_id": "NO", "quotes.bid_qty": "NO", "book_updates.first_update_id": "NO",
        }  # fmt: skip
        indexes = {
            n
            for (n,) in fetch(
                empty_db, "SELECT indexname FROM pg_indexes WHERE schemaname = 'irisflow'"
            )
        }
        assert "tickers_event_key" in indexes  # not compressed: changed in both modes
        assert "tickers_natural_key" not in indexes
        assert {"trades_natural_key", "quotes_natural_key", "book_updates_natural_key"} <= indexes
        assert not {"trades_event_key", "quotes_event_key", "book_updates_event_key"} & indexes
    finally:
        fetch(empty_db, "DROP SCHEMA IF EXISTS irisflow CASCADE")


@pytestmark_db
def test_0010_makes_ids_optional_and_keeps_keys(empty_db: str) -> None:
    migrate(empty_db)
    insert = (
        "INSERT INTO irisflow.trades (venue, symbol, ts, recv_ts, price, qty, side, trade_id)"
        " VALUES ('polygon', 'X:BTCUSD', '2026-01-01Z', '2026-01-01Z', %s, 1, 'buy', %s)"
        " ON CONFLICT DO NOTHING"
    )
    for price, trade_id in [(1, None), (1, None), (2, None), (1, 7), (1, 7)]:
        fetch(empty_db, insert, (price, trade_id))
    # Without an id, the rest of the trade is the key; with one, the id (as before).
    assert fetch(empty_db, "SELECT price, trade_id FROM irisflow.trades ORDER BY 2, 1") == [
        (1, 7), (1, None), (2, None)
    ]  # fmt: skip


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


def test_resolve_dsn_strips_whitespace_quotes_and_comments(tmp_path: Path) -> None:
    url = "postgresql://u:pw@h/db"
    assert resolve_dsn(f" {url}\n", environ={}, cwd=tmp_path) == url
    assert resolve_dsn(f'"{url}"', environ={}, cwd=tmp_path) == url
    assert resolve_dsn(f"' {url} '", environ={}, cwd=tmp_path) == url
    assert resolve_dsn("  ", environ={"DATABASE_URL": f"'{url}'"}, cwd=tmp_path) == url
    cases = {
        # The comment goes before the quotes: the value is what is inside them.
        f'IRISFLOW_DATABASE_URL="{url}"  # the comment': url,
        f"IRISFLOW_DATABASE_URL='{url}' # comment": url,
        f"IRISFLOW_DATABASE_URL={url} # comment": url,
        # A '#' is a comment only after whitespace and outside quotes.
        "IRISFLOW_DATABASE_URL=postgresql://u:p#w@h/db": "postgresql://u:p#w@h/db",
        'IRISFLOW_DATABASE_URL="postgresql://u:p #w@h/db" # c': "postgresql://u:p #w@h/db",
        f"export IRISFLOW_DATABASE_URL=  {url}  ": url,
    }
    for line, expected in cases.items():
        (tmp_path / ".env").write_text(line + "\n")
        assert resolve_dsn(None, environ={}, cwd=tmp_path) == expected, line


def test_resolve_dsn_without_any_setting(tmp_path: Path) -> None:
    with pytest.raises(
        UsageError, match="no database configured: pass --dsn or set IRISFLOW_DATABASE_URL"
    ):
        resolve_dsn(None, environ={}, cwd=tmp_path)


SECRET = "Sup3r-Secret-Pw"


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
        # Wrapped in whitespace or quotes (a shell, an editor, a .env file kept them).
        (" postgresql://u:Secret99@127.0.0.1:5999/x", "postgresql://u:***@127.0.0.1:5999/x"),
        ('"postgresql://u:Secret99@h/x"', "postgresql://u:***@h/x"),
        ("'host=db password=Secret99'", "host=db password=***"),
        # Not at the start: still redacted.
        ("x postgresql://u:Secret99@h/x", "x postgresql://u:***@h/x"),
        ("dbname=x sslpassword=Secret99", "dbname=x sslpassword=***"),
    ],
)
def test_redact_dsn(dsn: str, redacted: str) -> None:
    assert redact_dsn(dsn) == redacted


def test_scrub_redacts_any_credentials_in_a_text() -> None:
    text = (
        'missing "=" after ""postgresql://u:Secret99@127.0.0.1:5999/x"" in connection info; '
        "retry with bob:hunter22@db or PGPASSWORD=hunter22 or password = 'a b' at 12:30"
    )
    assert scrub(text, "") == (
        'missing "=" after ""postgresql://u:***@127.0.0.1:5999/x"" in connection info; '
        "retry with bob:***@db or PGPASSWORD=*** or password = *** at 12:30"
    )
    # The DSN's own password goes wherever it appears, however the DSN was wrapped.
    assert scrub("it was Secret-99 all along", ' "host=h password=Secret-99" ') == (
        "it was *** all along"
    )


LEAKS = [
    " postgresql://u:Secret99@127.0.0.1:1/x",
    '"postgresql://u:Secret99@127.0.0.1:1/x"',
    "'postgresql://u:Secret99@127.0.0.1:1/x'",
    "\tpostgresql://u:Secret99@127.0.0.1:1/x ",
    "x postgresql://u:Secret99@127.0.0.1:1/x",  # no cleaning helps: redacting must
    "host=127.0.0.1 port=1 password=Secret99 dbname",
]


@pytest.mark.parametrize("dsn", LEAKS)
def test_cli_never_prints_a_password(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IRISFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    result = CliRunner().invoke(app, ["migrate", "--dsn", dsn])
    assert result.exit_code != 0
    assert "Secret99" not in result.stdout + result.stderr
    assert "***" in result.stderr


@pytest.mark.parametrize(
    "line",
    [
        'IRISFLOW_DATABASE_URL="postgresql://u:Secret99@127.0.0.1:1/db"  # comment',
        "DATABASE_URL='postgresql://u:Secret99@127.0.0.1:1/db' # comment",
        "IRISFLOW_DATABASE_URL=postgresql://u:Secret99@127.0.0.1:1/db # comment",
        'IRISFLOW_DATABASE_URL="postgresql://u:Secret99@127.0.0.1:1/db',  # no closing quote
    ],
)
def test_cli_never_prints_a_password_from_dotenv(
    line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IRISFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    (tmp_path / ".env").write_text(line + "\n")
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code != 0
    assert "Secret99" not in result.stdout + result.stderr
    assert "could not connect to PostgreSQL (postgresql://u:***@127.0.0.1:1/db)" in result.stderr


def test_permanent_connection_failures_are_told_apart() -> None:
    refused = [
        'connection failed: FATAL:  password authentication failed for user "bob"',
        'FATAL:  role "bob" does not exist',
        'FATAL:  role "bob" is not permitted to log in',
        'FATAL:  database "nope" does not exist',
        'FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "bob"',
        'connection is bad: invalid port number: "99999"',
        'connection is bad: invalid sslmode value: "bogus"',
        'FATAL:  unrecognized configuration parameter "foo"',
        "fe_sendauth: no password supplied",
    ]
    transient = [
        'connection to server at "127.0.0.1", port 1 failed: Connection refused',
        "server closed the connection unexpectedly",
        "FATAL:  the database system is starting up",
        "FATAL:  sorry, too many clients already",
        "timeout expired",
        'could not translate host name "db" to address: Temporary failure in name resolution',
    ]
    assert [is_permanent(psycopg.OperationalError(m)) for m in refused] == [True] * len(refused)
    assert not any(is_permanent(psycopg.OperationalError(m)) for m in transient)
    assert is_permanent(UsageError("bad DSN"))


@pytestmark_db
def test_a_dsn_the_server_refuses_is_a_usage_error(pg_server_dsn: str) -> None:
    from psycopg.conninfo import make_conninfo

    for dsn in (
        make_conninfo(pg_server_dsn, port="99999", password=SECRET),
        make_conninfo(pg_server_dsn, options="-c no_such.setting_x=1 -c nosuch=1"),
        make_conninfo(pg_server_dsn, user="irisflow_no_such_role", password=SECRET),
    ):
        with pytest.raises(UsageError, match="PostgreSQL refused the connection") as err:
            connect(dsn)
        assert SECRET not in "".join(traceback.format_exception(err.value))
        assert "retrying will not help" in str(err.value)


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
