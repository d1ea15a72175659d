"""Whale tracking: a sans-IO pipeline step that keeps only large value transfers.

It passes native transactions moving at least ``min_eth`` ETH (internal transactions too: ETH
a contract call moved inside a transaction, Moralis ``txsInternal``) and ERC-20 transfers of at
least ``min_tokens`` tokens (or a per-token threshold), counted with the token's decimals.
Approvals move nothing, so they never pass; nor do NFT transfers. Unlike the
seed's tracker it never guesses: a contract creation (no ``to``) is an ordinary transaction,
token amounts are scaled by the token's own decimals, and a token whose decimals nobody knows
is reported raw, passing only a ``min_raw`` threshold, with ``amount``/``decimals`` None to
mark it unknown.

Retractions (reorgs) and confirmations (Moralis) of the events it passed pass too, so sinks
can honour them; those of events it dropped are dropped. Gaps always pass.
"""

from __future__ import annotations

import collections
import difflib
import re
from collections.abc import Mapping
from decimal import Decimal

import attrs

from ._chain import (
    KNOWN_TOKENS,
    Confirmation,
    InternalTransaction,
    NaturalKey,
    Retraction,
    TokenInfo,
    TokenTransfer,
    Transaction,
    natural_key,
    scale,
)
from ._errors import UsageError
from ._events import Event, Gap

__all__ = ["WhaleStep"]

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def _resolve(
    per_token: Mapping[str, Decimal], tokens: Mapping[str, TokenInfo]
) -> dict[str, Decimal]:
    """Per-token thresholds keyed by contract address (symbols looked up in ``tokens``)."""
    by_symbol = {info.symbol: addr for addr, info in tokens.items()}
    resolved: dict[str, Decimal] = {}
    for name, threshold in per_token.items():
        if _ADDRESS.fullmatch(name):
            resolved[name.lower()] = threshold
            continue
        addr = by_symbol.get(name.upper())
        if addr is None:
            close = difflib.get_close_matches(name.upper(), list(by_symbol), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(
                f"unknown token {name!r} in whale thresholds{hint}: use a contract address"
                f" or one of {', '.join(sorted(by_symbol))}"
            )
        resolved[addr] = threshold
    return resolved


@attrs.define
class WhaleStep:
    """Keep only large native (and internal) transactions and token transfers.

    Thresholds are inclusive ("at least"). Per-token thresholds are keyed by contract
    address; symbols are accepted and looked up in ``tokens`` when the step is built, so a
    spam token calling itself "USDC" never matches USDC's threshold.

    Args:
        min_eth: Native and internal transactions moving at least this many ETH pass (None:
            none do).
        min_tokens: Transfers of at least this many tokens pass, for tokens whose decimals
            are known (None: only tokens in ``per_token`` can pass).
        per_token: Thresholds in tokens for particular tokens, by address or known symbol.
        min_raw: Transfers of tokens with unknown decimals pass when ``raw_amount`` is at
            least this (None: they never pass).
        tokens: The token table (address -> symbol, decimals); it wins over what a venue says.
        include_spam: Also pass transfers a venue flags as possible spam.
        memory: How many passed events to remember for their retractions and confirmations.

    Raises:
        UsageError: a negative threshold, an unknown token symbol, or ``memory`` < 1.
    """

    min_eth: Decimal | None = None
    min_tokens: Decimal | None = None
    per_token: Mapping[str, Decimal] = attrs.field(factory=dict)
    min_raw: int | None = None
    tokens: Mapping[str, TokenInfo] = KNOWN_TOKENS
    include_spam: bool = False
    memory: int = 10_000
    _thresholds: dict[str, Decimal] = attrs.field(init=False, factory=dict)
    _passed: collections.OrderedDict[NaturalKey, None] = attrs.field(
        init=False, factory=collections.OrderedDict
    )

    def __attrs_post_init__(self) -> None:
        for name, value in (
            ("min_eth", self.min_eth),
            ("min_tokens", self.min_tokens),
            ("min_raw", self.min_raw),
            *self.per_token.items(),
        ):
            if value is not None and value < 0:
                raise UsageError(f"whale threshold {name} must be at least 0 (got {value})")
        if self.memory < 1:
            raise UsageError(f"whale memory must be at least 1 (got {self.memory})")
        self._thresholds = _resolve(self.per_token, self.tokens)

    def process(self, events: list[Event]) -> list[Event]:
        """The whales among ``events``, the retractions and confirmations of earlier ones,
        and every gap."""
        out: list[Event] = []
        for event in events:
            cls = event.__class__
            if cls is Transaction or cls is InternalTransaction:
                assert isinstance(event, Transaction | InternalTransaction)
                if self.min_eth is not None and event.value_eth >= self.min_eth:
                    self._keep(event, out)
            elif cls is TokenTransfer:
                assert isinstance(event, TokenTransfer)
                whale = self._transfer(event)
                if whale is not None:
                    self._keep(whale, out)
            elif cls is Retraction or cls is Confirmation:
                key = natural_key(event)
                if key is not None and key in self._passed:
                    out.append(event)
                    if cls is Retraction:
                        del self._passed[key]
            elif cls is Gap:
                out.append(event)
        return out

    def advance(self, now: int) -> list[Event]:
        """Whale tracking keeps no time-driven state."""
        return []

    def _keep(self, event: Event, out: list[Event]) -> None:
        out.append(event)
        key = natural_key(event)
        assert key is not None
        self._passed[key] = None
        self._passed.move_to_end(key)
        if len(self._passed) > self.memory:
            self._passed.popitem(last=False)

    def _transfer(self, event: TokenTransfer) -> TokenTransfer | None:
        """The transfer (decimals filled in from the table) if it is a whale, else None."""
        if event.possible_spam and not self.include_spam:
            return None
        info = self.tokens.get(event.token)
        if info is not None and (event.decimals != info.decimals or event.symbol != info.symbol):
            event = attrs.evolve(
                event,
                symbol=info.symbol,
                decimals=info.decimals,
                amount=scale(event.raw_amount, info.decimals),
            )
        if event.decimals is None:
            if self.min_raw is not None and event.raw_amount >= self.min_raw:
                return event  # unknown decimals: reported raw, amount None
            return None
        threshold = self._thresholds.get(event.token, self.min_tokens)
        if threshold is None:
            return None
        amount = event.amount
        if amount is None:
            amount = scale(event.raw_amount, event.decimals)
            event = attrs.evolve(event, amount=amount)
        return event if amount >= threshold else None
