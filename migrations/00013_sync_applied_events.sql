-- Keycloak events the event poller has applied (issue 14; docs/operations.md, "Replicas"). A new
-- leader reads the last sync.events.overlap (30 s) of events again, in case the old one read
-- some without making them durable; those recorded here it skips, so no event is applied, or
-- counted in keybridge_keycloak_events_total, twice across a takeover.
--
-- key is the poller's key for the event: "a:" (admin) or "u:" (user) and Keycloak's event id
-- (time|type|path for an event without one), "r:a:" and "r:u:" for what the revocation hook
-- took of it. A key is written once the event is applied, in a statement of its own: a leader
-- that dies between the two leaves one event for its successor to apply again, which changes
-- nothing (each apply re-reads what the event names). The poller deletes keys older than twice
-- the overlap and a minute: no leader reads their events again. Only the sync role has access.

-- +goose Up
CREATE TABLE sync_applied_events (
  key        text PRIMARY KEY,
  applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_applied_events_prune_idx ON sync_applied_events (applied_at);

ALTER TABLE sync_applied_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_applied_events FORCE ROW LEVEL SECURITY;
CREATE POLICY sync_all ON sync_applied_events TO keybridge_sync USING (true) WITH CHECK (true);
-- +goose StatementBegin
DO $$
BEGIN
  EXECUTE format('CREATE POLICY owner_all ON sync_applied_events TO %I USING (true) WITH CHECK (true)', current_user);
END $$;
-- +goose StatementEnd
GRANT SELECT, INSERT, DELETE ON sync_applied_events TO keybridge_sync;

-- +goose Down
DROP TABLE sync_applied_events;
