-- Signals and the model registry of the strategy service (schema `strategy`).

CREATE TABLE signals (
    signal_id      text        PRIMARY KEY,  -- hash of exchange/symbol/book_seq/strategy/model
    exchange       text        NOT NULL,
    symbol         text        NOT NULL,
    side           text        NOT NULL CHECK (side IN ('buy', 'sell', 'hold')),
    strength       float8      NOT NULL,
    confidence     float8      NOT NULL,
    strategy       text        NOT NULL,
    model_version  text        NOT NULL DEFAULT '',
    reason         text        NOT NULL DEFAULT '',
    features       jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- the snapshot it acted on
    feature_set    text        NOT NULL,
    book_seq       bigint      NOT NULL,
    ts_us          bigint      NOT NULL,   -- when the decision was made
    source_ts_us   bigint      NOT NULL,   -- exchange time of the feature vector
    trace_id       text        NOT NULL DEFAULT '',
    stored_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (exchange, symbol, book_seq, strategy, model_version)
);
CREATE INDEX signals_symbol_time ON signals (exchange, symbol, source_ts_us);

CREATE TABLE models (
    name           text        NOT NULL,
    version        text        NOT NULL,
    kind           text        NOT NULL CHECK (kind IN ('sklearn', 'torch')),
    artifact       bytea,
    artifact_path  text,
    sha256         text        NOT NULL,
    feature_set    text        NOT NULL,
    params         jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- training parameters
    metrics        jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- walk-forward metrics
    created_at     timestamptz NOT NULL DEFAULT now(),
    active         boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (name, version),
    CHECK (artifact IS NOT NULL OR artifact_path IS NOT NULL)
);
CREATE UNIQUE INDEX models_one_active ON models (name) WHERE active;
