-- What Keycloak revoked short of a token's expiry, for every replica to refuse those tokens
-- (issue 14; docs/operations.md, "Session ends and revocation"):
--
--   kind 'session': a session that ended (a LOGOUT user event, an admin deleting the session);
--     id is the session id (the tokens' sid claim), at is when it ended;
--   kind 'realm', 'client', 'user': a not-before time: tokens issued (iat) before at are
--     refused; id is '' for the realm, the clientId (the tokens' azp) for a client, the user id
--     (sub) for a user. at NULL: Keycloak's not-before was cleared (0).
--
-- Only the sync role writes and reads it (the event poller and full runs write, each
-- replica's in-memory list reads); the runtime role has no access. seq grows with every insert
-- or change, so a replica woken by NOTIFY keybridge_changed {"kind":"revocation"} reads only
-- the rows after the last one it holds; writers serialise on an advisory lock, so seq order is
-- commit order. Rows whose at is older than the longest token lifetime are deleted by the
-- writer: no token they could refuse is still valid.

-- +goose Up
CREATE TABLE revocations (
  kind       text NOT NULL CHECK (kind IN ('session', 'realm', 'client', 'user')),
  id         text NOT NULL CHECK (length(id) <= 255 AND (kind = 'realm') = (id = '')),
  at         timestamptz CHECK (kind <> 'session' OR at IS NOT NULL),
  seq        bigserial NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (kind, id)
);
CREATE INDEX revocations_seq_idx ON revocations (seq);
CREATE INDEX revocations_prune_idx ON revocations ((coalesce(at, updated_at)));

ALTER TABLE revocations ENABLE ROW LEVEL SECURITY;
ALTER TABLE revocations FORCE ROW LEVEL SECURITY;
CREATE POLICY sync_all ON revocations TO keybridge_sync USING (true) WITH CHECK (true);
-- +goose StatementBegin
DO $$
BEGIN
  EXECUTE format('CREATE POLICY owner_all ON revocations TO %I USING (true) WITH CHECK (true)', current_user);
END $$;
-- +goose StatementEnd
GRANT SELECT, INSERT, UPDATE, DELETE ON revocations TO keybridge_sync;
GRANT USAGE ON SEQUENCE revocations_seq_seq TO keybridge_sync;

-- +goose Down
DROP TABLE revocations;
