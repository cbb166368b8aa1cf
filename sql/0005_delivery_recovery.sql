-- Deliveries: waiting for disabled subscriptions, recovery, auto-disable, test events.

-- Start of the subscription's current run of failed attempts (NULL: the last attempt
-- succeeded, or none failed yet); RELAY_WEBHOOK_DISABLE_AFTER_S of it disables the subscription.
ALTER TABLE subscriptions ADD COLUMN failing_since timestamptz;

-- A test event (`webhook.test`, POST /v1/subscriptions/{id}/test) belongs to no task.
ALTER TABLE webhook_events ALTER COLUMN task_id DROP NOT NULL;
ALTER TABLE deliveries ALTER COLUMN task_id DROP NOT NULL;

-- Recovery reads events by time ("every event since T").
CREATE INDEX webhook_events_created_at ON webhook_events (created_at);

-- Deliveries waiting for a disabled subscription are parked (next_attempt_at = infinity, so
-- the dispatcher's due scan never walks them) and resumed on re-enable: both by subscription.
CREATE INDEX deliveries_waiting_by_subscription ON deliveries (subscription_id)
    WHERE status IN ('pending', 'failed');
