-- keybridge schema. Three database roles take part:
--   the owner (whoever runs the migrations) owns every table; FORCE ROW LEVEL
--     SECURITY applies the policies to it too, and a policy lets it see all,
--     for operator tooling;
--   keybridge_app, the runtime role: not the owner, no BYPASSRLS; every
--     tenant-scoped row it reads or writes is filtered by app.tenant_id;
--   keybridge_sync, the cross-tenant writer used only by sync and the audit
--     writer. This is the one narrow path across tenants.

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'keybridge_app') THEN
    RAISE EXCEPTION 'role keybridge_app does not exist: CREATE ROLE keybridge_app LOGIN NOBYPASSRLS before migrating (docs/operations.md)';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'keybridge_sync') THEN
    RAISE EXCEPTION 'role keybridge_sync does not exist: CREATE ROLE keybridge_sync LOGIN NOBYPASSRLS before migrating (docs/operations.md)';
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'keybridge_app' AND (rolbypassrls OR rolsuper)) THEN
    RAISE EXCEPTION 'role keybridge_app must not have BYPASSRLS or SUPERUSER: ALTER ROLE keybridge_app NOBYPASSRLS NOSUPERUSER';
  END IF;
END $$;
-- +goose StatementEnd

CREATE SCHEMA IF NOT EXISTS keybridge;

-- The session variables every tenant-scoped query runs under. They are read
-- through STABLE functions and wrapped in sub-selects in the policies so
-- PostgreSQL evaluates them once per query, not once per row.
CREATE FUNCTION keybridge.current_tenant() RETURNS text
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT nullif(current_setting('app.tenant_id', true), '') $$;
CREATE FUNCTION keybridge.current_user_id() RETURNS text
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT nullif(current_setting('app.user_id', true), '') $$;
CREATE FUNCTION keybridge.current_app_role() RETURNS text
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT nullif(current_setting('app.role', true), '') $$;
-- app.platform is set to 'on' only for a caller holding a global-bypass role
-- (Endatix PlatformAdmin); it widens reads and writes to every tenant.
CREATE FUNCTION keybridge.is_platform() RETURNS boolean
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT coalesce(current_setting('app.platform', true), '') = 'on' $$;

CREATE TABLE tenants (
  id          text PRIMARY KEY,
  name        text NOT NULL,
  source      text NOT NULL CHECK (source IN ('organization', 'group', 'attribute', 'claim', 'local')),
  keycloak_id text,
  status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE people (
  id                text PRIMARY KEY,               -- Keycloak user id
  username          text NOT NULL,
  email             text,
  first_name        text,
  last_name         text,
  display_name      text NOT NULL DEFAULT '',
  status            text NOT NULL CHECK (status IN ('active', 'inactive', 'invited', 'deleted')),
  email_verified    boolean NOT NULL DEFAULT false,
  identity_provider text,                           -- first linked IdP alias (github, google), NULL for local accounts
  attributes        jsonb NOT NULL DEFAULT '{}',
  keycloak_created  timestamptz,
  last_active       timestamptz,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  deleted_at        timestamptz
);
CREATE INDEX people_email_idx ON people (lower(email));
CREATE INDEX people_name_idx ON people (display_name, id);
CREATE INDEX people_last_active_idx ON people (last_active DESC NULLS LAST, id);

CREATE TABLE tenant_members (
  tenant_id text NOT NULL REFERENCES tenants (id),
  person_id text NOT NULL REFERENCES people (id),
  PRIMARY KEY (tenant_id, person_id)
);
CREATE INDEX tenant_members_person_idx ON tenant_members (person_id, tenant_id);

CREATE TABLE teams (
  id         text PRIMARY KEY,                      -- Keycloak group id
  tenant_id  text REFERENCES tenants (id),          -- NULL: realm-wide group, visible to platform only
  name       text NOT NULL,
  path       text NOT NULL,
  parent_id  text REFERENCES teams (id),
  status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX teams_tenant_idx ON teams (tenant_id);
CREATE INDEX teams_parent_idx ON teams (parent_id);

CREATE TABLE team_members (
  team_id   text NOT NULL REFERENCES teams (id),
  person_id text NOT NULL REFERENCES people (id),
  tenant_id text REFERENCES tenants (id),
  PRIMARY KEY (team_id, person_id)
);
CREATE INDEX team_members_tenant_idx ON team_members (tenant_id);
CREATE INDEX team_members_person_idx ON team_members (person_id);

CREATE TABLE roles (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name        text NOT NULL,
  kind        text NOT NULL CHECK (kind IN ('system', 'pseudo', 'keycloak', 'custom')),
  tenant_id   text REFERENCES tenants (id),          -- custom roles belong to a tenant; others are global
  client_id   text NOT NULL DEFAULT '',              -- Keycloak client for client roles, '' for realm roles
  keycloak_id text,
  based_on    text,                                  -- system role a custom role was duplicated from
  description text NOT NULL DEFAULT '',
  composite   boolean NOT NULL DEFAULT false,
  status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  CHECK (kind <> 'custom' OR tenant_id IS NOT NULL)
);
CREATE UNIQUE INDEX roles_identity_idx ON roles (kind, coalesce(tenant_id, ''), client_id, name);
CREATE INDEX roles_tenant_idx ON roles (tenant_id);

CREATE TABLE role_permissions (
  role_id    uuid NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
  permission text NOT NULL,
  tenant_id  text REFERENCES tenants (id),           -- copy of roles.tenant_id, for RLS without a join
  PRIMARY KEY (role_id, permission)
);
CREATE INDEX role_permissions_tenant_idx ON role_permissions (tenant_id);

-- Keycloak composite roles: parent contains child.
CREATE TABLE role_composites (
  parent_id uuid NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
  child_id  uuid NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
  PRIMARY KEY (parent_id, child_id)
);

CREATE TABLE role_assignments (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  person_id   text NOT NULL REFERENCES people (id),
  role_id     uuid REFERENCES roles (id),
  permission  text,
  tenant_id   text REFERENCES tenants (id),
  source      text NOT NULL CHECK (source IN ('keycloak', 'rule', 'local')),
  rule_ref    text NOT NULL DEFAULT '',              -- which rule or Keycloak path produced it, for explanations
  expires_at  timestamptz,                           -- temporary grant: stops counting at this instant
  created_by  text NOT NULL DEFAULT 'system',
  created_at  timestamptz NOT NULL DEFAULT now(),
  CHECK ((role_id IS NULL) <> (permission IS NULL))
);
CREATE UNIQUE INDEX role_assignments_identity_idx
  ON role_assignments (person_id, coalesce(role_id::text, ''), coalesce(permission, ''), coalesce(tenant_id, ''), source, rule_ref);
CREATE INDEX role_assignments_tenant_idx ON role_assignments (tenant_id);
CREATE INDEX role_assignments_role_idx ON role_assignments (role_id);

CREATE TABLE audit_log (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  occurred_at   timestamptz NOT NULL,
  tenant_id     text,                                -- no FK: the audit trail outlives what it describes
  actor_id      text NOT NULL DEFAULT '',            -- '' for system
  actor_name    text NOT NULL DEFAULT 'system',
  action        text NOT NULL,
  resource_type text NOT NULL DEFAULT '',
  resource_id   text NOT NULL DEFAULT '',
  outcome       text NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
  request_id    text NOT NULL DEFAULT '',
  reason        text NOT NULL DEFAULT '',
  entry_id      uuid NOT NULL UNIQUE,                -- set by the writer: a retried batch never doubles a row
  details       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_tenant_time_idx ON audit_log (tenant_id, occurred_at DESC, id DESC);
CREATE INDEX audit_log_time_idx ON audit_log (occurred_at DESC, id DESC);

CREATE TABLE sync_runs (
  id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  trigger           text NOT NULL,                   -- startup, schedule, api, cli, event, webhook
  mode              text NOT NULL,
  dry_run           boolean NOT NULL DEFAULT false,
  forced            boolean NOT NULL DEFAULT false,
  started_at        timestamptz NOT NULL,
  finished_at       timestamptz,
  outcome           text NOT NULL CHECK (outcome IN ('running', 'success', 'failure', 'guard_abort')),
  error             text NOT NULL DEFAULT '',
  keycloak_requests integer NOT NULL DEFAULT 0,
  objects           jsonb NOT NULL DEFAULT '{}',     -- counts by kind in the snapshot
  changes           jsonb NOT NULL DEFAULT '{}'      -- counts by kind and operation in the plan
);
CREATE INDEX sync_runs_started_idx ON sync_runs (started_at DESC);

CREATE TABLE sync_state (
  key        text PRIMARY KEY,
  value      text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
  uid         text PRIMARY KEY,                      -- per delivery, stable across retries
  event_id    text NOT NULL DEFAULT '',
  type        text NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(),
  outcome     text NOT NULL
);
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id) WHERE event_id <> '';

-- Row-Level Security. Tenant-scoped tables: tenants, tenant_members, people
-- (through membership), teams, team_members, roles, role_permissions,
-- role_assignments, audit_log.
-- +goose StatementBegin
DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['tenants', 'tenant_members', 'people', 'teams', 'team_members', 'roles',
                           'role_permissions', 'role_composites', 'role_assignments', 'audit_log',
                           'sync_runs', 'sync_state', 'webhook_deliveries']
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY sync_all ON %I TO keybridge_sync USING (true) WITH CHECK (true)', t);
    EXECUTE format('CREATE POLICY owner_all ON %I TO %I USING (true) WITH CHECK (true)', t, current_user);
  END LOOP;
END $$;
-- +goose StatementEnd

CREATE POLICY tenant_isolation ON tenants TO keybridge_app
  USING (id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));

CREATE POLICY tenant_isolation ON tenant_members TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()))
  WITH CHECK (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));

-- A person is visible to a tenant they are a member of.
CREATE POLICY tenant_isolation ON people TO keybridge_app
  USING ((SELECT keybridge.is_platform()) OR EXISTS (
    SELECT 1 FROM tenant_members m
    WHERE m.person_id = people.id AND m.tenant_id = (SELECT keybridge.current_tenant())));

CREATE POLICY tenant_isolation ON teams TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));

CREATE POLICY tenant_isolation ON team_members TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));

-- Global roles (system, pseudo, Keycloak) are readable by every tenant; only
-- a tenant's own custom roles are writable by it.
CREATE POLICY read_roles ON roles FOR SELECT TO keybridge_app
  USING (tenant_id IS NULL OR tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));
CREATE POLICY write_custom_roles ON roles FOR ALL TO keybridge_app
  USING (kind = 'custom' AND (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform())))
  WITH CHECK (kind = 'custom' AND (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform())));

CREATE POLICY read_role_permissions ON role_permissions FOR SELECT TO keybridge_app
  USING (tenant_id IS NULL OR tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));
CREATE POLICY write_role_permissions ON role_permissions FOR ALL TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()))
  WITH CHECK (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));

CREATE POLICY read_composites ON role_composites FOR SELECT TO keybridge_app USING (true);

-- Local assignments only: Keycloak- and rule-sourced rows belong to sync.
CREATE POLICY read_assignments ON role_assignments FOR SELECT TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));
CREATE POLICY write_local_assignments ON role_assignments FOR ALL TO keybridge_app
  USING (source = 'local' AND (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform())))
  WITH CHECK (source = 'local' AND (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform())));

CREATE POLICY read_audit ON audit_log FOR SELECT TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));
CREATE POLICY append_audit ON audit_log FOR INSERT TO keybridge_app
  WITH CHECK (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));

CREATE POLICY read_sync_runs ON sync_runs FOR SELECT TO keybridge_app USING (true);

GRANT USAGE ON SCHEMA keybridge TO keybridge_app, keybridge_sync;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA keybridge TO keybridge_app, keybridge_sync;
GRANT SELECT ON tenants, tenant_members, people, teams, team_members, roles, role_permissions,
  role_composites, role_assignments, audit_log, sync_runs TO keybridge_app;
GRANT UPDATE (status, updated_at) ON people TO keybridge_app;
GRANT INSERT, UPDATE, DELETE ON roles, role_permissions, role_assignments TO keybridge_app;
GRANT INSERT ON audit_log TO keybridge_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, tenant_members, people, teams, team_members, roles,
  role_permissions, role_composites, role_assignments, sync_runs, sync_state, webhook_deliveries TO keybridge_sync;
-- The audit trail is append-only for both runtime roles.
GRANT SELECT, INSERT ON audit_log TO keybridge_sync;

-- +goose Down
DROP TABLE IF EXISTS webhook_deliveries, sync_state, sync_runs, audit_log, role_assignments,
  role_composites, role_permissions, roles, team_members, teams, tenant_members, people, tenants;
DROP SCHEMA IF EXISTS keybridge CASCADE;
