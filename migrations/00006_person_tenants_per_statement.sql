-- The tenant_ids trigger of 00005 ran once per tenant_members row, two statements each (lock,
-- recompute): a full sync of 10,000 people paid that 10,000 times. These statement-level
-- triggers see every changed row at once through transition tables, lock the people touched in
-- id order (so concurrent statements cannot deadlock), and recompute them in one UPDATE, which,
-- as a statement after the lock, reads what any concurrent writer committed (see 00005).

-- +goose Up
DROP TRIGGER tenant_members_refresh_people ON tenant_members;

-- +goose StatementBegin
CREATE FUNCTION keybridge.refresh_people_tenants() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  ids text[];
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT array_agg(DISTINCT person_id) INTO ids FROM changed_new;
  ELSIF TG_OP = 'DELETE' THEN
    SELECT array_agg(DISTINCT person_id) INTO ids FROM changed_old;
  ELSE
    SELECT array_agg(DISTINCT person_id) INTO ids FROM (SELECT person_id FROM changed_new UNION SELECT person_id FROM changed_old) c;
  END IF;
  IF ids IS NULL THEN
    RETURN NULL;
  END IF;
  PERFORM 1 FROM public.people WHERE id = ANY (ids) ORDER BY id FOR UPDATE;
  UPDATE public.people p SET tenant_ids = coalesce(t.tenants, '{}')
    FROM unnest(ids) AS x(id)
    LEFT JOIN (SELECT m.person_id, array_agg(m.tenant_id ORDER BY m.tenant_id) AS tenants
               FROM public.tenant_members m WHERE m.person_id = ANY (ids) GROUP BY m.person_id) t ON t.person_id = x.id
   WHERE p.id = x.id AND p.tenant_ids IS DISTINCT FROM coalesce(t.tenants, '{}');
  RETURN NULL;
END $$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION keybridge.refresh_people_tenants() FROM PUBLIC;
CREATE TRIGGER tenant_members_refresh_people_ins AFTER INSERT ON tenant_members
  REFERENCING NEW TABLE AS changed_new FOR EACH STATEMENT EXECUTE FUNCTION keybridge.refresh_people_tenants();
CREATE TRIGGER tenant_members_refresh_people_del AFTER DELETE ON tenant_members
  REFERENCING OLD TABLE AS changed_old FOR EACH STATEMENT EXECUTE FUNCTION keybridge.refresh_people_tenants();
CREATE TRIGGER tenant_members_refresh_people_upd AFTER UPDATE ON tenant_members
  REFERENCING NEW TABLE AS changed_new OLD TABLE AS changed_old FOR EACH STATEMENT EXECUTE FUNCTION keybridge.refresh_people_tenants();

-- +goose Down
DROP TRIGGER tenant_members_refresh_people_ins ON tenant_members;
DROP TRIGGER tenant_members_refresh_people_del ON tenant_members;
DROP TRIGGER tenant_members_refresh_people_upd ON tenant_members;
DROP FUNCTION keybridge.refresh_people_tenants();
CREATE TRIGGER tenant_members_refresh_people AFTER INSERT OR DELETE OR UPDATE ON tenant_members
  FOR EACH ROW EXECUTE FUNCTION keybridge.refresh_person_tenants();
