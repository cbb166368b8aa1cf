-- Clients, tasks, their append-only history and idempotency keys.

CREATE TABLE clients (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    -- sha256 of the API key: keys are 256-bit random, so a fast hash is enough
    -- and lets the auth lookup use an index.
    key_hash       bytea NOT NULL UNIQUE,
    key_prefix     text NOT NULL,
    signing_secret text NOT NULL,
    is_admin       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz
);

CREATE TABLE tasks (
    id                  text PRIMARY KEY,
    client_id           bigint NOT NULL REFERENCES clients (id),
    model               text NOT NULL,
    input               jsonb NOT NULL,
    status              text NOT NULL
        CHECK (status IN ('queued', 'processing', 'succeeded', 'failed', 'cancelled')),
    upstream_task_id    text UNIQUE,
    upstream_request_id text,
    cost_estimate       double precision,
    cost_actual         double precision,
    output              jsonb,
    error               jsonb,
    metadata            jsonb,
    webhook_url         text,
    webhook_events      text[],
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    completed_at        timestamptz,
    -- last history seq handed out; bumped in the transaction that appends history
    event_seq           integer NOT NULL DEFAULT 0,
    -- submission (upstream_task_id IS NULL): when the resubmitter may try next
    submit_attempts     integer NOT NULL DEFAULT 0,
    next_submit_at      timestamptz,
    -- polling: next_poll_at doubles as the lease expiry while a poller holds it
    next_poll_at        timestamptz,
    poll_interval_s     double precision,
    lease_owner         text
);

-- Keyset pagination, newest first.
-- Ids are time-ordered (ULID), so keyset pagination "newest first" walks this index.
CREATE INDEX tasks_client_id_desc ON tasks (client_id, id DESC);
-- Only the due work is indexed, so the claim stays cheap with millions of finished tasks.
CREATE INDEX tasks_due_poll ON tasks (next_poll_at)
    WHERE status IN ('queued', 'processing') AND upstream_task_id IS NOT NULL;
CREATE INDEX tasks_due_submit ON tasks (next_submit_at)
    WHERE status = 'queued' AND upstream_task_id IS NULL;

CREATE TABLE task_events (
    id                 text PRIMARY KEY,
    task_id            text NOT NULL REFERENCES tasks (id),
    seq                integer NOT NULL,
    type               text NOT NULL,
    from_status        text,
    to_status          text,
    source             text NOT NULL CHECK (source IN ('relay', 'upstream')),
    upstream_event     jsonb,
    -- identity of what was recorded ("status:succeeded", "event:<id>" or a content hash):
    -- the constraint, not the code, makes every upstream event appear once.
    dedupe_key         text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (task_id, seq),
    UNIQUE (task_id, dedupe_key)
);

CREATE FUNCTION relay_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER task_events_append_only BEFORE UPDATE OR DELETE ON task_events
    FOR EACH ROW EXECUTE FUNCTION relay_refuse_change();
CREATE TRIGGER task_events_no_truncate BEFORE TRUNCATE ON task_events
    FOR EACH STATEMENT EXECUTE FUNCTION relay_refuse_change();

CREATE TABLE idempotency_keys (
    client_id    bigint NOT NULL REFERENCES clients (id),
    key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash text NOT NULL,
    task_id      text NOT NULL REFERENCES tasks (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Time-ordered ids for rows created inside SQL (deliveries): prefix, 12 hex digits of
-- milliseconds, 20 random hex digits. Sorting by id sorts by creation time.
CREATE FUNCTION relay_new_id(prefix text) RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT prefix || '_'
        || lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
        || substr(replace(gen_random_uuid()::text, '-', ''), 1, 20)
$$;
