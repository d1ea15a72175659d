-- irisflow 0003: on-chain events (Ethereum-style chains via Alchemy or Moralis).
--
-- 256-bit quantities (wei amounts, token values, sqrtPriceX96) are numeric, unscaled as on the
-- chain; hashes and addresses are lower-case 0x hex text. A reorg re-sends logs with
-- removed = true: such rows are kept (they are a different row, keyed by block_hash) so that a
-- reader can drop blocks that left the canonical chain.

CREATE TABLE irisflow.blocks (
    venue             text        NOT NULL,
    chain             text        NOT NULL,
    number            bigint      NOT NULL,
    hash              text        NOT NULL,
    parent_hash       text        NOT NULL,
    ts                timestamptz NOT NULL,
    recv_ts           timestamptz NOT NULL,
    miner             text,
    gas_used          numeric,
    gas_limit         numeric,
    base_fee_per_gas  numeric,
    tx_count          integer,
    extra             jsonb
);
CREATE UNIQUE INDEX blocks_natural_key ON irisflow.blocks (chain, hash, ts);
CREATE INDEX blocks_number ON irisflow.blocks (chain, number);
CREATE INDEX blocks_ts_brin ON irisflow.blocks USING brin (ts);
COMMENT ON TABLE irisflow.blocks IS 'Block headers (newHeads); the same number can appear twice after a reorg, the later header wins.';

CREATE TABLE irisflow.transactions (
    venue                     text        NOT NULL,
    chain                     text        NOT NULL,
    hash                      text        NOT NULL,
    status                    text        NOT NULL,
    block_number              bigint,
    block_hash                text,
    tx_index                  integer,
    ts                        timestamptz NOT NULL,
    recv_ts                   timestamptz NOT NULL,
    from_address              text        NOT NULL,
    to_address                text,
    value                     numeric     NOT NULL,
    gas                       numeric,
    gas_price                 numeric,
    max_fee_per_gas           numeric,
    max_priority_fee_per_gas  numeric,
    nonce                     bigint,
    tx_type                   integer,
    input                     text
);
CREATE UNIQUE INDEX transactions_natural_key
    ON irisflow.transactions (chain, hash, status, (coalesce(block_hash, '')), ts);
CREATE INDEX transactions_from ON irisflow.transactions (chain, from_address);
CREATE INDEX transactions_to ON irisflow.transactions (chain, to_address);
CREATE INDEX transactions_ts_brin ON irisflow.transactions USING brin (ts);
COMMENT ON TABLE irisflow.transactions IS 'Pending, mined or removed transactions; value in wei.';
COMMENT ON COLUMN irisflow.transactions.status IS 'pending, mined or removed';
COMMENT ON COLUMN irisflow.transactions.ts IS 'block time when mined, else when first seen';

CREATE TABLE irisflow.token_transfers (
    venue         text        NOT NULL,
    chain         text        NOT NULL,
    block_number  bigint      NOT NULL,
    block_hash    text        NOT NULL,
    tx_hash       text        NOT NULL,
    log_index     integer     NOT NULL,
    ts            timestamptz NOT NULL,
    recv_ts       timestamptz NOT NULL,
    token         text        NOT NULL,
    token_symbol  text,
    from_address  text        NOT NULL,
    to_address    text        NOT NULL,
    value         numeric,
    token_id      numeric,
    decimals      integer,
    amount        numeric,
    removed       boolean     NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX token_transfers_natural_key
    ON irisflow.token_transfers (chain, tx_hash, log_index, block_hash, removed, ts);
CREATE INDEX token_transfers_token ON irisflow.token_transfers (chain, token, ts);
CREATE INDEX token_transfers_ts_brin ON irisflow.token_transfers USING brin (ts);
COMMENT ON TABLE irisflow.token_transfers IS 'ERC-20 and ERC-721 Transfer logs.';
COMMENT ON COLUMN irisflow.token_transfers.value IS 'ERC-20 raw value (unscaled uint256); null for ERC-721';
COMMENT ON COLUMN irisflow.token_transfers.token_id IS 'ERC-721 token id; null for ERC-20';
COMMENT ON COLUMN irisflow.token_transfers.amount IS 'value scaled by 10^decimals, when decimals is known';

CREATE TABLE irisflow.swaps (
    venue           text        NOT NULL,
    chain           text        NOT NULL,
    protocol        text        NOT NULL,
    pool            text        NOT NULL,
    block_number    bigint      NOT NULL,
    block_hash      text        NOT NULL,
    tx_hash         text        NOT NULL,
    log_index       integer     NOT NULL,
    ts              timestamptz NOT NULL,
    recv_ts         timestamptz NOT NULL,
    sender          text        NOT NULL,
    recipient       text        NOT NULL,
    amount0         numeric     NOT NULL,
    amount1         numeric     NOT NULL,
    sqrt_price_x96  numeric,
    liquidity       numeric,
    tick            integer,
    price           numeric,
    removed         boolean     NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX swaps_natural_key
    ON irisflow.swaps (chain, tx_hash, log_index, block_hash, removed, ts);
CREATE INDEX swaps_pool ON irisflow.swaps (chain, pool, ts);
CREATE INDEX swaps_ts_brin ON irisflow.swaps USING brin (ts);
COMMENT ON TABLE irisflow.swaps IS 'DEX swaps (Uniswap V2/V3 Swap logs).';
COMMENT ON COLUMN irisflow.swaps.protocol IS 'uniswap_v2 or uniswap_v3 (or a compatible fork)';
COMMENT ON COLUMN irisflow.swaps.amount0 IS 'token0 amount, raw, from the pool view: positive = pool received';
COMMENT ON COLUMN irisflow.swaps.price IS 'token0 price in token1 human units, when decimals are known';
