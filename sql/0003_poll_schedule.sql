-- Latency: what the poll scheduler learns and remembers, and the shared upstream budget.

-- The inputs that drive a generation's duration; keys the learned phase durations.
-- Models without `duration`/`mode` share one class per model.
ALTER TABLE tasks
    ADD COLUMN input_class text GENERATED ALWAYS AS (
        'duration=' || coalesce(input ->> 'duration', '') || ',mode=' || coalesce(input ->> 'mode', '')
    ) STORED,
    -- estimated time the task entered its current status (middle of the window in which
    -- the change happened); the scheduler measures the time spent in a phase from it
    ADD COLUMN phase_started_at timestamptz,
    -- the last time a poll read upstream's status: the start of the next detection window
    ADD COLUMN last_polled_at timestamptz,
    -- events are fetched when they can add something; this is the last time they were
    ADD COLUMN events_fetched_at timestamptz,
    -- upstream requests spent on this task (submit, status, events, cancel)
    ADD COLUMN upstream_requests integer NOT NULL DEFAULT 0,
    -- consecutive looks whose events request failed (or lacked the final events) while the
    -- status said terminal: bounded, then the task is finished with a note in its history
    ADD COLUMN events_retries integer NOT NULL DEFAULT 0;

-- A terminal task stays due until its final events are recorded, so the poll index covers
-- every task with a next look planned, whatever its status.
DROP INDEX tasks_due_poll;
CREATE INDEX tasks_due_poll ON tasks (next_poll_at)
    WHERE next_poll_at IS NOT NULL AND upstream_task_id IS NOT NULL;

-- How long each phase lasted, per model and input class: the scheduler's evidence. Not
-- history (nothing shows it to users), so old samples are pruned.
CREATE TABLE phase_durations (
    model       text NOT NULL,
    input_class text NOT NULL,
    phase       text NOT NULL CHECK (phase IN ('queued', 'processing')),
    seconds     double precision NOT NULL CHECK (seconds >= 0),
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX phase_durations_newest ON phase_durations (model, input_class, phase, recorded_at DESC);

-- One token bucket for the whole deployment (RELAY_UPSTREAM_MAX_RPS).
CREATE TABLE upstream_budget (
    id          integer PRIMARY KEY CHECK (id = 1),
    tokens      double precision NOT NULL,
    refilled_at timestamptz NOT NULL
);
INSERT INTO upstream_budget (id, tokens, refilled_at) VALUES (1, 0, now());
