-- irisflow 0007: order-book snapshots keyed by their depth too.
--
-- A venue that sends several depths of one book (Binance depth5 and depth10) sends snapshots
-- of the same update with the same (venue, symbol, update_id, ts): under the 0001 key the
-- second was refused as a duplicate, so one depth was lost. The key now includes `depth`, the
-- number of levels on the longer side. update_id becomes optional (Kraken and Polygon books
-- have none): the key reads a missing one as -1, as quotes do.
--
-- A unique index cannot be narrowed in place and migrations never drop anything, so the table
-- is rebuilt: the old one is renamed to irisflow.books_0001 (its indexes get the same prefix),
-- a new irisflow.books takes its place and every old row is copied into it, its depth counted
-- from its arrays. irisflow no longer reads or writes books_0001: once the copy is checked, an
-- operator may drop it to free the space.
--
-- Under TimescaleDB (0004 and 0005 applied already) the new table becomes a hypertable with the
-- same compression; on plain PostgreSQL, 0004 and 0005 convert it later as they would have the
-- old one.

ALTER TABLE irisflow.books RENAME TO books_0001;
ALTER INDEX irisflow.books_natural_key RENAME TO books_0001_natural_key;
ALTER INDEX irisflow.books_ts_brin RENAME TO books_0001_ts_brin;
COMMENT ON TABLE irisflow.books_0001 IS
    'Book rows stored before migration 0007, all copied into irisflow.books; unused since.';

CREATE TABLE irisflow.books (
    venue       text        NOT NULL,
    symbol      text        NOT NULL,
    ts          timestamptz NOT NULL,
    recv_ts     timestamptz NOT NULL,
    update_id   bigint,
    depth       integer     NOT NULL,
    bid_prices  numeric[]   NOT NULL,
    bid_qtys    numeric[]   NOT NULL,
    ask_prices  numeric[]   NOT NULL,
    ask_qtys    numeric[]   NOT NULL
);
CREATE UNIQUE INDEX books_natural_key
    ON irisflow.books (venue, symbol, (coalesce(update_id, -1)), depth, ts);
CREATE INDEX books_ts_brin ON irisflow.books USING brin (ts);
COMMENT ON TABLE irisflow.books IS 'Partial order-book snapshots (Book events); levels as parallel arrays, best first; key (venue, symbol, update_id, depth, ts).';
COMMENT ON COLUMN irisflow.books.depth IS 'levels in the snapshot: the longer of the bid and ask sides (5 for Binance depth5)';
COMMENT ON COLUMN irisflow.books.update_id IS 'order-book update id or sequence, when the venue sends one';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM irisflow.schema_migrations WHERE version = 4 AND mode = 'timescaledb') THEN
        PERFORM create_hypertable('irisflow.books', 'ts',
            chunk_time_interval => interval '1 day', if_not_exists => true);
    END IF;
    IF EXISTS (SELECT 1 FROM irisflow.schema_migrations WHERE version = 5 AND mode = 'timescaledb') THEN
        ALTER TABLE irisflow.books SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'venue, symbol', timescaledb.compress_orderby = 'ts DESC');
        PERFORM add_compression_policy('irisflow.books', interval '7 days', if_not_exists => true);
    END IF;
END
$$;

INSERT INTO irisflow.books
    (venue, symbol, ts, recv_ts, update_id, depth, bid_prices, bid_qtys, ask_prices, ask_qtys)
SELECT venue, symbol, ts, recv_ts, update_id,
       greatest(cardinality(bid_prices), cardinality(ask_prices)),
       bid_prices, bid_qtys, ask_prices, ask_qtys
FROM irisflow.books_0001;
