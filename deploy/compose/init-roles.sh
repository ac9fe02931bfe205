#!/bin/sh
# Creates keybridge's three database roles: the schema owner, the runtime
# role (not the owner, no BYPASSRLS) and the cross-tenant sync role.
set -eu
psql -v ON_ERROR_STOP=1 -U postgres <<SQL
CREATE ROLE keybridge_owner LOGIN CREATEDB PASSWORD '${KEYBRIDGE_OWNER_PASSWORD}';
CREATE ROLE keybridge_app LOGIN NOBYPASSRLS PASSWORD '${KEYBRIDGE_APP_PASSWORD}';
CREATE ROLE keybridge_sync LOGIN NOBYPASSRLS PASSWORD '${KEYBRIDGE_SYNC_PASSWORD}';
CREATE DATABASE keybridge OWNER keybridge_owner;
SQL
