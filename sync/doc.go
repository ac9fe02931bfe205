// Package sync reconciles a Keycloak realm into keybridge's store: a
// complete snapshot is read first (source.go, keycloak.go), mapping turns it
// into the desired state, the plan is its difference with the store
// (plan.go), guards refuse destructive plans, and the store applies the plan
// in one transaction. A scheduler runs it on a cron spec on the one replica
// holding the leader lock; an event poller and signed webhooks apply changes
// in between by re-reading the affected objects.
package sync
