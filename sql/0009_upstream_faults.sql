-- Upstream faults: a task upstream no longer knows ends instead of being polled forever.

-- When upstream's status endpoint started answering 404 for the task (NULL: it answers);
-- reset by any status read. After RELAY_UPSTREAM_NOT_FOUND_AFTER_S the task fails.
ALTER TABLE tasks ADD COLUMN upstream_missing_since timestamptz;
