"""The chain tables of the sink, and the retractions and confirmations that mark their rows.

``block``, ``transaction``, ``log``, ``token_transfer``, ``swap`` (and ``internal_tx``,
``approval``, ``nft_transfer`` from 0012) each have a table (:data:`CHAIN_TABLES`), upserted:
a stored row is only touched to clear ``removed`` or to set ``confirmed``. ``retraction`` and
``confirmation`` events add no row: :func:`apply_marks` sets those flags on the rows they name
(and withdraws the join pairs and spikes a reorg undid from ``window_results``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

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
from .._events import Event
from ._pg_copy import Table, make_table, pg_time

__all__ = ["CHAIN_TABLES", "MARKS", "MARK_KINDS", "Marks", "apply_marks"]


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


_LOG_KEY = ("chain", "tx_hash", "log_index", "block_hash", "ts")
_OPT_BLOCK = "(coalesce(block_hash, ''))"


def _chain_table(kind: str, name: str, spec: str, row: Any, key: tuple[str, ...]) -> Table:
    """A chain table: a stored row is only ever unmarked as removed or marked confirmed."""
    t = f"irisflow.{name}"
    confirmed = f"greatest({t}.confirmed, excluded.confirmed)"  # true wins; NULL is unknown
    return make_table(
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


CHAIN_TABLES: dict[type[Event], Table] = {
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
"""The table of each chain event class (:data:`~._pg_tables.TABLES` holds them too)."""


# --------------------------------------------------------------------------- marks

MARK_KINDS: tuple[type[Event], ...] = (Retraction, Confirmation)
"""Kinds that change stored rows instead of adding one."""


class Marks:
    """Where the sink files retractions and confirmations: they change rows, see :data:`MARKS`."""

    name = "marks"


MARKS = Marks()
"""The buffer slot of retractions and confirmations (applied by :func:`apply_marks`)."""


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
