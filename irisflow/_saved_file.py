"""Saved filters in a TOML file in the user's config directory (``filters.toml``).

:class:`FileFilterStore` reads and writes the file on the spot (it is small) and replaces it
atomically; :func:`make_converter` checks what it reads, so a hand edit with a typo is reported
with where it is.
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeAlias

import attrs
import cattrs
import trio

from ._errors import UsageError
from ._saved_filter import Filters, SavedFilter, SaveResult, saved_filter, unknown_filter

__all__ = ["FileFilterStore", "default_filters_path", "make_converter"]

_HEADER = """\
# irisflow saved filters. `irisflow filters add/rm` rewrite this file; edits by hand are fine
# and a running `irisflow watch --saved NAME` picks them up.
"""


@attrs.frozen
class _Entry:
    expr: str
    venues: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()
    updated_at: _dt.datetime | None = None


@attrs.frozen
class _File:
    filters: dict[str, _Entry] = attrs.field(factory=dict)


def _strict_str(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__} {value!r}")
    return value


def _strict_datetime(value: object, _: object) -> _dt.datetime:
    if not isinstance(value, _dt.datetime):
        raise TypeError(f"expected a date-time, got {type(value).__name__} {value!r}")
    return value


def _strict_strings(value: object, _: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list of strings, got {type(value).__name__} {value!r}")
    return tuple(_strict_str(item, str) for item in value)


def make_converter() -> cattrs.Converter:
    """The converter for ``filters.toml``: unknown keys and wrong types are errors."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook_func(lambda t: t == tuple[str, ...], _strict_strings)
    converter.register_structure_hook(_dt.datetime, _strict_datetime)
    return converter


_CONVERTER = make_converter()


def default_filters_path(
    config_dir: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Path:
    """Where the file store keeps saved filters: ``<config_dir>/filters.toml``.

    The default ``config_dir`` is ``$XDG_CONFIG_HOME/irisflow``, else ``~/.config/irisflow``
    (the directory of ``irisflow.toml``).
    """
    if config_dir is None:
        env = os.environ if environ is None else environ
        base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        config_dir = Path(base) / "irisflow"
    return Path(config_dir) / "filters.toml"


def _toml_str(text: str) -> str:
    """``text`` as a TOML basic string."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_TOML_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_text(filters: Mapping[str, SavedFilter]) -> str:
    lines = [_HEADER.rstrip("\n")]
    for name in sorted(filters):
        f = filters[name]
        lines += ["", f"[filters.{_toml_str(name)}]", f"expr = {_toml_str(f.expr)}"]
        if f.venues:
            lines.append(f"venues = [{', '.join(_toml_str(v) for v in f.venues)}]")
        if f.symbols:
            lines.append(f"symbols = [{', '.join(_toml_str(s) for s in f.symbols)}]")
        if f.updated_at is not None:
            lines.append(f"updated_at = {f.updated_at.astimezone(_dt.UTC).isoformat()}")
    return "\n".join(lines) + "\n"


def _parse_toml(text: str, path: Path) -> dict[str, SavedFilter]:
    try:
        data = tomllib.loads(text)
        parsed = _CONVERTER.structure(data, _File)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"saved filters file {str(path)!r} is not valid TOML: {exc}") from exc
    except Exception as exc:  # cattrs raises exception groups; say where, in one line
        if isinstance(exc, cattrs.BaseValidationError | cattrs.ForbiddenExtraKeysError):
            details = "; ".join(cattrs.transform_error(exc, path="$"))
        else:
            details = str(exc)
        raise UsageError(f"saved filters file {str(path)!r}: {details}") from exc
    return {
        name: SavedFilter(name, e.expr, e.venues, e.symbols, e.updated_at)
        for name, e in parsed.filters.items()
    }


_Signature: TypeAlias = tuple[int, int, int] | None


class FileFilterStore:
    """Saved filters in a TOML file (see :func:`default_filters_path`).

    The file is a few hundred bytes in the user's config directory, so it is read and written
    on the spot rather than in a worker thread. Writes go to a temporary file in the same
    directory, flushed to disk, then renamed over the old one: a reader sees the old file or
    the new one, never half of one. (Two ``filters add`` running at the very same moment can
    still lose one of the two changes; the database store has no such limit.)
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"<FileFilterStore {self.path}>"

    @property
    def where(self) -> str:
        """The file's path."""
        return str(self.path)

    def _signature(self) -> _Signature:
        """``(inode, mtime_ns, size)`` of the file, ``None`` when it does not exist."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UsageError(f"cannot read {str(self.path)!r}: {exc.strerror}") from exc
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self) -> dict[str, SavedFilter]:
        """Every filter in the file (none if it does not exist); blocking but brief."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise UsageError(f"cannot read {str(self.path)!r}: {exc.strerror}") from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"saved filters file {str(self.path)!r} is not UTF-8") from exc
        return _parse_toml(text, self.path)

    def _write(self, filters: Mapping[str, SavedFilter]) -> None:
        """Replace the file atomically with ``filters``; blocking but brief."""
        data = _toml_text(filters).encode("utf-8")
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as exc:
            raise UsageError(f"cannot write {str(self.path)!r}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except OSError as exc:
            Path(temp).unlink(missing_ok=True)
            raise UsageError(f"cannot write {str(self.path)!r}: {exc.strerror}") from exc

    async def add(self, saved: SavedFilter) -> SaveResult:
        """Check and save ``saved``, replacing that name if taken."""
        await trio.lowlevel.checkpoint()
        saved = saved_filter(saved.name, saved.expr, saved.venues, saved.symbols)
        saved = attrs.evolve(saved, updated_at=_dt.datetime.now(_dt.UTC))
        filters = self._read()
        old = filters.get(saved.name)
        filters[saved.name] = saved
        self._write(filters)
        return SaveResult(saved, old)

    async def list(self) -> Filters:
        """Every saved filter, by name."""
        await trio.lowlevel.checkpoint()
        filters = self._read()
        return [filters[name] for name in sorted(filters)]

    async def get(self, name: str) -> SavedFilter:
        """The filter called ``name``."""
        await trio.lowlevel.checkpoint()
        filters = self._read()
        if name not in filters:
            raise unknown_filter(name, filters, self.where)
        return filters[name]

    async def remove(self, name: str) -> SavedFilter:
        """Delete the filter called ``name`` and return it."""
        await trio.lowlevel.checkpoint()
        filters = self._read()
        if name not in filters:
            raise unknown_filter(name, filters, self.where)
        removed = filters.pop(name)
        self._write(filters)
        return removed

    async def find(self, names: Iterable[str]) -> dict[str, SavedFilter]:
        """The filters of those names that exist."""
        await trio.lowlevel.checkpoint()
        filters = self._read()
        return {n: filters[n] for n in names if n in filters}
