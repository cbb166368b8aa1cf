-- The event feed without a global lock: events are ordered by the id of the transaction
-- that wrote them, then by seq, and readers see only events below the oldest transaction
-- still in progress (see README "The event feed's order"). Writers no longer wait for
-- each other.

-- Rows already there all get this migration's transaction id: one group, in seq order,
-- before anything written later.
ALTER TABLE webhook_events
    ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();

CREATE INDEX webhook_events_feed ON webhook_events (txid, seq);
CREATE INDEX webhook_events_client_feed ON webhook_events (client_id, txid, seq);
DROP INDEX webhook_events_client_seq;
