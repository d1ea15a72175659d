"""Database settings and connections: find the DSN, keep its password out of text, connect.

:func:`resolve_dsn` finds the database to use (command line, environment, ``.env``);
:func:`redact_dsn` and :func:`scrub` keep passwords out of every message, and
:func:`raise_database_error` turns a psycopg failure into an irisflow error that shows the
redacted DSN. :func:`connect` opens a sync psycopg connection and tells a refusal that retrying
cannot cure (:func:`is_permanent`) from one that it can.

Nothing here is async: :func:`connect` waits on the network and :func:`resolve_dsn` reads
``.env``, so Trio code runs them in a worker thread (``trio.to_thread.run_sync``).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ._errors import DatabaseError, UsageError

__all__ = [
    "DSN_ENV_VARS",
    "connect",
    "is_permanent",
    "normalize_dsn",
    "pg_message",
    "raise_database_error",
    "redact_dsn",
    "resolve_dsn",
    "scrub",
]


DSN_ENV_VARS = ("IRISFLOW_DATABASE_URL", "DATABASE_URL")
"""Environment variables (and ``.env`` keys) that name the database, first one wins."""


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
