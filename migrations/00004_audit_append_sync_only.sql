-- Two write paths the runtime role (keybridge_app) did not need and could abuse.
--
-- audit_log: only the audit writer appends, and it uses the sync role. The runtime role could
-- insert rows in its own tenant, forging "who did what"; with a forged entry_id it could
-- even make the genuine row's ON CONFLICT DO NOTHING skip it. The trail is now append-only
-- for the sync role alone, and read-only for the runtime role.
--
-- role_permissions and role_assignments: the write policies checked only the row's
-- tenant_id, which the writer supplies. A tenant could attach a permission to a system role
-- (tenant_id set to its own) or to another tenant's custom role by id; and it could assign
-- another tenant's custom role. Now a permission row must belong to a custom role of the same
-- tenant, and an assignment may name only a global role or a role of its own tenant.

-- +goose Up
DROP POLICY append_audit ON audit_log;
REVOKE INSERT ON audit_log FROM keybridge_app;

DROP POLICY write_role_permissions ON role_permissions;
CREATE POLICY write_role_permissions ON role_permissions FOR ALL TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()))
  WITH CHECK ((tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()))
    AND EXISTS (SELECT 1 FROM roles r WHERE r.id = role_id AND r.kind = 'custom' AND r.tenant_id = role_permissions.tenant_id));

DROP POLICY write_local_assignments ON role_assignments;
CREATE POLICY write_local_assignments ON role_assignments FOR ALL TO keybridge_app
  USING (source = 'local' AND (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform())))
  WITH CHECK (source = 'local' AND (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()))
    AND EXISTS (SELECT 1 FROM roles r WHERE r.id = role_id AND (r.tenant_id IS NULL OR r.tenant_id = role_assignments.tenant_id)));

-- +goose Down
DROP POLICY write_local_assignments ON role_assignments;
CREATE POLICY write_local_assignments ON role_assignments FOR ALL TO keybridge_app
  USING (source = 'local' AND (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform())))
  WITH CHECK (source = 'local' AND (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform())));
DROP POLICY write_role_permissions ON role_permissions;
CREATE POLICY write_role_permissions ON role_permissions FOR ALL TO keybridge_app
  USING (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()))
  WITH CHECK (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));
GRANT INSERT ON audit_log TO keybridge_app;
CREATE POLICY append_audit ON audit_log FOR INSERT TO keybridge_app
  WITH CHECK (tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform()));
