// Package mapping is keybridge's permission model: a catalog of permissions
// named {category}.{action}[.{scope}], presets of system and pseudo roles
// (fastn, endatix), tenant custom roles, declarative rules that turn
// Keycloak facts or token claims into roles and permissions, and decisions
// that explain themselves.
//
// Names are data that reaches headers and PostgreSQL session variables, so
// they have a strict character set: ValidPermissionName for permissions,
// ValidRoleName for every role, and ValidCustomRoleName (no reserved word,
// no preset role's name in any case) for the roles tenants create.
//
// It is pure — no I/O, no clock (time is an argument) — because the same
// Resolve serves sync, with facts read from Keycloak's admin API, and
// requests, with facts read from a token, and the two must agree.
// Resolve does the work once per subject; Decide is then a bitset test with
// a precomputed explanation, cheap enough for every request.
package mapping
