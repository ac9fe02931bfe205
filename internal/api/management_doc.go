package api

// defaultTenantHeader is server.tenant_header's default, as the document
// names it.
const defaultTenantHeader = "X-Keybridge-Tenant"

// tenantHeaderParam documents the header naming the caller's active tenant.
var tenantHeaderParam = map[string]any{"name": defaultTenantHeader, "in": "header", "required": false, "schema": map[string]any{"type": "string"},
	"description": "The tenant the caller acts in (server.tenant_header renames the header); honoured only for a tenant the caller belongs to " +
		"(synced membership or token claim). Without it the token's tenant claim decides, else the caller's only synced membership"}

// op is a compact OpenAPI operation: a summary, the permissions it needs
// and its answers. Every such route takes the tenant header: a tenant the
// caller may not act in is 403 tenant_forbidden, and behind the middleware
// (routes with permissions) a caller of several tenants naming none is 409
// tenant_required.
func op(summary string, anyOf []string, responses ...string) map[string]any {
	res := map[string]any{}
	for _, code := range responses {
		res[code] = map[string]any{"description": statusText(code)}
	}
	res["401"] = map[string]any{"description": "missing or invalid bearer token"}
	forbidden := "tenant_forbidden: the caller may not act in the tenant " + defaultTenantHeader + " names"
	if len(anyOf) > 0 {
		res["403"] = map[string]any{"description": "none of the required permissions; or " + forbidden}
		required := "tenant_required: the caller may act in several tenants and names none in " + defaultTenantHeader
		if _, ok := res["409"]; ok {
			required = statusText("409") + "; or " + required
		}
		res["409"] = map[string]any{"description": required}
	} else {
		res["403"] = map[string]any{"description": forbidden}
	}
	o := map[string]any{"summary": summary, "responses": res, "security": []any{map[string]any{"bearer": []any{}}},
		"parameters": []any{tenantHeaderParam}}
	if len(anyOf) > 0 {
		o["x-keybridge-any-of"] = anyOf
	}
	return o
}

func statusText(code string) string {
	switch code {
	case "200":
		return "OK"
	case "201":
		return "created"
	case "204":
		return "deleted"
	case "400":
		return "invalid request; the message names the field"
	case "404":
		return "not found in the caller's tenant"
	case "202":
		return "accepted"
	case "409":
		return "conflict"
	case "429":
		return "too many requests; Retry-After says when to retry"
	case "502":
		return "Keycloak refused or failed"
	case "503":
		return "unavailable for now; Retry-After says when to retry"
	}
	return code
}

// OpenAPIPaths documents the management routes.
func (m *Management) OpenAPIPaths() map[string]map[string]any {
	return map[string]map[string]any{
		"/v1/people":      {"get": op("List people: filters role, status, team, q; sort name|last_active; cursor pagination", permPeopleView, "200", "400")},
		"/v1/people/{id}": {"get": op("One person with role badges and teams", permPeopleView, "200", "404")},
		"/v1/people/invite": {"post": op("Invite a person: created in Keycloak with the role and groups, Keycloak's action email sent when mail is configured. "+
			"The grant ceiling applies to all the invitation gives, for good: the role, and each team's group (the realm and client roles Keycloak maps to it, "+
			"and the group rules that match it), the tenant's own group included; anything beyond it is refused with 403 before Keycloak is asked to create anything. "+
			"A person of the caller's tenant is a 409. An address that already has an account the caller cannot see (another tenant's, or not yet synced) is answered "+
			"202 accepted with a generic body and nothing is created; the reason goes to the platform's audit log, not the tenant's", permPeopleInvite, "201", "202", "400", "409", "502")},
		"/v1/people/{id}/roles": {"put": op("Replace local role assignments (optionally temporary, expires_at) in the caller's tenant, within the grant ceiling: "+
			"you grant for good only what you hold for good (every permission and bypass the role needs, from a lasting source); holding it through a temporary grant, "+
			"you grant it only with an expiry no later than your own. Replacing touches only what you could grant: a local assignment you could not have made "+
			"is kept as it is (listed in kept) and may not be changed; an assignment sent back exactly as it is held stays as it is. "+
			"The tenant's last Owner can be neither removed nor made temporary (409). 403 with the reason otherwise", permPeopleManage, "200", "400", "404", "409")},
		"/v1/people/{id}/status": {"put": op("Deactivate (optional reason) or reactivate; written back to Keycloak. Deactivating disables the person in every tenant: "+
			"a tenant caller may deactivate only a person of its tenant alone, within its grant ceiling, never the last Owner. Re-enabling needs the authority "+
			"of whoever disabled them: a person disabled in Keycloak or by a platform caller is re-enabled by a platform caller only; one a tenant caller "+
			"disabled, by a platform caller or a caller of that tenant (403 otherwise)", permPeopleManage, "200", "400", "403", "404", "409", "502")},
		"/v1/roles": {
			"get":  op("System, Keycloak and custom roles with permission and member counts", permRolesView, "200"),
			"post": op("Create a custom role from scratch", permRolesManage, "201", "400", "409"),
		},
		"/v1/roles/matrix":         {"get": op("Category x role matrix as the seed shows it", permRolesView, "200")},
		"/v1/roles/{id}/duplicate": {"post": op("Duplicate a role as a custom role", permRolesManage, "201", "400", "404", "409")},
		"/v1/roles/{id}": {
			"patch":  op("Edit a custom role (system roles are immutable)", permRolesManage, "200", "400", "404"),
			"delete": op("Delete a custom role; refused while assigned unless force=true", permRolesManage, "204", "404", "409"),
		},
		"/v1/permissions":        {"get": op("The permission catalog by category", permRolesView, "200")},
		"/v1/teams":              {"get": op("Teams as a tree with member counts", permPeopleView, "200")},
		"/v1/teams/{id}/members": {"get": op("A team's members, cursor pagination", permPeopleView, "200", "404")},
		"/v1/audit": {"get": op("Audit log: filters user, action, type, outcome, from, to; cursor pagination; export with format=csv|json or Accept. "+
			"Exports stream, at most audit.export_max_concurrent at once (another is answered 503 with Retry-After), each cut at audit.export_max_duration", permAuditView, "200", "400", "503")},
	}
}
