-- Tracing: the submitting request's trace context, carried to the task's webhooks.

-- The W3C `traceparent` of the POST /v1/tasks request (validated, version 00; with tracing
-- on, the relay's own span of that request). NULL: submitted without one. Sent as the
-- `traceparent` header of every webhook delivery of the task.
ALTER TABLE tasks ADD COLUMN traceparent text;
