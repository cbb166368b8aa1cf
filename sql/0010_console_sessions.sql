-- The console: a browser signs in with an API key and gets a session cookie.
-- Server-side sessions so signing out (or revoking the key) ends them at once.

CREATE TABLE console_sessions (
    -- sha256 of the cookie's random 256-bit token: a database reader cannot replay it
    token_hash  bytea PRIMARY KEY,
    client_id   bigint NOT NULL REFERENCES clients (id),
    -- sha256 of the API key that signed in (the same hash the key is stored as): every
    -- request re-checks that this key is still live, so revoking the key ends the session
    key_hash    bytea NOT NULL,
    key_prefix  text NOT NULL,
    -- synchronizer token: state-changing requests repeat it in X-CSRF-Token
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);
