-- Who did what: an append-only log of the actions clients and operators take.

-- One row per action (task created, cancel requested, delivery retried, subscription
-- changed, client key created or revoked). Rows are never changed: the triggers below
-- refuse UPDATE, DELETE and TRUNCATE like they do on task_events.
CREATE TABLE actions (
    -- time-ordered (relay_new_id), so "newest first" is the primary key read backwards
    id               text PRIMARY KEY DEFAULT relay_new_id('act'),
    at               timestamptz NOT NULL DEFAULT now(),
    -- a client's name, or "cli:<os user>" for the command line
    actor            text NOT NULL CHECK (length(actor) BETWEEN 1 AND 300),
    -- the first characters of the API key used (never the key); NULL for the CLI
    actor_key_prefix text,
    action           text NOT NULL CHECK (length(action) BETWEEN 1 AND 100),
    resource_type    text NOT NULL CHECK (length(resource_type) BETWEEN 1 AND 100),
    resource_id      text,
    -- the X-Request-Id of the API request that did it (NULL for the CLI)
    request_id       text,
    details          jsonb NOT NULL DEFAULT '{}'
);
-- The audit log's filters, each walked newest first.
CREATE INDEX actions_actor ON actions (actor, id DESC);
CREATE INDEX actions_action ON actions (action, id DESC);
CREATE INDEX actions_resource ON actions (resource_type, resource_id, id DESC);
CREATE INDEX actions_at ON actions (at);

CREATE TRIGGER actions_append_only BEFORE UPDATE OR DELETE ON actions
    FOR EACH ROW EXECUTE FUNCTION relay_refuse_change();
CREATE TRIGGER actions_no_truncate BEFORE TRUNCATE ON actions
    FOR EACH STATEMENT EXECUTE FUNCTION relay_refuse_change();

-- Export and usage read tasks by creation time.
CREATE INDEX tasks_created_at ON tasks (created_at, id);
