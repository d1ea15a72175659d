"""Which table each event kind goes to and how its rows are written: PostgresSink's schema side.

Every kind irisflow produces has a table and a natural key (the migrations' unique indexes):

- market data (``trade`` ... ``gap``): a table per kind (0001; books keyed by depth too, 0007),
  inserted unless stored; candles upsert (an open bar's last update wins, a closed one is final).
  Ids a venue may leave out (``trade_id``, quote sizes, book-diff update ids) are optional
  columns, and the keys read a missing one as -1, so an id-less row still dedupes on the rest of
  its key; a full and a mini ticker of one instant are two rows, and so are a trade and a
  Binance aggTrade with the same number (``aggregate``) (0010).
- pipeline results (``window`` for windows and bars, ``rsi``, ``spike``, ``join``, ``late``):
  ``window_results`` (0008); :func:`result_row` says how each fills the key columns, every
  other field goes to the jsonb ``values`` (decimals and uint256 as strings, times as ISO-8601
  UTC). **A complete result is final**: it replaces an incomplete row, and only a complete
  recomputation replaces it, so a window cut short at the end of one run and complete in
  another is stored complete, whatever the order of the runs. A revision (a window or RSI
  corrected after a reorg: ``revision`` in ``values``, absent when 0) replaces its row, and
  within one chunk the highest revision wins.
- chain events (``block``, ``transaction``, ``log``, ``token_transfer``, ``swap``; and
  ``internal_tx``, ``approval``, ``nft_transfer`` from 0012): the chain tables, upserted; a
  stored row is only touched to clear ``removed`` (the event came again after a retraction: its
  block is canonical again) or to set ``confirmed``.
- ``retraction`` and ``confirmation`` change the row they name (:func:`apply_marks`).
- ``alert``: none. ``irisflow.alerts`` is the outbox of :class:`~irisflow.AlertSink` (one row
  per alert and chat, ``id = "<key>|<chat>"``), which every run with alert rules and a database
  has; a second writer could only add rows no chat owns, never sent.

Times go to PostgreSQL as binary ``timestamptz``: an int8 of microseconds since 2000-01-01
UTC, which each row function computes from irisflow's ns since 1970 (no ``datetime`` per
value: ~10% faster, see benchmarks/db_sink.py). Sub-microsecond digits are dropped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import attrs
import orjson
import psycopg
import psycopg.errors
from psycopg.types.json import Jsonb

from .._chain import (
    Block,
    Confirmation,
    InternalTransaction,
    Log,
    NftTransfer,
    Retraction,
    Swap,
    TokenApproval,
    TokenTransfer,
    Transaction,
)
from .._events import Book, BookUpdate, Candle, Event, Gap, Quote, Ticker, Trade
from .._join import Joined
from .._jsonl import iso_time
from .._trackers import Rsi, Spike
from .._windows import Late, Window

__all__ = ["MARKS", "MARK_KINDS", "TABLES", "Marks", "Table", "apply_marks", "sink_tables"]

_PG_EPOCH_NS = 946_684_800_000_000_000
TS = "int8"
"""The COPY type for a ``timestamptz`` column fed by :func:`pg_time`."""


def pg_time(ns: int) -> int:
    """An irisflow time (ns since 1970) as PostgreSQL's binary timestamptz (us since 2000)."""
    return (ns - _PG_EPOCH_NS) // 1000


@attrs.define
class Table:
    """How one event kind (or several) maps onto one table."""

    kind: str
    """What its rows are, for messages: ``trade``, ``window result``..."""
    name: str
    columns: tuple[str, ...]
    """Column names, in the order the row function returns values."""
    types: tuple[str, ...]
    """COPY types of the values (``TS`` for time columns)."""
    row: Callable[..., tuple[Any, ...]]
    """The row of an event; chain tables take the sink's ``chain`` as a keyword too."""
    upsert_key: tuple[str, ...] = ()
    """For upserting kinds, the conflict target; empty: insert unless already stored."""
    upsert_set: str = ""
    """The ``SET`` of an upsert; empty: every column outside the key from the new row."""
    upsert_where: str = ""
    order: str = ""
    """Which row of a key wins within one chunk (``ORDER BY`` after the key)."""
    chain: bool = False
    """The row function takes ``chain=``."""
    use_staging: bool = False
    """Mutable hint: take the staging path until a chunk goes through with no duplicate."""

    def store(self, conn: psycopg.Connection[Any], events: Sequence[Any]) -> int:
        """Write ``events``; return how many rows were new (or changed a stored row).

        ``COPY`` straight in while no row is already stored; after a duplicate (and always to
        upsert) ``COPY`` to the staging table, then merge. psycopg's errors go through.
        """
        if not self.upsert_key and not self.use_staging:
            try:
                with conn.transaction():
                    self._copy(conn, self.copy_sql, events)
                return len(events)
            except psycopg.errors.UniqueViolation:
                self.use_staging = True
        self._copy(conn, self.stage_copy_sql, events)
        new = max(conn.execute(self.merge_sql).rowcount, 0)
        # Empty the stage now: a later chunk in this transaction must not see these rows.
        conn.execute(f"DELETE FROM {self.stage}".encode())
        if new == len(events):
            self.use_staging = False
        return new

    def _copy(self, conn: psycopg.Connection[Any], statement: bytes, events: Sequence[Any]) -> None:
        row = self.row
        with conn.cursor() as cur, cur.copy(statement) as copy:
            copy.set_types(list(self.types))
            for event in events:
                copy.write_row(row(event))

    @property
    def copy_sql(self) -> bytes:
        cols = ", ".join(self.columns)
        return f"COPY irisflow.{self.name} ({cols}) FROM STDIN (FORMAT BINARY)".encode()

    @property
    def stage(self) -> str:
        return f"irisflow_stage_{self.name}"

    @property
    def stage_sql(self) -> bytes:
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} "
            f"(LIKE irisflow.{self.name}) ON COMMIT DELETE ROWS"
        ).encode()

    @property
    def stage_copy_sql(self) -> bytes:
        return f"COPY {self.stage} ({', '.join(self.columns)}) FROM STDIN (FORMAT BINARY)".encode()

    @property
    def merge_sql(self) -> bytes:
        cols = ", ".join(self.columns)
        if not self.upsert_key:
            return (
                f"INSERT INTO irisflow.{self.name} ({cols}) SELECT {cols} FROM {self.stage} "
                "ON CONFLICT DO NOTHING"
            ).encode()
        key = ", ".join(self.upsert_key)
        sets = self.upsert_set or ", ".join(
            f"{c} = excluded.{c}" for c in self.columns if c not in self.upsert_key
        )
        return (
            f"INSERT INTO irisflow.{self.name} ({cols}) "
            f"SELECT DISTINCT ON ({key}) {cols} FROM {self.stage} ORDER BY {key}, {self.order} "
            f"ON CONFLICT ({key}) DO UPDATE SET {sets} WHERE {self.upsert_where}"
        ).encode()


class Marks:
    """Where the sink files retractions and confirmations: they change rows, see :data:`MARKS`."""

    name = "marks"


MARKS = Marks()
"""The buffer slot of retractions and confirmations (applied by :func:`apply_marks`)."""


# --------------------------------------------------------------------------- market data


def _levels(levels: Sequence[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    return [p for p, _ in levels], [q for _, q in levels]


def _trade_row(e: Trade, k: int = _PG_EPOCH_NS) -> tuple[Any, ...]:
    return (
        e.venue, e.symbol, (e.ts - k) // 1000, (e.recv_ts - k) // 1000,
        e.price, e.qty, e.side, e.trade_id, e.aggregate,
    )  # fmt: skip


def _quote_row(e: Quote, k: int = _PG_EPOCH_NS) -> tuple[Any, ...]:
    return (
        e.venue, e.symbol, (e.ts - k) // 1000, (e.recv_ts - k) // 1000,
        e.bid_price, e.bid_qty, e.ask_price, e.ask_qty, e.update_id,
    )  # fmt: skip


def _candle_row(e: Candle) -> tuple[Any, ...]:
    return (
        e.venue, e.symbol, pg_time(e.ts), pg_time(e.recv_ts),
        e.interval, pg_time(e.start), pg_time(e.end),
        e.open, e.high, e.low, e.close, e.volume, e.quote_volume, e.trades, e.closed,
    )  # fmt: skip


def _ticker_row(e: Ticker) -> tuple[Any, ...]:
    return (
        e.venue, e.symbol, pg_time(e.ts), pg_time(e.recv_ts),
        e.window, e.last, e.open, e.high, e.low, e.volume, e.quote_volume,
        e.change, e.change_pct, e.vwap, e.bid_price, e.bid_qty, e.ask_price, e.ask_qty, e.trades,
    )  # fmt: skip


def _book_row(e: Book) -> tuple[Any, ...]:
    bp, bq = _levels(e.bids)
    ap, aq = _levels(e.asks)
    # The depth is part of the key: depth5 and depth10 snapshots of one update are two rows.
    depth = max(len(bp), len(ap))
    return (
        e.venue, e.symbol, pg_time(e.ts), pg_time(e.recv_ts), e.update_id, depth, bp, bq, ap, aq
    )  # fmt: skip


def _book_update_row(e: BookUpdate) -> tuple[Any, ...]:
    bp, bq = _levels(e.bids)
    ap, aq = _levels(e.asks)
    return (
        e.venue, e.symbol, pg_time(e.ts), pg_time(e.recv_ts),
        e.first_update_id, e.last_update_id, bp, bq, ap, aq,
    )  # fmt: skip


def _gap_row(e: Gap) -> tuple[Any, ...]:
    return (
        e.venue, e.symbol, pg_time(e.ts), pg_time(e.recv_ts),
        pg_time(e.start), pg_time(e.end), list(e.streams), e.cause,
    )  # fmt: skip


# --------------------------------------------------------------------------- pipeline results

_I64 = 2**63
_ID_FIELDS = "trade_id update_id first_update_id last_update_id interval tx_hash log_index hash"
"""Fields that tell one event from others of its venue, symbol and time (as alert keys do)."""


def _json(value: Any) -> Any:
    """A field value as JSON: decimals and over-long ints as strings, events as objects."""
    cls = value.__class__
    if cls is Decimal:
        return str(value)
    if cls is int:
        return value if -_I64 <= value < _I64 else str(value)
    if value is None or cls is str or cls is bool or cls is float:
        return value
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    if isinstance(value, Event):
        return {"kind": value.kind, **_encode(value, _codecs(cls))}
    return str(value)


def _time_json(value: Any) -> Any:
    return iso_time(value) if value.__class__ is int else _json(value)


def _big_json(value: Any) -> Any:
    return str(value) if value.__class__ is int else _json(value)


_Codecs = tuple[tuple[str, Callable[[Any], Any]], ...]


def _encoder(meta: Any) -> Callable[[Any], Any]:
    return _time_json if meta.get("time") else _big_json if meta.get("bigint") else _json


def _codecs(cls: type[Any], skip: frozenset[str] = frozenset()) -> _Codecs:
    """``(field, encoder)`` for every field of ``cls`` outside ``skip``."""
    # str(): orjson wants plain str keys, and the names of built fields may be Located.
    fields = attrs.fields(cls)
    return tuple((str(f.name), _encoder(f.metadata)) for f in fields if f.name not in skip)


def _encode(event: Any, codecs: _Codecs) -> dict[str, Any]:
    return {name: encode(getattr(event, name)) for name, encode in codecs}


def _identity(event: Any, prefix: str = "") -> str:
    """``trade_id=7``: the id fields of an event (of its ``prefix``-ed copies in a join)."""
    ids = ((name, getattr(event, prefix + name, None)) for name in _ID_FIELDS.split())
    return " ".join(f"{name}={value}" for name, value in ids if value is not None)


Span = tuple[str, int, int, int | None, bool]
"""What a result puts in ``spec, window_start, window_end, count, incomplete``."""


def _window_span(e: Window) -> Span:
    return e.spec, e.start, e.end, e.count, not e.complete


_SPIKE_FROM = ("tx_hash", "log_index")
"""Spike fields that name the on-chain event it came from (sparse: see :data:`_SPARSE`)."""


def _rsi_span(e: Rsi) -> Span:
    return f"rsi {e.period}", e.ts, e.ts, None, False


def _spike_span(e: Spike) -> Span:
    return f"spike {e.threshold}% in {e.window}", e.base_ts, e.ts, None, False


def _join_span(e: Joined) -> Span:
    # One row per left event: its ids tell apart left events of one key at the same time.
    return f"join {_identity(e, 'left_')}".rstrip(), e.ts, e.ts, None, False


def _late_span(e: Late) -> Span:
    inner = getattr(e.event, "kind", "event")
    return f"late {inner} {_identity(e.event)}".rstrip(), e.ts, e.ts, None, False


_RESULT_KINDS: tuple[tuple[type[Event], Callable[[Any], Span], frozenset[str]], ...] = (
    (Window, _window_span, frozenset(attrs.fields_dict(Window))),
    (Rsi, _rsi_span, frozenset({"venue", "symbol", "ts", "recv_ts", "key", "revision"})),
    (Spike, _spike_span, frozenset({"venue", "symbol", "ts", "recv_ts", "key", *_SPIKE_FROM})),
    (Joined, _join_span, frozenset({"venue", "symbol", "ts", "recv_ts", "key"})),
    (Late, _late_span, frozenset({"venue", "symbol", "ts", "recv_ts", "key"})),
)
"""Each result kind: how it fills the span columns, and which fields are not in ``values``."""

_SPARSE: dict[str, Any] = {"revision": 0, "tx_hash": None, "log_index": None}
"""Result fields in ``values`` only when not these defaults: a window's or an RSI's revision
above 0 (reorgs), the on-chain event a spike came from. Results without them store what they
always did."""

_SHAPES: dict[type[Any], tuple[Callable[[Any], Span], _Codecs, tuple[str, ...]]] = {}


def _shape(cls: type[Any]) -> tuple[Callable[[Any], Span], _Codecs, tuple[str, ...]]:
    """The span function, the ``values`` encoders and the sparse fields of a result class
    (cached per class).

    Window and join steps make subclasses with one field per aggregate or side field: those
    fields go to ``values``.
    """
    found = _SHAPES.get(cls)
    if found is None:
        for base, span, columns in _RESULT_KINDS:
            if issubclass(cls, base):
                names = attrs.fields_dict(cls)
                sparse = tuple(n for n in _SPARSE if n in columns and n in names)
                found = _SHAPES[cls] = (span, _codecs(cls, columns), sparse)
                break
        else:
            raise TypeError(f"{cls.__name__} is not a pipeline result")
    return found


def result_row(e: Any) -> tuple[Any, ...]:
    """The ``window_results`` row of a window, bar, rsi, spike, join or late event."""
    span, codecs, sparse = _shape(e.__class__)
    spec, start, end, count, incomplete = span(e)
    encoded = _encode(e, codecs)
    for name in sparse:
        value = getattr(e, name)
        if value != _SPARSE[name]:
            encoded[name] = _json(value)
    values = Jsonb(encoded, orjson.dumps)
    return (
        e.kind, e.venue, e.symbol, e.key, spec, pg_time(start), pg_time(end),
        pg_time(e.ts), pg_time(e.recv_ts), count, values, incomplete, False,
    )  # fmt: skip


# --------------------------------------------------------------------------- chain events


def _block_row(e: Block, chain: str = "") -> tuple[Any, ...]:
    return (
        e.venue, chain, e.number, e.hash, e.parent_hash, pg_time(e.ts), pg_time(e.recv_ts),
        e.miner, e.gas_used, e.gas_limit, e.base_fee, e.confirmed, False,
    )  # fmt: skip


def _transaction_row(e: Transaction, chain: str = "") -> tuple[Any, ...]:
    return (
        e.venue, chain, e.tx_hash, "pending" if e.pending else "mined",
        e.block_number, e.block_hash, e.tx_index, pg_time(e.ts), pg_time(e.recv_ts),
        e.from_address, e.to_address, e.value_wei, e.value_eth, e.gas, e.gas_price,
        e.max_fee_per_gas, e.max_priority_fee_per_gas, e.nonce, e.tx_type, e.input,
        e.contract_address, e.status, e.confirmed, False,
    )  # fmt: skip


def _log_row(e: Log, chain: str = "") -> tuple[Any, ...]:
    return (
        e.venue, chain, e.address, list(e.topics), e.data, e.tx_hash, e.log_index,
        e.block_number, e.block_hash, e.tx_index, pg_time(e.ts), pg_time(e.recv_ts),
        e.confirmed, False,
    )  # fmt: skip


def _transfer_row(e: TokenTransfer, chain: str = "") -> tuple[Any, ...]:
    return (
        e.venue, chain, e.block_number, e.block_hash, e.tx_hash, e.log_index,
        pg_time(e.ts), pg_time(e.recv_ts), e.token, e.symbol, e.from_address, e.to_address,
        e.raw_amount, e.decimals, e.amount, e.possible_spam, e.confirmed, False,
    )  # fmt: skip


def _swap_row(e: Swap, chain: str = "") -> tuple[Any, ...]:
    return (
        e.venue, chain, e.protocol, e.pool, e.block_number, e.block_hash, e.tx_hash,
        e.log_index, pg_time(e.ts), pg_time(e.recv_ts), e.sender, e.recipient,
        e.amount0, e.amount1, e.amount0_in, e.amount1_in, e.amount0_out, e.amount1_out,
        e.sqrt_price_x96, e.liquidity, e.tick, e.confirmed, False,
    )  # fmt: skip


def _internal_row(e: InternalTransaction, chain: str = "") -> tuple[Any, ...]:
    return (
        e.venue, chain, e.tx_hash, e.internal_index, e.block_number, e.block_hash,
        pg_time(e.ts), pg_time(e.recv_ts), e.from_address, e.to_address, e.value_wei,
        e.value_eth, e.gas, e.confirmed, False,
    )  # fmt: skip


def _approval_row(e: TokenApproval, chain: str = "") -> tuple[Any, ...]:
    return (
        e.venue, chain, e.block_number, e.block_hash, e.tx_hash, e.log_index,
        pg_time(e.ts), pg_time(e.recv_ts), e.token, e.symbol, e.owner, e.spender,
        e.raw_amount, e.decimals, e.amount, e.possible_spam, e.confirmed, False,
    )  # fmt: skip


def _nft_row(e: NftTransfer, chain: str = "") -> tuple[Any, ...]:
    return (
        e.venue, chain, e.block_number, e.block_hash, e.tx_hash, e.log_index,
        pg_time(e.ts), pg_time(e.recv_ts), e.contract, e.standard, e.operator, e.from_address,
        e.to_address, e.token_id, e.amount, e.token_name, e.token_symbol, e.confirmed, False,
    )  # fmt: skip


# --------------------------------------------------------------------------- the mapping

_TYPES = {"ts": TS, "num": "numeric", "nums": "numeric[]"}


def _table(kind: str, name: str, row: Any, spec: str, **options: Any) -> Table:
    """A :class:`Table`; ``spec`` lists its columns, ``name:type`` (``text`` if no type; ``ts``
    is a timestamptz fed by :func:`pg_time`, ``num``/``nums`` numeric and numeric[])."""
    pairs = [(item + ":text").split(":")[:2] for item in spec.split()]
    columns = tuple(c for c, _ in pairs)
    return Table(kind, name, columns, tuple(_TYPES.get(t, t) for _, t in pairs), row, **options)


_HEAD = "venue symbol ts:ts recv_ts:ts "
_LOG_KEY = ("chain", "tx_hash", "log_index", "block_hash", "ts")
_OPT_BLOCK = "(coalesce(block_hash, ''))"


def _chain_table(kind: str, name: str, spec: str, row: Any, key: tuple[str, ...]) -> Table:
    """A chain table: a stored row is only ever unmarked as removed or marked confirmed."""
    t = f"irisflow.{name}"
    confirmed = f"greatest({t}.confirmed, excluded.confirmed)"  # true wins; NULL is unknown
    return _table(
        kind,
        name,
        row,
        f"venue chain {spec} confirmed:bool removed:bool",
        upsert_key=key,
        upsert_set=f"removed = false, confirmed = {confirmed}",
        upsert_where=f"{t}.removed OR {t}.confirmed IS DISTINCT FROM {confirmed}",
        order="confirmed DESC NULLS LAST",
        chain=True,
    )


RESULTS = _table(
    "window result",
    "window_results",
    result_row,
    "kind venue symbol key spec window_start:ts window_end:ts ts:ts recv_ts:ts count:int8"
    ' "values":jsonb incomplete:bool removed:bool',
    upsert_key=("kind", "venue", "symbol", "key", "spec", "window_start", "window_end"),
    # Within a chunk: a complete result beats an incomplete one, then the highest revision (a
    # correction after a reorg, in "values"), then the latest.
    order="incomplete, coalesce((\"values\"->>'revision')::int8, 0) DESC, recv_ts DESC",
    # Against the table: complete is final (only a complete recomputation replaces it), and an
    # unchanged result is not rewritten (so a replay counts it as a duplicate) unless a reorg
    # had withdrawn it (a join paired again comes back).
    upsert_where="(NOT excluded.incomplete OR irisflow.window_results.incomplete)"
    ' AND ((excluded."values", excluded.count, excluded.incomplete) IS DISTINCT FROM'
    ' (irisflow.window_results."values", irisflow.window_results.count,'
    " irisflow.window_results.incomplete) OR irisflow.window_results.removed)",
)

TABLES: dict[type[Event], Table] = {
    Trade: _table(
        "trade", "trades", _trade_row, _HEAD + "price:num qty:num side trade_id:int8 aggregate:bool"
    ),
    Quote: _table(
        "quote",
        "quotes",
        _quote_row,
        _HEAD + "bid_price:num bid_qty:num ask_price:num ask_qty:num update_id:int8",
    ),
    Candle: _table(
        "candle",
        "candles",
        _candle_row,
        _HEAD + "interval start_ts:ts end_ts:ts open:num high:num low:num close:num volume:num"
        " quote_volume:num trades:int8 closed:bool",
        upsert_key=("venue", "symbol", "interval", "start_ts"),
        # Within a chunk: a closed bar beats an open one, then the latest update wins.
        order="closed DESC, ts DESC, recv_ts DESC",
        # Against the table: a closed bar is final; an open one yields to anything newer.
        upsert_where="NOT irisflow.candles.closed"
        " AND (excluded.closed OR excluded.ts >= irisflow.candles.ts)",
    ),
    Ticker: _table(
        "ticker",
        "tickers",
        _ticker_row,
        _HEAD + "window_len last:num open:num high:num low:num volume:num quote_volume:num"
        " change:num change_pct:num vwap:num bid_price:num bid_qty:num ask_price:num"
        " ask_qty:num trades:int8",
    ),
    Book: _table(
        "book",
        "books",
        _book_row,
        _HEAD + "update_id:int8 depth:int4 bid_prices:nums bid_qtys:nums ask_prices:nums"
        " ask_qtys:nums",
    ),
    BookUpdate: _table(
        "book_update",
        "book_updates",
        _book_update_row,
        _HEAD + "first_update_id:int8 last_update_id:int8 bid_prices:nums bid_qtys:nums"
        " ask_prices:nums ask_qtys:nums",
    ),
    Gap: _table("gap", "gaps", _gap_row, _HEAD + "start_ts:ts end_ts:ts streams:text[] cause"),
    Window: RESULTS,
    Rsi: RESULTS,
    Spike: RESULTS,
    Joined: RESULTS,
    Late: RESULTS,
    Block: _chain_table(
        "block",
        "blocks",
        "number:int8 hash parent_hash ts:ts recv_ts:ts miner gas_used:num gas_limit:num"
        " base_fee_per_gas:num",
        _block_row,
        key=("chain", "number", "(coalesce(hash, ''))", "ts"),
    ),
    Transaction: _chain_table(
        "transaction",
        "transactions",
        "hash status block_number:int8 block_hash tx_index:int4 ts:ts recv_ts:ts from_address"
        " to_address value:num value_eth:num gas:num gas_price:num max_fee_per_gas:num"
        " max_priority_fee_per_gas:num nonce:int8 tx_type:int4 input contract_address"
        " receipt_status:int4",
        _transaction_row,
        key=("chain", "hash", "status", "(coalesce(block_hash, ''))", "ts"),
    ),
    Log: _chain_table(
        "log",
        "logs",
        "address topics:text[] data tx_hash log_index:int4 block_number:int8 block_hash"
        " tx_index:int4 ts:ts recv_ts:ts",
        _log_row,
        key=("chain", "tx_hash", "log_index", "(coalesce(block_hash, ''))", "ts"),
    ),
    TokenTransfer: _chain_table(
        "token_transfer",
        "token_transfers",
        "block_number:int8 block_hash tx_hash log_index:int4 ts:ts recv_ts:ts token token_symbol"
        " from_address to_address value:num decimals:int4 amount:num possible_spam:bool",
        _transfer_row,
        key=_LOG_KEY,
    ),
    Swap: _chain_table(
        "swap",
        "swaps",
        "protocol pool block_number:int8 block_hash tx_hash log_index:int4 ts:ts recv_ts:ts"
        " sender recipient amount0:num amount1:num amount0_in:num amount1_in:num"
        " amount0_out:num amount1_out:num sqrt_price_x96:num liquidity:num tick:int4",
        _swap_row,
        key=_LOG_KEY,
    ),
    InternalTransaction: _chain_table(
        "internal_tx",
        "internal_transactions",
        "tx_hash internal_index:int4 block_number:int8 block_hash ts:ts recv_ts:ts from_address"
        " to_address value:num value_eth:num gas:num",
        _internal_row,
        key=("chain", "tx_hash", "internal_index", _OPT_BLOCK, "ts"),
    ),
    TokenApproval: _chain_table(
        "approval",
        "token_approvals",
        "block_number:int8 block_hash tx_hash log_index:int4 ts:ts recv_ts:ts token token_symbol"
        " owner spender value:num decimals:int4 amount:num possible_spam:bool",
        _approval_row,
        key=("chain", "tx_hash", "log_index", _OPT_BLOCK, "ts"),
    ),
    NftTransfer: _chain_table(
        "nft_transfer",
        "nft_transfers",
        "block_number:int8 block_hash tx_hash log_index:int4 ts:ts recv_ts:ts contract standard"
        " operator from_address to_address token_id:num amount:num token_name token_symbol",
        _nft_row,
        key=("chain", "tx_hash", "log_index", "token_id", _OPT_BLOCK, "ts"),
    ),
}
"""Which table each event class goes to (the sink works on its own copies)."""


def sink_tables(chain: str) -> dict[type[Event], Table]:
    """:data:`TABLES` as one sink's own copies (``use_staging`` is per sink), chain rows bound
    to ``chain``; kinds that share a table share the copy."""
    copies: dict[int, Table] = {}
    for t in TABLES.values():
        if id(t) not in copies:
            row = functools.partial(t.row, chain=chain) if t.chain else t.row
            copies[id(t)] = attrs.evolve(t, row=row)
    return {cls: copies[id(t)] for cls, t in TABLES.items()}


MARK_KINDS: tuple[type[Event], ...] = (Retraction, Confirmation)
"""Kinds that change stored rows instead of adding one."""


# --------------------------------------------------------------------------- marks

_LOG_MATCH = (
    "t.tx_hash = m.tx_hash AND t.log_index = m.log_index"
    " AND (m.block_hash IS NULL OR t.block_hash = m.block_hash)"
)
_MARK_TARGETS = {
    "log": ("logs", _LOG_MATCH),
    "token_transfer": ("token_transfers", _LOG_MATCH),
    "swap": ("swaps", _LOG_MATCH),
    "approval": ("token_approvals", _LOG_MATCH),
    "nft_transfer": ("nft_transfers", _LOG_MATCH),  # every token id of the log
    "internal_tx": (
        "internal_transactions",
        "t.tx_hash = m.tx_hash AND t.internal_index = m.log_index"
        " AND (m.block_hash IS NULL OR t.block_hash = m.block_hash)",
    ),
    "transaction": (
        "transactions",
        "t.hash = m.tx_hash AND (m.block_hash IS NULL OR t.block_hash = m.block_hash)",
    ),
    "block": (
        "blocks",
        "(t.hash = m.block_hash OR (m.block_hash IS NULL AND t.number = m.block_number))",
    ),
}
"""Per target kind: its table, and how a stored row ``t`` matches a mark ``m``."""


_WITHDRAWN = {"join": "left_", "spike": ""}
"""Results a reorg withdraws (retraction targets), and the prefix of the ``values`` keys that
name the on-chain event they were made of: a pair's left event, the event a spike fired on."""


def _withdraw_sql(target: str) -> bytes:
    prefix = _WITHDRAWN[target]
    match = (
        f"t.kind = '{target}' AND t.venue = m.venue AND t.symbol = m.symbol"
        f" AND t.\"values\"->>'{prefix}tx_hash' = m.tx_hash"
        f" AND (t.\"values\"->>'{prefix}log_index')::int4 IS NOT DISTINCT FROM m.log_index"
    )
    return f"""
WITH m AS (
    SELECT * FROM unnest(%(venue)s::text[], %(symbol)s::text[], %(tx_hash)s::text[],
        %(log_index)s::int4[]) WITH ORDINALITY AS m(venue, symbol, tx_hash, log_index, i)
), hit AS (
    SELECT DISTINCT m.i FROM m JOIN irisflow.window_results t ON {match}
), changed AS (
    UPDATE irisflow.window_results t SET removed = true FROM m WHERE {match} AND NOT t.removed
    RETURNING 1
)
SELECT (SELECT count(*) FROM hit), (SELECT count(*) FROM changed)
""".encode()


def _mark_sql(table: str, match: str, column: str) -> bytes:
    # hit: marks that name at least one stored row; changed: rows not marked before (an
    # unchanged row is not rewritten, so replays cost no writes).
    return f"""
WITH m AS (
    SELECT * FROM unnest(
        %(tx_hash)s::text[], %(log_index)s::int4[], %(block_hash)s::text[],
        %(block_number)s::int8[]
    ) WITH ORDINALITY AS m(tx_hash, log_index, block_hash, block_number, i)
), hit AS (
    SELECT DISTINCT m.i FROM m JOIN irisflow.{table} t ON t.chain = %(chain)s AND {match}
), changed AS (
    UPDATE irisflow.{table} t SET {column} = true FROM m
    WHERE t.chain = %(chain)s AND {match} AND t.{column} IS NOT TRUE
    RETURNING 1
)
SELECT (SELECT count(*) FROM hit), (SELECT count(*) FROM changed)
""".encode()


def apply_marks(conn: psycopg.Connection[Any], marks: Sequence[Any], chain: str) -> int:
    """Apply retractions (``removed = true``) and confirmations (``confirmed = true``).

    A retraction of a join pair or a spike (a pipeline withdrew it) marks its row in
    ``window_results``.

    The caller keeps stream order: every row that came before these marks is written, none
    that came after. Marks commute with each other (each sets one flag), so they go as one
    statement per target table and flag.

    Returns:
        How many marks named a stored row; the others name an event that was never stored
        (filtered out before the sink, rejected, or of a kind with no table).
    """
    groups: dict[tuple[str, str], list[Any]] = {}
    for mark in marks:
        column = "removed" if isinstance(mark, Retraction) else "confirmed"
        groups.setdefault((mark.target, column), []).append(mark)
    matched = 0
    for (target, column), group in groups.items():
        if target in _WITHDRAWN and column == "removed":
            withdrawn = {
                "venue": [m.venue for m in group],
                "symbol": [m.symbol for m in group],
                "tx_hash": [m.tx_hash for m in group],
                "log_index": [m.log_index for m in group],
            }
            row = conn.execute(_withdraw_sql(target), withdrawn).fetchone()
            matched += int(row[0]) if row else 0
            continue
        found = _MARK_TARGETS.get(target)
        if found is None:
            continue
        params = {
            "chain": chain,
            "tx_hash": [m.tx_hash for m in group],
            "log_index": [m.log_index for m in group],
            "block_hash": [m.block_hash for m in group],
            "block_number": [m.block_number for m in group],
        }
        row = conn.execute(_mark_sql(*found, column), params).fetchone()
        matched += int(row[0]) if row else 0
    return matched
