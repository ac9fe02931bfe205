-- app.roles carries every role of the caller. A comma-joined list let a role named
-- "Reader,PlatformAdmin" read as two roles; keybridge now sets app.roles to a text[] literal
-- ({"Viewer","Reader"}, each element quoted and escaped) and policies read it through
-- keybridge.current_roles(), never by splitting the text:
--   USING ((SELECT keybridge.current_roles()) && ARRAY['Admin', 'Reviewer'])
-- Unset or empty, it is the empty array. A value that is not an array literal (a list
-- joined by hand) is an error, not a guess: the query fails rather than run under roles
-- read out of another. NULL elements are dropped, so NOT (x = ANY (...)) stays true or false.
-- Role names themselves follow mapping.ValidRoleName (no separators) and, for custom roles,
-- mapping.ValidCustomRoleName (no reserved words);
-- `keybridge migrate up` reports stored custom roles that break it.

-- +goose Up
CREATE FUNCTION keybridge.current_roles() RETURNS text[]
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT coalesce(array_remove(nullif(current_setting('app.roles', true), '')::text[], NULL), '{}'::text[]) $$;
GRANT EXECUTE ON FUNCTION keybridge.current_roles() TO keybridge_app, keybridge_sync;

-- +goose Down
DROP FUNCTION keybridge.current_roles();
