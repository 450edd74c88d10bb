-- ensure_orderbook_partitions, serialised: concurrent collectors no longer race to create
-- the same daily partition (001's version is kept as applied; this replaces the function).

CREATE OR REPLACE FUNCTION ensure_orderbook_partitions(schema_name text, first_day date, days integer)
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
    -- Two collectors starting on a fresh day raced here (both saw no partition, the second
    -- CREATE failed with DuplicateTableError). One creator at a time; the lock ends with the
    -- caller's transaction, after which the others see the partition and skip it.
    PERFORM pg_advisory_xact_lock(hashtext(schema_name || '.orderbook_data partitions'));
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
