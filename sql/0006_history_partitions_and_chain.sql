-- Audit and retention: the history tables become partitioned by month, and every history
-- entry carries a hash chained to the previous entry of its task.
--
-- Partition key: `task_created_at`, the creation time of the task a row belongs to (copied
-- onto every row). A task's whole history, its webhook events, deliveries and attempts then
-- live in the partitions of one month, so retention drops whole partitions together with
-- the (terminal) tasks created that month, and `UNIQUE (task_id, dedupe_key)` survives as
-- `UNIQUE (task_id, dedupe_key, task_created_at)`: the same thing, since a task has one
-- creation time. Unique keys and foreign keys between these tables carry the partition key.
--
-- Existing rows are copied, never rewritten: each table is rebuilt from `LIKE` the old one
-- (so columns added by other migrations come along) and the old table is dropped only after
-- every row has moved. History rows written before this migration get their hashes here, by
-- `relay_history_hash`, which computes exactly what relay/audit.py computes.

-- Canonical JSON (sorted keys, no whitespace, UTF-8, numbers printed the way Python's json
-- module prints the value it reads back): the text an entry's hash is taken over.
CREATE FUNCTION relay_canonical_json(value jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    number_text text;
    as_float double precision;
BEGIN
    CASE jsonb_typeof(value)
    WHEN 'object' THEN
        RETURN '{' || coalesce((
            SELECT string_agg(to_json(key)::text || ':' || relay_canonical_json(item), ','
                              ORDER BY key COLLATE "C")
            FROM jsonb_each(value) AS pairs(key, item)), '') || '}';
    WHEN 'array' THEN
        RETURN '[' || coalesce((
            SELECT string_agg(relay_canonical_json(item), ',' ORDER BY position)
            FROM jsonb_array_elements(value) WITH ORDINALITY AS items(item, position)), '') || ']';
    WHEN 'number' THEN
        number_text := value::text;
        -- No point and no exponent: an integer, printed in full.
        IF number_text !~ '[.eE]' THEN
            RETURN number_text;
        END IF;
        -- Otherwise a float: the shortest text that reads back the same (Python's repr),
        -- which switches to an exponent from 1e16 where Postgres does from 1e15.
        as_float := number_text::double precision;
        IF as_float = trunc(as_float) AND abs(as_float) < 1e16 THEN
            RETURN trunc(as_float)::numeric::text || '.0';
        END IF;
        RETURN as_float::text;
    WHEN 'null' THEN
        RETURN 'null';
    ELSE
        -- strings and booleans: Postgres and Python escape strings alike
        RETURN value::text;
    END CASE;
END;
$$;

-- The hash of one history entry: sha256 (hex) of the canonical JSON of every field
-- `GET /v1/tasks/{id}/events` shows, plus the task id and the previous entry's hash.
CREATE FUNCTION relay_history_hash(
    task_id text, id text, seq integer, type text, from_status text, to_status text,
    source text, upstream_event jsonb, created_at timestamptz, prev_hash text
) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(relay_canonical_json(jsonb_build_object(
        'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'from_status', from_status,
        'id', id,
        'prev_hash', prev_hash,
        'seq', seq,
        'source', source,
        'task_id', task_id,
        'to_status', to_status,
        'type', type,
        'upstream_event', upstream_event)), 'UTF8')), 'hex')
$$;

-- The first entry of every chain points at this instead of a previous hash: 64 zeros.
CREATE FUNCTION relay_history_genesis() RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT repeat('0', 64)
$$;

-- Indexes other migrations put on these tables, which this one does not rebuild itself:
-- remembered by definition (naming the tables as they are about to become) and re-created
-- on the partitioned tables at the end.
CREATE TEMP TABLE relay_carried_indexes ON COMMIT DROP AS
SELECT pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_class ix ON ix.oid = i.indexrelid
WHERE t.relnamespace = 'public'::regnamespace
  AND t.relname IN ('task_events', 'webhook_events', 'deliveries', 'delivery_attempts')
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
  AND ix.relname NOT IN ('webhook_events_client_seq', 'deliveries_due', 'deliveries_task',
                         'deliveries_client_id_desc');

-- 1. Move the old tables aside (their dependents go with them), in dependency order.
ALTER TABLE delivery_attempts RENAME TO delivery_attempts_unpartitioned;
ALTER TABLE deliveries RENAME TO deliveries_unpartitioned;
ALTER TABLE webhook_events RENAME TO webhook_events_unpartitioned;
ALTER TABLE task_events RENAME TO task_events_unpartitioned;

-- 2. The partitioned tables: the old columns (LIKE copies NOT NULL, defaults, checks and
-- identities), then the partition key and, on history, the chain.
CREATE TABLE task_events (
    LIKE task_events_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    task_created_at timestamptz NOT NULL,
    prev_hash       text NOT NULL,
    hash            text NOT NULL
) PARTITION BY RANGE (task_created_at);
-- created_at is assigned by the relay (milliseconds), so it is part of what is hashed
ALTER TABLE task_events ALTER COLUMN created_at DROP DEFAULT;

CREATE TABLE webhook_events (
    LIKE webhook_events_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS
        INCLUDING IDENTITY,
    task_created_at timestamptz NOT NULL
) PARTITION BY RANGE (task_created_at);

CREATE TABLE deliveries (
    LIKE deliveries_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    task_created_at timestamptz NOT NULL
) PARTITION BY RANGE (task_created_at);

CREATE TABLE delivery_attempts (
    LIKE delivery_attempts_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS
        INCLUDING IDENTITY,
    task_created_at timestamptz NOT NULL
) PARTITION BY RANGE (task_created_at);

-- 3. Partitions: one per month and table, created ahead of time by the janitor, plus a
-- DEFAULT partition per table as a safety net (an insert never fails for lack of a month).
CREATE FUNCTION relay_history_partition_name(parent text, month date) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT parent || '_p' || to_char(month, 'YYYY_MM')
$$;

CREATE FUNCTION relay_ensure_history_partitions(first_month date, last_month date)
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
                END IF;
                created := created + 1;
            END IF;
        END LOOP;
        month := (month + interval '1 month')::date;
    END LOOP;
    RETURN created;
END;
$$;

CREATE TABLE task_events_pdefault PARTITION OF task_events DEFAULT;
CREATE TABLE webhook_events_pdefault PARTITION OF webhook_events DEFAULT;
CREATE TABLE deliveries_pdefault PARTITION OF deliveries DEFAULT;
CREATE TABLE delivery_attempts_pdefault PARTITION OF delivery_attempts DEFAULT;

-- Every month that has tasks, up to three months ahead (the janitor keeps this up).
SELECT relay_ensure_history_partitions(
    (least(coalesce((SELECT min(created_at) FROM tasks), now()), now()) AT TIME ZONE 'UTC')::date,
    ((now() + interval '3 months') AT TIME ZONE 'UTC')::date);

-- 4. Copy every row (before keys and indexes exist: faster, and the old tables' index
-- names are free once they are dropped). History gets its chain here: entries in seq order per task, each
-- hashed over its shown fields and the previous entry's hash (a recursive walk down the
-- chains, one step per position, all tasks at once).
INSERT INTO task_events
WITH RECURSIVE ordered AS (
    SELECT e.id, e.task_id, e.seq, e.type, e.from_status, e.to_status, e.source,
           e.upstream_event, e.created_at,
           row_number() OVER (PARTITION BY e.task_id ORDER BY e.seq) AS position
    FROM task_events_unpartitioned e
), chain AS (
    SELECT o.task_id, o.position, o.id, relay_history_genesis() AS prev_hash,
           relay_history_hash(o.task_id, o.id, o.seq, o.type, o.from_status, o.to_status,
                              o.source, o.upstream_event, o.created_at,
                              relay_history_genesis()) AS hash
    FROM ordered o WHERE o.position = 1
    UNION ALL
    SELECT o.task_id, o.position, o.id, c.hash,
           relay_history_hash(o.task_id, o.id, o.seq, o.type, o.from_status, o.to_status,
                              o.source, o.upstream_event, o.created_at, c.hash)
    FROM chain c JOIN ordered o ON o.task_id = c.task_id AND o.position = c.position + 1
)
SELECT e.*, t.created_at, c.prev_hash, c.hash
FROM task_events_unpartitioned e
JOIN tasks t ON t.id = e.task_id
JOIN chain c ON c.id = e.id;

-- A row without a task (should a migration allow one) is filed under its own time.
INSERT INTO webhook_events OVERRIDING SYSTEM VALUE
SELECT w.*, coalesce(t.created_at, w.created_at)
FROM webhook_events_unpartitioned w LEFT JOIN tasks t ON t.id = w.task_id;
SELECT setval(pg_get_serial_sequence('webhook_events', 'seq'),
              coalesce((SELECT max(seq) FROM webhook_events), 0) + 1, false);

INSERT INTO deliveries
SELECT d.*, w.task_created_at
FROM deliveries_unpartitioned d JOIN webhook_events w ON w.id = d.event_id;

INSERT INTO delivery_attempts OVERRIDING SYSTEM VALUE
SELECT a.*, d.task_created_at
FROM delivery_attempts_unpartitioned a JOIN deliveries d ON d.id = a.delivery_id;
SELECT setval(pg_get_serial_sequence('delivery_attempts', 'id'),
              coalesce((SELECT max(id) FROM delivery_attempts), 0) + 1, false);

-- 5. Nothing left behind: the counts match, or the migration rolls back.
DO $$
BEGIN
    IF (SELECT count(*) FROM task_events) <> (SELECT count(*) FROM task_events_unpartitioned)
       OR (SELECT count(*) FROM webhook_events)
           <> (SELECT count(*) FROM webhook_events_unpartitioned)
       OR (SELECT count(*) FROM deliveries) <> (SELECT count(*) FROM deliveries_unpartitioned)
       OR (SELECT count(*) FROM delivery_attempts)
           <> (SELECT count(*) FROM delivery_attempts_unpartitioned) THEN
        RAISE EXCEPTION 'history partitioning would lose rows';
    END IF;
END;
$$;

DROP TABLE delivery_attempts_unpartitioned;
DROP TABLE deliveries_unpartitioned;
DROP TABLE webhook_events_unpartitioned;
DROP TABLE task_events_unpartitioned;

-- 6. Keys, indexes and foreign keys (each carrying the partition key).
ALTER TABLE task_events
    ADD CONSTRAINT task_events_pk PRIMARY KEY (id, task_created_at),
    ADD CONSTRAINT task_events_task_seq UNIQUE (task_id, seq, task_created_at),
    -- the constraint, not the code, makes every upstream event appear once
    ADD CONSTRAINT task_events_task_dedupe UNIQUE (task_id, dedupe_key, task_created_at),
    ADD CONSTRAINT task_events_task FOREIGN KEY (task_id) REFERENCES tasks (id);

-- Lookups by id (or seq) alone use these keys' indexes, whose first column they are.
ALTER TABLE webhook_events
    ADD CONSTRAINT webhook_events_pk PRIMARY KEY (id, task_created_at),
    ADD CONSTRAINT webhook_events_seq_key UNIQUE (seq, task_created_at),
    ADD CONSTRAINT webhook_events_task FOREIGN KEY (task_id) REFERENCES tasks (id),
    ADD CONSTRAINT webhook_events_client FOREIGN KEY (client_id) REFERENCES clients (id);
CREATE INDEX webhook_events_client_seq ON webhook_events (client_id, seq);

ALTER TABLE deliveries
    ADD CONSTRAINT deliveries_pk PRIMARY KEY (id, task_created_at),
    ADD CONSTRAINT deliveries_event_target UNIQUE (event_id, target, task_created_at),
    ADD CONSTRAINT deliveries_event FOREIGN KEY (event_id, task_created_at)
        REFERENCES webhook_events (id, task_created_at),
    ADD CONSTRAINT deliveries_task FOREIGN KEY (task_id) REFERENCES tasks (id),
    ADD CONSTRAINT deliveries_client FOREIGN KEY (client_id) REFERENCES clients (id),
    ADD CONSTRAINT deliveries_subscription FOREIGN KEY (subscription_id)
        REFERENCES subscriptions (id);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status IN ('pending', 'failed');
CREATE INDEX deliveries_task ON deliveries (task_id, event_seq);
CREATE INDEX deliveries_client_id_desc ON deliveries (client_id, id DESC);

ALTER TABLE delivery_attempts
    ADD CONSTRAINT delivery_attempts_pk PRIMARY KEY (id, task_created_at),
    ADD CONSTRAINT delivery_attempts_attempt UNIQUE (delivery_id, attempt, task_created_at),
    ADD CONSTRAINT delivery_attempts_delivery FOREIGN KEY (delivery_id, task_created_at)
        REFERENCES deliveries (id, task_created_at);

DO $$
DECLARE
    carried record;
BEGIN
    FOR carried IN SELECT definition FROM relay_carried_indexes LOOP
        EXECUTE carried.definition;
    END LOOP;
END;
$$;

-- 7. Append-only, as before: row changes refused on the parents (and so on every
-- partition), TRUNCATE refused on the parents here and on each partition as it is made.
CREATE TRIGGER task_events_append_only BEFORE UPDATE OR DELETE ON task_events
    FOR EACH ROW EXECUTE FUNCTION relay_refuse_change();
CREATE TRIGGER task_events_no_truncate BEFORE TRUNCATE ON task_events
    FOR EACH STATEMENT EXECUTE FUNCTION relay_refuse_change();
CREATE TRIGGER webhook_events_append_only BEFORE UPDATE OR DELETE ON webhook_events
    FOR EACH ROW EXECUTE FUNCTION relay_refuse_change();
CREATE TRIGGER webhook_events_no_truncate BEFORE TRUNCATE ON webhook_events
    FOR EACH STATEMENT EXECUTE FUNCTION relay_refuse_change();
CREATE TRIGGER delivery_attempts_append_only BEFORE UPDATE OR DELETE ON delivery_attempts
    FOR EACH ROW EXECUTE FUNCTION relay_refuse_change();
CREATE TRIGGER delivery_attempts_no_truncate BEFORE TRUNCATE ON delivery_attempts
    FOR EACH STATEMENT EXECUTE FUNCTION relay_refuse_change();
CREATE TRIGGER task_events_pdefault_no_truncate BEFORE TRUNCATE ON task_events_pdefault
    FOR EACH STATEMENT EXECUTE FUNCTION relay_refuse_change();
CREATE TRIGGER webhook_events_pdefault_no_truncate BEFORE TRUNCATE ON webhook_events_pdefault
    FOR EACH STATEMENT EXECUTE FUNCTION relay_refuse_change();
CREATE TRIGGER delivery_attempts_pdefault_no_truncate
    BEFORE TRUNCATE ON delivery_attempts_pdefault
    FOR EACH STATEMENT EXECUTE FUNCTION relay_refuse_change();

-- 8. Retention: drop one month's partitions and its tasks. The caller (relay/retention.py)
-- decides which months may go; this refuses a month that still has a task not terminal.
CREATE FUNCTION relay_drop_history_month(month date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := month::timestamp AT TIME ZONE 'UTC';
    month_end timestamptz := (month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    parent text;
    child text;
    dropped_tasks integer;
BEGIN
    IF EXISTS (SELECT 1 FROM tasks WHERE created_at >= month_start AND created_at < month_end
                 AND status NOT IN ('succeeded', 'failed', 'cancelled')) THEN
        RAISE EXCEPTION 'month % still has tasks that are not terminal', month;
    END IF;
    -- referencing tables first, so no foreign key points into a dropped partition
    FOREACH parent IN ARRAY ARRAY['delivery_attempts', 'deliveries', 'webhook_events',
                                  'task_events'] LOOP
        child := relay_history_partition_name(parent, month);
        IF to_regclass(child) IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', parent, child);
            EXECUTE format('DROP TABLE %I', child);
        END IF;
    END LOOP;
    DELETE FROM idempotency_keys k USING tasks t
    WHERE k.task_id = t.id AND t.created_at >= month_start AND t.created_at < month_end;
    DELETE FROM tasks WHERE created_at >= month_start AND created_at < month_end;
    GET DIAGNOSTICS dropped_tasks = ROW_COUNT;
    RETURN dropped_tasks;
END;
$$;
