-- Subscriptions, the webhook outbox (events + deliveries) and append-only attempts.

CREATE TABLE subscriptions (
    id                    text PRIMARY KEY,
    client_id             bigint NOT NULL REFERENCES clients (id),
    url                   text NOT NULL,
    events                text[],          -- NULL: every event type
    models                text[],          -- NULL: every model
    description           text,
    enabled               boolean NOT NULL DEFAULT true,
    disabled_reason       text,
    secret                text NOT NULL,
    previous_secret       text,
    previous_secret_until timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    deleted_at            timestamptz
);
CREATE INDEX subscriptions_client ON subscriptions (client_id, id DESC)
    WHERE deleted_at IS NULL;

-- One row per status change that produces webhooks; payload is the body exactly as sent.
-- Rows are inserted under a transaction-level advisory lock, so seq order is commit order
-- and a reader paging by seq never skips a row that commits late.
CREATE TABLE webhook_events (
    seq        bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    id         text PRIMARY KEY,
    task_id    text NOT NULL REFERENCES tasks (id),
    client_id  bigint NOT NULL REFERENCES clients (id),
    type       text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_events_client_seq ON webhook_events (client_id, seq);

CREATE TABLE deliveries (
    id               text PRIMARY KEY,
    event_id         text NOT NULL REFERENCES webhook_events (id),
    event_seq        bigint NOT NULL,
    task_id          text NOT NULL REFERENCES tasks (id),
    client_id        bigint NOT NULL REFERENCES clients (id),
    subscription_id  text REFERENCES subscriptions (id),
    url              text NOT NULL,
    -- ordering scope: one subscriber ("sub:<id>" or "url:<url>") and one task
    target           text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'succeeded', 'failed', 'dead')),
    attempt_count    integer NOT NULL DEFAULT 0,
    -- index into RELAY_WEBHOOK_RETRY_SCHEDULE for the delay after the next failure
    retry_index      integer NOT NULL DEFAULT 0,
    -- doubles as the lease expiry while a dispatcher holds the delivery
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    UNIQUE (event_id, target)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status IN ('pending', 'failed');
CREATE INDEX deliveries_task ON deliveries (task_id, event_seq);
CREATE INDEX deliveries_client_id_desc ON deliveries (client_id, id DESC);

CREATE TABLE delivery_attempts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id      text NOT NULL REFERENCES deliveries (id),
    attempt          integer NOT NULL,
    status_code      integer,
    response_excerpt text,
    error            text,
    latency_ms       double precision NOT NULL,
    started_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (delivery_id, attempt)
);

CREATE TRIGGER delivery_attempts_append_only BEFORE UPDATE OR DELETE ON delivery_attempts
    FOR EACH ROW EXECUTE FUNCTION relay_refuse_change();
CREATE TRIGGER delivery_attempts_no_truncate BEFORE TRUNCATE ON delivery_attempts
    FOR EACH STATEMENT EXECUTE FUNCTION relay_refuse_change();
