-- irisflow 0012: tables for the chain kinds internal_tx, approval and nft_transfer.
--
-- Shaped like the chain tables of 0009: every row has `confirmed` (true once the venue reports
-- the event final: Moralis; null where the venue cannot say: Alchemy) and `removed` (true once
-- a reorg retracted it; the row is kept, readers of the canonical chain add `WHERE NOT
-- removed`). 256-bit quantities are numeric, unscaled as on the chain; hashes and addresses are
-- lower-case 0x hex text. Each unique key holds the time column (as TimescaleDB hypertables
-- need) and reads a missing block hash as ''.
--
-- * internal_transactions: native coin moved by contract calls (Moralis txsInternal). Moralis
--   gives them no index: internal_index counts the entries of one transaction in a webhook body
--   (see docs/events.md), and with tx_hash it names one.
-- * token_approvals: ERC-20 Approval logs.
-- * nft_transfers: ERC-721 and ERC-1155 transfers. An ERC-1155 batch log moves several token
--   ids under one log_index, so token_id is part of the key.
--
-- Under TimescaleDB these stay plain tables: a plain migration holds no TimescaleDB call (see
-- 0011), and they are small next to the market-data tables.

CREATE TABLE irisflow.internal_transactions (
    venue           text        NOT NULL,
    chain           text        NOT NULL,
    tx_hash         text        NOT NULL,
    internal_index  integer     NOT NULL,
    block_number    bigint,
    block_hash      text,
    ts              timestamptz NOT NULL,
    recv_ts         timestamptz NOT NULL,
    from_address    text        NOT NULL,
    to_address      text,
    value           numeric     NOT NULL,
    value_eth       numeric     NOT NULL,
    gas             numeric,
    confirmed       boolean,
    removed         boolean     NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX internal_transactions_natural_key
    ON irisflow.internal_transactions
    (chain, tx_hash, internal_index, (coalesce(block_hash, '')), ts);
CREATE INDEX internal_transactions_from ON irisflow.internal_transactions (chain, from_address);
CREATE INDEX internal_transactions_to ON irisflow.internal_transactions (chain, to_address);
CREATE INDEX internal_transactions_ts_brin ON irisflow.internal_transactions USING brin (ts);
COMMENT ON TABLE irisflow.internal_transactions IS
    'Native coin moved by contract calls inside a transaction (internal_tx events); value in wei.';
COMMENT ON COLUMN irisflow.internal_transactions.internal_index IS
    'position among the internal transactions of tx_hash in the webhook body, from 0';

CREATE TABLE irisflow.token_approvals (
    venue          text        NOT NULL,
    chain          text        NOT NULL,
    block_number   bigint,
    block_hash     text,
    tx_hash        text        NOT NULL,
    log_index      integer     NOT NULL,
    ts             timestamptz NOT NULL,
    recv_ts        timestamptz NOT NULL,
    token          text        NOT NULL,
    token_symbol   text,
    owner          text        NOT NULL,
    spender        text        NOT NULL,
    value          numeric     NOT NULL,
    decimals       integer,
    amount         numeric,
    possible_spam  boolean,
    confirmed      boolean,
    removed        boolean     NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX token_approvals_natural_key
    ON irisflow.token_approvals (chain, tx_hash, log_index, (coalesce(block_hash, '')), ts);
CREATE INDEX token_approvals_token ON irisflow.token_approvals (chain, token, ts);
CREATE INDEX token_approvals_owner ON irisflow.token_approvals (chain, owner);
CREATE INDEX token_approvals_ts_brin ON irisflow.token_approvals USING brin (ts);
COMMENT ON TABLE irisflow.token_approvals IS 'ERC-20 Approval logs (approval events).';
COMMENT ON COLUMN irisflow.token_approvals.value IS 'allowance, raw (unscaled uint256)';
COMMENT ON COLUMN irisflow.token_approvals.token_symbol IS 'token symbol when known, else the token address';

CREATE TABLE irisflow.nft_transfers (
    venue          text        NOT NULL,
    chain          text        NOT NULL,
    block_number   bigint,
    block_hash     text,
    tx_hash        text        NOT NULL,
    log_index      integer     NOT NULL,
    ts             timestamptz NOT NULL,
    recv_ts        timestamptz NOT NULL,
    contract       text        NOT NULL,
    standard       text        NOT NULL,
    operator       text,
    from_address   text        NOT NULL,
    to_address     text        NOT NULL,
    token_id       numeric     NOT NULL,
    amount         numeric     NOT NULL,
    token_name     text,
    token_symbol   text,
    confirmed      boolean,
    removed        boolean     NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX nft_transfers_natural_key
    ON irisflow.nft_transfers
    (chain, tx_hash, log_index, token_id, (coalesce(block_hash, '')), ts);
CREATE INDEX nft_transfers_contract ON irisflow.nft_transfers (chain, contract, token_id);
CREATE INDEX nft_transfers_ts_brin ON irisflow.nft_transfers USING brin (ts);
COMMENT ON TABLE irisflow.nft_transfers IS
    'ERC-721 and ERC-1155 transfers (nft_transfer events); a batch log has one row per token id.';
COMMENT ON COLUMN irisflow.nft_transfers.standard IS 'erc721 or erc1155';
COMMENT ON COLUMN irisflow.nft_transfers.amount IS 'how many of the token moved: 1 for ERC-721';
