package api

// op is a compact OpenAPI operation: a summary, the permissions it needs
// and its answers.
func op(summary string, anyOf []string, responses ...string) map[string]any {
	res := map[string]any{}
	for _, code := range responses {
		res[code] = map[string]any{"description": statusText(code)}
	}
	res["401"] = map[string]any{"description": "missing or invalid bearer token"}
	if len(anyOf) > 0 {
		res["403"] = map[string]any{"description": "none of the required permissions"}
	}
	o := map[string]any{"summary": summary, "responses": res, "security": []any{map[string]any{"bearer": []any{}}}}
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
	case "409":
		return "conflict"
	case "502":
		return "Keycloak refused or failed"
	}
	return code
}

// OpenAPIPaths documents the management routes.
func (m *Management) OpenAPIPaths() map[string]map[string]any {
	return map[string]map[string]any{
		"/v1/people":             {"get": op("List people: filters role, status, team, q; sort name|last_active; cursor pagination", permPeopleView, "200", "400")},
		"/v1/people/{id}":        {"get": op("One person with role badges and teams", permPeopleView, "200", "404")},
		"/v1/people/invite":      {"post": op("Invite a person: created in Keycloak with the role and groups, Keycloak's action email sent when mail is configured", permPeopleInvite, "201", "400", "409", "502")},
		"/v1/people/{id}/roles":  {"put": op("Replace local role assignments (optionally temporary) in the caller's tenant", permPeopleManage, "200", "400", "404", "409")},
		"/v1/people/{id}/status": {"put": op("Deactivate or reactivate; written back to Keycloak", permPeopleManage, "200", "400", "404", "502")},
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
		"/v1/audit":              {"get": op("Audit log: filters user, action, type, outcome, from, to; cursor pagination; export with format=csv|json or Accept", permAuditView, "200", "400")},
	}
}
