"""PostgreSQL fixtures: one fresh database per test run, and a clean schema per test.

The server is the one named by ``IRISFLOW_TEST_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``). The session creates
``irisflow_test_<pid>`` on it and drops it at the end. If ``IRISFLOW_TEST_DSN`` is unset and
the default server does not answer, database tests are skipped; if it is set, they error.

Fixtures:
    pg_server_dsn: the server DSN (session).
    db_dsn: DSN of this run's database (session).
    empty_db: ``db_dsn`` with no ``irisflow`` schema at all (per test).
    migrated_db: ``db_dsn`` migrated, with every irisflow table emptied (per test).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from irisflow._migrate import migrate, migration_status, redact_dsn

DEFAULT_TEST_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def fetch(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one query in its own autocommit connection and return all rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query.encode(), params)
        return cur.fetchall() if cur.description else []


def fetch_one(dsn: str, query: str, params: Any = None) -> Any:
    """The first column of the first row of ``query``."""
    rows = fetch(dsn, query, params)
    return rows[0][0] if rows else None


@pytest.fixture(scope="session")
def pg_server_dsn() -> str:
    dsn = os.environ.get("IRISFLOW_TEST_DSN") or DEFAULT_TEST_DSN
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL at {redact_dsn(dsn)} is not reachable ({exc})"
        if os.environ.get("IRISFLOW_TEST_DSN"):
            pytest.fail(message)
        pytest.skip(f"{message}; set IRISFLOW_TEST_DSN to run the database tests")
    return dsn


@pytest.fixture(scope="session")
def db_dsn(pg_server_dsn: str) -> Iterator[str]:
    name = f"irisflow_test_{os.getpid()}"
    ident = sql.Identifier(name)
    with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield make_conninfo(pg_server_dsn, dbname=name)
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


@pytest.fixture
def empty_db(db_dsn: str) -> str:
    """The run's database with the irisflow schema dropped."""
    fetch(db_dsn, "DROP SCHEMA IF EXISTS irisflow CASCADE")
    return db_dsn


@pytest.fixture
def migrated_db(db_dsn: str) -> str:
    """The run's database, migrated with the bundled files, every irisflow table empty.

    Migrating is a no-op when an earlier test left the same schema; anything else (a partial
    run, a test's own migration files) is dropped and migrated afresh.
    """
    if any(s.state not in ("applied", "skipped") for s in migration_status(db_dsn)):
        fetch(db_dsn, "DROP SCHEMA IF EXISTS irisflow CASCADE")
        migrate(db_dsn)
    tables = fetch(
        db_dsn,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'irisflow'"
        " AND tablename <> 'schema_migrations'",
    )
    if tables:
        names = sql.SQL(", ").join(sql.Identifier("irisflow", t) for (t,) in tables)
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("TRUNCATE {}").format(names))
    return db_dsn
