-- Backtest runs, their metrics and trades (schema `backtest`).

CREATE TABLE runs (
    run_id          text        PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    strategy        text        NOT NULL,
    exchange        text        NOT NULL,
    symbols         text[]      NOT NULL,
    from_us         bigint      NOT NULL,
    to_us           bigint      NOT NULL,
    source          text        NOT NULL,
    config          jsonb       NOT NULL,   -- everything that decides the results
    config_hash     text        NOT NULL,   -- sha256 of the canonical config JSON
    code_version    text        NOT NULL,   -- package version + git commit when known
    metrics         jsonb       NOT NULL,   -- the whole metrics.json
    run_meta        jsonb       NOT NULL,   -- wall time, events/s, host (run.json)
    output_dir      text
);
CREATE INDEX runs_created ON runs (created_at);
CREATE INDEX runs_config ON runs (config_hash);

-- One row per figure: scope 'total' or 'exchange:SYMBOL'.
CREATE TABLE metrics (
    run_id  text   NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    scope   text   NOT NULL,
    name    text   NOT NULL,
    value   float8,
    PRIMARY KEY (run_id, scope, name)
);

CREATE TABLE trades (
    run_id           text    NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    n                integer NOT NULL,   -- position in the run's trades.csv
    ts_us            bigint  NOT NULL,
    exchange         text    NOT NULL,
    symbol           text    NOT NULL,
    client_order_id  text    NOT NULL,
    signal_id        text    NOT NULL,
    side             text    NOT NULL CHECK (side IN ('buy', 'sell')),
    qty              float8  NOT NULL,
    price            float8  NOT NULL,
    fee              float8  NOT NULL,
    liquidity        text    NOT NULL,
    realized_pnl     float8  NOT NULL,
    position_qty     float8  NOT NULL,
    PRIMARY KEY (run_id, n)
);
CREATE INDEX trades_symbol_time ON trades (run_id, symbol, ts_us);
