-- irisflow 0008: window results as the pipeline produces them.
--
-- The 0002 key (kind, venue, key, window_start, window_end) let results of two different windows
-- over the same span overwrite each other (tumbling 5m and sliding 5m/1m both have [0, 5m)), as
-- well as unkeyed windows of two symbols. The key is now
-- (kind, venue, symbol, key, spec, window_start, window_end). Columns are added for what a
-- result has besides its aggregates: symbol, spec, count, recv_ts.
--
-- Besides windows and bars (kind window), the table holds the other results of the pipeline:
-- rsi, spike, join and late (see irisflow/sinks/_pg_tables.py for how each one fills the
-- columns). The values column holds every other field of the event: decimals as strings
-- (exact), times as ISO-8601 UTC strings.
--
-- Rewrites of one key: a complete result replaces anything; an incomplete one (the window
-- overlapped a gap, or the stream ended inside it) replaces only an incomplete one. So a window
-- cut short at the end of one run and complete in another is stored complete, whichever run
-- wrote last.
--
-- As in 0007, a unique index cannot be widened in place and nothing is dropped: the 0002 table
-- becomes irisflow.window_results_0002, its rows are copied (symbol and spec empty, count
-- unknown), and an operator may drop it once the copy is checked. Under TimescaleDB (0004
-- applied already) the new table becomes a hypertable.

ALTER TABLE irisflow.window_results RENAME TO window_results_0002;
ALTER INDEX irisflow.window_results_natural_key RENAME TO window_results_0002_natural_key;
ALTER INDEX irisflow.window_results_start_brin RENAME TO window_results_0002_start_brin;
COMMENT ON TABLE irisflow.window_results_0002 IS
    'Window results stored before migration 0008, all copied into irisflow.window_results; unused since.';

CREATE TABLE irisflow.window_results (
    kind          text        NOT NULL,
    venue         text        NOT NULL,
    symbol        text        NOT NULL,
    key           text        NOT NULL,
    spec          text        NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    ts            timestamptz NOT NULL,
    recv_ts       timestamptz NOT NULL,
    count         bigint,
    "values"      jsonb       NOT NULL,
    incomplete    boolean     NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX window_results_natural_key
    ON irisflow.window_results (kind, venue, symbol, key, spec, window_start, window_end);
CREATE INDEX window_results_start_brin ON irisflow.window_results USING brin (window_start);
COMMENT ON TABLE irisflow.window_results IS 'What the pipeline computes: windows and bars (kind window), rsi, spike, join and late events; a complete result is final.';
COMMENT ON COLUMN irisflow.window_results.kind IS 'the event kind: window, rsi, spike, join or late';
COMMENT ON COLUMN irisflow.window_results.symbol IS 'symbol of the events (* when they differ)';
COMMENT ON COLUMN irisflow.window_results.key IS 'the group key (empty when the stream is not keyed)';
COMMENT ON COLUMN irisflow.window_results.spec IS 'what produced it: the window (tumbling 1m, count 100), rsi 14, spike 2% in 1m, or the event it stands for (join, late)';
COMMENT ON COLUMN irisflow.window_results.ts IS 'event time of the result (a window''s end)';
COMMENT ON COLUMN irisflow.window_results.recv_ts IS 'receive-clock time at which the result came out';
COMMENT ON COLUMN irisflow.window_results.count IS 'events in the window (windows and bars only)';
COMMENT ON COLUMN irisflow.window_results."values" IS 'every other field: decimals as strings, times as ISO-8601 UTC strings';
COMMENT ON COLUMN irisflow.window_results.incomplete IS 'true when the window overlaps a gap or the stream ended inside it';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM irisflow.schema_migrations WHERE version = 4 AND mode = 'timescaledb') THEN
        PERFORM create_hypertable('irisflow.window_results', 'window_start',
            chunk_time_interval => interval '7 days', if_not_exists => true);
    END IF;
END
$$;

INSERT INTO irisflow.window_results
    (kind, venue, symbol, key, spec, window_start, window_end, ts, recv_ts, "values", incomplete)
SELECT kind, venue, '', key, '', window_start, window_end, ts, ts, "values", incomplete
FROM irisflow.window_results_0002;
