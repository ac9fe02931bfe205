-- Row-Level Security that keeps the tenant index (issue 16; docs/rls.md).
--
-- Every runtime policy read `tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT
-- keybridge.is_platform())`. PostgreSQL plans a query once for every value of the settings, and
-- an OR with a term that is not about the column cannot use the tenant index: one tenant's
-- rows were found by scanning every tenant's (a 50-row page of one tenant's audit log read the
-- whole table). Each kind of caller now runs under a database role of its own, whose policy
-- names only what it needs:
--
--   keybridge_app       one tenant:     tenant_id = (SELECT keybridge.current_tenant())
--   keybridge_org       the tenants of an organization-level role, app.tenant_id plus the
--                       app.tenant_ids array:
--                                       tenant_id = ANY ((SELECT keybridge.current_tenants())::text[])
--   keybridge_platform  every tenant:   (SELECT keybridge.is_platform())
--
-- The runtime role logs in as keybridge_app; the rls package switches to keybridge_org or
-- keybridge_platform transaction-locally (set_config('role', ..., true)) for such a session, so
-- the switch ends with the transaction, behind a transaction-pooling PgBouncer too. The wider
-- policies still read the session variables: the role alone, without app.platform or
-- app.tenant_ids, opens nothing. On keybridge_app, app.platform = 'on' widens nothing any more.
--
-- keybridge_app must be able to SET ROLE to both but must not inherit them: PostgreSQL applies
-- a policy to every role that has the privileges of the role it names, so an inherited
-- keybridge_platform would put its policy beside the tenant one, OR them, and lose the index
-- again. The two roles get exactly keybridge_app's privileges (copied below); a migration that
-- grants keybridge_app something must grant it to keybridge_org and keybridge_platform too
-- (internal/store's TestIsolationWideRolesMirrorTheRuntimeRole checks).

-- +goose Up
-- +goose StatementBegin
DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['keybridge_org', 'keybridge_platform'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      RAISE EXCEPTION 'role % does not exist: CREATE ROLE % NOLOGIN NOBYPASSRLS; ALTER ROLE keybridge_app NOINHERIT; GRANT % TO keybridge_app; before migrating (docs/operations.md)', r, r, r;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r AND (rolbypassrls OR rolsuper)) THEN
      RAISE EXCEPTION 'role % must not have BYPASSRLS or SUPERUSER: ALTER ROLE % NOBYPASSRLS NOSUPERUSER', r, r;
    END IF;
    IF NOT pg_has_role('keybridge_app', r, 'MEMBER') THEN
      RAISE EXCEPTION 'keybridge_app cannot switch to role %: GRANT % TO keybridge_app (docs/operations.md)', r, r;
    END IF;
    IF pg_has_role('keybridge_app', r, 'USAGE') THEN
      RAISE EXCEPTION 'keybridge_app inherits role %, whose policies would then filter every tenant query and cost it the tenant index: ALTER ROLE keybridge_app NOINHERIT (PostgreSQL 15), or GRANT % TO keybridge_app WITH INHERIT FALSE (16 and later)', r, r;
    END IF;
  END LOOP;
END $$;
-- +goose StatementEnd

-- app.tenant_id and, for an organization-level role, the organization's other tenants in
-- app.tenant_ids, a text[] literal like app.roles. Empty elements are dropped; a value that is
-- not an array literal is an error, not a guess.
CREATE FUNCTION keybridge.current_tenants() RETURNS text[]
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT array_remove(array_remove(array_prepend(nullif(current_setting('app.tenant_id', true), ''),
    coalesce(nullif(current_setting('app.tenant_ids', true), '')::text[], '{}'::text[])), NULL), '') $$;
GRANT EXECUTE ON FUNCTION keybridge.current_tenants() TO keybridge_app, keybridge_sync;

-- keybridge_org and keybridge_platform get what keybridge_app has, object by object.
-- +goose StatementBegin
DO $$
DECLARE
  g record;
BEGIN
  FOR g IN SELECT c.oid::regclass AS rel, c.relkind, a.privilege_type AS priv
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
    WHERE n.nspname IN ('public', 'keybridge') AND a.grantee = 'keybridge_app'::regrole
  LOOP
    EXECUTE format('GRANT %s ON %s %s TO keybridge_org, keybridge_platform', g.priv,
      CASE WHEN g.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, g.rel);
  END LOOP;
  FOR g IN SELECT c.oid::regclass AS rel, at.attname, a.privilege_type AS priv
    FROM pg_attribute at JOIN pg_class c ON c.oid = at.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace,
      aclexplode(at.attacl) a
    WHERE n.nspname IN ('public', 'keybridge') AND NOT at.attisdropped AND a.grantee = 'keybridge_app'::regrole
  LOOP
    EXECUTE format('GRANT %s (%I) ON TABLE %s TO keybridge_org, keybridge_platform', g.priv, g.attname, g.rel);
  END LOOP;
  FOR g IN SELECT p.oid::regprocedure AS fn
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a
    WHERE n.nspname IN ('public', 'keybridge') AND a.grantee = 'keybridge_app'::regrole AND a.privilege_type = 'EXECUTE'
  LOOP
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO keybridge_org, keybridge_platform', g.fn);
  END LOOP;
END $$;
-- +goose StatementEnd
GRANT USAGE ON SCHEMA keybridge TO keybridge_org, keybridge_platform;

DROP POLICY tenant_isolation ON tenants;
CREATE POLICY tenant_isolation ON tenants TO keybridge_app
  USING (id = (SELECT keybridge.current_tenant()));
CREATE POLICY tenant_isolation_org ON tenants TO keybridge_org
  USING (id = ANY ((SELECT keybridge.current_tenants())::text[]));
CREATE POLICY tenant_isolation_platform ON tenants TO keybridge_platform
  USING ((SELECT keybridge.is_platform()));

DROP POLICY tenant_isolation ON tenant_members;
CREATE POLICY tenant_isolation ON tenant_members TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()));
CREATE POLICY tenant_isolation_org ON tenant_members TO keybridge_org
  USING (tenant_id = ANY ((SELECT keybridge.current_tenants())::text[]));
CREATE POLICY tenant_isolation_platform ON tenant_members TO keybridge_platform
  USING ((SELECT keybridge.is_platform()));

-- people.tenant_ids (00002): @> and && both ride its GIN index.
DROP POLICY tenant_isolation ON people;
CREATE POLICY tenant_isolation ON people TO keybridge_app
  USING (tenant_ids @> ARRAY[(SELECT keybridge.current_tenant())]);
CREATE POLICY tenant_isolation_org ON people TO keybridge_org
  USING (tenant_ids && (SELECT keybridge.current_tenants()));
CREATE POLICY tenant_isolation_platform ON people TO keybridge_platform
  USING ((SELECT keybridge.is_platform()));

DROP POLICY tenant_isolation ON teams;
CREATE POLICY tenant_isolation ON teams TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()));
CREATE POLICY tenant_isolation_org ON teams TO keybridge_org
  USING (tenant_id = ANY ((SELECT keybridge.current_tenants())::text[]));
CREATE POLICY tenant_isolation_platform ON teams TO keybridge_platform
  USING ((SELECT keybridge.is_platform()));

DROP POLICY tenant_isolation ON team_members;
CREATE POLICY tenant_isolation ON team_members TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()));
CREATE POLICY tenant_isolation_org ON team_members TO keybridge_org
  USING (tenant_id = ANY ((SELECT keybridge.current_tenants())::text[]));
CREATE POLICY tenant_isolation_platform ON team_members TO keybridge_platform
  USING ((SELECT keybridge.is_platform()));

DROP POLICY read_roles ON roles;
CREATE POLICY read_roles ON roles FOR SELECT TO keybridge_app
  USING (tenant_id IS NULL OR tenant_id = (SELECT keybridge.current_tenant()));
CREATE POLICY read_roles_org ON roles FOR SELECT TO keybridge_org
  USING (tenant_id IS NULL OR tenant_id = ANY ((SELECT keybridge.current_tenants())::text[]));
CREATE POLICY read_roles_platform ON roles FOR SELECT TO keybridge_platform
  USING ((SELECT keybridge.is_platform()));
DROP POLICY write_custom_roles ON roles;
CREATE POLICY write_custom_roles ON roles FOR ALL TO keybridge_app
  USING (kind = 'custom' AND tenant_id = (SELECT keybridge.current_tenant()));
CREATE POLICY write_custom_roles_org ON roles FOR ALL TO keybridge_org
  USING (kind = 'custom' AND tenant_id = ANY ((SELECT keybridge.current_tenants())::text[]));
CREATE POLICY write_custom_roles_platform ON roles FOR ALL TO keybridge_platform
  USING (kind = 'custom' AND (SELECT keybridge.is_platform()));

DROP POLICY read_role_permissions ON role_permissions;
CREATE POLICY read_role_permissions ON role_permissions FOR SELECT TO keybridge_app
  USING (tenant_id IS NULL OR tenant_id = (SELECT keybridge.current_tenant()));
CREATE POLICY read_role_permissions_org ON role_permissions FOR SELECT TO keybridge_org
  USING (tenant_id IS NULL OR tenant_id = ANY ((SELECT keybridge.current_tenants())::text[]));
CREATE POLICY read_role_permissions_platform ON role_permissions FOR SELECT TO keybridge_platform
  USING ((SELECT keybridge.is_platform()));
DROP POLICY write_role_permissions ON role_permissions;
CREATE POLICY write_role_permissions ON role_permissions FOR ALL TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()))
  WITH CHECK (tenant_id = (SELECT keybridge.current_tenant())
    AND EXISTS (SELECT 1 FROM roles r WHERE r.id = role_id AND r.kind = 'custom' AND r.tenant_id = role_permissions.tenant_id));
CREATE POLICY write_role_permissions_org ON role_permissions FOR ALL TO keybridge_org
  USING (tenant_id = ANY ((SELECT keybridge.current_tenants())::text[]))
  WITH CHECK (tenant_id = ANY ((SELECT keybridge.current_tenants())::text[])
    AND EXISTS (SELECT 1 FROM roles r WHERE r.id = role_id AND r.kind = 'custom' AND r.tenant_id = role_permissions.tenant_id));
CREATE POLICY write_role_permissions_platform ON role_permissions FOR ALL TO keybridge_platform
  USING ((SELECT keybridge.is_platform()))
  WITH CHECK ((SELECT keybridge.is_platform())
    AND EXISTS (SELECT 1 FROM roles r WHERE r.id = role_id AND r.kind = 'custom' AND r.tenant_id = role_permissions.tenant_id));

CREATE POLICY read_composites_org ON role_composites FOR SELECT TO keybridge_org USING (true);
CREATE POLICY read_composites_platform ON role_composites FOR SELECT TO keybridge_platform USING (true);

DROP POLICY read_assignments ON role_assignments;
CREATE POLICY read_assignments ON role_assignments FOR SELECT TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()));
CREATE POLICY read_assignments_org ON role_assignments FOR SELECT TO keybridge_org
  USING (tenant_id = ANY ((SELECT keybridge.current_tenants())::text[]));
CREATE POLICY read_assignments_platform ON role_assignments FOR SELECT TO keybridge_platform
  USING ((SELECT keybridge.is_platform()));
DROP POLICY write_local_assignments ON role_assignments;
CREATE POLICY write_local_assignments ON role_assignments FOR ALL TO keybridge_app
  USING (source = 'local' AND tenant_id = (SELECT keybridge.current_tenant()))
  WITH CHECK (source = 'local' AND tenant_id = (SELECT keybridge.current_tenant())
    AND EXISTS (SELECT 1 FROM roles r WHERE r.id = role_id AND (r.tenant_id IS NULL OR r.tenant_id = role_assignments.tenant_id)));
CREATE POLICY write_local_assignments_org ON role_assignments FOR ALL TO keybridge_org
  USING (source = 'local' AND tenant_id = ANY ((SELECT keybridge.current_tenants())::text[]))
  WITH CHECK (source = 'local' AND tenant_id = ANY ((SELECT keybridge.current_tenants())::text[])
    AND EXISTS (SELECT 1 FROM roles r WHERE r.id = role_id AND (r.tenant_id IS NULL OR r.tenant_id = role_assignments.tenant_id)));
CREATE POLICY write_local_assignments_platform ON role_assignments FOR ALL TO keybridge_platform
  USING (source = 'local' AND (SELECT keybridge.is_platform()))
  WITH CHECK (source = 'local' AND (SELECT keybridge.is_platform())
    AND EXISTS (SELECT 1 FROM roles r WHERE r.id = role_id AND (r.tenant_id IS NULL OR r.tenant_id = role_assignments.tenant_id)));

DROP POLICY read_audit ON audit_log;
CREATE POLICY read_audit ON audit_log FOR SELECT TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()));
CREATE POLICY read_audit_org ON audit_log FOR SELECT TO keybridge_org
  USING (tenant_id = ANY ((SELECT keybridge.current_tenants())::text[]));
CREATE POLICY read_audit_platform ON audit_log FOR SELECT TO keybridge_platform
  USING ((SELECT keybridge.is_platform()));

-- Realm-wide sync runs: platform callers only (00008), now through their role.
DROP POLICY read_sync_runs ON sync_runs;
CREATE POLICY read_sync_runs_platform ON sync_runs FOR SELECT TO keybridge_platform
  USING ((SELECT keybridge.is_platform()));

-- +goose Down
DROP POLICY read_sync_runs_platform ON sync_runs;
CREATE POLICY read_sync_runs ON sync_runs FOR SELECT TO keybridge_app USING ((SELECT keybridge.is_platform()));

DROP POLICY read_audit_org ON audit_log;
DROP POLICY read_audit_platform ON audit_log;
DROP POLICY read_audit ON audit_log;
CREATE POLICY read_audit ON audit_log FOR SELECT TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));

DROP POLICY write_local_assignments_org ON role_assignments;
DROP POLICY write_local_assignments_platform ON role_assignments;
DROP POLICY write_local_assignments ON role_assignments;
CREATE POLICY write_local_assignments ON role_assignments FOR ALL TO keybridge_app
  USING (source = 'local' AND (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform())))
  WITH CHECK (source = 'local' AND (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()))
    AND EXISTS (SELECT 1 FROM roles r WHERE r.id = role_id AND (r.tenant_id IS NULL OR r.tenant_id = role_assignments.tenant_id)));
DROP POLICY read_assignments_org ON role_assignments;
DROP POLICY read_assignments_platform ON role_assignments;
DROP POLICY read_assignments ON role_assignments;
CREATE POLICY read_assignments ON role_assignments FOR SELECT TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));

DROP POLICY read_composites_org ON role_composites;
DROP POLICY read_composites_platform ON role_composites;

DROP POLICY write_role_permissions_org ON role_permissions;
DROP POLICY write_role_permissions_platform ON role_permissions;
DROP POLICY write_role_permissions ON role_permissions;
CREATE POLICY write_role_permissions ON role_permissions FOR ALL TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()))
  WITH CHECK ((tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()))
    AND EXISTS (SELECT 1 FROM roles r WHERE r.id = role_id AND r.kind = 'custom' AND r.tenant_id = role_permissions.tenant_id));
DROP POLICY read_role_permissions_org ON role_permissions;
DROP POLICY read_role_permissions_platform ON role_permissions;
DROP POLICY read_role_permissions ON role_permissions;
CREATE POLICY read_role_permissions ON role_permissions FOR SELECT TO keybridge_app
  USING (tenant_id IS NULL OR tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));

DROP POLICY write_custom_roles_org ON roles;
DROP POLICY write_custom_roles_platform ON roles;
DROP POLICY write_custom_roles ON roles;
CREATE POLICY write_custom_roles ON roles FOR ALL TO keybridge_app
  USING (kind = 'custom' AND (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform())))
  WITH CHECK (kind = 'custom' AND (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform())));
DROP POLICY read_roles_org ON roles;
DROP POLICY read_roles_platform ON roles;
DROP POLICY read_roles ON roles;
CREATE POLICY read_roles ON roles FOR SELECT TO keybridge_app
  USING (tenant_id IS NULL OR tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));

DROP POLICY tenant_isolation_org ON team_members;
DROP POLICY tenant_isolation_platform ON team_members;
DROP POLICY tenant_isolation ON team_members;
CREATE POLICY tenant_isolation ON team_members TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));

DROP POLICY tenant_isolation_org ON teams;
DROP POLICY tenant_isolation_platform ON teams;
DROP POLICY tenant_isolation ON teams;
CREATE POLICY tenant_isolation ON teams TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));

DROP POLICY tenant_isolation_org ON people;
DROP POLICY tenant_isolation_platform ON people;
DROP POLICY tenant_isolation ON people;
CREATE POLICY tenant_isolation ON people TO keybridge_app
  USING ((SELECT keybridge.is_platform()) OR tenant_ids @> ARRAY[(SELECT keybridge.current_tenant())]);

DROP POLICY tenant_isolation_org ON tenant_members;
DROP POLICY tenant_isolation_platform ON tenant_members;
DROP POLICY tenant_isolation ON tenant_members;
CREATE POLICY tenant_isolation ON tenant_members TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()))
  WITH CHECK (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));

DROP POLICY tenant_isolation_org ON tenants;
DROP POLICY tenant_isolation_platform ON tenants;
DROP POLICY tenant_isolation ON tenants;
CREATE POLICY tenant_isolation ON tenants TO keybridge_app
  USING (id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));

-- Revoking a table privilege revokes the same privilege on its columns.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM keybridge_org, keybridge_platform;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM keybridge_org, keybridge_platform;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA keybridge FROM keybridge_org, keybridge_platform;
REVOKE ALL ON SCHEMA keybridge FROM keybridge_org, keybridge_platform;
DROP FUNCTION keybridge.current_tenants();
