"""Prometheus series (contract section 4). Labels are bounded: no task or subscription ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TASKS_IN_FLIGHT = Gauge(
    "relay_tasks_in_flight", "Non-terminal tasks by status (read at scrape time).", ["status"]
)
TASKS_SUBMITTED = Counter(
    "relay_tasks_submitted_total", "Tasks accepted by the API, by model.", ["model"]
)
UPSTREAM_REQUESTS = Counter(
    "relay_upstream_requests_total",
    "Requests to MindVideo by endpoint and outcome code (HTTP status, timeout, connection).",
    ["endpoint", "code"],
)
UPSTREAM_SECONDS = Histogram(
    "relay_upstream_request_seconds", "Latency of requests to MindVideo.", ["endpoint"]
)
UPSTREAM_AUTH_FAILING = Gauge(
    "relay_upstream_auth_failing", "1 while upstream keeps refusing the API key (401/403)."
)
POLLS = Counter("relay_polls_total", "Task polls by outcome.", ["outcome"])
POLL_DUE_LAG = Histogram(
    "relay_poll_due_lag_seconds",
    "How late a poll started after its due time.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
STATUS_CHANGES = Counter(
    "relay_task_status_changes_total", "Status changes recorded, by new status.", ["status"]
)
SUBMISSIONS = Counter(
    "relay_upstream_submissions_total", "Upstream submission outcomes.", ["result"]
)
WEBHOOK_DELIVERIES = Counter(
    "relay_webhook_deliveries_total",
    "Webhook attempts by result (succeeded, failed, dead, disabled).",
    ["result"],
)
WEBHOOK_SECONDS = Histogram(
    "relay_webhook_delivery_seconds", "Duration of one webhook attempt (send to response)."
)
WEBHOOK_LAG = Histogram(
    "relay_webhook_lag_seconds",
    "Status change recorded to webhook delivered (first success).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
OUTBOX_PENDING = Gauge(
    "relay_outbox_pending", "Deliveries waiting (pending or failed, read at scrape time)."
)
OUTBOX_OLDEST_AGE = Gauge(
    "relay_outbox_oldest_age_seconds", "Age of the oldest waiting delivery (scrape time)."
)
HTTP_REQUESTS = Counter(
    "relay_http_requests_total", "API requests by route and status.", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram("relay_http_request_seconds", "API request latency.", ["route"])
DETECTION_WINDOW = Histogram(
    "relay_poll_detection_window_seconds",
    "Time between the last poll that saw the old status and the poll that saw the new one.",
    ["status"],
    buckets=(0.25, 0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 30, 60, 120),
)
UPSTREAM_REQUESTS_PER_TASK = Histogram(
    "relay_upstream_requests_per_task",
    "Upstream requests spent on a task (submit, polls, events, cancel), observed when it ends.",
    buckets=(2, 5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 200),
)
UPSTREAM_BUDGET_CEILING = Gauge(
    "relay_upstream_budget_ceiling_rps",
    "RELAY_UPSTREAM_MAX_RPS: upstream requests per second for the whole deployment.",
)
UPSTREAM_BUDGET_TOKENS = Counter(
    "relay_upstream_budget_tokens_total",
    "Tokens taken from the shared upstream budget by this replica, by priority (urgent: "
    "submissions, cancels, events after a change; background: polls), and returned unused.",
    ["priority"],
)
AUDIT_CHECKPOINT = Gauge(
    "relay_audit_checkpoint_info",
    "The latest audit checkpoint this replica published: value = chain heads covered, "
    "labels = its time and digest (docs/audit.md).",
    ["at", "digest"],
)
AUDIT_CHECKPOINT_TIME = Gauge(
    "relay_audit_checkpoint_timestamp_seconds", "Unix time the latest audit checkpoint covers."
)
RETENTION_MONTHS_DROPPED = Counter(
    "relay_retention_months_dropped_total", "Months of history dropped by retention."
)
OUTCOME_BATCH_SIZE = Histogram(
    "relay_outcome_batch_size",
    "API outcomes (submissions accepted or refused upstream) written per transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
