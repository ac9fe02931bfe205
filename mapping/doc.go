// Package mapping is keybridge's permission model: a catalog of permissions
// named {category}.{action}[.{scope}], presets of system and pseudo roles,
// custom roles, declarative rules that turn Keycloak facts or token claims
// into roles and permissions, and decisions that explain themselves.
//
// Everything here is pure: no I/O, no clocks (time is an argument). The same
// Resolve serves sync (facts read from Keycloak's admin API) and requests
// (facts read from a token's claims), so both always agree.
package mapping
