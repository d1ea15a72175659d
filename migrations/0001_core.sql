-- irisflow 0001: market-data tables, one per event kind in irisflow/_events.py.
--
-- Conventions (every event table):
--   * ts is the exchange time (timestamptz, microseconds; irisflow's nanoseconds are truncated),
--     recv_ts the local receive time. ts is each table's time column, except candles, whose
--     time column is start_ts (the bar open time).
--   * No surrogate ids. A unique index on the event's natural key makes every write idempotent
--     (the sink inserts with ON CONFLICT), and every unique index contains the time column so
--     the tables can become TimescaleDB hypertables (0004) without changes.
--   * Prices and quantities are numeric: exact, never floats.
--   * A BRIN index on the time column keeps time-range scans cheap on plain PostgreSQL, where
--     rows arrive roughly in time order.

CREATE SCHEMA IF NOT EXISTS irisflow;

CREATE TABLE irisflow.trades (
    venue     text        NOT NULL,
    symbol    text        NOT NULL,
    ts        timestamptz NOT NULL,
    recv_ts   timestamptz NOT NULL,
    price     numeric     NOT NULL,
    qty       numeric     NOT NULL,
    side      text        NOT NULL,
    trade_id  bigint      NOT NULL
);
CREATE UNIQUE INDEX trades_natural_key ON irisflow.trades (venue, symbol, trade_id, ts);
CREATE INDEX trades_ts_brin ON irisflow.trades USING brin (ts);
COMMENT ON TABLE irisflow.trades IS 'One row per trade (Trade events); key (venue, symbol, trade_id, ts).';
COMMENT ON COLUMN irisflow.trades.price IS 'trade price, quote currency per unit of base';
COMMENT ON COLUMN irisflow.trades.qty IS 'traded quantity, units of base';
COMMENT ON COLUMN irisflow.trades.side IS 'taker side: buy or sell';

CREATE TABLE irisflow.quotes (
    venue      text        NOT NULL,
    symbol     text        NOT NULL,
    ts         timestamptz NOT NULL,
    recv_ts    timestamptz NOT NULL,
    bid_price  numeric     NOT NULL,
    bid_qty    numeric     NOT NULL,
    ask_price  numeric     NOT NULL,
    ask_qty    numeric     NOT NULL,
    update_id  bigint
);
-- Not every venue numbers its quotes, so the key is the whole quote: two identical quotes at
-- the same instant carry no more information than one.
CREATE UNIQUE INDEX quotes_natural_key ON irisflow.quotes
    (venue, symbol, ts, (coalesce(update_id, -1)), bid_price, bid_qty, ask_price, ask_qty);
CREATE INDEX quotes_ts_brin ON irisflow.quotes USING brin (ts);
COMMENT ON TABLE irisflow.quotes IS 'Best bid and offer (Quote events).';

CREATE TABLE irisflow.candles (
    venue         text        NOT NULL,
    symbol        text        NOT NULL,
    interval      text        NOT NULL,
    start_ts      timestamptz NOT NULL,
    end_ts        timestamptz NOT NULL,
    ts            timestamptz NOT NULL,
    recv_ts       timestamptz NOT NULL,
    open          numeric     NOT NULL,
    high          numeric     NOT NULL,
    low           numeric     NOT NULL,
    close         numeric     NOT NULL,
    volume        numeric     NOT NULL,
    quote_volume  numeric,
    trades        bigint,
    closed        boolean     NOT NULL
);
-- One row per bar: an open bar is overwritten by later updates until a closed one arrives.
CREATE UNIQUE INDEX candles_natural_key ON irisflow.candles (venue, symbol, interval, start_ts);
CREATE INDEX candles_start_brin ON irisflow.candles USING brin (start_ts);
COMMENT ON TABLE irisflow.candles IS 'Venue OHLCV bars (Candle events); the last update of an open bar wins, a closed bar is final.';
COMMENT ON COLUMN irisflow.candles.interval IS 'bar length in the venue notation, e.g. 1m';
COMMENT ON COLUMN irisflow.candles.ts IS 'exchange time of the update that wrote this row';

CREATE TABLE irisflow.tickers (
    venue         text        NOT NULL,
    symbol        text        NOT NULL,
    ts            timestamptz NOT NULL,
    recv_ts       timestamptz NOT NULL,
    window_len    text        NOT NULL,
    last          numeric     NOT NULL,
    open          numeric     NOT NULL,
    high          numeric     NOT NULL,
    low           numeric     NOT NULL,
    volume        numeric     NOT NULL,
    quote_volume  numeric     NOT NULL,
    change        numeric,
    change_pct    numeric,
    vwap          numeric,
    bid_price     numeric,
    bid_qty       numeric,
    ask_price     numeric,
    ask_qty       numeric,
    trades        bigint
);
CREATE UNIQUE INDEX tickers_natural_key ON irisflow.tickers (venue, symbol, window_len, ts);
CREATE INDEX tickers_ts_brin ON irisflow.tickers USING brin (ts);
COMMENT ON TABLE irisflow.tickers IS 'Rolling-window statistics (Ticker events).';
COMMENT ON COLUMN irisflow.tickers.window_len IS 'length of the rolling window, e.g. 24h (the event field window)';

-- Order-book levels are parallel arrays, best level first: bid_prices[1] is the best bid.
CREATE TABLE irisflow.books (
    venue       text        NOT NULL,
    symbol      text        NOT NULL,
    ts          timestamptz NOT NULL,
    recv_ts     timestamptz NOT NULL,
    update_id   bigint      NOT NULL,
    bid_prices  numeric[]   NOT NULL,
    bid_qtys    numeric[]   NOT NULL,
    ask_prices  numeric[]   NOT NULL,
    ask_qtys    numeric[]   NOT NULL
);
CREATE UNIQUE INDEX books_natural_key ON irisflow.books (venue, symbol, update_id, ts);
CREATE INDEX books_ts_brin ON irisflow.books USING brin (ts);
COMMENT ON TABLE irisflow.books IS 'Partial order-book snapshots (Book events); levels as parallel arrays, best first.';

CREATE TABLE irisflow.book_updates (
    venue            text        NOT NULL,
    symbol           text        NOT NULL,
    ts               timestamptz NOT NULL,
    recv_ts          timestamptz NOT NULL,
    first_update_id  bigint      NOT NULL,
    last_update_id   bigint      NOT NULL,
    bid_prices       numeric[]   NOT NULL,
    bid_qtys         numeric[]   NOT NULL,
    ask_prices       numeric[]   NOT NULL,
    ask_qtys         numeric[]   NOT NULL
);
CREATE UNIQUE INDEX book_updates_natural_key
    ON irisflow.book_updates (venue, symbol, first_update_id, last_update_id, ts);
CREATE INDEX book_updates_ts_brin ON irisflow.book_updates USING brin (ts);
COMMENT ON TABLE irisflow.book_updates IS 'Order-book diffs (BookUpdate events); a qty of 0 removes the level.';

CREATE TABLE irisflow.gaps (
    venue     text        NOT NULL,
    symbol    text        NOT NULL,
    ts        timestamptz NOT NULL,
    recv_ts   timestamptz NOT NULL,
    start_ts  timestamptz NOT NULL,
    end_ts    timestamptz NOT NULL,
    streams   text[]      NOT NULL,
    cause     text        NOT NULL
);
CREATE UNIQUE INDEX gaps_natural_key ON irisflow.gaps (venue, symbol, start_ts, ts);
CREATE INDEX gaps_ts_brin ON irisflow.gaps USING brin (ts);
COMMENT ON TABLE irisflow.gaps IS 'Where data may be missing (Gap events): from start_ts to end_ts.';
