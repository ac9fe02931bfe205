package kcadmin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Tenant administration (issue 16): the Keycloak organization, or the group
// under mapping.tenant.group_prefix, a tenant comes from. gocloak has no
// organizations API and no group-by-path, so these are plain admin-API
// calls with the service account's token.

// ErrConflict is Keycloak's 409: an organization alias or name, or a
// sibling group's name, is taken.
var ErrConflict = errors.New("keycloak: the name is taken")

// ErrNoOrganizations is Keycloak's 404 on the organization API: the realm
// has organizations turned off.
var ErrNoOrganizations = errors.New("keycloak: organizations are off in this realm (Realm settings → General → Organizations)")

// call makes one admin-API request under the realm: body is sent as JSON
// when not nil, a 2xx answer is decoded into out when not nil. It returns
// the status and the Location header (a created object's URL).
func (a *Admin) call(ctx context.Context, method, path string, body, out any) (int, string, error) {
	tok, err := a.accessToken(ctx)
	if err != nil {
		return 0, "", err
	}
	req := a.gc.GetRequestWithBearerAuth(ctx, tok).SetHeader("Content-Type", "application/json")
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, "", fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		req.SetBody(raw)
	}
	res, err := req.Execute(method, a.base+"/admin/realms/"+url.PathEscape(a.realm)+path)
	if err != nil {
		return 0, "", fmt.Errorf("%s %s: %w", method, path, a.scrub(err))
	}
	code := res.StatusCode()
	if code == http.StatusUnauthorized {
		a.mu.Lock()
		a.token = "" // a restarted Keycloak no longer takes it: log in again next time
		a.mu.Unlock()
	}
	if code/100 == 2 && out != nil && len(res.Body()) > 0 {
		if err := json.Unmarshal(res.Body(), out); err != nil {
			return code, "", fmt.Errorf("%s %s: malformed answer: %w", method, path, err)
		}
	}
	return code, res.Header().Get("Location"), nil
}

// statusError turns an unexpected status into an error naming what to do
// for the usual ones.
func statusError(what string, code int, role string) error {
	switch code {
	case http.StatusForbidden:
		return fmt.Errorf("%s: status 403 (the service account needs the realm-management role %s)", what, role)
	case http.StatusConflict:
		return fmt.Errorf("%s: %w", what, ErrConflict)
	}
	return fmt.Errorf("%s: status %d", what, code)
}

// createdID is the id at the end of a Location header.
func createdID(loc string) string { return loc[strings.LastIndex(loc, "/")+1:] }

// CreateOrganization creates an enabled organization and returns its id.
// The alias is the tenant's id, as tokens and sync name it.
func (a *Admin) CreateOrganization(ctx context.Context, alias, name string) (string, error) {
	code, loc, err := a.call(ctx, http.MethodPost, "/organizations", map[string]any{"alias": alias, "name": name, "enabled": true}, nil)
	switch {
	case err != nil:
		return "", err
	case code == http.StatusNotFound:
		return "", ErrNoOrganizations
	case code != http.StatusCreated || loc == "":
		return "", statusError("create organization "+alias, code, "manage-realm")
	}
	return createdID(loc), nil
}

// UpdateOrganization renames an organization (name "" keeps it) and sets
// its enabled flag (nil keeps it). Keycloak replaces the whole
// representation on PUT, so the current one is read first.
func (a *Admin) UpdateOrganization(ctx context.Context, id, name string, enabled *bool) error {
	var org map[string]any
	code, _, err := a.call(ctx, http.MethodGet, "/organizations/"+url.PathEscape(id), nil, &org)
	switch {
	case err != nil:
		return err
	case code != http.StatusOK:
		return statusError("read organization "+id, code, "manage-realm")
	}
	if name != "" {
		org["name"] = name
	}
	if enabled != nil {
		org["enabled"] = *enabled
	}
	code, _, err = a.call(ctx, http.MethodPut, "/organizations/"+url.PathEscape(id), org, nil)
	switch {
	case err != nil:
		return err
	case code != http.StatusNoContent && code != http.StatusOK:
		return statusError("update organization "+id, code, "manage-realm")
	}
	return nil
}

// groupRef is a group as these calls read it.
type groupRef struct {
	ID         string              `json:"id"`
	Name       string              `json:"name"`
	Path       string              `json:"path"`
	Attributes map[string][]string `json:"attributes"`
}

// groupByPath finds a group by its full path; ok is false when none.
func (a *Admin) groupByPath(ctx context.Context, path string) (groupRef, bool, error) {
	var g groupRef
	code, _, err := a.call(ctx, http.MethodGet, "/group-by-path/"+strings.TrimPrefix(path, "/"), nil, &g)
	switch {
	case err != nil:
		return g, false, err
	case code == http.StatusNotFound:
		return g, false, nil
	case code != http.StatusOK:
		return g, false, statusError("find group "+path, code, "query-groups")
	}
	return g, true, nil
}

// CreateGroup creates the group name under the group at parentPath (each
// missing group of parentPath created on the way) with attributes, and
// returns its id.
func (a *Admin) CreateGroup(ctx context.Context, parentPath, name string, attributes map[string][]string) (string, error) {
	parent := ""
	path := ""
	for _, seg := range strings.Split(strings.Trim(parentPath, "/"), "/") {
		if seg == "" {
			continue
		}
		path += "/" + seg
		g, ok, err := a.groupByPath(ctx, path)
		if err != nil {
			return "", err
		}
		if !ok {
			if g.ID, err = a.createChild(ctx, parent, seg, nil); err != nil {
				return "", err
			}
		}
		parent = g.ID
	}
	return a.createChild(ctx, parent, name, attributes)
}

// createChild creates a group under parent ("" for the top level).
func (a *Admin) createChild(ctx context.Context, parent, name string, attributes map[string][]string) (string, error) {
	at := "/groups"
	if parent != "" {
		at = "/groups/" + url.PathEscape(parent) + "/children"
	}
	body := map[string]any{"name": name}
	if len(attributes) > 0 {
		body["attributes"] = attributes
	}
	code, loc, err := a.call(ctx, http.MethodPost, at, body, nil)
	switch {
	case err != nil:
		return "", err
	case code != http.StatusCreated || loc == "":
		return "", statusError("create group "+name, code, "manage-users")
	}
	return createdID(loc), nil
}

// UpdateGroupAttributes sets (set) and removes (remove) attributes of a
// group, leaving its name, path and others alone.
func (a *Admin) UpdateGroupAttributes(ctx context.Context, id string, set map[string][]string, remove []string) error {
	var g map[string]any
	code, _, err := a.call(ctx, http.MethodGet, "/groups/"+url.PathEscape(id), nil, &g)
	switch {
	case err != nil:
		return err
	case code != http.StatusOK:
		return statusError("read group "+id, code, "query-groups")
	}
	attrs := map[string]any{}
	if cur, ok := g["attributes"].(map[string]any); ok {
		attrs = cur
	}
	for k, v := range set {
		attrs[k] = v
	}
	for _, k := range remove {
		delete(attrs, k)
	}
	g["attributes"] = attrs
	delete(g, "subGroups") // a PUT with subGroups would move them
	code, _, err = a.call(ctx, http.MethodPut, "/groups/"+url.PathEscape(id), g, nil)
	switch {
	case err != nil:
		return err
	case code != http.StatusNoContent && code != http.StatusOK:
		return statusError("update group "+id, code, "manage-users")
	}
	return nil
}
