-- A tenant can be disabled (issue 16, tenant administration): its Keycloak organization set to
-- enabled = false, or, for a group tenant source, its group marked with the attribute
-- keybridge.tenant.disabled = true. Sync reads either and writes status 'disabled'; keybridge then
-- refuses every request acting in that tenant, except a platform caller's (docs/operations.md,
-- "Tenant administration"). The tenant keeps its rows: disabling is not deleting.

-- +goose Up
ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check CHECK (status IN ('active', 'disabled', 'deleted'));

-- +goose Down
UPDATE tenants SET status = 'active' WHERE status = 'disabled';
ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check CHECK (status IN ('active', 'deleted'));
