-- A tenant tree of two levels, organization -> customers (issue 16; mapping.tenant.customers,
-- docs/rls.md "Organizations and customers"). A customer's tenant row names its organization in
-- org_id, as sync read it from the customer group's keybridge.tenant.organization attribute;
-- organizations, customers of none and the tenants of a flat tenancy leave it NULL. It is not a
-- foreign key: sync may store a customer before its organization (an event re-reads one group),
-- and a customer naming no organization simply belongs to none. keybridge reads the tree
-- (internal/directory) with the organization checked to be an active organization tenant.
--
-- app.org_id is the organization a request acts in at the organization level: the active tenant
-- when it is an organization, or the active customer's organization for a holder of an
-- organization-level role (fastn: Owner, Admin). Organization-scoped application tables filter
-- on it with keybridge.current_org(), read once per query inside a sub-select, as
-- keybridge.current_tenant() is.

-- +goose Up
ALTER TABLE tenants ADD COLUMN org_id text CHECK (org_id <> id);
CREATE INDEX tenants_org_idx ON tenants (org_id) WHERE org_id IS NOT NULL;

CREATE FUNCTION keybridge.current_org() RETURNS text
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT nullif(current_setting('app.org_id', true), '') $$;
GRANT EXECUTE ON FUNCTION keybridge.current_org() TO keybridge_app, keybridge_org, keybridge_platform, keybridge_sync;

-- +goose Down
DROP FUNCTION keybridge.current_org();
DROP INDEX tenants_org_idx;
ALTER TABLE tenants DROP COLUMN org_id;
