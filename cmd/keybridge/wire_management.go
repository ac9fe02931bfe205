package main

import "context"

// wireManagement wires the management API (people, teams, roles, audit).
// Owned by the management work; a stub until then.
func wireManagement(ctx context.Context, d *deps) (feature, error) {
	return feature{}, nil
}
