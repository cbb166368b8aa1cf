-- Migration bookkeeping, loaded by relay.store the way queries.sql is. Not a migration itself:
-- only files named NNNN_name.sql are applied.

-- name: lock_migrations
-- One migrating process at a time; the others wait here, then find nothing left to do.
SELECT pg_advisory_lock(:lock_key);

-- name: unlock_migrations
-- Let the next waiting process in.
SELECT pg_advisory_unlock(:lock_key);

-- name: create_schema_migrations
-- The ledger of applied migrations; created by the first run on an empty database.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
-- Versions already applied, to skip.
SELECT version FROM schema_migrations;

-- name: record_migration
-- Written in the migration's own transaction, so a migration and its record commit together.
INSERT INTO schema_migrations (version, name) VALUES (:version, :name);

-- name: schema_version
-- Latest applied migration, for readiness.
SELECT coalesce(max(version), 0) FROM schema_migrations;
