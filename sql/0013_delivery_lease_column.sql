-- A delivery's lease gets a column of its own, so that claiming a delivery is a HOT update.
--
-- Until now the claim moved `next_attempt_at` (indexed by deliveries_due) to the lease's
-- expiry, so every claim wrote a new entry into each of the table's six indexes, and the
-- completion wrote six more. The lease now lives in `leased_until`, which no index covers:
-- the claim changes only unindexed columns, and Postgres can keep the new row version on
-- the same page without touching any index (a heap-only tuple). That needs room on the
-- page, so deliveries partitions are created with fillfactor 75. `next_attempt_at` stays
-- what it says: when the delivery is due. A delivery is claimable when it is due and not
-- leased, or its lease has run out.

ALTER TABLE deliveries ADD COLUMN leased_until timestamptz;

-- Deliveries in flight while this migration runs were leased the old way: their lease's
-- expiry is their next_attempt_at. Carry it over, so they stay leased until then.
UPDATE deliveries SET leased_until = next_attempt_at
WHERE lease_owner IS NOT NULL AND status IN ('pending', 'failed')
  AND next_attempt_at > now() AND next_attempt_at <> 'infinity';

-- Room for a claimed row's new version on its own page. Existing partitions: for pages
-- written from now on (rewriting them would lock the table); new partitions: from the start.
DO $$
DECLARE
    child text;
BEGIN
    FOR child IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'deliveries'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %I SET (fillfactor = 75)', child);
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION relay_ensure_history_partitions(first_month date, last_month date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month date := date_trunc('month', first_month)::date;
    parent text;
    child text;
    created integer := 0;
BEGIN
    WHILE month <= last_month LOOP
        FOREACH parent IN ARRAY ARRAY['task_events', 'webhook_events', 'deliveries',
                                      'delivery_attempts'] LOOP
            child := relay_history_partition_name(parent, month);
            IF to_regclass(child) IS NULL THEN
                -- month boundaries in UTC, whatever the session's time zone
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    child, parent, month::timestamp AT TIME ZONE 'UTC',
                    (month + interval '1 month')::timestamp AT TIME ZONE 'UTC');
                -- row triggers come from the parent; TRUNCATE on a partition needs its own
                IF parent <> 'deliveries' THEN
                    EXECUTE format(
                        'CREATE TRIGGER %I BEFORE TRUNCATE ON %I '
                        'FOR EACH STATEMENT EXECUTE FUNCTION relay_refuse_change()',
                        child || '_no_truncate', child);
                ELSE
                    -- room on each page for the claim's HOT update (0013)
                    EXECUTE format('ALTER TABLE %I SET (fillfactor = 75)', child);
                END IF;
                created := created + 1;
            END IF;
        END LOOP;
        month := (month + interval '1 month')::date;
    END LOOP;
    RETURN created;
END;
$$;
