-- requires: timescaledb
-- irisflow 0011: the TimescaleDB side of 0007-0010, in a file that requires TimescaleDB.
--
-- 0007, 0008 and 0009 are plain migrations with TimescaleDB calls embedded in DO blocks
-- (create_hypertable for books, window_results and blocks; compression for books). Each block
-- runs only when irisflow.schema_migrations records 0004 (or 0005) as applied in timescaledb
-- mode, and PL/pgSQL looks create_hypertable up only when it runs that statement, so plain
-- PostgreSQL never runs them. Migrations are append-only, so they stay; this file holds what
-- they meant, where TimescaleDB work belongs, and what they left out:
--
-- * books, window_results and blocks as hypertables, books compressed like the tables of 0005
--   (no-ops where those blocks, or 0004 and 0005 applied after them, did it already);
-- * gaps and logs as hypertables: no migration made them so before;
-- * 0010 on trades, quotes and book_updates when they were compressed hypertables already
--   (0010 skips them then: TimescaleDB refuses DROP NOT NULL and a new unique index on a
--   hypertable with compression). Compression is switched off for the change: its policy is
--   removed and every compressed chunk decompressed (this needs the disk space of the
--   uncompressed data, and time, once), the columns and keys change as in 0010, then
--   compression and its policy come back and compress the old chunks again on schedule.
--   A table whose key 0010 already changed (plain PostgreSQL then) is left alone.

SELECT create_hypertable('irisflow.books', 'ts',
    chunk_time_interval => interval '1 day', migrate_data => true, if_not_exists => true);
SELECT create_hypertable('irisflow.window_results', 'window_start',
    chunk_time_interval => interval '7 days', migrate_data => true, if_not_exists => true);
SELECT create_hypertable('irisflow.blocks', 'ts',
    chunk_time_interval => interval '7 days', migrate_data => true, if_not_exists => true);
SELECT create_hypertable('irisflow.logs', 'ts',
    chunk_time_interval => interval '1 day', migrate_data => true, if_not_exists => true);
SELECT create_hypertable('irisflow.gaps', 'ts',
    chunk_time_interval => interval '30 days', migrate_data => true, if_not_exists => true);

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM timescaledb_information.hypertables
        WHERE hypertable_schema = 'irisflow' AND hypertable_name = 'books' AND compression_enabled
    ) THEN
        ALTER TABLE irisflow.books SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'venue, symbol', timescaledb.compress_orderby = 'ts DESC');
    END IF;
END
$$;
SELECT add_compression_policy('irisflow.books', interval '7 days', if_not_exists => true);

DO $$
DECLARE
    t text;
    compressed boolean;
BEGIN
    FOREACH t IN ARRAY ARRAY['trades', 'quotes', 'book_updates'] LOOP
        CONTINUE WHEN to_regclass(format('irisflow.%I', t || '_event_key')) IS NOT NULL;

        SELECT coalesce(bool_or(compression_enabled), false) INTO compressed
        FROM timescaledb_information.hypertables
        WHERE hypertable_schema = 'irisflow' AND hypertable_name = t;
        IF compressed THEN
            PERFORM remove_compression_policy(format('irisflow.%I', t)::regclass, if_exists => true);
            PERFORM decompress_chunk(c, if_compressed => true)
            FROM show_chunks(format('irisflow.%I', t)::regclass) AS c;
            EXECUTE format('ALTER TABLE irisflow.%I SET (timescaledb.compress = false)', t);
        END IF;

        IF t = 'trades' THEN
            ALTER TABLE irisflow.trades ALTER COLUMN trade_id DROP NOT NULL;
            CREATE UNIQUE INDEX trades_event_key
                ON irisflow.trades
                (venue, symbol, aggregate, (coalesce(trade_id, -1)), ts, price, qty, side);
            DROP INDEX irisflow.trades_natural_key;
        ELSIF t = 'quotes' THEN
            ALTER TABLE irisflow.quotes ALTER COLUMN bid_qty DROP NOT NULL,
                ALTER COLUMN ask_qty DROP NOT NULL;
            CREATE UNIQUE INDEX quotes_event_key ON irisflow.quotes
                (venue, symbol, ts, (coalesce(update_id, -1)), bid_price, (coalesce(bid_qty, -1)),
                 ask_price, (coalesce(ask_qty, -1)));
            DROP INDEX irisflow.quotes_natural_key;
        ELSE
            ALTER TABLE irisflow.book_updates ALTER COLUMN first_update_id DROP NOT NULL,
                ALTER COLUMN last_update_id DROP NOT NULL;
            CREATE UNIQUE INDEX book_updates_event_key ON irisflow.book_updates
                (venue, symbol, (coalesce(first_update_id, -1)), (coalesce(last_update_id, -1)), ts,
                 (CASE WHEN first_update_id IS NULL AND last_update_id IS NULL
                       THEN irisflow.book_levels_digest(bid_prices, bid_qtys, ask_prices, ask_qtys)
                       ELSE '' END));
            DROP INDEX irisflow.book_updates_natural_key;
        END IF;

        IF compressed THEN
            EXECUTE format(
                'ALTER TABLE irisflow.%I SET (timescaledb.compress,'
                ' timescaledb.compress_segmentby = %L, timescaledb.compress_orderby = %L)',
                t, 'venue, symbol', 'ts DESC');
            PERFORM add_compression_policy(
                format('irisflow.%I', t)::regclass, interval '7 days', if_not_exists => true);
        END IF;
    END LOOP;
END
$$;
