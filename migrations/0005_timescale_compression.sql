-- requires: timescaledb
-- irisflow 0005: compress the high-volume hypertables once their chunks are a week old.
--
-- Segmenting by (venue, symbol) keeps per-symbol scans cheap on compressed chunks. Late or
-- replayed rows still insert: TimescaleDB (2.11 and later) checks the unique indexes against
-- compressed chunks too, so ON CONFLICT keeps working.

ALTER TABLE irisflow.trades SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'venue, symbol', timescaledb.compress_orderby = 'ts DESC');
ALTER TABLE irisflow.quotes SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'venue, symbol', timescaledb.compress_orderby = 'ts DESC');
ALTER TABLE irisflow.books SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'venue, symbol', timescaledb.compress_orderby = 'ts DESC');
ALTER TABLE irisflow.book_updates SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'venue, symbol', timescaledb.compress_orderby = 'ts DESC');

SELECT add_compression_policy('irisflow.trades', interval '7 days', if_not_exists => true);
SELECT add_compression_policy('irisflow.quotes', interval '7 days', if_not_exists => true);
SELECT add_compression_policy('irisflow.books', interval '7 days', if_not_exists => true);
SELECT add_compression_policy('irisflow.book_updates', interval '7 days', if_not_exists => true);
