-- Named queries, loaded once by relay.store. Each section: `-- name: x`, then a one-line why.
-- Parameters are named (`:owner`); relay.store turns them into `$n` when it loads this file.

-- name: insert_client
-- Register a client (nothing when the name is taken); its keys live in client_keys.
INSERT INTO clients (name, signing_secret, role)
VALUES (:name, :signing_secret, :role)
ON CONFLICT (name) DO NOTHING
RETURNING id, name, role, created_at;

-- name: insert_client_key
-- One more API key for a client, stored only as its sha256.
INSERT INTO client_keys (client_id, key_hash, key_prefix)
VALUES (:client_id, :key_hash, :key_prefix)
RETURNING id, key_prefix, created_at;

-- name: get_client_by_name
-- A client by its unique name (the CLI's handle on it).
SELECT id, name, role FROM clients WHERE name = :name;

-- name: list_client_keys
-- Every client with each of its keys (prefix and dates, never the hash nor the secret).
SELECT c.name, c.role, k.key_prefix, k.created_at, k.last_used_at, k.revoked_at
FROM clients c LEFT JOIN client_keys k ON k.client_id = c.id
ORDER BY c.id, k.id;

-- name: live_client_keys
-- A client's keys not yet revoked, oldest first.
SELECT id, key_prefix FROM client_keys
WHERE client_id = :client_id AND revoked_at IS NULL
ORDER BY id;

-- name: revoke_client_keys
-- Revocation is immediate: authentication reads the key's row on every request.
UPDATE client_keys SET revoked_at = now()
WHERE id = ANY(:ids::bigint[]) AND revoked_at IS NULL
RETURNING key_prefix;

-- name: authenticate_client
-- The client behind a live key hash, and whether the key's last use is recent enough
-- (within :touch_after_s) that it need not be written again.
SELECT c.id, c.name, c.role, k.id AS key_id, k.key_prefix,
       coalesce(k.last_used_at > now() - make_interval(secs => :touch_after_s), false)
           AS recently_used
FROM client_keys k JOIN clients c ON c.id = k.client_id
WHERE k.key_hash = :key_hash AND k.revoked_at IS NULL;

-- name: touch_client_key
-- Record a key's use; a no-op when another request of the same minute already did.
UPDATE client_keys SET last_used_at = now()
WHERE id = :id
  AND (last_used_at IS NULL OR last_used_at <= now() - make_interval(secs => :touch_after_s));

-- name: rotate_client_secret
-- New signing secret for per-task webhooks; the old one keeps signing until
-- :previous_secret_until (dual signatures, as for subscriptions).
UPDATE clients
SET previous_signing_secret = signing_secret, previous_signing_secret_until = :previous_secret_until,
    signing_secret = :secret
WHERE id = :id
RETURNING id, previous_signing_secret_until;

-- name: create_task
-- A new task, its idempotency key and its action-log entry in one statement (one round trip,
-- one commit): durable before anything is sent upstream; the submit lease lasts
-- :submit_lease_s. With a key another request already claimed (a concurrent twin waits on
-- the unique index first), nothing is written and no row comes back: a replay.
WITH claimed AS (
    INSERT INTO idempotency_keys (client_id, key, request_hash, task_id)
    SELECT :client_id, :key, :request_hash, :id
    WHERE :key::text IS NOT NULL
    ON CONFLICT (client_id, key) DO NOTHING
    RETURNING task_id
), task AS (
    INSERT INTO tasks (id, client_id, model, input, status, metadata, webhook_url,
                       webhook_events, submit_attempts, next_submit_at, client_name, traceparent)
    SELECT :id, :client_id, :model, :input, 'queued', :metadata, :webhook_url, :webhook_events,
           1, now() + make_interval(secs => :submit_lease_s), :client_name, :traceparent
    WHERE :key::text IS NULL OR EXISTS (SELECT FROM claimed)
    RETURNING *
), action AS (
    INSERT INTO actions (actor, actor_key_prefix, action, resource_type, resource_id,
                         request_id, details)
    SELECT :actor, :actor_key_prefix, :action, 'task', task.id, :request_id, :details
    FROM task
)
SELECT * FROM task;

-- name: get_idempotency_key
-- What an idempotency key was first used for.
SELECT request_hash, task_id FROM idempotency_keys WHERE client_id = :client_id AND key = :key;

-- name: get_task
-- One task, visible to its client (:scope) or to an admin (:scope NULL).
SELECT * FROM tasks WHERE id = :id AND (:scope::bigint IS NULL OR client_id = :scope);

-- name: list_tasks
-- Newest first by time-ordered id; the cursor is the last id seen. :client filters by
-- client name (within :scope, so a client naming another sees nothing).
SELECT * FROM tasks
WHERE (:scope::bigint IS NULL OR client_id = :scope)
  AND (:status::text IS NULL OR status = :status)
  AND (:model::text IS NULL OR model = :model)
  AND (:created_after::timestamptz IS NULL OR created_at > :created_after)
  AND (:created_before::timestamptz IS NULL OR created_at < :created_before)
  AND (:client::text IS NULL OR client_id = (SELECT id FROM clients WHERE name = :client))
  AND (:cursor::text IS NULL OR id < :cursor)
ORDER BY id DESC
LIMIT :limit;

-- name: claim_due_submissions
-- Tasks upstream has not accepted yet whose retry time has come; the lease is next_submit_at.
WITH due AS (
    SELECT id FROM tasks
    WHERE status = 'queued' AND upstream_task_id IS NULL AND next_submit_at <= now()
    ORDER BY next_submit_at
    LIMIT :batch_size
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks t
SET lease_owner = :owner,
    next_submit_at = now() + make_interval(secs => :lease_s),
    submit_attempts = t.submit_attempts + 1
FROM due
WHERE t.id = due.id
RETURNING t.*;

-- name: count_due_submissions
-- How many submissions are due (up to :limit), so the resubmitter takes only the tokens it needs.
SELECT count(*) FROM (
    SELECT 1 FROM tasks
    WHERE status = 'queued' AND upstream_task_id IS NULL AND next_submit_at <= now()
    LIMIT :limit
) due;

-- name: pull_deferred_submissions
-- Upstream accepts again: every submission the resubmitter deferred is due now; the budget
-- paces them. (A first attempt still in flight in the API has submit_attempts = 1.)
-- Rows another transaction holds are skipped: they are being submitted or rescheduled.
-- The retry this causes is the relay's initiative: the claim counts it, this takes it back,
-- so a task pulled forward after every accepted submission keeps the backoff its own
-- failures earned instead of doubling it per pull (and waiting a minute once upstream is
-- well again).
UPDATE tasks SET next_submit_at = now(), submit_attempts = submit_attempts - 1
WHERE id IN (SELECT id FROM tasks
             WHERE status = 'queued' AND upstream_task_id IS NULL AND lease_owner IS NULL
               AND submit_attempts > 1 AND next_submit_at > now()
             FOR UPDATE SKIP LOCKED);

-- name: schedule_resubmit
-- Upstream could not take the task now: try again after :delay_s seconds (:requests made).
UPDATE tasks
SET next_submit_at = now() + make_interval(secs => :delay_s), lease_owner = NULL,
    upstream_requests = upstream_requests + :requests
WHERE id = :id AND lease_owner IS NOT DISTINCT FROM :owner AND upstream_task_id IS NULL
  AND status = 'queued'
RETURNING *;

-- name: claim_due_polls
-- Due tasks (in flight, or terminal awaiting final events), one batch, longest overdue first:
-- a task's due time is when a change became likely enough. The lease is next_poll_at, so a
-- dead owner's tasks come due again.
WITH due AS (
    SELECT id, next_poll_at AS due_at FROM tasks
    WHERE next_poll_at <= now() AND next_poll_at IS NOT NULL AND upstream_task_id IS NOT NULL
    ORDER BY next_poll_at
    LIMIT :batch_size
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks t
SET lease_owner = :owner, next_poll_at = now() + make_interval(secs => :lease_s)
FROM due
WHERE t.id = due.id
RETURNING t.*, extract(epoch FROM now() - due.due_at)::float8 AS due_lag_s,
    -- how long upstream has answered 404 (NULL: it has not) and the task's age, on the
    -- database's clock like every other time the poller compares
    extract(epoch FROM now() - t.upstream_missing_since)::float8 AS missing_for_s,
    extract(epoch FROM now() - t.created_at)::float8 AS age_s;

-- name: history_keys
-- What is already recorded for these tasks, to diff upstream's events against (and the
-- statuses recorded upstream events named, so no status the task went through is skipped).
SELECT task_id, dedupe_key, upstream_event ->> 'status' AS event_status
FROM task_events WHERE task_id = ANY(:task_ids::text[]);

-- name: next_poll_due_in
-- Seconds until the earliest planned poll (NULL: none planned), so idle pollers wake on time.
SELECT extract(epoch FROM min(next_poll_at) - now())::float8 FROM tasks
WHERE next_poll_at IS NOT NULL AND upstream_task_id IS NOT NULL;

-- name: apply_task_updates
-- Write a batch of task outcomes; only rows whose lease is still ours (:owner) change.
UPDATE tasks t
SET status = u.status,
    upstream_task_id = coalesce(u.upstream_task_id, t.upstream_task_id),
    upstream_request_id = coalesce(u.upstream_request_id, t.upstream_request_id),
    cost_estimate = u.cost_estimate,
    cost_actual = u.cost_actual,
    output = u.output,
    error = u.error,
    completed_at = CASE WHEN u.status IN ('succeeded', 'failed', 'cancelled')
                        THEN coalesce(t.completed_at, now()) END,
    updated_at = CASE WHEN u.changed THEN now() ELSE t.updated_at END,
    event_seq = t.event_seq + u.new_events,
    poll_interval_s = u.poll_interval_s,
    next_poll_at = CASE WHEN u.poll_delay_s IS NULL THEN NULL
                        ELSE now() + make_interval(secs => u.poll_delay_s) END,
    lease_owner = NULL,
    phase_started_at = coalesce(u.phase_started_at, t.phase_started_at),
    last_polled_at = coalesce(u.looked_at, t.last_polled_at),
    events_fetched_at = CASE WHEN u.events_fetched THEN now() ELSE t.events_fetched_at END,
    events_retries = coalesce(u.events_retries, t.events_retries),
    upstream_requests = t.upstream_requests + coalesce(u.requests, 0),
    upstream_missing_since = CASE WHEN u.upstream_missing IS NULL THEN t.upstream_missing_since
                                  WHEN u.upstream_missing THEN coalesce(t.upstream_missing_since, now())
                                  END
FROM jsonb_to_recordset(:updates::jsonb) AS u(
    id text, status text, upstream_task_id text, upstream_request_id text,
    cost_estimate float8, cost_actual float8, output jsonb, error jsonb, changed bool,
    new_events int, poll_interval_s float8, poll_delay_s float8,
    phase_started_at timestamptz, looked_at timestamptz, events_fetched bool,
    events_retries int, requests int, upstream_missing bool)
WHERE t.id = u.id AND t.lease_owner IS NOT DISTINCT FROM :owner
  -- The ids again, as an array: a primary-key lookup whatever the statistics say (joined to
  -- the recordset alone, a young table is planned as a sequential scan per write).
  AND t.id = ANY (ARRAY(SELECT jsonb_array_elements(:updates::jsonb) ->> 'id'))
RETURNING t.*;

-- name: insert_history
-- Append history, chained (hash, prev_hash) and timed by the relay; the (task_id, dedupe_key)
-- constraint (with the task's creation time, the partition key) makes every entry appear once.
INSERT INTO task_events (id, task_id, task_created_at, seq, type, from_status, to_status,
                         source, upstream_event, dedupe_key, created_at, prev_hash, hash)
SELECT e.id, e.task_id, e.task_created_at, e.seq, e.type, e.from_status, e.to_status,
       e.source, e.upstream_event, e.dedupe_key, e.created_at, e.prev_hash, e.hash
FROM jsonb_to_recordset(:entries::jsonb) AS e(
    id text, task_id text, task_created_at timestamptz, seq int, type text, from_status text,
    to_status text, source text, upstream_event jsonb, dedupe_key text, created_at timestamptz,
    prev_hash text, hash text)
ORDER BY e.task_id, e.seq
ON CONFLICT (task_id, dedupe_key, task_created_at) DO NOTHING
RETURNING id;

-- name: insert_webhook_events
-- The outbox: one event per status change, its payload the exact webhook body.
INSERT INTO webhook_events (id, task_id, task_created_at, client_id, type, payload)
SELECT e.id, e.task_id, e.task_created_at, e.client_id, e.type, e.payload
FROM jsonb_to_recordset(:events::jsonb) AS e(
    id text, task_id text, task_created_at timestamptz, client_id bigint, type text,
    payload jsonb, ord int)
ORDER BY e.ord
RETURNING id;

-- name: insert_deliveries
-- Fan new events out to matching subscriptions (own client's, or any admin's) and task URLs.
-- Revoking a client's keys stops its API calls, not deliveries for tasks already accepted.
-- A disabled subscription's deliveries wait, parked (next_attempt_at = infinity), until it
-- is re-enabled. The subscriptions read are share-locked: re-enabling one (an UPDATE of its
-- row, then resuming its parked deliveries) waits for this transaction, or this reads it
-- enabled; so no delivery stays parked for an enabled subscription.
WITH ev AS (
    SELECT w.id, w.seq, w.task_id, w.task_created_at, w.client_id, w.type, t.model,
           t.webhook_url, t.webhook_events
    FROM webhook_events w JOIN tasks t ON t.id = w.task_id
    WHERE w.id = ANY(:event_ids::text[])
), subs AS (
    SELECT s.id, s.client_id, s.url, s.events, s.models, s.enabled, c.role = 'admin' AS admin
    FROM subscriptions s JOIN clients c ON c.id = s.client_id
    WHERE s.deleted_at IS NULL
      AND (c.role = 'admin' OR s.client_id IN (SELECT client_id FROM ev))
    FOR SHARE OF s
), targets AS (
    SELECT ev.id, ev.seq, ev.task_id, ev.task_created_at, s.client_id,
           s.id AS subscription_id, s.url, 'sub:' || s.id AS target,
           CASE WHEN s.enabled THEN now() ELSE 'infinity' END AS next_attempt_at
    FROM ev
    JOIN subs s ON (s.client_id = ev.client_id OR s.admin)
        AND (s.events IS NULL OR ev.type = ANY (s.events))
        AND (s.models IS NULL OR ev.model = ANY (s.models))
    UNION ALL
    SELECT ev.id, ev.seq, ev.task_id, ev.task_created_at, ev.client_id, NULL,
           ev.webhook_url, 'url:' || ev.webhook_url, now()
    FROM ev
    WHERE ev.webhook_url IS NOT NULL
      AND (ev.webhook_events IS NULL OR ev.type = ANY (ev.webhook_events))
)
INSERT INTO deliveries (id, event_id, event_seq, task_id, task_created_at, client_id,
                        subscription_id, url, target, next_attempt_at)
SELECT relay_new_id('dlv'), id, seq, task_id, task_created_at, client_id, subscription_id, url,
       target, next_attempt_at
FROM targets
ORDER BY seq
RETURNING id;

-- name: notify_outbox
-- Wake the dispatchers; delivered when the transaction commits.
SELECT pg_notify(:channel, '');

-- name: release_task_leases
-- Shutdown: hand our tasks back at once instead of after the lease expires.
UPDATE tasks
SET lease_owner = NULL,
    next_poll_at = CASE WHEN upstream_task_id IS NOT NULL THEN now() ELSE next_poll_at END,
    next_submit_at = CASE WHEN upstream_task_id IS NULL THEN now() ELSE next_submit_at END
WHERE lease_owner = :owner AND (status IN ('queued', 'processing') OR next_poll_at IS NOT NULL);

-- name: poll_soon
-- After a cancel request: poll the task at once (unless a poller holds it right now).
UPDATE tasks SET next_poll_at = now()
WHERE id = :id AND lease_owner IS NULL AND status IN ('queued', 'processing')
  AND upstream_task_id IS NOT NULL;

-- name: task_history
-- A task's audit history, oldest first.
SELECT * FROM task_events WHERE task_id = :task_id ORDER BY seq;

-- name: insert_subscription
-- A standing subscriber; NULL events/models mean "all".
INSERT INTO subscriptions (id, client_id, url, events, models, description, secret)
VALUES (:id, :client_id, :url, :events, :models, :description, :secret)
RETURNING *;

-- name: list_subscriptions
-- A client's subscriptions (all for an admin), newest first.
SELECT * FROM subscriptions
WHERE deleted_at IS NULL AND (:scope::bigint IS NULL OR client_id = :scope)
  AND (:cursor::text IS NULL OR id < :cursor)
ORDER BY id DESC
LIMIT :limit;

-- name: get_subscription
-- One subscription, visible to its client or an admin.
SELECT * FROM subscriptions
WHERE id = :id AND deleted_at IS NULL AND (:scope::bigint IS NULL OR client_id = :scope);

-- name: update_subscription
-- PATCH: NULL keeps the current value; :events_given etc. say a nullable field was given.
UPDATE subscriptions
SET url = coalesce(:url, url),
    events = CASE WHEN :events_given THEN :events ELSE events END,
    models = CASE WHEN :models_given THEN :models ELSE models END,
    description = CASE WHEN :description_given THEN :description ELSE description END,
    enabled = coalesce(:enabled, enabled),
    disabled_reason = CASE WHEN coalesce(:enabled, enabled) THEN NULL ELSE disabled_reason END,
    failing_since = CASE WHEN :enabled THEN NULL ELSE failing_since END,
    updated_at = now()
WHERE id = :id AND deleted_at IS NULL AND (:scope::bigint IS NULL OR client_id = :scope)
RETURNING *;

-- name: delete_subscription
-- Soft delete: past deliveries keep their subscription.
UPDATE subscriptions SET deleted_at = now(), enabled = false, updated_at = now()
WHERE id = :id AND deleted_at IS NULL AND (:scope::bigint IS NULL OR client_id = :scope)
RETURNING id;

-- name: abandon_subscription_deliveries
-- Deliveries still waiting for a deleted subscription will never be sent: mark them dead.
UPDATE deliveries SET status = 'dead', last_error = 'subscription deleted', updated_at = now()
WHERE subscription_id = :subscription_id AND status IN ('pending', 'failed')
  AND lease_owner IS NULL;

-- name: rotate_subscription_secret
-- New secret; the old one stays valid (and signs too) until :previous_secret_until.
UPDATE subscriptions
SET previous_secret = secret, previous_secret_until = :previous_secret_until, secret = :secret,
    updated_at = now()
WHERE id = :id AND deleted_at IS NULL AND (:scope::bigint IS NULL OR client_id = :scope)
RETURNING *;

-- name: disable_subscriptions
-- The receiver answered 410 Gone: stop sending until re-enabled (PATCH enabled=true).
UPDATE subscriptions SET enabled = false, disabled_reason = :reason, updated_at = now()
WHERE id = ANY(:ids::text[]) AND enabled AND deleted_at IS NULL
RETURNING id;

-- name: claim_due_deliveries
-- Lease due deliveries whose earlier siblings (same task and target) are finished.
-- :now is "now" for the secret-rotation window, :per_target_limit the per-target cap,
-- :in_flight {target: deliveries this dispatcher already has in flight}.
-- The lease is leased_until (unindexed, so the claim is a HOT update: see 0013); a delivery
-- is claimable when due and not leased or its lease ran out. A subscription delivery goes to
-- the subscription's current URL.
-- traceparent: the task's, sent with every delivery of it (relay.tracing).
-- Every lookup carries the partition key (a task's rows share its month) and the sibling
-- check is a per-row probe of deliveries_task (OFFSET 0 keeps it a subplan rather than a
-- join over every waiting delivery), so the plan stays index lookups whatever the
-- statistics (or their absence in a fresh database) say. body: the payload's bytes as sent.
WITH ready AS (
    SELECT d.id, d.task_created_at, d.target, d.event_id, d.subscription_id, d.next_attempt_at
    FROM deliveries d
    WHERE d.status IN ('pending', 'failed') AND d.next_attempt_at <= now()
      AND (d.leased_until IS NULL OR d.leased_until <= now())
      AND coalesce((:in_flight::jsonb ->> d.target)::int, 0) < :per_target_limit
      AND NOT EXISTS (
          SELECT 1 FROM deliveries e
          WHERE e.task_id = d.task_id AND e.task_created_at = d.task_created_at
            AND e.target = d.target AND e.event_seq < d.event_seq
            AND e.status IN ('pending', 'failed')
          OFFSET 0)
      AND (d.subscription_id IS NULL OR EXISTS (
          SELECT 1 FROM subscriptions s
          WHERE s.id = d.subscription_id AND s.enabled AND s.deleted_at IS NULL))
    ORDER BY d.next_attempt_at
    LIMIT :batch_size
    FOR UPDATE OF d SKIP LOCKED
), due AS (
    SELECT id, task_created_at, event_id, subscription_id
    FROM (SELECT id, task_created_at, event_id, subscription_id,
                 coalesce((:in_flight::jsonb ->> target)::int, 0)
                     + row_number() OVER (PARTITION BY target ORDER BY next_attempt_at)
                     AS in_flight
          FROM ready) ranked
    WHERE in_flight <= :per_target_limit
)
UPDATE deliveries d
SET lease_owner = :owner,
    leased_until = now() + make_interval(secs => :lease_s),
    attempt_count = d.attempt_count + 1,
    url = coalesce(s.url, d.url),
    updated_at = now()
FROM due
JOIN webhook_events w ON w.id = due.event_id AND w.task_created_at = due.task_created_at
JOIN clients c ON c.id = w.client_id
LEFT JOIN subscriptions s ON s.id = due.subscription_id
WHERE d.id = due.id AND d.task_created_at = due.task_created_at
RETURNING d.id, d.task_created_at, d.event_id, d.target, d.url, d.subscription_id,
          d.attempt_count, d.retry_index,
          convert_to(w.payload::text, 'UTF8') AS body,
          extract(epoch FROM w.created_at)::float8 AS event_created_s,
          coalesce(s.secret, c.signing_secret) AS secret,
          CASE WHEN due.subscription_id IS NOT NULL
               THEN CASE WHEN s.previous_secret_until > :now THEN s.previous_secret END
               WHEN c.previous_signing_secret_until > :now THEN c.previous_signing_secret
          END AS previous_secret,
          (SELECT t.traceparent FROM tasks t WHERE t.id = d.task_id) AS traceparent;

-- name: complete_deliveries
-- Record a batch of attempt outcomes in one statement: each delivery's new state while the
-- lease is still ours, its attempt (append-only: every attempt made is history, even one
-- whose lease ran out while it was being sent), and the health of the subscriptions
-- involved (a success ends a run of failures, a failure starts one; disabling is left to
-- record_subscription_health, which the caller runs when `overdue` is not empty). One array
-- per column, rows found by primary key (= ANY, the partition key's range prunes months):
-- index lookups whatever the statistics say, never a hash join over a whole partition.
-- Subscription rows another dispatcher is changing are skipped (its batch says the same).
-- Returns the deliveries recorded, and the subscriptions whose run of failures has lasted
-- :disable_after_s.
WITH r AS (
    SELECT *
    FROM unnest(:ids::text[], :task_created_ats::timestamptz[], :attempts::int[],
                :statuses::text[], :status_codes::int[], :response_excerpts::text[],
                :errors::text[], :latencies_ms::float8[], :started_at_s::float8[],
                :retry_delays_s::float8[], :retry_indexes::int[])
        AS r(id, task_created_at, attempt, status, status_code, response_excerpt, error,
             latency_ms, started_at_s, retry_delay_s, retry_index)
), upd AS (
    UPDATE deliveries d
    SET status = r.status,
        last_status_code = r.status_code,
        last_error = r.error,
        retry_index = r.retry_index,
        next_attempt_at = CASE WHEN r.retry_delay_s IS NULL THEN now()
                               ELSE now() + make_interval(secs => r.retry_delay_s) END,
        delivered_at = CASE WHEN r.status = 'succeeded' THEN now() END,
        lease_owner = NULL,
        leased_until = NULL,
        updated_at = now()
    FROM r
    WHERE d.id = ANY(:ids::text[])
      AND d.task_created_at BETWEEN :oldest::timestamptz AND :newest::timestamptz
      AND d.id = r.id AND d.lease_owner = :owner
    RETURNING d.id, d.task_created_at
), attempts AS (
    -- Should the same attempt come twice, it stays one row rather than failing the batch.
    INSERT INTO delivery_attempts (delivery_id, task_created_at, attempt, status_code,
                                   response_excerpt, error, latency_ms, started_at)
    SELECT r.id, r.task_created_at, r.attempt, r.status_code, r.response_excerpt, r.error,
           r.latency_ms, to_timestamp(r.started_at_s)
    FROM r
    ON CONFLICT DO NOTHING
), watched AS (
    SELECT id, id = ANY(:succeeded::text[]) AS ok,
           enabled AND coalesce(
               failing_since <= now() - make_interval(secs => :disable_after_s), false)
               AS overdue
    FROM subscriptions
    WHERE (id = ANY(:succeeded::text[]) OR id = ANY(:failed::text[])) AND deleted_at IS NULL
), changing AS (
    SELECT s.id, w.ok FROM subscriptions s JOIN watched w ON w.id = s.id
    WHERE (w.ok AND s.failing_since IS NOT NULL) OR (NOT w.ok AND s.failing_since IS NULL)
    FOR UPDATE OF s SKIP LOCKED
), health AS (
    UPDATE subscriptions s
    SET failing_since = CASE WHEN c.ok THEN NULL ELSE coalesce(s.failing_since, now()) END
    FROM changing c
    WHERE s.id = c.id
)
SELECT ARRAY(SELECT id FROM upd) AS recorded,
       ARRAY(SELECT id FROM watched WHERE NOT ok AND overdue) AS overdue;

-- name: release_delivery_leases
-- Shutdown (or a skipped attempt): hand deliveries back at once, the unmade attempt uncounted.
-- They were due when claimed, so they are due now (next_attempt_at is left alone: HOT).
UPDATE deliveries
SET lease_owner = NULL, leased_until = NULL, attempt_count = attempt_count - 1,
    updated_at = now()
WHERE lease_owner = :owner AND status IN ('pending', 'failed');

-- name: retry_delivery
-- Manual retry of a failed or dead delivery not in flight: due now, same event (same webhook-id).
UPDATE deliveries SET status = 'pending', next_attempt_at = now(), updated_at = now()
WHERE id = :id AND (:scope::bigint IS NULL OR client_id = :scope)
  AND status IN ('failed', 'dead') AND lease_owner IS NULL
RETURNING id;

-- name: get_delivery
-- One delivery with its event type and whether its subscription can still receive it.
SELECT d.*, w.type AS event_type,
       (s.id IS NOT NULL AND s.deleted_at IS NULL) AS subscription_active,
       coalesce(s.enabled, true) AS subscription_enabled
FROM deliveries d
JOIN webhook_events w ON w.id = d.event_id
LEFT JOIN subscriptions s ON s.id = d.subscription_id
WHERE d.id = :id AND (:scope::bigint IS NULL OR d.client_id = :scope);

-- name: list_deliveries
-- Deliveries newest first, filtered; cursor is the last id seen.
SELECT d.*, w.type AS event_type FROM deliveries d JOIN webhook_events w ON w.id = d.event_id
WHERE (:scope::bigint IS NULL OR d.client_id = :scope)
  AND (:status::text IS NULL OR d.status = :status)
  AND (:subscription_id::text IS NULL OR d.subscription_id = :subscription_id)
  AND (:task_id::text IS NULL OR d.task_id = :task_id)
  AND (:cursor::text IS NULL OR d.id < :cursor)
ORDER BY d.id DESC
LIMIT :limit;

-- name: task_deliveries
-- Every delivery of one task the caller may see, in event order.
SELECT d.*, w.type AS event_type FROM deliveries d JOIN webhook_events w ON w.id = d.event_id
WHERE d.task_id = :task_id AND (:scope::bigint IS NULL OR d.client_id = :scope)
ORDER BY d.event_seq, d.id;

-- name: delivery_attempts
-- The attempts of some deliveries, oldest first (append-only history).
SELECT delivery_id, attempt, status_code, response_excerpt, error, latency_ms, started_at
FROM delivery_attempts
WHERE delivery_id = ANY(:delivery_ids::text[])
ORDER BY delivery_id, attempt;

-- name: webhook_event_position
-- Resolve an `after=evt_...` cursor (or an old `seq:` cursor) to its feed position.
SELECT txid, seq FROM webhook_events
WHERE (id = :id OR seq = :seq) AND (:scope::bigint IS NULL OR client_id = :scope);

-- name: list_webhook_events
-- The event feed after a position, in (writing transaction, seq) order, task events only (a
-- subscription's test event is for that subscription alone). Only events of transactions
-- below the horizon are shown: the oldest transaction of this database still running at
-- this statement's snapshot (or the next xid to be assigned). No event can commit later
-- below it, so a reader paging by position never skips one. Transactions that
-- pg_stat_activity shows in other databases of the cluster do not hold the horizon back.
WITH snap AS (
    SELECT pg_current_snapshot() AS s
), running_here AS (
    SELECT x FROM snap, pg_snapshot_xip(s) AS x
    WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                      WHERE a.datname IS DISTINCT FROM current_database()
                        AND a.backend_xid = xid(x))
), horizon AS (
    SELECT least((SELECT min(x) FROM running_here), (SELECT pg_snapshot_xmax(s) FROM snap))
        AS xid
)
SELECT w.txid, w.seq, w.payload FROM webhook_events w, horizon
WHERE (:scope::bigint IS NULL OR w.client_id = :scope)
  AND (w.txid, w.seq) > (:after_txid::xid8, :after_seq::bigint)
  AND w.txid < horizon.xid
  AND w.task_id IS NOT NULL
  AND (:types::text[] IS NULL OR w.type = ANY (:types::text[]))
ORDER BY w.txid, w.seq
LIMIT :limit;

-- name: tasks_in_flight
-- Gauge: non-terminal tasks by status (served by the partial indexes).
SELECT status, count(*) AS n FROM tasks WHERE status IN ('queued', 'processing') GROUP BY status;

-- name: outbox_stats
-- Gauge: deliveries waiting and the age of the oldest (not those parked for a disabled
-- subscription: the relay is not behind on them).
SELECT count(*) AS pending,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_s
FROM deliveries WHERE status IN ('pending', 'failed') AND next_attempt_at <> 'infinity';

-- name: purge_idempotency_keys
-- Idempotency keys are kept 24 hours (the contract's minimum) plus a margin.
DELETE FROM idempotency_keys WHERE created_at < now() - interval '48 hours';

-- name: relax_commit
-- This transaction's commit need not wait for the disk (losing it in a crash is harmless).
SET LOCAL synchronous_commit = off;

-- name: take_upstream_budget
-- Shared token bucket: refill by elapsed time, grant up to :wanted, leave :keep for others.
WITH level AS (
    SELECT least(:burst::float8,
                 tokens + :rate::float8
                     * extract(epoch FROM clock_timestamp() - refilled_at)::float8) AS tokens
    FROM upstream_budget WHERE id = 1
    FOR UPDATE
), granted AS (
    SELECT greatest(0, least(:wanted::int, floor(tokens - :keep::float8)))::int AS n, tokens
    FROM level
)
UPDATE upstream_budget b
SET tokens = g.tokens - g.n, refilled_at = clock_timestamp()
FROM granted g
WHERE b.id = 1
RETURNING g.n AS granted, g.tokens - g.n AS level;

-- name: return_upstream_budget
-- Tokens taken but not spent go back (never above a full bucket).
UPDATE upstream_budget SET tokens = least(:burst::float8, tokens + :tokens::int) WHERE id = 1;

-- name: recent_phase_durations
-- The newest samples of every (model, input class, phase): what the scheduler learns from.
SELECT model, input_class, phase, array_agg(seconds) AS seconds
FROM (SELECT model, input_class, phase, seconds,
             row_number() OVER (PARTITION BY model, input_class, phase
                                ORDER BY recorded_at DESC) AS n
      FROM phase_durations) newest
WHERE n <= :per_class
GROUP BY model, input_class, phase;

-- name: prune_phase_durations
-- Keep the newest samples per class; older ones no longer describe upstream.
DELETE FROM phase_durations p
USING (SELECT ctid, row_number() OVER (PARTITION BY model, input_class, phase
                                       ORDER BY recorded_at DESC) AS n
       FROM phase_durations) ranked
WHERE p.ctid = ranked.ctid AND ranked.n > :keep;

-- name: insert_phase_durations
-- Samples learned from tasks that just left a phase.
INSERT INTO phase_durations (model, input_class, phase, seconds)
SELECT s.model, s.input_class, s.phase, s.seconds
FROM jsonb_to_recordset(:samples::jsonb) AS s(
    model text, input_class text, phase text, seconds float8);

-- ---------------------------------------------------------------------------------------
-- Audit and retention: hash chains, checkpoints, partitions (relay/audit.py, retention.py,
-- janitor.py, outcomes.py).

-- name: history_chain_before
-- The hash each task's new entries chain onto: its last entry before :heads' seq (if any).
SELECT h.task_id, p.hash
FROM jsonb_to_recordset(:heads::jsonb) AS h(task_id text, seq int, task_created_at timestamptz)
CROSS JOIN LATERAL (
    SELECT e.hash FROM task_events e
    WHERE e.task_id = h.task_id AND e.task_created_at = h.task_created_at AND e.seq < h.seq
    ORDER BY e.seq DESC
    LIMIT 1
) p;

-- name: audit_history
-- Every entry of the tasks created since :since (all when NULL), chain by chain, for verify;
-- task ids in byte order, as the checkpoint digest sorts them.
SELECT id, task_id, seq, type, from_status, to_status, source, upstream_event, created_at,
       prev_hash, hash
FROM task_events
WHERE :since::timestamptz IS NULL OR task_created_at >= :since
ORDER BY task_id COLLATE "C", seq;

-- name: audit_heads
-- Every task's last entry created at or before :at: what a checkpoint digests.
SELECT DISTINCT ON (task_id COLLATE "C") task_id, seq, hash
FROM task_events
WHERE created_at <= :at
ORDER BY task_id COLLATE "C", seq DESC;

-- name: audit_seq_suspect
-- A task whose entry counter says more than its chain holds: a removed last entry.
SELECT t.id AS task_id, t.event_seq, max(e.seq) AS last_seq
FROM tasks t JOIN task_events e ON e.task_id = t.id AND e.task_created_at = t.created_at
GROUP BY t.id, t.event_seq
HAVING max(e.seq) < t.event_seq
ORDER BY t.id COLLATE "C"
LIMIT 1;

-- name: try_janitor_lock
-- One janitor at a time across replicas; held to the end of this transaction.
SELECT pg_try_advisory_xact_lock(:lock_key);

-- name: ensure_history_partitions
-- Monthly partitions from :first_month to :last_month exist (created ahead of time).
SELECT relay_ensure_history_partitions(:first_month::date, :last_month::date);

-- name: history_months
-- The months with history partitions that ended before :cutoff, oldest first, with what
-- retention must know: their tasks, those not terminal or completed after :cutoff, and
-- deliveries still waiting.
WITH months AS (
    SELECT to_date(substr(c.relname, length('task_events_p') + 1), 'YYYY_MM') AS month
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'task_events'::regclass AND c.relname ~ '^task_events_p[0-9]{4}_[0-9]{2}$'
), bounds AS (
    SELECT month, month::timestamp AT TIME ZONE 'UTC' AS starts,
           (month + interval '1 month')::timestamp AT TIME ZONE 'UTC' AS ends
    FROM months
)
SELECT b.month,
       count(t.id) AS tasks,
       count(t.id) FILTER (WHERE t.status NOT IN ('succeeded', 'failed', 'cancelled'))
           AS not_terminal,
       min(t.id) FILTER (WHERE t.status NOT IN ('succeeded', 'failed', 'cancelled'))
           AS first_not_terminal,
       count(t.id) FILTER (WHERE t.completed_at > :cutoff) AS completed_recently,
       (SELECT count(*) FROM deliveries d
        WHERE d.task_created_at >= b.starts AND d.task_created_at < b.ends
          AND d.status IN ('pending', 'failed')) AS deliveries_waiting
FROM bounds b
LEFT JOIN tasks t ON t.created_at >= b.starts AND t.created_at < b.ends
WHERE b.ends <= :cutoff
GROUP BY b.month, b.starts, b.ends
ORDER BY b.month;

-- name: drop_history_month
-- Drop one month's history partitions and its tasks (refused if a task is not terminal).
SELECT relay_drop_history_month(:month::date);

-- ---------------------------------------------------------------------------------------
-- Deliveries: disabled subscriptions, recovery, bulk retry, auto-disable, test events.

-- name: park_subscription_deliveries
-- A subscription was disabled: its waiting deliveries (not in flight) wait until re-enabled,
-- out of the dispatcher's due scan.
UPDATE deliveries SET next_attempt_at = 'infinity'
WHERE subscription_id = ANY(:ids::text[]) AND status IN ('pending', 'failed')
  AND lease_owner IS NULL;

-- name: resume_subscription_deliveries
-- A subscription was re-enabled: what waited for it is due now (in event order per task).
UPDATE deliveries SET next_attempt_at = now(), updated_at = now()
WHERE subscription_id = :id AND status IN ('pending', 'failed')
  AND next_attempt_at = 'infinity';

-- name: recover_subscription
-- Queue again every event since :since the subscription should have received (its
-- client's, or every client's for an admin's; matching its events and models; created
-- while it existed) whose delivery failed, is dead or is missing. At most :limit per call;
-- `more` says whether others remain. Same event, so the same webhook-id.
WITH sub AS (
    SELECT s.id, s.client_id, s.url, s.events, s.models, s.enabled, s.created_at, c.is_admin
    FROM subscriptions s JOIN clients c ON c.id = s.client_id
    WHERE s.id = :id AND s.deleted_at IS NULL AND (:scope::bigint IS NULL OR s.client_id = :scope)
    -- Re-enabling updates this row, then resumes parked deliveries: it waits for this
    -- statement's rows to commit, or this reads it already enabled (never parked for good).
    FOR SHARE OF s
), owed AS (
    SELECT w.id AS event_id, w.seq, w.task_id, w.task_created_at, d.id AS delivery_id
    FROM sub
    JOIN webhook_events w ON w.created_at >= greatest(:since::timestamptz, sub.created_at)
        AND w.task_id IS NOT NULL
        AND (sub.is_admin OR w.client_id = sub.client_id)
        AND (sub.events IS NULL OR w.type = ANY (sub.events))
    JOIN tasks t ON t.id = w.task_id AND (sub.models IS NULL OR t.model = ANY (sub.models))
    LEFT JOIN deliveries d ON d.event_id = w.id AND d.task_created_at = w.task_created_at
        AND d.target = 'sub:' || sub.id
    WHERE d.id IS NULL OR (d.status IN ('failed', 'dead') AND d.lease_owner IS NULL)
    ORDER BY w.seq
    LIMIT :limit + 1
), chosen AS (
    SELECT * FROM owed ORDER BY seq LIMIT :limit
), inserted AS (
    -- a delivery lives in its event's partition (the event's task_created_at)
    INSERT INTO deliveries (id, event_id, event_seq, task_id, task_created_at, client_id,
                            subscription_id, url, target, next_attempt_at)
    SELECT relay_new_id('dlv'), c.event_id, c.seq, c.task_id, c.task_created_at,
           sub.client_id, sub.id, sub.url, 'sub:' || sub.id,
           CASE WHEN sub.enabled THEN now() ELSE 'infinity' END
    FROM chosen c CROSS JOIN sub
    WHERE c.delivery_id IS NULL
    ORDER BY c.seq
    ON CONFLICT (event_id, target, task_created_at) DO NOTHING
    RETURNING id
), requeued AS (
    UPDATE deliveries d
    SET status = 'pending', updated_at = now(),
        next_attempt_at = CASE WHEN sub.enabled THEN now() ELSE 'infinity' END
    FROM chosen c CROSS JOIN sub
    WHERE d.id = c.delivery_id AND d.status IN ('failed', 'dead') AND d.lease_owner IS NULL
    RETURNING d.id
)
SELECT (SELECT count(*) FROM sub) = 1 AS found,
       (SELECT count(*) FROM inserted) + (SELECT count(*) FROM requeued) AS queued,
       (SELECT count(*) FROM owed) > :limit AS more;

-- name: retry_deliveries
-- Bulk manual retry: failed or dead deliveries matching the filter, not in flight, whose
-- subscription (if any) can receive them, due now; at most :limit, `more` if others remain.
WITH candidates AS (
    SELECT d.id FROM deliveries d
    LEFT JOIN subscriptions s ON s.id = d.subscription_id
    WHERE (:scope::bigint IS NULL OR d.client_id = :scope)
      AND d.status IN ('failed', 'dead') AND d.lease_owner IS NULL
      AND (:status::text IS NULL OR d.status = :status)
      AND (:subscription_id::text IS NULL OR d.subscription_id = :subscription_id)
      AND (:task_id::text IS NULL OR d.task_id = :task_id)
      AND (:since::timestamptz IS NULL OR d.created_at >= :since)
      AND (d.subscription_id IS NULL OR (s.enabled AND s.deleted_at IS NULL))
    ORDER BY d.id
    LIMIT :limit + 1
), chosen AS (
    SELECT id FROM candidates ORDER BY id LIMIT :limit
), requeued AS (
    UPDATE deliveries d SET status = 'pending', next_attempt_at = now(), updated_at = now()
    FROM chosen
    WHERE d.id = chosen.id AND d.status IN ('failed', 'dead') AND d.lease_owner IS NULL
    RETURNING d.id
)
SELECT (SELECT count(*) FROM requeued) AS queued,
       (SELECT count(*) FROM candidates) > :limit AS more;

-- name: record_subscription_health
-- After a batch of attempts: a success ends a subscription's run of failures; a failure
-- starts one; a run older than :disable_after_s disables the subscription. Only changes are
-- written, so a steady subscription costs no update, and rows another dispatcher is
-- changing right now are skipped (its batch says the same), so this never waits or
-- deadlocks. Returns the subscriptions disabled.
WITH changing AS (
    SELECT id, ok,
           NOT ok AND enabled
               AND coalesce(failing_since <= now() - make_interval(secs => :disable_after_s),
                            false) AS disable
    FROM (SELECT id, enabled, failing_since, id = ANY(:succeeded::text[]) AS ok
          FROM subscriptions
          WHERE (id = ANY(:succeeded::text[]) OR id = ANY(:failed::text[]))
            AND deleted_at IS NULL) s
    WHERE (ok AND failing_since IS NOT NULL)
       OR (NOT ok AND failing_since IS NULL)
       OR (NOT ok AND enabled AND failing_since <= now() - make_interval(secs => :disable_after_s))
), locked AS (
    SELECT s.id, c.ok, c.disable FROM subscriptions s JOIN changing c ON c.id = s.id
    FOR UPDATE OF s SKIP LOCKED
)
UPDATE subscriptions s
SET failing_since = CASE WHEN l.ok THEN NULL ELSE coalesce(s.failing_since, now()) END,
    enabled = s.enabled AND NOT l.disable,
    disabled_reason = CASE WHEN l.disable
        THEN format('every delivery attempt failed for more than %s (since %s)',
                    :disable_after_text::text,
                    to_char(s.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
        ELSE s.disabled_reason END,
    updated_at = CASE WHEN l.disable THEN now() ELSE s.updated_at END
FROM locked l
WHERE s.id = l.id
RETURNING s.id, l.disable AS disabled;

-- name: insert_test_event
-- A `webhook.test` event for one subscription (no task; kept out of the event feed). With no
-- task, it is filed (task_created_at, the partition key) under its own time.
INSERT INTO webhook_events (id, task_id, task_created_at, client_id, type, payload)
VALUES (:id, NULL, now(), :client_id, :type, :payload)
RETURNING id, seq, task_created_at;

-- name: insert_test_delivery
-- The test event's only delivery: to the subscription that asked for it, due now; in its
-- event's partition.
INSERT INTO deliveries (id, event_id, event_seq, task_id, task_created_at, client_id,
                        subscription_id, url, target)
VALUES (relay_new_id('dlv'), :event_id, :event_seq, NULL, :task_created_at, :client_id,
        :subscription_id, :url, 'sub:' || :subscription_id)
RETURNING id;

-- Audit: who did what (the action log), the cancel note in a task's history, export, usage.

-- name: insert_action
-- Append one action; written in the transaction of the change it records where there is one.
INSERT INTO actions (actor, actor_key_prefix, action, resource_type, resource_id, request_id,
                     details)
VALUES (:actor, :actor_key_prefix, :action, :resource_type, :resource_id, :request_id,
        :details)
RETURNING id, at;

-- name: list_actions
-- The action log, newest first, filtered; the cursor is the last id seen.
SELECT * FROM actions
WHERE (:actor::text IS NULL OR actor = :actor)
  AND (:action::text IS NULL OR action = :action)
  AND (:resource_type::text IS NULL OR resource_type = :resource_type)
  AND (:resource_id::text IS NULL OR resource_id = :resource_id)
  AND (:from_at::timestamptz IS NULL OR at >= :from_at)
  AND (:to_at::timestamptz IS NULL OR at < :to_at)
  AND (:cursor::text IS NULL OR id < :cursor)
ORDER BY id DESC
LIMIT :limit;

-- name: take_history_seq
-- The next seq of a task's history, taken under the task's row lock (held to the end of the
-- transaction), so a note interleaves with the poller's entries without a gap or a twin, and
-- its chain's last entry cannot change before the note is appended.
UPDATE tasks SET event_seq = event_seq + 1 WHERE id = :task_id
RETURNING id, created_at, event_seq;

-- name: insert_history_note
-- A history entry that changes no status (a cancel request), chained and timed by the relay
-- like insert_history; its seq comes from take_history_seq.
INSERT INTO task_events (id, task_id, task_created_at, seq, type, from_status, to_status,
                         source, upstream_event, dedupe_key, created_at, prev_hash, hash)
VALUES (:id, :task_id, :task_created_at, :seq, :type, :from_status, :to_status, :source,
        :upstream_event, :dedupe_key, :created_at, :prev_hash, :hash)
ON CONFLICT (task_id, dedupe_key, task_created_at) DO NOTHING
RETURNING *;

-- name: client_by_name
-- A client by name (revoked or not), for `relay export --client`.
SELECT id, name, is_admin FROM clients WHERE name = :name;

-- name: count_export_tasks
-- How many tasks an export will write, for its progress bar.
SELECT count(*) FROM tasks
WHERE (:scope::bigint IS NULL OR client_id = :scope)
  AND (:created_after::timestamptz IS NULL OR created_at >= :created_after)
  AND (:created_before::timestamptz IS NULL OR created_at < :created_before);

-- name: export_tasks
-- Every task in [created_after, created_before) with its client and its whole history, in
-- creation order; read through a server-side cursor, so memory stays flat.
SELECT t.*, c.name AS client_name,
       coalesce((SELECT jsonb_agg(to_jsonb(e) ORDER BY e.seq) FROM task_events e
                 WHERE e.task_id = t.id AND e.task_created_at = t.created_at), '[]') AS history
FROM tasks t JOIN clients c ON c.id = t.client_id
WHERE (:scope::bigint IS NULL OR t.client_id = :scope)
  AND (:created_after::timestamptz IS NULL OR t.created_at >= :created_after)
  AND (:created_before::timestamptz IS NULL OR t.created_at < :created_before)
ORDER BY t.created_at, t.id;

-- name: usage
-- Tasks created in [from_at, to_at) grouped by UTC day, model or client: counts per status
-- and the sums of both costs, straight from the tasks table.
SELECT CASE :group_by::text
           WHEN 'day' THEN to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')
           WHEN 'model' THEN t.model
           ELSE c.name
       END AS key,
       count(*) AS tasks,
       count(*) FILTER (WHERE t.status = 'queued') AS queued,
       count(*) FILTER (WHERE t.status = 'processing') AS processing,
       count(*) FILTER (WHERE t.status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE t.status = 'failed') AS failed,
       count(*) FILTER (WHERE t.status = 'cancelled') AS cancelled,
       coalesce(sum(t.cost_estimate), 0)::float8 AS cost_estimate,
       coalesce(sum(t.cost_actual), 0)::float8 AS cost_actual
FROM tasks t JOIN clients c ON c.id = t.client_id
WHERE (:scope::bigint IS NULL OR t.client_id = :scope)
  AND (:from_at::timestamptz IS NULL OR t.created_at >= :from_at)
  AND (:to_at::timestamptz IS NULL OR t.created_at < :to_at)
GROUP BY 1
ORDER BY 1;

-- The console (relay/console): browser sessions, subscription health, upstream summary.

-- name: purge_console_sessions
-- Expired sessions are useless; dropped whenever someone signs in.
DELETE FROM console_sessions WHERE expires_at < now();

-- name: insert_console_session
-- A new console session for the client behind a live key.
INSERT INTO console_sessions (token_hash, client_id, key_hash, key_prefix, csrf_token,
                              expires_at)
VALUES (:token_hash, :client_id, :key_hash, :key_prefix, :csrf_token,
        now() + make_interval(secs => :lifetime_s))
RETURNING expires_at;

-- name: console_session_client
-- The client of an unexpired session whose key is still live (columns named as Client's
-- fields), with the session's CSRF token.
SELECT c.id, c.name, c.role, s.key_prefix, s.csrf_token, s.expires_at
FROM console_sessions s
JOIN client_keys k ON k.key_hash = s.key_hash AND k.client_id = s.client_id
    AND k.revoked_at IS NULL
JOIN clients c ON c.id = s.client_id
WHERE s.token_hash = :token_hash AND s.expires_at > now();

-- name: delete_console_session
-- Sign out.
DELETE FROM console_sessions WHERE token_hash = :token_hash;

-- name: subscription_health
-- Per subscription the caller may see: attempts and successes over the last day, and the
-- newest failed attempt (status code, error, excerpt, when).
SELECT s.id AS subscription_id,
       count(a.*) AS attempts,
       count(a.*) FILTER (WHERE a.status_code BETWEEN 200 AND 299) AS succeeded,
       last_failure.status_code AS last_status_code,
       last_failure.error AS last_error,
       last_failure.response_excerpt AS last_response_excerpt,
       last_failure.created_at AS last_error_at
FROM subscriptions s
LEFT JOIN deliveries d ON d.subscription_id = s.id
LEFT JOIN delivery_attempts a
       ON a.delivery_id = d.id AND a.created_at > now() - make_interval(secs => :window_s)
LEFT JOIN LATERAL (
    SELECT fa.status_code, fa.error, fa.response_excerpt, fa.created_at
    FROM deliveries fd JOIN delivery_attempts fa ON fa.delivery_id = fd.id
    WHERE fd.subscription_id = s.id
      AND (fa.status_code IS NULL OR fa.status_code NOT BETWEEN 200 AND 299)
    ORDER BY fa.created_at DESC
    LIMIT 1
) last_failure ON true
WHERE s.deleted_at IS NULL AND (:scope::bigint IS NULL OR s.client_id = :scope)
GROUP BY s.id, last_failure.status_code, last_failure.error, last_failure.response_excerpt,
         last_failure.created_at;
