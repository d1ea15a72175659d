"""Alchemy frames to chain events: the sans-IO half of ``venues/alchemy.py``.

Routing. The decoder runs in the pipeline task and sees exactly the frames a recording keeps,
never the requests irisflow sent. So irisflow's request ids carry the subscription type: they
lie in ``[ID_BASE, ID_BASE + ID_SPAN)``, and ``id % 10`` is 1 ``newHeads``, 2 ``logs``, 3
``alchemy_minedTransactions``, 4 ``alchemy_pendingTransactions`` (9 is the ``net_version``
heartbeat). The decoder learns "subscription id -> type" from the responses, live and in a
replay alike. A notification for a subscription it never saw answered (a recording that starts
later, frames from another client, whose ids lie outside that range) is routed by the shape of
its payload instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from .._chain import (
    KNOWN_TOKENS,
    NATIVE,
    Block,
    ChainDataError,
    RawLog,
    Retraction,
    TokenInfo,
    Transaction,
    address,
    decode_log,
    derive,
    get,
    hash32,
    hex_data,
    hex_int,
    opt_address,
    opt_hash32,
    opt_hex_int,
    scale,
)
from .._errors import DecodeError
from .._events import Event
from .._feed import RawFrame
from ._common import make_decode_error

__all__ = [
    "HEARTBEAT_CODE",
    "ID_BASE",
    "ID_SPAN",
    "ID_STRIDE",
    "TYPE_CODES",
    "AlchemyDecoder",
]

VENUE = "alchemy"
ID_BASE = 1_000_000_000
ID_SPAN = 100_000_000
ID_STRIDE = 10
TYPE_CODES = {
    "newHeads": 1,
    "logs": 2,
    "alchemy_minedTransactions": 3,
    "alchemy_pendingTransactions": 4,
}
HEARTBEAT_CODE = 9
_TYPE_BY_CODE = {code: name for name, code in TYPE_CODES.items()}
_MAX_ROUTES = 4096  # subscription ids the decoder remembers (reconnects add new ones)


# -- decoding -------------------------------------------------------------------------------


def _raw_log(r: Any, path: str) -> RawLog:
    topics = get(r, "topics", path)
    if not isinstance(topics, list) or len(topics) > 4:
        raise ChainDataError(f"expected a list of at most 4 topics @ {path}.topics")
    return RawLog(
        address=address(get(r, "address", path), f"{path}.address"),
        topics=tuple(hash32(t, f"{path}.topics[{i}]") for i, t in enumerate(topics)),
        data=hex_data(get(r, "data", path), f"{path}.data"),
        tx_hash=hash32(get(r, "transactionHash", path), f"{path}.transactionHash"),
        log_index=hex_int(get(r, "logIndex", path), f"{path}.logIndex"),
        block_number=opt_hex_int(r, "blockNumber", path),
        block_hash=opt_hash32(r, "blockHash", path),
        tx_index=opt_hex_int(r, "transactionIndex", path),
    )


def _transaction(tx: Any, path: str, recv_ts: int, *, pending: bool) -> Transaction:
    value = hex_int(get(tx, "value", path), f"{path}.value")
    data = (tx.get("input") or "0x") if isinstance(tx, dict) else None
    return Transaction(
        venue=VENUE,
        symbol=NATIVE,
        ts=recv_ts,  # transactions carry no time
        recv_ts=recv_ts,
        tx_hash=hash32(get(tx, "hash", path), f"{path}.hash"),
        from_address=address(get(tx, "from", path), f"{path}.from"),
        to_address=opt_address(tx, "to", path),  # null: a contract creation
        value_wei=value,
        value_eth=scale(value, 18),
        gas=hex_int(get(tx, "gas", path), f"{path}.gas"),
        nonce=hex_int(get(tx, "nonce", path), f"{path}.nonce"),
        input=hex_data(data, f"{path}.input"),
        pending=pending,
        gas_price=opt_hex_int(tx, "gasPrice", path),
        max_fee_per_gas=opt_hex_int(tx, "maxFeePerGas", path),
        max_priority_fee_per_gas=opt_hex_int(tx, "maxPriorityFeePerGas", path),
        tx_type=opt_hex_int(tx, "type", path),
        block_number=opt_hex_int(tx, "blockNumber", path),
        block_hash=opt_hash32(tx, "blockHash", path),
        tx_index=opt_hex_int(tx, "transactionIndex", path),
    )


def _infer_type(result: Any) -> str:
    """The subscription type a payload's shape suggests (for unknown subscription ids)."""
    if isinstance(result, dict):
        if "topics" in result:
            return "logs"
        if "transaction" in result and "removed" in result:
            return "alchemy_minedTransactions"
        if "parentHash" in result:
            return "newHeads"
        if "nonce" in result and "from" in result:
            mined = result.get("blockHash") is not None
            return "minedTransaction" if mined else "alchemy_pendingTransactions"
    if isinstance(result, str):
        raise ChainDataError(
            "a hash-only notification (newPendingTransactions or hashesOnly) carries no data"
            " irisflow decodes @ $.params.result"
        )
    raise ChainDataError("unknown notification payload @ $.params.result")


class AlchemyDecoder:
    """Decodes Alchemy JSON-RPC frames into chain events.

    Responses and errors decode to no events (the connection acts on them); a subscription
    response teaches the decoder the subscription's type (see the module docstring).

    Args:
        tokens: Token table for transfer symbols and decimals (mainnet addresses by default).
    """

    def __init__(self, tokens: Mapping[str, TokenInfo] = KNOWN_TOKENS) -> None:
        self._tokens = tokens
        self._routes: dict[str, str] = {}

    def decode_batch(
        self,
        frames: Sequence[RawFrame],
        recv_ts: int,
        out: list[Event],
        errors: list[tuple[int, DecodeError]],
    ) -> None:
        """Append events of ``frames`` to ``out``, one ``(index, error)`` per bad frame."""
        for index, frame in enumerate(frames):
            mark = len(out)
            try:
                self._decode(frame, recv_ts, out)
            except ChainDataError as exc:
                del out[mark:]
                errors.append((index, make_decode_error(VENUE, str(exc), frame, cause=exc)))
            except Exception as exc:  # a shape the checks above did not foresee
                del out[mark:]
                what = f"unexpected content ({type(exc).__name__}: {exc}) @ $"
                errors.append((index, make_decode_error(VENUE, what, frame, cause=exc)))

    def _decode(self, frame: RawFrame, recv_ts: int, out: list[Event]) -> None:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError as err:
            raise ChainDataError(f"invalid JSON ({err})") from err
        if isinstance(msg, list):  # a batch of responses
            for item in msg:
                self._response(item)
            return
        if not isinstance(msg, dict):
            raise ChainDataError("expected a JSON-RPC object @ $")
        if msg.get("method") == "eth_subscription":
            params = get(msg, "params", "$")
            sub = get(params, "subscription", "$.params")
            if not isinstance(sub, str):
                raise ChainDataError(f"expected a subscription id, got {sub!r} @ $.params")
            result = get(params, "result", "$.params")
            kind = self._routes.get(sub) or _infer_type(result)
            self._route(kind, result, "$.params.result", recv_ts, out)
        elif "id" in msg or "error" in msg:
            self._response(msg)
        else:
            raise ChainDataError("neither a JSON-RPC response nor a notification @ $")

    def _response(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            raise ChainDataError("expected a JSON-RPC response object @ $")
        rid, result = msg.get("id"), msg.get("result")
        if rid.__class__ is int and ID_BASE <= rid < ID_BASE + ID_SPAN and isinstance(result, str):
            kind = _TYPE_BY_CODE.get(rid % ID_STRIDE)
            if kind is not None:
                if len(self._routes) >= _MAX_ROUTES:
                    del self._routes[next(iter(self._routes))]
                self._routes[result] = kind

    def _route(self, kind: str, r: Any, path: str, recv_ts: int, out: list[Event]) -> None:
        if kind == "newHeads":
            out.append(
                Block(
                    venue=VENUE,
                    symbol=NATIVE,
                    ts=hex_int(get(r, "timestamp", path), f"{path}.timestamp") * 1_000_000_000,
                    recv_ts=recv_ts,
                    number=hex_int(get(r, "number", path), f"{path}.number"),
                    hash=opt_hash32(r, "hash", path),
                    parent_hash=hash32(get(r, "parentHash", path), f"{path}.parentHash"),
                    gas_used=opt_hex_int(r, "gasUsed", path),
                    gas_limit=opt_hex_int(r, "gasLimit", path),
                    base_fee=opt_hex_int(r, "baseFeePerGas", path),
                    miner=opt_address(r, "miner", path),
                )
            )
        elif kind == "logs":
            raw = _raw_log(r, path)
            removed = r.get("removed")
            if removed is True:
                out.extend(self._retractions(raw, recv_ts))
            elif removed is None or removed is False:
                out.extend(decode_log(raw, recv_ts, recv_ts, VENUE, tokens=self._tokens))
            else:
                raise ChainDataError(f"expected a bool, got {removed!r} @ {path}.removed")
        elif kind == "alchemy_minedTransactions":
            removed = get(r, "removed", path)
            tx = get(r, "transaction", path)
            if removed is True:
                tx_hash = hash32(get(tx, "hash", f"{path}.transaction"), f"{path}.transaction.hash")
                out.append(
                    Retraction(
                        venue=VENUE,
                        symbol=NATIVE,
                        ts=recv_ts,
                        recv_ts=recv_ts,
                        target="transaction",
                        tx_hash=tx_hash,
                        block_number=opt_hex_int(tx, "blockNumber", f"{path}.transaction"),
                        block_hash=opt_hash32(tx, "blockHash", f"{path}.transaction"),
                    )
                )
            elif removed is False:
                out.append(_transaction(tx, f"{path}.transaction", recv_ts, pending=False))
            else:
                raise ChainDataError(f"expected a bool, got {removed!r} @ {path}.removed")
        elif kind == "alchemy_pendingTransactions":
            if isinstance(r, str):
                raise ChainDataError(f"a hash-only pending transaction is not decoded @ {path}")
            out.append(_transaction(r, path, recv_ts, pending=True))
        else:  # "minedTransaction": a bare mined transaction object of an unknown subscription
            out.append(_transaction(r, path, recv_ts, pending=False))

    def _retractions(self, raw: RawLog, recv_ts: int) -> list[Event]:
        """One retraction for the log and one for what it decoded to, if anything."""
        targets = [("log", raw.address)]
        derived = derive(raw, recv_ts, recv_ts, VENUE, tokens=self._tokens)
        if derived is not None:
            targets.append((derived.kind, derived.symbol))
        return [
            Retraction(
                venue=VENUE,
                symbol=symbol,
                ts=recv_ts,
                recv_ts=recv_ts,
                target=target,
                tx_hash=raw.tx_hash,
                log_index=raw.log_index,
                block_number=raw.block_number,
                block_hash=raw.block_hash,
            )
            for target, symbol in targets
        ]
