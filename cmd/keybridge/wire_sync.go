package main

import "context"

// wireSync wires the Keycloak source, the scheduler, the event poller, the
// leader lock and the sync and webhook routes. Owned by the sync work; a
// stub until then.
func wireSync(ctx context.Context, d *deps) (feature, error) {
	return feature{}, nil
}
