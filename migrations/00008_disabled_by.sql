-- Who disabled a person, and why. Deactivating disables the Keycloak user, in
-- every tenant, so re-enabling needs the authority of whoever disabled them:
--   disabled_authority 'keycloak'  disabled in Keycloak, outside keybridge (or before this
--                                  migration: who did it is unknown, so the strictest);
--                                  only a platform caller re-enables them;
--                      'platform'  by a platform caller; only a platform caller re-enables;
--                      'tenant'    by a tenant caller acting in disabled_tenant; a platform
--                                  caller or a tenant caller of that same tenant re-enables.
--   disabled_by        the caller's subject, or 'keycloak'.
-- The record lives while the person is inactive. A trigger keeps it for every writer (full
-- sync, the event poller, webhooks, the management API): a person turning inactive with no
-- disabler given was disabled in Keycloak; a person leaving inactive loses the record. The
-- management API names the disabler in the same UPDATE that sets the status.
--
-- Also: sync_runs are realm-wide (every tenant's counts and errors), so the runtime role reads
-- them for platform callers only; the table was readable by every tenant.

-- +goose Up
ALTER TABLE people
  ADD COLUMN disabled_by        text,
  ADD COLUMN disabled_authority text CHECK (disabled_authority IN ('keycloak', 'platform', 'tenant')),
  ADD COLUMN disabled_tenant    text,
  ADD COLUMN disabled_reason    text NOT NULL DEFAULT '',
  ADD COLUMN disabled_at        timestamptz;

UPDATE people SET disabled_by = 'keycloak', disabled_authority = 'keycloak', disabled_at = updated_at,
  disabled_reason = 'disabled before keybridge recorded who disables people'
  WHERE status = 'inactive';

-- +goose StatementBegin
CREATE FUNCTION keybridge.record_disabler() RETURNS trigger
  LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
  IF NEW.status = 'inactive' THEN
    IF NEW.disabled_authority IS NULL THEN
      NEW.disabled_by := 'keycloak';
      NEW.disabled_authority := 'keycloak';
      NEW.disabled_tenant := NULL;
      NEW.disabled_reason := 'disabled in Keycloak';
      NEW.disabled_at := now();
    END IF;
  ELSE
    NEW.disabled_by := NULL;
    NEW.disabled_authority := NULL;
    NEW.disabled_tenant := NULL;
    NEW.disabled_reason := '';
    NEW.disabled_at := NULL;
  END IF;
  RETURN NEW;
END $$;
-- +goose StatementEnd
CREATE TRIGGER people_record_disabler BEFORE INSERT OR UPDATE OF status ON people
  FOR EACH ROW EXECUTE FUNCTION keybridge.record_disabler();

-- The runtime role writes the record and reads its kind, reason and time; who disabled a person
-- and from which tenant stay with the sync role, as tenant_ids does (00003).
GRANT UPDATE (disabled_by, disabled_authority, disabled_tenant, disabled_reason, disabled_at) ON people TO keybridge_app;
GRANT SELECT (disabled_authority, disabled_reason, disabled_at) ON people TO keybridge_app;

DROP POLICY read_sync_runs ON sync_runs;
CREATE POLICY read_sync_runs ON sync_runs FOR SELECT TO keybridge_app USING ((SELECT keybridge.is_platform()));

-- +goose Down
DROP POLICY read_sync_runs ON sync_runs;
CREATE POLICY read_sync_runs ON sync_runs FOR SELECT TO keybridge_app USING (true);
REVOKE SELECT (disabled_authority, disabled_reason, disabled_at) ON people FROM keybridge_app;
REVOKE UPDATE (disabled_by, disabled_authority, disabled_tenant, disabled_reason, disabled_at) ON people FROM keybridge_app;
DROP TRIGGER people_record_disabler ON people;
DROP FUNCTION keybridge.record_disabler();
ALTER TABLE people
  DROP COLUMN disabled_by,
  DROP COLUMN disabled_authority,
  DROP COLUMN disabled_tenant,
  DROP COLUMN disabled_reason,
  DROP COLUMN disabled_at;
