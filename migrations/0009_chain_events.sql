-- irisflow 0009: the chain tables as PostgresSink fills them, reorgs and confirmations.
--
-- Every chain table gets `confirmed` (true once the venue reports the event final: Moralis;
-- null where the venue cannot say: Alchemy) and `removed` (true once a reorg retracted it).
-- A retraction marks the row instead of deleting it, so what was seen stays visible: readers of
-- the canonical chain add `WHERE NOT removed`. If the same event comes again later (the block
-- it was in became canonical again), its row is unmarked: the row always says what the
-- latest event about it said.
--
-- * logs: new, the raw contract logs (Log events).
-- * token_transfers, swaps: the 0003 keys contain `removed`, so marking a row removed would let
--   a replay store it a second time; new unique keys leave it out. The 0003 keys stay (nothing
--   is dropped); being wider, they never refuse a row the new ones accept. Columns are added for
--   the event fields 0003 had no place for.
-- * transactions: status stays pending or mined (a retraction sets `removed`, not status);
--   columns are added for value_eth, contract_address and the receipt status.
-- * blocks: hash and parent_hash become optional (Moralis sends no parent hash), which needs the
--   table rebuilt as in 0007: the 0003 table becomes irisflow.blocks_0003, its rows are copied.

-- blocks ----------------------------------------------------------------------------------

ALTER TABLE irisflow.blocks RENAME TO blocks_0003;
ALTER INDEX irisflow.blocks_natural_key RENAME TO blocks_0003_natural_key;
ALTER INDEX irisflow.blocks_number RENAME TO blocks_0003_number;
ALTER INDEX irisflow.blocks_ts_brin RENAME TO blocks_0003_ts_brin;
COMMENT ON TABLE irisflow.blocks_0003 IS
    'Block rows stored before migration 0009, all copied into irisflow.blocks; unused since.';

CREATE TABLE irisflow.blocks (
    venue             text        NOT NULL,
    chain             text        NOT NULL,
    number            bigint      NOT NULL,
    hash              text,
    parent_hash       text,
    ts                timestamptz NOT NULL,
    recv_ts           timestamptz NOT NULL,
    miner             text,
    gas_used          numeric,
    gas_limit         numeric,
    base_fee_per_gas  numeric,
    tx_count          integer,
    extra             jsonb,
    confirmed         boolean,
    removed           boolean     NOT NULL DEFAULT false
);
-- A block is its hash; one without a hash (a venue left it out) is its number.
CREATE UNIQUE INDEX blocks_natural_key
    ON irisflow.blocks (chain, number, (coalesce(hash, '')), ts);
CREATE INDEX blocks_hash ON irisflow.blocks (chain, hash);
CREATE INDEX blocks_ts_brin ON irisflow.blocks USING brin (ts);
COMMENT ON TABLE irisflow.blocks IS 'Block headers; after a reorg a height has several rows, one per hash.';
COMMENT ON COLUMN irisflow.blocks.chain IS 'the network, as configured on the sink (events do not carry it); empty when not set';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM irisflow.schema_migrations WHERE version = 4 AND mode = 'timescaledb') THEN
        PERFORM create_hypertable('irisflow.blocks', 'ts',
            chunk_time_interval => interval '7 days', if_not_exists => true);
    END IF;
END
$$;

INSERT INTO irisflow.blocks
    (venue, chain, number, hash, parent_hash, ts, recv_ts, miner, gas_used, gas_limit,
     base_fee_per_gas, tx_count, extra)
SELECT venue, chain, number, hash, parent_hash, ts, recv_ts, miner, gas_used, gas_limit,
       base_fee_per_gas, tx_count, extra
FROM irisflow.blocks_0003;

-- logs ------------------------------------------------------------------------------------

CREATE TABLE irisflow.logs (
    venue         text        NOT NULL,
    chain         text        NOT NULL,
    address       text        NOT NULL,
    topics        text[]      NOT NULL,
    data          text        NOT NULL,
    tx_hash       text        NOT NULL,
    log_index     integer     NOT NULL,
    block_number  bigint,
    block_hash    text,
    tx_index      integer,
    ts            timestamptz NOT NULL,
    recv_ts       timestamptz NOT NULL,
    confirmed     boolean,
    removed       boolean     NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX logs_natural_key
    ON irisflow.logs (chain, tx_hash, log_index, (coalesce(block_hash, '')), ts);
CREATE INDEX logs_address ON irisflow.logs (chain, address, ts);
CREATE INDEX logs_ts_brin ON irisflow.logs USING brin (ts);
COMMENT ON TABLE irisflow.logs IS 'Raw contract event logs (Log events); topics[1] names the event.';

-- transactions ----------------------------------------------------------------------------

ALTER TABLE irisflow.transactions
    ADD COLUMN value_eth         numeric,
    ADD COLUMN contract_address  text,
    ADD COLUMN receipt_status    integer,
    ADD COLUMN confirmed         boolean,
    ADD COLUMN removed           boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN irisflow.transactions.status IS 'pending or mined (a reorg sets removed instead)';
COMMENT ON COLUMN irisflow.transactions.value_eth IS 'value in ETH (wei / 10^18, exact)';
COMMENT ON COLUMN irisflow.transactions.receipt_status IS 'receipt status: 1 success, 0 failure (Moralis)';

-- token transfers and swaps ---------------------------------------------------------------

ALTER TABLE irisflow.token_transfers
    ADD COLUMN possible_spam  boolean,
    ADD COLUMN confirmed      boolean;
CREATE UNIQUE INDEX token_transfers_event_key
    ON irisflow.token_transfers (chain, tx_hash, log_index, block_hash, ts);
COMMENT ON COLUMN irisflow.token_transfers.token_symbol IS 'token symbol when known, else the token address';

ALTER TABLE irisflow.swaps
    ADD COLUMN amount0_in   numeric,
    ADD COLUMN amount1_in   numeric,
    ADD COLUMN amount0_out  numeric,
    ADD COLUMN amount1_out  numeric,
    ADD COLUMN confirmed    boolean;
CREATE UNIQUE INDEX swaps_event_key ON irisflow.swaps (chain, tx_hash, log_index, block_hash, ts);
COMMENT ON COLUMN irisflow.swaps.amount0_in IS 'Uniswap V2 amount0In, raw (null for V3)';
