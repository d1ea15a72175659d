-- requires: timescaledb
-- irisflow 0004: turn the event tables into TimescaleDB hypertables.
--
-- Applied only when `CREATE EXTENSION IF NOT EXISTS timescaledb` succeeds; on plain PostgreSQL
-- the runner records this file as skipped (and applies it on a later run once the extension is
-- there). Every unique index already contains the time column, which hypertables require.
-- migrate_data moves rows written before the conversion into chunks.

SELECT create_hypertable('irisflow.trades', 'ts',
    chunk_time_interval => interval '1 day', migrate_data => true, if_not_exists => true);
SELECT create_hypertable('irisflow.quotes', 'ts',
    chunk_time_interval => interval '1 day', migrate_data => true, if_not_exists => true);
SELECT create_hypertable('irisflow.candles', 'start_ts',
    chunk_time_interval => interval '7 days', migrate_data => true, if_not_exists => true);
SELECT create_hypertable('irisflow.tickers', 'ts',
    chunk_time_interval => interval '7 days', migrate_data => true, if_not_exists => true);
SELECT create_hypertable('irisflow.books', 'ts',
    chunk_time_interval => interval '1 day', migrate_data => true, if_not_exists => true);
SELECT create_hypertable('irisflow.book_updates', 'ts',
    chunk_time_interval => interval '1 day', migrate_data => true, if_not_exists => true);
SELECT create_hypertable('irisflow.window_results', 'window_start',
    chunk_time_interval => interval '7 days', migrate_data => true, if_not_exists => true);
SELECT create_hypertable('irisflow.blocks', 'ts',
    chunk_time_interval => interval '7 days', migrate_data => true, if_not_exists => true);
SELECT create_hypertable('irisflow.transactions', 'ts',
    chunk_time_interval => interval '1 day', migrate_data => true, if_not_exists => true);
SELECT create_hypertable('irisflow.token_transfers', 'ts',
    chunk_time_interval => interval '1 day', migrate_data => true, if_not_exists => true);
SELECT create_hypertable('irisflow.swaps', 'ts',
    chunk_time_interval => interval '1 day', migrate_data => true, if_not_exists => true);
