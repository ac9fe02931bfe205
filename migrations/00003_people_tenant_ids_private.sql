-- people.tenant_ids (00002) lists every tenant a person belongs to. The
-- runtime role sees a person through any one of those tenants, so reading the
-- column would tell tenant A which other tenants its member also belongs to.
-- The runtime role keeps SELECT on every other column; the tenant_isolation
-- policy still reads tenant_ids, because PostgreSQL checks column privileges
-- against the columns a query names, not the ones its policies name.

-- +goose Up
REVOKE SELECT ON people FROM keybridge_app;
GRANT SELECT (id, username, email, first_name, last_name, display_name, status, email_verified,
  identity_provider, attributes, keycloak_created, last_active, created_at, updated_at, deleted_at)
  ON people TO keybridge_app;

-- +goose Down
REVOKE SELECT (id, username, email, first_name, last_name, display_name, status, email_verified,
  identity_provider, attributes, keycloak_created, last_active, created_at, updated_at, deleted_at)
  ON people FROM keybridge_app;
GRANT SELECT ON people TO keybridge_app;
