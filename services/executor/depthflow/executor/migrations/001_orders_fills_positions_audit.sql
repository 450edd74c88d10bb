-- The executor's schema (search_path is set to it by the migrator): signals it decided on,
-- orders (optimistic locking: version), order events (also the orders.v1 outbox), fills
-- (natural key per venue), positions (version), balances and the append-only audit log.

CREATE TABLE signals (
    signal_id        text PRIMARY KEY,
    exchange         text NOT NULL,
    symbol           text NOT NULL,
    side             text NOT NULL,
    decision         text NOT NULL,          -- order | refused
    reason           text NOT NULL DEFAULT '',
    client_order_id  text,
    trace_id         text NOT NULL DEFAULT '',
    received_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id               bigserial PRIMARY KEY,
    client_order_id  text NOT NULL UNIQUE,
    venue            text NOT NULL,
    exchange         text NOT NULL,
    symbol           text NOT NULL,
    side             text NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type       text NOT NULL,
    time_in_force    text NOT NULL,
    qty              double precision NOT NULL CHECK (qty > 0),
    price            double precision,
    state            text NOT NULL CHECK (state IN ('Pending', 'Placed', 'PartiallyFilled',
                                         'Filled', 'Cancelled', 'Rejected', 'Failed')),
    venue_order_id   text NOT NULL DEFAULT '',
    filled_qty       double precision NOT NULL DEFAULT 0,
    filled_quote     double precision NOT NULL DEFAULT 0,
    fee              double precision NOT NULL DEFAULT 0,
    signal_id        text NOT NULL DEFAULT '',
    reason           text NOT NULL DEFAULT '',
    trace_id         text NOT NULL DEFAULT '',
    version          integer NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    acked_at         timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_open ON orders (state) WHERE state IN ('Pending', 'Placed', 'PartiallyFilled');

CREATE TABLE order_events (
    id               bigserial PRIMARY KEY,
    event_id         text NOT NULL UNIQUE,
    client_order_id  text NOT NULL,
    event_type       text NOT NULL,
    from_state       text,
    to_state         text,
    payload          jsonb NOT NULL,           -- the OrderEvent published on orders.v1
    created_at       timestamptz NOT NULL DEFAULT now(),
    published_at     timestamptz
);
CREATE INDEX order_events_unpublished ON order_events (id) WHERE published_at IS NULL;
CREATE INDEX order_events_order ON order_events (client_order_id);

CREATE TABLE fills (
    id               bigserial PRIMARY KEY,
    venue            text NOT NULL,
    venue_trade_id   text NOT NULL,
    client_order_id  text NOT NULL REFERENCES orders (client_order_id),
    exchange         text NOT NULL,
    symbol           text NOT NULL,
    side             text NOT NULL,
    qty              double precision NOT NULL CHECK (qty > 0),
    price            double precision NOT NULL CHECK (price > 0),
    fee              double precision NOT NULL DEFAULT 0,
    fee_estimated    boolean NOT NULL DEFAULT false,
    liquidity        text NOT NULL DEFAULT '',
    cum_filled_qty   double precision NOT NULL,
    ts               timestamptz NOT NULL DEFAULT now(),
    UNIQUE (venue, venue_trade_id)
);

CREATE TABLE positions (
    venue            text NOT NULL,
    exchange         text NOT NULL,
    symbol           text NOT NULL,
    state            text NOT NULL CHECK (state IN ('Opening', 'Open', 'Closing', 'Closed')),
    generation       integer NOT NULL DEFAULT 1,
    qty              double precision NOT NULL DEFAULT 0,
    avg_entry_price  double precision NOT NULL DEFAULT 0,
    realized_pnl     double precision NOT NULL DEFAULT 0,
    fees_paid        double precision NOT NULL DEFAULT 0,
    version          integer NOT NULL DEFAULT 1,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue, exchange, symbol)
);

CREATE TABLE balances (
    venue            text NOT NULL,
    asset            text NOT NULL,
    balance          double precision NOT NULL,
    version          integer NOT NULL DEFAULT 1,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue, asset)
);

-- Append-only: who did what, when and why, with the signal, the market snapshot and the
-- trace id. UPDATE, DELETE and TRUNCATE are refused by triggers (for every role, owner
-- included: permissions alone would not stop the owner).
CREATE TABLE audit_log (
    id               bigserial PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor            text NOT NULL,            -- who: executor instance, api user, reconciler
    action           text NOT NULL,            -- what
    entity           text NOT NULL DEFAULT '', -- order / position / balance / control
    entity_id        text NOT NULL DEFAULT '',
    reason           text NOT NULL DEFAULT '', -- why
    detail           jsonb NOT NULL DEFAULT '{}'::jsonb,
    signal           jsonb,
    market           jsonb,
    trace_id         text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id);

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
