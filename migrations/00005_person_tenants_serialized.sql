-- people.tenant_ids (00002) is recomputed by a trigger on tenant_members. Two transactions
-- changing one person's memberships at once (a sync and an invitation, say) could leave it
-- stale: under READ COMMITTED the second UPDATE waited for the first's row lock, then set the
-- array from its own, older snapshot, dropping the first's tenant. A removed tenant could keep
-- seeing the person, and no later sync repaired it. The function now locks the person's row in
-- a statement of its own first, so its UPDATE, a new statement, reads what the other committed.
-- An UPDATE that moves a membership to another person refreshes both people.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION keybridge.refresh_person_tenants() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  pid text;
BEGIN
  FOR pid IN SELECT DISTINCT x FROM unnest(ARRAY[OLD.person_id, NEW.person_id]) x WHERE x IS NOT NULL ORDER BY x LOOP
    PERFORM 1 FROM public.people WHERE id = pid FOR UPDATE;
    UPDATE public.people SET tenant_ids = coalesce((SELECT array_agg(m.tenant_id ORDER BY m.tenant_id)
      FROM public.tenant_members m WHERE m.person_id = pid), '{}')
    WHERE id = pid;
  END LOOP;
  RETURN NULL;
END $$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION keybridge.refresh_person_tenants() RETURNS trigger
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
