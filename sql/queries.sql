-- Named queries, loaded once by relay.store. Each section: `-- name: x`, then a one-line why.
-- Parameters are named (`:owner`); relay.store turns them into `$n` when it loads this file.

-- name: insert_client
-- Register a client (nothing when the name is taken); the key is stored only as its sha256.
INSERT INTO clients (name, key_hash, key_prefix, signing_secret, is_admin)
VALUES (:name, :key_hash, :key_prefix, :signing_secret, :is_admin)
ON CONFLICT (name) DO NOTHING
RETURNING id, name, is_admin, created_at;

-- name: list_clients
-- Every client, never the key nor the secret.
SELECT id, name, key_prefix, is_admin, created_at, revoked_at FROM clients ORDER BY id;

-- name: revoke_client
-- Revocation is immediate: authentication reads this row on every request.
UPDATE clients SET revoked_at = now() WHERE name = :name AND revoked_at IS NULL RETURNING id;

-- name: authenticate_client
-- The client behind a key hash, unless revoked.
SELECT id, name, is_admin FROM clients WHERE key_hash = :key_hash AND revoked_at IS NULL;

-- name: insert_task
-- A new task, durable before anything is sent upstream; the submit lease lasts :submit_lease_s.
INSERT INTO tasks (id, client_id, model, input, status, metadata, webhook_url, webhook_events,
                   submit_attempts, next_submit_at)
VALUES (:id, :client_id, :model, :input, 'queued', :metadata, :webhook_url, :webhook_events,
        1, now() + make_interval(secs => :submit_lease_s))
RETURNING *;

-- name: insert_idempotency_key
-- Claim an idempotency key; a concurrent twin waits on the unique index, then gets nothing.
INSERT INTO idempotency_keys (client_id, key, request_hash, task_id)
VALUES (:client_id, :key, :request_hash, :task_id)
ON CONFLICT (client_id, key) DO NOTHING
RETURNING task_id;

-- name: get_idempotency_key
-- What an idempotency key was first used for.
SELECT request_hash, task_id FROM idempotency_keys WHERE client_id = :client_id AND key = :key;

-- name: get_task
-- One task, visible to its client (:scope) or to an admin (:scope NULL).
SELECT * FROM tasks WHERE id = :id AND (:scope::bigint IS NULL OR client_id = :scope);

-- name: list_tasks
-- Newest first by time-ordered id; the cursor is the last id seen.
SELECT * FROM tasks
WHERE (:scope::bigint IS NULL OR client_id = :scope)
  AND (:status::text IS NULL OR status = :status)
  AND (:model::text IS NULL OR model = :model)
  AND (:created_after::timestamptz IS NULL OR created_at > :created_after)
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
UPDATE tasks SET next_submit_at = now()
WHERE status = 'queued' AND upstream_task_id IS NULL AND lease_owner IS NULL
  AND submit_attempts > 1 AND next_submit_at > now();

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
RETURNING t.*, extract(epoch FROM now() - due.due_at)::float8 AS due_lag_s;

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
    upstream_requests = t.upstream_requests + coalesce(u.requests, 0)
FROM jsonb_to_recordset(:updates::jsonb) AS u(
    id text, status text, upstream_task_id text, upstream_request_id text,
    cost_estimate float8, cost_actual float8, output jsonb, error jsonb, changed bool,
    new_events int, poll_interval_s float8, poll_delay_s float8,
    phase_started_at timestamptz, looked_at timestamptz, events_fetched bool,
    events_retries int, requests int)
WHERE t.id = u.id AND t.lease_owner IS NOT DISTINCT FROM :owner
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

-- name: lock_event_feed
-- Held to commit: webhook_events.seq is handed out in commit order, so the feed never skips.
SELECT pg_advisory_xact_lock(:lock_key);

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
WITH ev AS (
    SELECT w.id, w.seq, w.task_id, w.task_created_at, w.client_id, w.type, t.model,
           t.webhook_url, t.webhook_events
    FROM webhook_events w JOIN tasks t ON t.id = w.task_id
    WHERE w.id = ANY(:event_ids::text[])
), targets AS (
    SELECT ev.id, ev.seq, ev.task_id, ev.task_created_at, s.client_id,
           s.id AS subscription_id, s.url, 'sub:' || s.id AS target
    FROM ev
    JOIN subscriptions s ON s.deleted_at IS NULL AND s.enabled
        AND (s.events IS NULL OR ev.type = ANY (s.events))
        AND (s.models IS NULL OR ev.model = ANY (s.models))
    JOIN clients c ON c.id = s.client_id AND c.revoked_at IS NULL
        AND (c.id = ev.client_id OR c.is_admin)
    UNION ALL
    SELECT ev.id, ev.seq, ev.task_id, ev.task_created_at, ev.client_id, NULL,
           ev.webhook_url, 'url:' || ev.webhook_url
    FROM ev
    WHERE ev.webhook_url IS NOT NULL
      AND (ev.webhook_events IS NULL OR ev.type = ANY (ev.webhook_events))
)
INSERT INTO deliveries (id, event_id, event_seq, task_id, task_created_at, client_id,
                        subscription_id, url, target)
SELECT relay_new_id('dlv'), id, seq, task_id, task_created_at, client_id, subscription_id, url,
       target
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
-- The lease is next_attempt_at; a subscription delivery goes to the subscription's current URL.
WITH ready AS (
    SELECT d.id, d.target, d.event_id, d.subscription_id, d.next_attempt_at
    FROM deliveries d
    WHERE d.status IN ('pending', 'failed') AND d.next_attempt_at <= now()
      AND coalesce((:in_flight::jsonb ->> d.target)::int, 0) < :per_target_limit
      AND NOT EXISTS (
          SELECT 1 FROM deliveries e
          WHERE e.task_id = d.task_id AND e.target = d.target AND e.event_seq < d.event_seq
            AND e.status IN ('pending', 'failed'))
      AND (d.subscription_id IS NULL OR EXISTS (
          SELECT 1 FROM subscriptions s
          WHERE s.id = d.subscription_id AND s.enabled AND s.deleted_at IS NULL))
    ORDER BY d.next_attempt_at
    LIMIT :batch_size
    FOR UPDATE OF d SKIP LOCKED
), due AS (
    SELECT id, event_id, subscription_id, due_at
    FROM (SELECT id, event_id, subscription_id, next_attempt_at AS due_at,
                 coalesce((:in_flight::jsonb ->> target)::int, 0)
                     + row_number() OVER (PARTITION BY target ORDER BY next_attempt_at)
                     AS in_flight
          FROM ready) ranked
    WHERE in_flight <= :per_target_limit
)
UPDATE deliveries d
SET lease_owner = :owner,
    next_attempt_at = now() + make_interval(secs => :lease_s),
    attempt_count = d.attempt_count + 1,
    url = coalesce(s.url, d.url),
    updated_at = now()
FROM due
JOIN webhook_events w ON w.id = due.event_id
JOIN clients c ON c.id = w.client_id
LEFT JOIN subscriptions s ON s.id = due.subscription_id
WHERE d.id = due.id
RETURNING d.id, d.event_id, d.target, d.url, d.subscription_id, d.attempt_count, d.retry_index,
          w.payload::text AS body, w.created_at AS event_created_at,
          extract(epoch FROM now() - due.due_at)::float8 AS due_lag_s,
          coalesce(s.secret, c.signing_secret) AS secret,
          CASE WHEN s.previous_secret_until > :now THEN s.previous_secret END
              AS previous_secret;

-- name: complete_deliveries
-- Record a batch of attempt outcomes (append-only attempts) while the lease is still ours.
WITH r AS (
    SELECT * FROM jsonb_to_recordset(:outcomes::jsonb) AS r(
        id text, attempt int, status text, status_code int, response_excerpt text,
        error text, latency_ms float8, started_at timestamptz, retry_delay_s float8,
        retry_index int)
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
        updated_at = now()
    FROM r
    WHERE d.id = r.id AND d.lease_owner = :owner
    RETURNING d.id, d.task_created_at
)
INSERT INTO delivery_attempts (delivery_id, task_created_at, attempt, status_code,
                               response_excerpt, error, latency_ms, started_at)
SELECT r.id, upd.task_created_at, r.attempt, r.status_code, r.response_excerpt, r.error,
       r.latency_ms, r.started_at
FROM r JOIN upd ON upd.id = r.id
RETURNING delivery_id;

-- name: release_delivery_leases
-- Shutdown (or a skipped attempt): hand deliveries back at once, the unmade attempt uncounted.
UPDATE deliveries
SET lease_owner = NULL, next_attempt_at = now(), attempt_count = attempt_count - 1,
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

-- name: webhook_event_seq
-- Resolve an `after=evt_...` cursor to its feed position.
SELECT seq FROM webhook_events WHERE id = :id AND (:scope::bigint IS NULL OR client_id = :scope);

-- name: list_webhook_events
-- The event feed, oldest first, after a position.
SELECT seq, payload FROM webhook_events
WHERE (:scope::bigint IS NULL OR client_id = :scope) AND seq > :after_seq
  AND (:types::text[] IS NULL OR type = ANY (:types::text[]))
ORDER BY seq
LIMIT :limit;

-- name: tasks_in_flight
-- Gauge: non-terminal tasks by status (served by the partial indexes).
SELECT status, count(*) AS n FROM tasks WHERE status IN ('queued', 'processing') GROUP BY status;

-- name: outbox_stats
-- Gauge: deliveries waiting and the age of the oldest.
SELECT count(*) AS pending,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_s
FROM deliveries WHERE status IN ('pending', 'failed');

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
