-- Drift: what a scheduled full run still had to apply that the events between runs had missed
-- (issue 14; docs/operations.md, "Events between full syncs"). Counts by kind (people, teams,
-- roles, tenants, tenant_members, team_members, role_composites, assignments), written by the
-- sync role when a scheduled run has applied its plan while the event poller is on. NULL for
-- every other run: it measured nothing.
--
-- The table-wide grants of 00001 cover the new column: the sync role writes it, the runtime
-- role reads it under read_sync_runs (platform callers only, 00008).

-- +goose Up
ALTER TABLE sync_runs ADD COLUMN drift jsonb;

-- +goose Down
ALTER TABLE sync_runs DROP COLUMN drift;
