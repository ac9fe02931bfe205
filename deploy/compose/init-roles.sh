#!/bin/sh
# Creates keybridge's database roles: the schema owner, the runtime role (not
# the owner, no BYPASSRLS), the cross-tenant sync role, and the two roles the
# runtime role switches to for organization-level and platform callers.
set -eu
psql -v ON_ERROR_STOP=1 -U postgres <<SQL
CREATE ROLE keybridge_owner LOGIN CREATEDB PASSWORD '${KEYBRIDGE_OWNER_PASSWORD}';
CREATE ROLE keybridge_app LOGIN NOBYPASSRLS PASSWORD '${KEYBRIDGE_APP_PASSWORD}';
CREATE ROLE keybridge_sync LOGIN NOBYPASSRLS PASSWORD '${KEYBRIDGE_SYNC_PASSWORD}';
-- The runtime role switches to these, transaction-locally, for organization-level and
-- platform callers (docs/rls.md); NOINHERIT keeps their policies off its own queries.
CREATE ROLE keybridge_org NOLOGIN NOBYPASSRLS;
CREATE ROLE keybridge_platform NOLOGIN NOBYPASSRLS;
ALTER ROLE keybridge_app NOINHERIT;
GRANT keybridge_org, keybridge_platform TO keybridge_app;
CREATE DATABASE keybridge OWNER keybridge_owner;
SQL
