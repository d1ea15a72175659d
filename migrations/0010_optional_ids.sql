-- irisflow 0010: every event irisflow emits can be stored, and stored once.
--
-- * Some venues leave out what 0001 declared NOT NULL: Polygon trades without an id
--   (trades.trade_id), Polygon forex quotes without sizes (quotes.bid_qty, ask_qty), Kraken
--   book diffs without update ids (book_updates.first_update_id, last_update_id). Those columns
--   become optional; every such row was refused before.
-- * The unique keys read a missing value through coalesce() (as quotes and books already did
--   for update_id), so a row without an id still dedupes on the rest of its key:
--     trades        (venue, symbol, aggregate, trade_id, ts, price, qty, side): a trade
--                   without an id is the whole trade (two identical id-less trades at one
--                   instant are one row);
--     quotes        the whole quote, as in 0001, sizes included;
--     book_updates  (venue, symbol, first_update_id, last_update_id, ts), plus, for a diff
--                   without ids, a digest of its levels (irisflow.book_levels_digest), so two
--                   Kraken diffs of one instant are two rows.
-- * tickers: Binance sends a mini ticker (24hrMiniTicker) and a full one (24hrTicker) of the
--   same symbol in the same second; under the 0001 key (venue, symbol, window_len, ts) the
--   second was refused as a duplicate. The key now tells them apart: (vwap IS NULL) is true
--   for a mini ticker (it has no vwap, nor change, bid/ask or trades).
-- * trades.aggregate (new, false for rows stored before): true for a Binance aggTrade (one
--   taker order, maybe several trades), whose ids are not trade ids: a trade and an aggTrade
--   with the same number are two rows. Adding a column with a constant default is allowed on
--   compressed hypertables too, so it is added in both modes.
--
-- The new keys are wider than the old ones, so no stored row can violate them; the old unique
-- indexes are dropped (an index holds no data of its own). Each new key contains the time
-- column, as TimescaleDB hypertables need.
--
-- Under TimescaleDB with compression (0005 applied) the hypertables trades, quotes and
-- book_updates refuse ALTER COLUMN ... DROP NOT NULL and a new unique index over compressed
-- chunks: for them this file does nothing, and 0011 (which requires TimescaleDB) makes the same
-- change there, decompressing first. tickers is not compressed and changes here in both modes.

CREATE FUNCTION irisflow.book_levels_digest(
    bid_prices numeric[], bid_qtys numeric[], ask_prices numeric[], ask_qtys numeric[]
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- Immutable: numeric values always print the same (array_to_string is only marked stable
-- because some element types print by the session's settings; numeric does not).
AS $$
    SELECT md5(
        array_to_string(bid_prices, ',') || '|' || array_to_string(bid_qtys, ',') || '|'
        || array_to_string(ask_prices, ',') || '|' || array_to_string(ask_qtys, ',')
    )
$$;
COMMENT ON FUNCTION irisflow.book_levels_digest(numeric[], numeric[], numeric[], numeric[]) IS
    'md5 of an order-book diff''s levels: part of the book_updates key for diffs without ids';

ALTER TABLE irisflow.trades ADD COLUMN aggregate boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN irisflow.trades.aggregate IS
    'true for a Binance aggTrade: one taker order, maybe several trades; trade_id is its aggregate id';

CREATE UNIQUE INDEX tickers_event_key
    ON irisflow.tickers (venue, symbol, window_len, ts, (vwap IS NULL));
DROP INDEX irisflow.tickers_natural_key;
COMMENT ON TABLE irisflow.tickers IS
    'Rolling-window statistics (Ticker events); key (venue, symbol, window_len, ts, vwap IS NULL): a full and a mini ticker of one instant are two rows.';
COMMENT ON COLUMN irisflow.tickers.vwap IS
    'volume-weighted average price; null for a mini ticker (Binance 24hrMiniTicker)';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM irisflow.schema_migrations WHERE version = 5 AND mode = 'timescaledb') THEN
        RETURN;  -- compressed hypertables: 0011 does the rest
    END IF;

    ALTER TABLE irisflow.trades ALTER COLUMN trade_id DROP NOT NULL;
    CREATE UNIQUE INDEX trades_event_key
        ON irisflow.trades
        (venue, symbol, aggregate, (coalesce(trade_id, -1)), ts, price, qty, side);
    DROP INDEX irisflow.trades_natural_key;

    ALTER TABLE irisflow.quotes ALTER COLUMN bid_qty DROP NOT NULL,
        ALTER COLUMN ask_qty DROP NOT NULL;
    CREATE UNIQUE INDEX quotes_event_key ON irisflow.quotes
        (venue, symbol, ts, (coalesce(update_id, -1)), bid_price, (coalesce(bid_qty, -1)),
         ask_price, (coalesce(ask_qty, -1)));
    DROP INDEX irisflow.quotes_natural_key;

    ALTER TABLE irisflow.book_updates ALTER COLUMN first_update_id DROP NOT NULL,
        ALTER COLUMN last_update_id DROP NOT NULL;
    CREATE UNIQUE INDEX book_updates_event_key ON irisflow.book_updates
        (venue, symbol, (coalesce(first_update_id, -1)), (coalesce(last_update_id, -1)), ts,
         (CASE WHEN first_update_id IS NULL AND last_update_id IS NULL
               THEN irisflow.book_levels_digest(bid_prices, bid_qtys, ask_prices, ask_qtys)
               ELSE '' END));
    DROP INDEX irisflow.book_updates_natural_key;
END
$$;

COMMENT ON TABLE irisflow.trades IS
    'One row per trade (Trade events); key (venue, symbol, aggregate, trade_id, ts, price, qty, side), a missing trade_id read as -1.';
COMMENT ON COLUMN irisflow.trades.trade_id IS 'venue trade id; null when the venue sends none';
COMMENT ON COLUMN irisflow.quotes.bid_qty IS 'quantity at the best bid; null when the venue sends none';
COMMENT ON COLUMN irisflow.quotes.ask_qty IS 'quantity at the best ask; null when the venue sends none';
COMMENT ON COLUMN irisflow.book_updates.first_update_id IS 'first update id in the diff; null when the venue sends none';
COMMENT ON COLUMN irisflow.book_updates.last_update_id IS 'last update id in the diff; null when the venue sends none';
