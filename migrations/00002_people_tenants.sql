-- People are visible to the tenants they belong to. The first policy asked
-- tenant_members with EXISTS, which PostgreSQL plans as a hashed sub-plan over
-- the whole tenant on every query: a page of 50 people cost a scan of 50,000
-- memberships. The tenants are now kept on the person row itself, maintained
-- by a trigger on tenant_members, so the policy is a cheap per-row check that
-- rides the same index scan as the page.

-- +goose Up
ALTER TABLE people ADD COLUMN tenant_ids text[] NOT NULL DEFAULT '{}';
UPDATE people p SET tenant_ids = coalesce((SELECT array_agg(m.tenant_id ORDER BY m.tenant_id) FROM tenant_members m WHERE m.person_id = p.id), '{}');
CREATE INDEX people_tenant_ids_idx ON people USING gin (tenant_ids);

-- +goose StatementBegin
CREATE FUNCTION keybridge.refresh_person_tenants() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  pid text := coalesce(NEW.person_id, OLD.person_id);
BEGIN
  UPDATE public.people SET tenant_ids = coalesce((SELECT array_agg(m.tenant_id ORDER BY m.tenant_id)
    FROM public.tenant_members m WHERE m.person_id = pid), '{}')
  WHERE id = pid;
  RETURN NULL;
END $$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION keybridge.refresh_person_tenants() FROM PUBLIC;
CREATE TRIGGER tenant_members_refresh_people AFTER INSERT OR DELETE OR UPDATE ON tenant_members
  FOR EACH ROW EXECUTE FUNCTION keybridge.refresh_person_tenants();

DROP POLICY tenant_isolation ON people;
CREATE POLICY tenant_isolation ON people TO keybridge_app
  USING ((SELECT keybridge.is_platform()) OR tenant_ids @> ARRAY[(SELECT keybridge.current_tenant())]);

-- +goose Down
DROP POLICY tenant_isolation ON people;
CREATE POLICY tenant_isolation ON people TO keybridge_app
  USING ((SELECT keybridge.is_platform()) OR EXISTS (
    SELECT 1 FROM tenant_members m
    WHERE m.person_id = people.id AND m.tenant_id = (SELECT keybridge.current_tenant())));
DROP TRIGGER tenant_members_refresh_people ON tenant_members;
DROP FUNCTION keybridge.refresh_person_tenants();
DROP INDEX people_tenant_ids_idx;
ALTER TABLE people DROP COLUMN tenant_ids;
