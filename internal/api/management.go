package api

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/kcadmin"
	"github.com/keybridge/keybridge/internal/manage"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
)

// Gatekeeper is the five-step middleware as keybridge's own routes use it:
// verify the token, resolve the caller, open an RLS-scoped transaction,
// check the permission (any of), rate limit; denials are audited there.
type Gatekeeper interface {
	Require(action string, anyOf ...string) gin.HandlerFunc
	Tx(c *gin.Context) pgx.Tx
	Grant(c *gin.Context) *mapping.Grant
	// Platform reports whether the caller acts across tenants.
	Platform(c *gin.Context) bool
}

// KeycloakAdmin is what management writes back to Keycloak.
type KeycloakAdmin interface {
	CreateUser(ctx context.Context, in kcadmin.Invitee) (string, error)
	SendInvitation(ctx context.Context, userID string) error
	SetEnabled(ctx context.Context, userID string, enabled bool) error
	DeleteUser(ctx context.Context, userID string) error
	// GroupRoles lists the realm roles, and the named clients' roles
	// ("client:role"), that membership in a group gives: composites and
	// the parent groups' mappings included.
	GroupRoles(ctx context.Context, groupID string, clients []string) (realm, client []string, err error)
	// Enabled reports whether a user is enabled in Keycloak now.
	Enabled(ctx context.Context, userID string) (bool, error)
}

// Permissions each management action needs (any of). Both presets are
// covered: fastn's people.* and settings.*, Endatix's tenant.*; bypass roles
// pass everything within their reach.
var (
	permPeopleView   = []string{"people.view", "tenant.users.view"}
	permPeopleInvite = []string{"people.invite", "tenant.users.invite"}
	permPeopleManage = []string{"people.manage", "tenant.users.manage"}
	permRolesView    = []string{"settings.view", "people.view", "tenant.roles.view"}
	permRolesManage  = []string{"settings.manage", "tenant.roles.manage"}
	permAuditView    = []string{"audit.view", "tenant.settings.view", "platform.logs.view"}
)

// Management serves the Settings screens: people, invitations, role
// assignment, roles and custom roles, teams and the audit log.
type Management struct {
	Log      *slog.Logger
	Gate     Gatekeeper
	Engine   func() *mapping.Engine
	Mapping  mapping.Config
	Keycloak KeycloakAdmin
	// System writes what the runtime role may not: the row of a person who
	// does not exist yet (an invitation). Nothing else uses it here.
	System *store.Store
	Audit  audit.Recorder
	Now    func() time.Time
	// Export bounds the audit log's CSV and NDJSON exports.
	Export AuditExport
}

// Register adds the management routes.
func (m *Management) Register(r gin.IRouter) {
	g := m.Gate
	r.GET("/v1/people", g.Require("people.list", permPeopleView...), m.listPeople)
	r.GET("/v1/people/:id", g.Require("people.get", permPeopleView...), m.getPerson)
	r.POST("/v1/people/invite", g.Require("people.invite", permPeopleInvite...), m.invite)
	r.PUT("/v1/people/:id/roles", g.Require("people.assign", permPeopleManage...), m.assignRoles)
	r.PUT("/v1/people/:id/status", g.Require("people.status", permPeopleManage...), m.setStatus)
	r.GET("/v1/roles", g.Require("roles.list", permRolesView...), m.listRoles)
	r.GET("/v1/roles/matrix", g.Require("roles.matrix", permRolesView...), m.matrix)
	r.POST("/v1/roles", g.Require("roles.create", permRolesManage...), m.createRole)
	r.POST("/v1/roles/:id/duplicate", g.Require("roles.duplicate", permRolesManage...), m.duplicateRole)
	r.PATCH("/v1/roles/:id", g.Require("roles.update", permRolesManage...), m.updateRole)
	r.DELETE("/v1/roles/:id", g.Require("roles.delete", permRolesManage...), m.deleteRole)
	r.GET("/v1/permissions", g.Require("permissions.list", permRolesView...), m.permissions)
	r.GET("/v1/teams", g.Require("teams.list", permPeopleView...), m.listTeams)
	r.GET("/v1/teams/:id/members", g.Require("teams.members", permPeopleView...), m.teamMembers)
	r.GET("/v1/audit", g.Require("audit.list", permAuditView...), m.listAudit)
}

func (m *Management) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// record audits a management action's outcome.
func (m *Management) record(c *gin.Context, action, resType, resID, outcome, reason string) {
	if m.Audit == nil {
		return
	}
	g := m.Gate.Grant(c)
	e := audit.Entry{OccurredAt: m.now(), Action: action, ResourceType: resType, ResourceID: resID,
		Outcome: outcome, Reason: reason, RequestID: RequestID(c), ActorName: "system"}
	if g != nil {
		e.TenantID, e.ActorID, e.ActorName = g.Tenant, g.Subject, g.Username
	}
	if t := c.GetString(ctxTargetTenant); t != "" {
		e.TenantID = t // a platform caller acting in another tenant shows in that tenant's log
	}
	m.Audit.Record(c.Request.Context(), e)
}

// ctxTargetTenant holds the tenant a platform caller acts in.
const ctxTargetTenant = "keybridge.target_tenant"

// storeError answers a store error. A row hidden by RLS is a 404, and the
// attempt is audited as denied: from inside a tenant, another tenant's
// objects do not exist.
func (m *Management) storeError(c *gin.Context, action, resType, resID string, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		m.record(c, action, resType, resID, audit.Denied, "not found in the caller's tenant")
		Error(c, http.StatusNotFound, "not_found", resType+" not found")
	case errors.Is(err, store.ErrConflict):
		m.record(c, action, resType, resID, audit.Failure, err.Error())
		Error(c, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, store.ErrInvalid):
		m.record(c, action, resType, resID, audit.Failure, err.Error())
		Error(c, http.StatusBadRequest, "invalid", err.Error())
	default:
		m.Log.ErrorContext(c.Request.Context(), "management query failed", "action", action, "error", err, "request_id", RequestID(c))
		m.record(c, action, resType, resID, audit.Failure, "internal error")
		Error(c, http.StatusInternalServerError, "internal", "internal error")
	}
}

func (m *Management) badRequest(c *gin.Context, action, msg string) {
	m.record(c, action, "", "", audit.Failure, msg)
	Error(c, http.StatusBadRequest, "invalid_request", msg)
}

func (m *Management) listPeople(c *gin.Context) {
	f, err := parsePeopleQuery(c.Request.URL.Query())
	if err != nil {
		m.badRequest(c, "people.list", err.Error())
		return
	}
	people, next, err := store.ListPeople(c.Request.Context(), m.Gate.Tx(c), f)
	if err != nil {
		m.storeError(c, "people.list", "person", "", err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"items": people, "next_cursor": next})
}

func (m *Management) getPerson(c *gin.Context) {
	p, err := store.GetPerson(c.Request.Context(), m.Gate.Tx(c), c.Param("id"))
	if err != nil {
		m.storeError(c, "people.get", "person", c.Param("id"), err)
		return
	}
	c.JSON(http.StatusOK, p)
}

// tenantFor is the tenant an action writes into: the caller's own, or for a
// platform caller the one it names. A tenant outside the caller's reach (or
// a caller with none) is answered 403 with refusal and audited as a denial
// of the action on the resource; ok is false then and the handler returns.
func (m *Management) tenantFor(c *gin.Context, action, resType, resID, requested, refusal string) (tenant string, ok bool) {
	g := m.Gate.Grant(c)
	switch {
	case m.Gate.Platform(c) && requested != "":
		c.Set(ctxTargetTenant, requested) // audited in the tenant acted on
		return requested, true
	case (requested == "" || requested == g.Tenant) && g.Tenant != "":
		return g.Tenant, true
	}
	m.record(c, action, resType, resID, audit.Denied, "tenant outside the caller's reach")
	Error(c, http.StatusForbidden, "forbidden", refusal)
	return "", false
}

// placeFailed answers an invitation that cannot place the invitee in the
// tenant (409, with what to do) and audits it.
func (m *Management) placeFailed(c *gin.Context, action, email, why string) {
	m.record(c, action, "person", email, audit.Failure, why)
	Error(c, http.StatusConflict, "tenant_unplaceable", why)
}

// refuseGrant answers 403, and audits the denial, when the caller may not
// grant role r in tenant: only what the caller may do there itself, never a
// wider bypass (mapping.Engine.MayGrant). It reports whether it refused.
// Roles the engine does not know (Keycloak-only roles) carry nothing here.
// It judges role definitions; assignments go through the ceiling with their
// expiry (manage.ReplaceLocalRoles, manage.MayAssign).
func (m *Management) refuseGrant(c *gin.Context, action, resType, resID string, r mapping.Role, tenant string) bool {
	why := m.Engine().MayGrant(m.Gate.Grant(c), r, tenant, m.now())
	if why == "" {
		return false
	}
	m.record(c, action, resType, resID, audit.Denied, why)
	Error(c, http.StatusForbidden, "forbidden", why)
	return true
}

type inviteRequest struct {
	Email  string   `json:"email"`
	Name   string   `json:"name"`
	Role   string   `json:"role"`
	Teams  []string `json:"teams"`
	Tenant string   `json:"tenant"`
}

func (m *Management) invite(c *gin.Context) {
	const action = "people.invite"
	ctx := c.Request.Context()
	var req inviteRequest
	if err := decodeJSON(c, &req); err != nil {
		m.badRequest(c, action, err.Error())
		return
	}
	addr, err := mail.ParseAddress(req.Email)
	if err != nil || addr.Address != strings.TrimSpace(req.Email) {
		m.badRequest(c, action, "email: not a valid address")
		return
	}
	email := strings.ToLower(addr.Address)
	if req.Role == "" {
		m.badRequest(c, action, "role: required")
		return
	}
	tenant, ok := m.tenantFor(c, action, "person", email, req.Tenant, "you can invite only into your own tenant")
	if !ok {
		return
	}
	tx := m.Gate.Tx(c)
	role, err := store.FindRole(ctx, tx, req.Role, tenant)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			m.badRequest(c, action, "role: no role "+strconv.Quote(req.Role)+" in this tenant")
			return
		}
		m.storeError(c, action, "role", req.Role, err)
		return
	}
	// An invitation's assignments last: the caller must hold the role for good.
	by := manage.Authority{Grant: m.Gate.Grant(c)}
	if m.refuse(c, action, "person", email, manage.MayAssign(m.Engine(), by, manage.RoleOf(m.Engine(), role), tenant, time.Time{}, m.now())) {
		return
	}
	// Teams must be visible to the caller, i.e. inside the tenant.
	groups := make([]string, 0, len(req.Teams)+1)
	var teams []inviteGroup
	for _, t := range req.Teams {
		var g inviteGroup
		if err := tx.QueryRow(ctx, `SELECT id, path FROM teams WHERE (id = $1 OR path = $1) AND status = 'active'`, t).Scan(&g.id, &g.path); err != nil {
			m.badRequest(c, action, "teams: no team "+strconv.Quote(t)+" in this tenant")
			return
		}
		g.label = "team " + g.path
		groups = append(groups, g.id)
		teams = append(teams, g)
	}
	// The invitee must be placed in the tenant the way the tenant source
	// reads it, or their token would name no tenant and the invitation
	// would grant nothing.
	invitee := kcadmin.Invitee{Email: email}
	src := m.Mapping.Tenant
	// In an organization → customers tree a customer is its group; only an
	// organization tenant is placed by organization membership.
	prefix := src.GroupPrefix
	if src.Tree() {
		var source string
		if err := m.System.SysPool().QueryRow(ctx, `SELECT source FROM tenants WHERE id = $1`, tenant).Scan(&source); err == nil && source == "group" {
			prefix = src.Customers.GroupPrefix
		}
	}
	switch {
	case prefix != "":
		var id string
		path := strings.TrimRight(prefix, "/") + "/" + tenant
		if err := m.System.SysPool().QueryRow(ctx, `SELECT id FROM teams WHERE path = $1 AND status = 'active'`, path).Scan(&id); err != nil {
			m.placeFailed(c, action, email, "no Keycloak group "+path+" for the tenant: create it, then sync")
			return
		}
		groups = append(groups, id)
		teams = append(teams, inviteGroup{id: id, path: path, label: "the tenant's group " + path, placement: true})
	case src.Organization:
		var org string
		if err := m.System.SysPool().QueryRow(ctx, `SELECT coalesce(keycloak_id, '') FROM tenants WHERE id = $1 AND source = 'organization' AND status = 'active'`, tenant).Scan(&org); err != nil || org == "" {
			m.placeFailed(c, action, email, "no Keycloak organization for tenant "+strconv.Quote(tenant)+": create it, then sync")
			return
		}
		invitee.Organization = org
	case src.Attribute != "":
		invitee.Attributes = map[string][]string{src.Attribute: {tenant}}
	case src.Claim != "" && !strings.Contains(src.Claim, "."):
		invitee.Attributes = map[string][]string{src.Claim: {tenant}}
	case src.Claim != "":
		m.placeFailed(c, action, email, "mapping.tenant.claim "+strconv.Quote(src.Claim)+" is a nested claim, which keybridge cannot set on a new user: invite through Keycloak, or use an attribute tenant source")
		return
	}
	realmRoles := realmRolesGranting(m.Mapping, role.Name, tenant)
	if !m.inviteWithinCeiling(c, action, email, tenant, invitee, teams, realmRoles) {
		return
	}

	// A person the caller sees (one of its tenant; anyone, for a platform
	// caller) is a conflict it can resolve. An account it cannot see,
	// another tenant's person or a Keycloak user not synced yet, is not
	// revealed: the answer is the one of an accepted invitation.
	var here, anywhere bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM people WHERE lower(email) = $1 OR lower(username) = $1)`, email).Scan(&here); err != nil {
		m.storeError(c, action, "person", email, err)
		return
	}
	if here {
		m.record(c, action, "person", email, audit.Failure, "already in People")
		Error(c, http.StatusConflict, "already_member", "a person with this email is already in People: change their roles there")
		return
	}
	if err := m.System.SysPool().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM people WHERE lower(email) = $1 OR lower(username) = $1)`, email).Scan(&anywhere); err != nil {
		m.storeError(c, action, "person", email, err)
		return
	}
	if anywhere {
		m.acceptUnseen(c, action, email, tenant, "an account with this email already exists outside tenant "+strconv.Quote(tenant)+"; not invited")
		return
	}
	first, last, _ := strings.Cut(strings.TrimSpace(req.Name), " ")
	invitee.FirstName, invitee.LastName, invitee.Groups, invitee.Realm = first, last, groups, realmRoles
	id, err := m.Keycloak.CreateUser(ctx, invitee)
	if errors.Is(err, kcadmin.ErrExists) {
		m.acceptUnseen(c, action, email, tenant, "an account with this email or username already exists in Keycloak (not synced into keybridge); not invited")
		return
	}
	if err != nil {
		if id != "" {
			_ = m.Keycloak.DeleteUser(context.WithoutCancel(ctx), id)
		}
		m.Log.ErrorContext(ctx, "invite: keycloak", "error", err, "request_id", RequestID(c))
		m.record(c, action, "person", email, audit.Failure, "keycloak refused the user")
		msg := "Keycloak could not create the user"
		if errors.Is(err, kcadmin.ErrAttributeDropped) {
			msg = err.Error() // names the attribute and the realm setting
		}
		Error(c, http.StatusBadGateway, "keycloak_error", msg)
		return
	}
	display := strings.TrimSpace(req.Name)
	if display == "" {
		display = email
	}
	err = m.System.InSystemTx(ctx, func(stx pgx.Tx) error {
		if _, err := stx.Exec(ctx, `INSERT INTO people (id, username, email, first_name, last_name, display_name, status)
			VALUES ($1, $2, $2, $3, $4, $5, 'invited') ON CONFLICT (id) DO NOTHING`, id, email, first, last, display); err != nil {
			return err
		}
		if _, err := stx.Exec(ctx, `INSERT INTO tenant_members (tenant_id, person_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, tenant, id); err != nil {
			return err
		}
		if _, err := stx.Exec(ctx, `INSERT INTO team_members (team_id, person_id, tenant_id) SELECT t, $2, $3 FROM unnest($1::text[]) t ON CONFLICT DO NOTHING`, groups, id, tenant); err != nil {
			return err
		}
		if len(realmRoles) == 0 {
			// A custom role has no Keycloak counterpart: it is held locally.
			if _, err := stx.Exec(ctx, `INSERT INTO role_assignments (person_id, role_id, tenant_id, source, created_by)
				VALUES ($1, $2::uuid, $3, 'local', $4)`, id, role.ID, tenant, m.Gate.Grant(c).Subject); err != nil {
				return err
			}
		}
		_, err := stx.Exec(ctx, `SELECT pg_notify('keybridge_changed', json_build_object('kind', 'person', 'id', $1::text)::text)`, id)
		return err
	})
	if err != nil {
		// The Keycloak user must not outlive the failed invitation: a retry
		// would find it and answer 409.
		if derr := m.Keycloak.DeleteUser(context.WithoutCancel(ctx), id); derr != nil {
			m.Log.ErrorContext(ctx, "invite: could not remove the Keycloak user of a failed invitation", "error", derr, "request_id", RequestID(c))
		}
		m.storeError(c, action, "person", id, err)
		return
	}
	resp := gin.H{"id": id, "email": email, "status": "invited", "role": role.Name, "tenant": tenant, "email_sent": true}
	if err := m.Keycloak.SendInvitation(ctx, id); err != nil {
		resp["email_sent"] = false
		if errors.Is(err, kcadmin.ErrNoMail) {
			resp["email_error"] = kcadmin.ErrNoMail.Error()
		} else {
			m.Log.WarnContext(ctx, "invite: action email", "error", err, "request_id", RequestID(c))
			resp["email_error"] = "Keycloak could not send the invitation email"
		}
	}
	m.record(c, action, "person", id, audit.Success, "")
	c.JSON(http.StatusCreated, resp)
}

// inviteGroup is a Keycloak group an invitation adds the invitee to: a team
// asked for, or the tenant's own group (placement).
type inviteGroup struct {
	id, path, label string
	placement       bool
}

// refuse answers 403 with why, and audits the denial, when why is not "".
// It reports whether it refused.
func (m *Management) refuse(c *gin.Context, action, resType, resID, why string) bool {
	if why == "" {
		return false
	}
	m.record(c, action, resType, resID, audit.Denied, why)
	Error(c, http.StatusForbidden, "forbidden", why)
	return true
}

// inviteWithinCeiling applies the grant ceiling to what an invitation gives
// beyond its role, before anything is created in Keycloak: each group the
// invitee joins (the teams asked for and the tenant's own group) with the
// realm and client roles Keycloak says it maps to and the group rules that
// match it, and the realm roles the invitation assigns with the rules they
// match. Membership does not expire, so all must be the caller's to give for
// good. It answers (403, or 502 when Keycloak cannot say) and reports false
// when the invitation may not go ahead.
func (m *Management) inviteWithinCeiling(c *gin.Context, action, email, tenant string, placement kcadmin.Invitee, groups []inviteGroup, realmRoles []string) bool {
	ctx := c.Request.Context()
	e, g, now := m.Engine(), m.Gate.Grant(c), m.now()
	var clients []string
	for _, r := range m.Mapping.Rules {
		if client, _, ok := strings.Cut(r.ClientRole, ":"); ok && !slices.Contains(clients, client) {
			clients = append(clients, client)
		}
	}
	// The facts the invitee will have, as the tenant source reads them, so
	// rules pinned to the tenant match as they will.
	facts := func(groups []string, realm, client []string) mapping.Facts {
		f := mapping.Facts{Groups: groups, RealmRoles: realm, ClientRoles: client, Attributes: placement.Attributes}
		if m.Mapping.Tenant.Organization && placement.Organization != "" {
			f.Organizations = []string{tenant}
		}
		return f
	}
	check := func(label string, f mapping.Facts) bool {
		if why := e.MayGrantHeld(g, e.Resolve(f, nil, now), tenant, time.Time{}, now); why != "" {
			return !m.refuse(c, action, "person", email, label+": "+why)
		}
		return true
	}
	var tenantGroup []string
	for _, gr := range groups {
		if gr.placement {
			tenantGroup = []string{gr.path}
		}
	}
	if len(realmRoles) > 0 && !check("realm roles "+strings.Join(realmRoles, ", "), facts(tenantGroup, realmRoles, nil)) {
		return false
	}
	for _, gr := range groups {
		realm, client, err := m.Keycloak.GroupRoles(ctx, gr.id, clients)
		if err != nil {
			m.Log.ErrorContext(ctx, "invite: group roles", "group", gr.path, "error", err, "request_id", RequestID(c))
			m.record(c, action, "person", email, audit.Failure, "keycloak could not list the roles of group "+gr.path)
			Error(c, http.StatusBadGateway, "keycloak_error", "Keycloak could not say which roles "+gr.label+" gives")
			return false
		}
		if !check(gr.label, facts(append([]string{gr.path}, tenantGroup...), realm, client)) {
			return false
		}
	}
	return true
}

// acceptUnseen answers an invitation of an address that already has an
// account the caller cannot see (another tenant's person, or a Keycloak
// user keybridge has not synced) the way an accepted invitation is
// answered, 202 with a body that says nothing of the account, and creates
// nothing: a tenant learns nothing of other tenants' people. The real
// reason is audited outside any tenant, where platform callers read it.
func (m *Management) acceptUnseen(c *gin.Context, action, email, tenant, reason string) {
	if m.Audit != nil {
		e := audit.Entry{OccurredAt: m.now(), Action: action, ResourceType: "person", ResourceID: email,
			Outcome: audit.Failure, Reason: reason, RequestID: RequestID(c), ActorName: "system"}
		if g := m.Gate.Grant(c); g != nil {
			e.ActorID, e.ActorName = g.Subject, g.Username
		}
		m.Audit.Record(c.Request.Context(), e)
	}
	c.JSON(http.StatusAccepted, gin.H{"status": "accepted", "email": email, "tenant": tenant,
		"message": "invitation accepted; the person appears in People once they can join this tenant"})
}

// realmRolesGranting finds the Keycloak realm roles whose rules grant role:
// an invitation assigns them in Keycloak so Keycloak stays the source of truth.
func realmRolesGranting(cfg mapping.Config, role, tenant string) []string {
	var out []string
	for _, r := range cfg.Rules {
		if r.RealmRole == "" || (r.Tenant != "" && r.Tenant != tenant) {
			continue
		}
		if r.GrantRole == role || slices.Contains(r.GrantRoles, role) {
			out = append(out, r.RealmRole)
			break
		}
	}
	return out
}

type assignRequest struct {
	Roles []struct {
		Role      string     `json:"role"`
		ExpiresAt *time.Time `json:"expires_at"`
	} `json:"roles"`
	Tenant string `json:"tenant"`
}

func (m *Management) assignRoles(c *gin.Context) {
	const action = "people.assign"
	ctx := c.Request.Context()
	id := c.Param("id")
	var req assignRequest
	if err := decodeJSON(c, &req); err != nil {
		m.badRequest(c, action, err.Error())
		return
	}
	tenant, ok := m.tenantFor(c, action, "person", id, req.Tenant, "you can assign roles only in your own tenant")
	if !ok {
		return
	}
	tx := m.Gate.Tx(c)
	person, err := store.GetPerson(ctx, tx, id)
	if err != nil {
		m.storeError(c, action, "person", id, err)
		return
	}
	want := make([]manage.Requested, len(req.Roles))
	for i, r := range req.Roles {
		want[i] = manage.Requested{Role: r.Role, ExpiresAt: r.ExpiresAt}
	}
	by := manage.Authority{Grant: m.Gate.Grant(c), Actor: m.Gate.Grant(c).Subject}
	kept, err := manage.ReplaceLocalRoles(ctx, tx, m.Engine(), by, person, tenant, want, m.now())
	if !m.manageError(c, action, "person", id, err) {
		return
	}
	updated, err := store.GetPerson(ctx, tx, id)
	if err != nil {
		m.storeError(c, action, "person", id, err)
		return
	}
	reason := ""
	if len(kept) > 0 {
		reason = "kept, beyond the caller's grant: " + strings.Join(kept, ", ")
	}
	m.record(c, action, "person", id, audit.Success, reason)
	c.JSON(http.StatusOK, struct {
		store.Person
		// Kept names the local assignments left as they were because the
		// caller could not have made them.
		Kept []string `json:"kept,omitempty"`
	}{updated, kept})
}

// manageError answers an error of a manage rule: a refusal is 403 and
// audited as denied, an invalid request 400, the last Owner 409, anything
// else as storeError does. It reports whether err was nil.
func (m *Management) manageError(c *gin.Context, action, resType, resID string, err error) bool {
	var refusal *manage.Refusal
	var invalid *manage.Invalid
	switch {
	case err == nil:
		return true
	case errors.As(err, &refusal):
		m.record(c, action, resType, resID, audit.Denied, refusal.Reason)
		Error(c, http.StatusForbidden, "forbidden", refusal.Reason)
	case errors.As(err, &invalid):
		m.badRequest(c, action, invalid.Message)
	case errors.Is(err, mapping.ErrLastOwner):
		m.record(c, action, resType, resID, audit.Failure, err.Error())
		Error(c, http.StatusConflict, "last_owner", err.Error())
	default:
		m.storeError(c, action, resType, resID, err)
	}
	return false
}

func (m *Management) setStatus(c *gin.Context) {
	const action = "people.status"
	ctx := c.Request.Context()
	id := c.Param("id")
	var req struct {
		Status string `json:"status"`
		// Reason is recorded with a deactivation, beside who made it.
		Reason string `json:"reason"`
	}
	if err := decodeJSON(c, &req); err != nil {
		m.badRequest(c, action, err.Error())
		return
	}
	if req.Status != "active" && req.Status != "inactive" {
		m.badRequest(c, action, "status: use active or inactive")
		return
	}
	if len(req.Reason) > 500 {
		m.badRequest(c, action, "reason: at most 500 bytes")
		return
	}
	tx := m.Gate.Tx(c)
	person, err := store.GetPerson(ctx, tx, id)
	if err != nil {
		m.storeError(c, action, "person", id, err)
		return
	}
	if req.Status == "inactive" && !m.mayDeactivate(c, action, person) {
		return
	}
	if req.Status == "active" && !m.mayReenable(c, action, person) {
		return
	}
	// Keycloak first: it is the source of truth; the local row follows.
	if err := m.Keycloak.SetEnabled(ctx, id, req.Status == "active"); err != nil {
		m.Log.ErrorContext(ctx, "status: keycloak", "error", err, "request_id", RequestID(c))
		m.record(c, action, "person", id, audit.Failure, "keycloak refused the change")
		Error(c, http.StatusBadGateway, "keycloak_error", "Keycloak could not change the user")
		return
	}
	if req.Status == "inactive" {
		g := m.Gate.Grant(c)
		by := store.Disabler{By: g.Subject, Authority: store.DisabledByTenant, Tenant: g.Tenant, Reason: req.Reason}
		if m.Gate.Platform(c) {
			by.Authority, by.Tenant = store.DisabledByPlatform, ""
		}
		err = store.DisablePerson(ctx, tx, id, by)
	} else {
		err = store.SetPersonStatus(ctx, tx, id, req.Status)
	}
	if err != nil {
		m.storeError(c, action, "person", id, err)
		return
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify('keybridge_changed', json_build_object('kind', 'person', 'id', $1::text)::text)`, id); err != nil {
		m.storeError(c, action, "person", id, err)
		return
	}
	m.record(c, action, "person", id, audit.Success, "status "+req.Status)
	c.JSON(http.StatusOK, gin.H{"id": id, "status": req.Status})
}

// mayDeactivate answers and audits the refusal when the caller may not
// deactivate the person. Deactivation disables the Keycloak user, so it
// reaches every tenant the person is in: a tenant caller may deactivate only
// a person of its tenant alone, only one whose roles it could grant itself,
// and never the tenant's last holder of the protected role (Owner).
func (m *Management) mayDeactivate(c *gin.Context, action string, p store.Person) bool {
	ctx := c.Request.Context()
	tenant := m.Gate.Grant(c).Tenant
	if !m.Gate.Platform(c) {
		var others int
		if err := m.System.SysPool().QueryRow(ctx, `SELECT count(*) FROM tenant_members WHERE person_id = $1 AND tenant_id <> $2`, p.ID, tenant).Scan(&others); err != nil {
			m.storeError(c, action, "person", p.ID, err)
			return false
		}
		if others > 0 {
			m.record(c, action, "person", p.ID, audit.Denied, "the person belongs to other tenants")
			Error(c, http.StatusConflict, "other_tenants", "this person belongs to other tenants too, and deactivating disables them everywhere: remove their roles here instead, or ask a platform administrator")
			return false
		}
	}
	if !m.holdsNothingBeyondCaller(c, action, p, tenant) {
		return false
	}
	protected := mapping.ProtectedRole(m.Engine())
	holdsProtected := slices.ContainsFunc(p.Roles, func(b store.RoleBadge) bool {
		return b.Name == protected && (b.Tenant == tenant || b.Tenant == "")
	})
	if holdsProtected && p.Status == "active" {
		owners, err := store.CountHolders(ctx, m.Gate.Tx(c), protected, tenant)
		if err != nil {
			m.storeError(c, action, "person", p.ID, err)
			return false
		}
		if err := mapping.CheckLastOwner(m.Engine(), owners, true); err != nil {
			m.record(c, action, "person", p.ID, audit.Failure, err.Error())
			Error(c, http.StatusConflict, "last_owner", err.Error())
			return false
		}
	}
	return true
}

// holdsNothingBeyondCaller answers and audits the refusal when the person
// holds, in tenant, an assignment the caller could not have made (the grant
// ceiling, at the assignment's own expiry): deactivating or re-enabling
// them takes away or gives back what only a stronger caller could give.
func (m *Management) holdsNothingBeyondCaller(c *gin.Context, action string, p store.Person, tenant string) bool {
	by := manage.Authority{Grant: m.Gate.Grant(c)}
	for _, b := range p.Roles {
		if b.Tenant != tenant && b.Tenant != "" {
			continue
		}
		row, err := store.GetRole(c.Request.Context(), m.Gate.Tx(c), b.RoleID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			m.storeError(c, action, "person", p.ID, err)
			return false
		}
		var until time.Time
		if b.ExpiresAt != nil {
			until = *b.ExpiresAt
		}
		if why := manage.MayAssign(m.Engine(), by, manage.RoleOf(m.Engine(), row), tenant, until, m.now()); m.refuse(c, action, "person", p.ID, why) {
			return false
		}
	}
	return true
}

// mayReenable answers and audits the refusal when the caller may not
// re-enable the person. Re-enabling needs the authority of whoever disabled
// them (people.disabled_authority): a person Keycloak disabled (outside
// keybridge) or a platform caller disabled is re-enabled by a platform
// caller only; one a tenant caller disabled, by a platform caller or a
// caller of that same tenant whose grant covers the person's roles there. A
// person keybridge still records as enabled is asked about in Keycloak,
// which may have disabled them since sync last looked.
func (m *Management) mayReenable(c *gin.Context, action string, p store.Person) bool {
	if m.Gate.Platform(c) {
		return true
	}
	ctx := c.Request.Context()
	tenant := m.Gate.Grant(c).Tenant
	d, err := store.GetDisabler(ctx, m.System.SysPool(), p.ID) // p was found through RLS
	if err != nil {
		m.storeError(c, action, "person", p.ID, err)
		return false
	}
	const platformOnly = "; only a platform administrator can re-enable them"
	var why string
	switch {
	case p.Status == "inactive" && d.Authority == store.DisabledByTenant && d.Tenant == tenant:
		return m.holdsNothingBeyondCaller(c, action, p, tenant)
	case p.Status == "inactive" && d.Authority == store.DisabledByTenant:
		why = "this person was deactivated from another tenant; only a platform administrator or that tenant can re-enable them"
	case p.Status == "inactive" && d.Authority == store.DisabledByPlatform:
		why = "this person was deactivated by a platform administrator" + platformOnly
	case p.Status == "inactive":
		why = "this person was disabled in Keycloak, outside keybridge" + platformOnly
	default:
		on, err := m.Keycloak.Enabled(ctx, p.ID)
		if err != nil {
			m.Log.ErrorContext(ctx, "status: keycloak", "error", err, "request_id", RequestID(c))
			m.record(c, action, "person", p.ID, audit.Failure, "keycloak could not say whether the user is enabled")
			Error(c, http.StatusBadGateway, "keycloak_error", "Keycloak could not say whether the user is enabled")
			return false
		}
		if on {
			return true
		}
		why = "this person is disabled in Keycloak, outside keybridge" + platformOnly
	}
	m.refuse(c, action, "person", p.ID, why)
	return false
}

type roleView struct {
	store.RoleRow
	PermissionCount int `json:"permission_count"`
}

func (m *Management) listRoles(c *gin.Context) {
	roles, err := store.ListRoles(c.Request.Context(), m.Gate.Tx(c), c.Query("kind"))
	if err != nil {
		m.storeError(c, "roles.list", "role", "", err)
		return
	}
	out := make([]roleView, len(roles))
	for i, r := range roles {
		out[i] = roleView{RoleRow: r, PermissionCount: len(r.Permissions)}
	}
	c.JSON(http.StatusOK, gin.H{"items": out})
}

type roleRequest struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Permissions []string `json:"permissions"`
	Tenant      string   `json:"tenant"`
}

func (m *Management) createRole(c *gin.Context) {
	const action = "roles.create"
	var req roleRequest
	if err := decodeJSON(c, &req); err != nil {
		m.badRequest(c, action, err.Error())
		return
	}
	tenant, ok := m.tenantFor(c, action, "role", req.Name, req.Tenant, "custom roles belong to your own tenant")
	if !ok {
		return
	}
	r, err := mapping.NewCustomRole(m.Engine(), req.Name, tenant, req.Permissions)
	if err != nil {
		m.badRequest(c, action, err.Error())
		return
	}
	if m.refuseGrant(c, action, "role", req.Name, r, tenant) {
		return
	}
	m.saveNewRole(c, action, r, req.Description)
}

func (m *Management) saveNewRole(c *gin.Context, action string, r mapping.Role, description string) {
	row, err := store.CreateCustomRole(c.Request.Context(), m.Gate.Tx(c), store.RoleRow{
		Name: r.Name, Tenant: r.Tenant, BasedOn: r.BasedOn, Description: description, Permissions: r.Permissions})
	if err != nil {
		m.storeError(c, action, "role", r.Name, err)
		return
	}
	if err := notifyRoles(c.Request.Context(), m.Gate.Tx(c)); err != nil {
		m.storeError(c, action, "role", row.ID, err)
		return
	}
	m.record(c, action, "role", row.ID, audit.Success, "")
	c.JSON(http.StatusCreated, roleView{RoleRow: row, PermissionCount: len(row.Permissions)})
}

func notifyRoles(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify('keybridge_changed', '{"kind":"roles"}')`)
	return err
}

func (m *Management) duplicateRole(c *gin.Context) {
	const action = "roles.duplicate"
	ctx := c.Request.Context()
	var req roleRequest
	if err := decodeJSON(c, &req); err != nil {
		m.badRequest(c, action, err.Error())
		return
	}
	src, err := store.GetRole(ctx, m.Gate.Tx(c), c.Param("id"))
	if err != nil {
		m.storeError(c, action, "role", c.Param("id"), err)
		return
	}
	tenant, ok := m.tenantFor(c, action, "role", src.ID, req.Tenant, "custom roles belong to your own tenant")
	if !ok {
		return
	}
	name := req.Name
	if name == "" {
		name = src.Name + " Copy" // within mapping.ValidCustomRoleName's character set
	}
	var r mapping.Role
	if src.Kind == "system" {
		r, err = mapping.DuplicateRole(m.Engine(), src.Name, name, tenant)
	} else {
		r, err = mapping.NewCustomRole(m.Engine(), name, tenant, src.Permissions)
		r.BasedOn = src.BasedOn
	}
	if err != nil {
		m.badRequest(c, action, err.Error())
		return
	}
	if m.refuseGrant(c, action, "role", src.ID, r, tenant) {
		return
	}
	description := req.Description
	if description == "" {
		description = "Duplicated from " + src.Name
	}
	m.saveNewRole(c, action, r, description)
}

// customRole loads the route's role for an edit; anything but a custom role
// is refused as immutable (and audited as a denial).
func (m *Management) customRole(c *gin.Context, action, verb string) (store.RoleRow, bool) {
	cur, err := store.GetRole(c.Request.Context(), m.Gate.Tx(c), c.Param("id"))
	if err != nil {
		m.storeError(c, action, "role", c.Param("id"), err)
		return store.RoleRow{}, false
	}
	if cur.Kind != "custom" {
		m.record(c, action, "role", cur.ID, audit.Denied, "system roles are immutable")
		Error(c, http.StatusForbidden, "immutable", cur.Kind+" roles cannot be "+verb)
		return store.RoleRow{}, false
	}
	return cur, true
}

func (m *Management) updateRole(c *gin.Context) {
	const action = "roles.update"
	ctx := c.Request.Context()
	tx := m.Gate.Tx(c)
	cur, ok := m.customRole(c, action, "edited: duplicate it as a custom role")
	if !ok {
		return
	}
	var req struct {
		Name        *string   `json:"name"`
		Description *string   `json:"description"`
		Permissions *[]string `json:"permissions"`
	}
	if err := decodeJSON(c, &req); err != nil {
		m.badRequest(c, action, err.Error())
		return
	}
	if req.Name != nil {
		cur.Name = *req.Name
	}
	if req.Description != nil {
		cur.Description = *req.Description
	}
	if req.Permissions != nil {
		cur.Permissions = *req.Permissions
	}
	r, err := mapping.NewCustomRole(m.Engine(), cur.Name, cur.Tenant, cur.Permissions)
	if err != nil {
		m.badRequest(c, action, err.Error())
		return
	}
	if m.refuseGrant(c, action, "role", cur.ID, r, cur.Tenant) {
		return
	}
	cur.Permissions = r.Permissions
	if err := store.UpdateCustomRole(ctx, tx, cur); err != nil {
		m.storeError(c, action, "role", cur.ID, err)
		return
	}
	if err := notifyRoles(ctx, tx); err != nil {
		m.storeError(c, action, "role", cur.ID, err)
		return
	}
	m.record(c, action, "role", cur.ID, audit.Success, "")
	c.JSON(http.StatusOK, roleView{RoleRow: cur, PermissionCount: len(cur.Permissions)})
}

func (m *Management) deleteRole(c *gin.Context) {
	const action = "roles.delete"
	ctx := c.Request.Context()
	tx := m.Gate.Tx(c)
	cur, ok := m.customRole(c, action, "deleted")
	if !ok {
		return
	}
	force := c.Query("force") == "true"
	if err := store.DeleteCustomRole(ctx, tx, cur.ID, force); err != nil {
		m.storeError(c, action, "role", cur.ID, err)
		return
	}
	if err := notifyRoles(ctx, tx); err != nil {
		m.storeError(c, action, "role", cur.ID, err)
		return
	}
	m.record(c, action, "role", cur.ID, audit.Success, "")
	c.Status(http.StatusNoContent)
}

func (m *Management) permissions(c *gin.Context) {
	c.JSON(http.StatusOK, m.Engine().Catalog())
}

func (m *Management) matrix(c *gin.Context) {
	c.JSON(http.StatusOK, mapping.Matrix(m.Engine()))
}

func (m *Management) listTeams(c *gin.Context) {
	teams, err := store.ListTeams(c.Request.Context(), m.Gate.Tx(c))
	if err != nil {
		m.storeError(c, "teams.list", "team", "", err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"items": teams})
}

func (m *Management) teamMembers(c *gin.Context) {
	page, err := parsePage(c.Request.URL.Query())
	if err != nil {
		m.badRequest(c, "teams.members", err.Error())
		return
	}
	people, next, err := store.TeamMembers(c.Request.Context(), m.Gate.Tx(c), c.Param("id"), page)
	if err != nil {
		m.storeError(c, "teams.members", "team", c.Param("id"), err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"items": people, "next_cursor": next})
}

func (m *Management) listAudit(c *gin.Context) {
	f, err := parseAuditQuery(c.Request.URL.Query())
	if err != nil {
		m.badRequest(c, "audit.list", err.Error())
		return
	}
	format := c.Query("format")
	if format == "" {
		switch accept := c.GetHeader("Accept"); {
		case strings.Contains(accept, "text/csv"):
			format = "csv"
		case strings.Contains(accept, "application/x-ndjson"):
			format = "ndjson"
		}
	}
	switch format {
	case "", "page":
		rows, next, err := store.ListAudit(c.Request.Context(), m.Gate.Tx(c), f)
		if err != nil {
			m.storeError(c, "audit.list", "audit", "", err)
			return
		}
		c.JSON(http.StatusOK, gin.H{"items": rows, "next_cursor": next})
	case "csv":
		// Exports stream on their own budget and deadline: exportAudit.
		m.exportAudit(c, func(ctx context.Context, q pgx.Tx) error {
			c.Header("Content-Type", "text/csv; charset=utf-8")
			c.Header("Content-Disposition", `attachment; filename="audit.csv"`)
			w := csv.NewWriter(c.Writer)
			_ = w.Write([]string{"timestamp", "user", "user_id", "action", "resource_type", "resource_id", "outcome", "tenant", "request_id", "reason"})
			err := store.StreamAudit(ctx, q, f, func(a store.AuditRow) error {
				return w.Write([]string{a.Timestamp.UTC().Format(time.RFC3339Nano), cell(a.User), cell(a.UserID), cell(a.Action), cell(a.ResourceType),
					cell(a.ResourceID), a.Outcome, cell(a.Tenant), cell(a.RequestID), cell(a.Reason)})
			})
			w.Flush()
			return errors.Join(err, w.Error())
		})
	case "json", "ndjson":
		// One JSON object per line: an export of any size streams.
		m.exportAudit(c, func(ctx context.Context, q pgx.Tx) error {
			c.Header("Content-Type", "application/x-ndjson")
			enc := json.NewEncoder(c.Writer)
			return store.StreamAudit(ctx, q, f, func(a store.AuditRow) error { return enc.Encode(a) })
		})
	default:
		m.badRequest(c, "audit.list", "format: use csv, json or page")
	}
}

// decodeJSON decodes a bounded JSON body strictly.
func decodeJSON(c *gin.Context, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New("body: " + strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

// cell keeps a spreadsheet from running a CSV value as a formula: values
// that callers choose (resource ids, names, reasons) and that begin with
// = + - @ or a tab or carriage return get a leading apostrophe (OWASP's
// advice for CSV injection).
func cell(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}
