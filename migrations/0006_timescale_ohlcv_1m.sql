-- requires: timescaledb
-- irisflow 0006: 1-minute OHLCV bars computed by the database from stored trades.
--
-- A continuous aggregate, refreshed every minute for the last hour (so late trades are folded
-- in); WITH NO DATA because a continuous aggregate cannot be filled inside the migration's
-- transaction: the policy (or CALL refresh_continuous_aggregate) fills it.

CREATE MATERIALIZED VIEW irisflow.trades_ohlcv_1m
WITH (timescaledb.continuous) AS
SELECT
    venue,
    symbol,
    time_bucket(interval '1 minute', ts) AS bucket,
    first(price, ts)  AS open,
    max(price)        AS high,
    min(price)        AS low,
    last(price, ts)   AS close,
    sum(qty)          AS volume,
    sum(price * qty)  AS quote_volume,
    count(*)          AS trades
FROM irisflow.trades
GROUP BY venue, symbol, bucket
WITH NO DATA;

SELECT add_continuous_aggregate_policy('irisflow.trades_ohlcv_1m',
    start_offset => interval '1 hour',
    end_offset => interval '1 minute',
    schedule_interval => interval '1 minute',
    if_not_exists => true);
