-- Clients keep their identity across key rotations: several API keys per client, a role
-- (client, admin, auditor) instead of is_admin, and a signing secret that can be rotated
-- with 24 h of dual signatures like a subscription's.

CREATE TABLE client_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id    bigint NOT NULL REFERENCES clients (id),
    -- sha256 of the API key (256-bit random keys: a fast hash is enough and indexable)
    key_hash     bytea NOT NULL UNIQUE,
    -- the first characters of the key, shown by `relay keys list` and used to revoke one
    key_prefix   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- refreshed at most once a minute per key, so authentication stays a read
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX client_keys_client ON client_keys (client_id, id);

-- Every existing client's key moves over as it is: same hash, prefix, creation and revocation.
INSERT INTO client_keys (client_id, key_hash, key_prefix, created_at, revoked_at)
SELECT id, key_hash, key_prefix, created_at, revoked_at FROM clients ORDER BY id;

ALTER TABLE clients
    ADD COLUMN role text NOT NULL DEFAULT 'client'
        CHECK (role IN ('client', 'admin', 'auditor')),
    -- the secret replaced by the last rotation; per-task webhooks carry its signature too
    -- until previous_signing_secret_until
    ADD COLUMN previous_signing_secret text,
    ADD COLUMN previous_signing_secret_until timestamptz;
UPDATE clients SET role = 'admin' WHERE is_admin;

-- A client is never revoked as a whole any more: its keys are (a client without a live key
-- can be given a new one with `relay keys add`).
ALTER TABLE clients DROP COLUMN key_hash, DROP COLUMN key_prefix, DROP COLUMN revoked_at,
    DROP COLUMN is_admin;
-- Kept, derived from the role, for queries that only ask "sees and writes everything?".
ALTER TABLE clients ADD COLUMN is_admin boolean GENERATED ALWAYS AS (role = 'admin') STORED;

-- The task object names its client; names never change, so the task keeps a copy that every
-- `RETURNING *` (API answers and webhook bodies alike) carries without a join.
ALTER TABLE tasks ADD COLUMN client_name text;
UPDATE tasks t SET client_name = c.name FROM clients c WHERE c.id = t.client_id;
ALTER TABLE tasks ALTER COLUMN client_name SET NOT NULL;
