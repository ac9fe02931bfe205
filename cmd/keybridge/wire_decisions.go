package main

import "context"

// wireDecisions wires token verification, the decision API and the audit
// writer. Owned by the decisions work; a stub until then.
func wireDecisions(ctx context.Context, d *deps) (feature, error) {
	return feature{}, nil
}
