-- Feature vectors and candles of the features service (schema `features`).

CREATE TABLE vectors (
    exchange        text     NOT NULL,
    symbol          text     NOT NULL,
    feature_set     text     NOT NULL,
    book_seq        bigint   NOT NULL,   -- md.book seq (exchange update id) the vector was computed at
    exchange_ts_us  bigint   NOT NULL,
    local_ts_us     bigint   NOT NULL,
    computed_ts_us  bigint   NOT NULL,
    "values"        float8[] NOT NULL,   -- raw feature values, in the feature set's order
    normalized      float8[] NOT NULL,   -- after the active scaler (equal to values without one)
    valid           boolean[] NOT NULL,  -- validity mask (false during warm-up/degenerate cases)
    scaler_version  text     NOT NULL DEFAULT '',
    PRIMARY KEY (exchange, symbol, feature_set, book_seq)
);
CREATE INDEX vectors_time ON vectors (exchange, symbol, exchange_ts_us);

CREATE TABLE candles (
    exchange    text    NOT NULL,
    symbol      text    NOT NULL,
    start_us    bigint  NOT NULL,         -- minute start, µs since epoch
    open        float8  NOT NULL,
    high        float8  NOT NULL,
    low         float8  NOT NULL,
    close       float8  NOT NULL,
    volume      float8  NOT NULL,
    trades      integer NOT NULL,
    from_mid    boolean NOT NULL,         -- no trade that minute: built from the mid-price
    PRIMARY KEY (exchange, symbol, start_us)
);

CREATE TABLE scalers (
    version      text        PRIMARY KEY,
    feature_set  text        NOT NULL,
    fitted_at    timestamptz NOT NULL DEFAULT now(),
    rows_used    bigint      NOT NULL,
    mean         float8[]    NOT NULL,
    scale        float8[]    NOT NULL,
    params       jsonb       NOT NULL DEFAULT '{}',
    active       boolean     NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX scalers_one_active ON scalers (feature_set) WHERE active;
