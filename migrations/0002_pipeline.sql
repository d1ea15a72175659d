-- irisflow 0002: what the pipeline produces beyond raw events: window results, alerts and
-- saved filters.

CREATE TABLE irisflow.window_results (
    kind          text        NOT NULL,
    venue         text        NOT NULL,
    key           text        NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    ts            timestamptz NOT NULL DEFAULT now(),
    "values"      jsonb       NOT NULL,
    incomplete    boolean     NOT NULL DEFAULT false
);
-- A window is written again when it is recomputed (late data, or incomplete -> complete):
-- the sink upserts on this key and the last write wins.
CREATE UNIQUE INDEX window_results_natural_key
    ON irisflow.window_results (kind, venue, key, window_start, window_end);
CREATE INDEX window_results_start_brin ON irisflow.window_results USING brin (window_start);
COMMENT ON TABLE irisflow.window_results IS 'Windowed aggregations (e.g. ohlcv, vwap, rsi) computed by the pipeline.';
COMMENT ON COLUMN irisflow.window_results.kind IS 'what was computed, e.g. ohlcv or vwap';
COMMENT ON COLUMN irisflow.window_results.key IS 'the group key: a symbol, or several joined';
COMMENT ON COLUMN irisflow.window_results.ts IS 'when the result was computed';
COMMENT ON COLUMN irisflow.window_results.incomplete IS 'true when the window overlaps a gap or was cut short';

CREATE TABLE irisflow.alerts (
    id        text        PRIMARY KEY,
    rule      text        NOT NULL,
    severity  text        NOT NULL DEFAULT 'info',
    venue     text,
    symbol    text,
    text      text        NOT NULL,
    payload   jsonb,
    fired_at  timestamptz NOT NULL,
    sent_at   timestamptz
);
CREATE INDEX alerts_fired_at ON irisflow.alerts (fired_at);
CREATE INDEX alerts_unsent ON irisflow.alerts (fired_at) WHERE sent_at IS NULL;
COMMENT ON TABLE irisflow.alerts IS 'Alerts fired by rules; id is the idempotency key, sent_at is set once delivered.';

CREATE TABLE irisflow.saved_filters (
    name        text        PRIMARY KEY,
    expr        text        NOT NULL,
    venues      text[]      NOT NULL DEFAULT '{}',
    symbols     text[]      NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE irisflow.saved_filters IS 'Named filter expressions, reusable from the CLI.';
