-- collector schema: top-of-book changes (the seed's orderbook_data / Tardis "quotes" shape)
-- and book-health events. Runs with search_path = <schema>, public.

-- Times are microseconds since the epoch (Tardis convention). Prices and amounts are
-- double precision: exactly the values the exchange's decimal strings parse to, which is
-- what md.book carries and what Tardis CSVs hold.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        CREATE TABLE orderbook_data (
            exchange text NOT NULL,
            symbol text NOT NULL,
            "timestamp" bigint NOT NULL,
            local_timestamp bigint NOT NULL,
            ask_amount double precision,
            ask_price double precision,
            bid_price double precision,
            bid_amount double precision,
            update_id bigint NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (exchange, symbol, "timestamp", update_id)
        );
        PERFORM create_hypertable(
            format('%I.orderbook_data', current_schema()), 'timestamp',
            chunk_time_interval => 86400000000);
    ELSE
        CREATE TABLE orderbook_data (
            exchange text NOT NULL,
            symbol text NOT NULL,
            "timestamp" bigint NOT NULL,
            local_timestamp bigint NOT NULL,
            ask_amount double precision,
            ask_price double precision,
            bid_price double precision,
            bid_amount double precision,
            update_id bigint NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (exchange, symbol, "timestamp", update_id)
        ) PARTITION BY RANGE ("timestamp");
        -- Safety net only: the service creates each day's partition ahead of time.
        CREATE TABLE orderbook_data_default PARTITION OF orderbook_data DEFAULT;
    END IF;
END
$$;

CREATE INDEX orderbook_data_symbol_ts ON orderbook_data (symbol, "timestamp");

-- Create the daily partitions covering [first_day, first_day + days]; a no-op for a
-- hypertable. Returns how many partitions it created.
CREATE FUNCTION ensure_orderbook_partitions(schema_name text, first_day date, days integer)
RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    d date;
    part text;
    lo bigint;
    hi bigint;
    made integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table pt JOIN pg_class c ON c.oid = pt.partrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relname = 'orderbook_data' AND n.nspname = schema_name) THEN
        RETURN 0;
    END IF;
    FOR i IN 0..days LOOP
        d := first_day + i;
        part := 'orderbook_data_p' || to_char(d, 'YYYYMMDD');
        IF NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE c.relname = part AND n.nspname = schema_name) THEN
            lo := (extract(epoch FROM d::timestamp) * 1000000)::bigint;
            hi := lo + 86400000000;
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.orderbook_data '
                           'FOR VALUES FROM (%s) TO (%s)', schema_name, part, schema_name, lo, hi);
            made := made + 1;
        END IF;
    END LOOP;
    RETURN made;
END
$fn$;

CREATE TABLE book_health (
    exchange text NOT NULL,
    symbol text NOT NULL,
    ts_us bigint NOT NULL,
    kind text NOT NULL,
    detail text NOT NULL DEFAULT '',
    conn_id text NOT NULL DEFAULT '',
    PRIMARY KEY (exchange, symbol, ts_us, kind)
);
